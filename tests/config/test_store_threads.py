"""Edits from several threads through one `ConfigStore` never undo each other (the
daemon's registration saves credentials while the tray or the local API pauses)."""

from __future__ import annotations

import threading
from pathlib import Path

from studio_worker.config.store import ConfigStore
from studio_worker.protocol.registration import Credentials

ROUNDS = 60


def test_concurrent_modify_and_update_keep_both_edits(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.toml")
    store.load()
    start = threading.Barrier(2)
    last_threshold = [0.0]

    def registration() -> None:
        start.wait()
        for n in range(ROUNDS):
            creds = Credentials(registration_request_id=f"req-{n}")
            store.modify(lambda settings, creds=creds: settings.with_credentials(creds))

    def operator() -> None:
        start.wait()
        for n in range(ROUNDS):
            store.update(vram_threshold_gb=float(n))
            last_threshold[0] = float(n)

    threads = [threading.Thread(target=registration), threading.Thread(target=operator)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.load()
    assert final.vram_threshold_gb == last_threshold[0] == ROUNDS - 1
    assert final.registration_request_id == f"req-{ROUNDS - 1}"
