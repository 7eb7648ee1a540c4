"""MIME handling on the hot path: scanning and canonical bytes, never email.message objects."""
