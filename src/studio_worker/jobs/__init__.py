"""Admission and dispatch of studio jobs: one in-flight slot, offer to delivery."""
