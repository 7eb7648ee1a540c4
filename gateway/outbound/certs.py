"""Recipient certificates as a worker reads them: from the shared-memory cache only.

The front end's resolver validated every certificate before writing it (chain to our
anchors, usage, name; gateway/lookup/resolver.py) and filled the cache at RCPT time, so
a worker needs no network and no IPC: a cache read per name. An entry past its expiry
is still used within `lookup.stale_bound` (the resolver serves the same while it
refreshes), but never a certificate whose own validity period has ended.
The `certificate` decision picks which names count: "user-then-domain" (the address's
certificates, else its domain's), "domain-only", "user-only".
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cryptography import x509

from gateway.envelope import domain_of
from gateway.lookup._cache_py import CertCache

_MEMO_MAX = 10_000
_parsed: dict[bytes, x509.Certificate] = {}


@dataclass(frozen=True, slots=True)
class Found:
    """Certificates to encrypt to, or why there are none."""

    certificates: tuple[x509.Certificate, ...]
    ders: frozenset[bytes]  # identity of the set, for grouping recipients
    status: str  # "found" | "none" (the directory said so) | "unknown" (not cached)
    kind: str = ""  # "user" | "domain" when found


def _parse(der: bytes) -> x509.Certificate | None:
    cert = _parsed.get(der)
    if cert is None:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        if len(_parsed) >= _MEMO_MAX:
            _parsed.clear()
        _parsed[der] = cert
    return cert


def _read(cache: CertCache | None, name: str, now: float,
          stale_bound: float) -> tuple[str, tuple[bytes, ...]]:
    if cache is None:
        return "unknown", ()
    entry = cache.get(name, now=now, allow_stale=True)
    if entry is None or entry.expires_at + stale_bound < now:
        return "unknown", ()
    if entry.negative:
        return "none", ()
    ders = tuple(d for d in entry.ders
                 if (c := _parse(d)) is not None and c.not_valid_after_utc.timestamp() > now)
    return ("found", ders) if ders else ("none", ())


def certificates_for(cache: CertCache | None, address: str, preference: str, *,
                     stale_bound: float, now: float | None = None) -> Found:
    """The certificates to encrypt to for address under the `certificate` decision."""
    now = time.time() if now is None else now
    names: list[tuple[str, str]] = []
    if preference != "domain-only":
        names.append(("user", address.lower()))
    if preference != "user-only":
        names.append(("domain", domain_of(address)))
    statuses = []
    for kind, name in names:
        status, ders = _read(cache, name, now, stale_bound)
        if ders:
            certs = tuple(c for d in ders if (c := _parse(d)) is not None)
            return Found(certs, frozenset(ders), "found", kind)
        statuses.append(status)
    # "none" only when every name asked was answered "none"; a name the cache does not
    # hold means nobody knows (the RCPT-time lookup was skipped, evicted or failed).
    status = "none" if statuses and all(s == "none" for s in statuses) else "unknown"
    return Found((), frozenset(), status)
