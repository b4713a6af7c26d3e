"""Shared vocabulary of the worker and the studio: kinds, tasks, capabilities, results."""
