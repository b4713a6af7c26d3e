"""`python -m studio_worker.studio --data-dir D --host H --port P [--admin-token T]`."""

from studio_worker.studio.commands import serve

if __name__ == "__main__":
    serve.main(prog_name="python -m studio_worker.studio")
