"""`python -m studio_worker` is the `studio-worker` command."""

from studio_worker.cli import main

if __name__ == "__main__":
    main()
