"""The pure protocol core: frames, the session and registration machines, backoff. No I/O."""
