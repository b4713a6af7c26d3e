"""Worker status: the one writer of connection, job and log state; others read snapshots."""
