"""Delivery of binary results to the studio (multipart `complete`, protocol §2.3)."""
