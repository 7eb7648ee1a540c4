"""Write tokens: bearer tokens (RFC 6750) bound to one domain, stored only as hashes.

A token is 256 random bits, so a plain SHA-256 of it is as hard to invert as guessing
the token; a slow password hash would add nothing but latency. The id is a short prefix
of the hash, safe to show and enough to revoke a token by.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from gateway.directory.records import TokenRecord

PREFIX = "sgd_"  # makes a leaked token recognisable to secret scanners
_TOKEN_RE = re.compile(r"sgd_[A-Za-z0-9_-]{43}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(domain: str) -> tuple[str, TokenRecord]:
    """A fresh token (shown once) and the record that is stored for it."""
    token = PREFIX + secrets.token_urlsafe(32)
    h = hash_token(token)
    return token, TokenRecord(id=h[:12], domain=domain, hash=h, created_at=int(time.time()))


def well_formed(token: str) -> bool:
    return _TOKEN_RE.fullmatch(token) is not None
