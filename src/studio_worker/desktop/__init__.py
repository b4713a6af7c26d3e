"""Desktop adapters of `studio-worker ui`: the tray icon, notifications, the login item.

Pure cores (tray state and menu, notice derivation and rate limits, login-item rendering)
sit next to thin adapters for pystray, notify-py and the OS, which are imported only
inside the adapter that needs them. Nothing here imports the daemon: it is driven through
the `DaemonControl` port that `app` builds (see `control.py`).
"""
