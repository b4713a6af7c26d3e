"""OS edges: host facts, the daemon lock, and later tray, notifications, services, updates."""
