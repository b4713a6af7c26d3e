"""The studio session: the only worker package that speaks WebSocket."""
