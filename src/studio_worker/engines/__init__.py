"""Engines: the Engine port, the static roster, and the engines themselves."""
