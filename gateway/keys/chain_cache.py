"""A bounded per-process memo of passing chain verdicts of gateway.keys.validate.

Validating a chain costs one public-key verify per link plus parsing every certificate's
extensions, more than checking the message signature itself; and a sender signs every
message with the same chain. So a PASSING verdict of validate_certificate (RFC 5280 §6
path, validity, RFC 8550 §4.4 usage, the name) is remembered, keyed by what decides it:
the leaf, the intermediates offered (in order: they steer the path search), the anchors
(by content), the purpose, the name, and the time bucket (BUCKET seconds) of the instant
asked about. An entry serves only inside its bucket and only while that instant lies
within every chain certificate's validity period, so it never outlives the earliest
notAfter. Failing verdicts are not kept: a bad chain is judged afresh every time, and
nothing an attacker sends can occupy the cache without chaining to our anchors.

Revocation is not part of a chain verdict: callers ask per message (gateway.revocation
caches those answers up to their own nextUpdate).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

from cryptography import x509

from gateway.keys.validate import PURPOSES, ChainResult, validate_certificate

BUCKET = 60.0  # seconds a passing verdict is reused for, at most
MAX_ENTRIES = 1024  # chains remembered per process (least recently used go first)


class _Anchors:
    """An anchor set as a key: equal by content, hashed once."""

    __slots__ = ("_hash", "certs")

    def __init__(self, certs: tuple[x509.Certificate, ...]) -> None:
        self.certs = certs
        self._hash = hash(certs)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Anchors) and self.certs == other.certs


class ChainCache:
    """validate_certificate with passing verdicts remembered (see the module docstring)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, bucket: float = BUCKET) -> None:
        if max_entries < 1 or bucket <= 0:
            raise ValueError("max_entries must be ≥ 1 and bucket > 0")
        self.max_entries = max_entries
        self.bucket = bucket
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[ChainResult, dt.datetime, dt.datetime]] = \
            OrderedDict()
        self._last_anchors: _Anchors | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def validate(self, cert: x509.Certificate, *, anchors: Sequence[x509.Certificate],
                 intermediates: Sequence[x509.Certificate] = (),
                 at: dt.datetime | None = None, purpose: str = "any",
                 name: str | None = None) -> ChainResult:
        """The same verdict validate_certificate gives, from memory when it passed before."""
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}")
        at = at or dt.datetime.now(dt.UTC)
        # Certificates compare and hash by their content (cryptography), never by identity.
        key = (purpose, name, int(at.timestamp() // self.bucket), cert,
               tuple(intermediates), self._anchors_key(anchors))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1] <= at <= entry[2]:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
        result = validate_certificate(cert, anchors=anchors, intermediates=intermediates,
                                      at=at, purpose=purpose, name=name)
        with self._lock:
            self.misses += 1
            if result.ok and result.chain:
                start = max(c.not_valid_before_utc for c in result.chain)
                end = min(c.not_valid_after_utc for c in result.chain)
                self._entries[key] = (result, start, end)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return result

    def _anchors_key(self, anchors: Sequence[x509.Certificate]) -> _Anchors:
        """Callers pass the same anchors every time: recognise them by the identity of each
        (immutable) certificate rather than hashing them all per call."""
        last = self._last_anchors
        if last is not None and len(last.certs) == len(anchors) and \
                all(a is b for a, b in zip(last.certs, anchors, strict=True)):
            return last
        self._last_anchors = _Anchors(tuple(anchors))
        return self._last_anchors


CHAINS = ChainCache()  # the process's memo, shared by every caller in it


def validate_certificate_cached(
    cert: x509.Certificate,
    *,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    at: dt.datetime | None = None,
    purpose: str = "any",
    name: str | None = None,
) -> ChainResult:
    """validate_certificate through the process's ChainCache."""
    return CHAINS.validate(cert, anchors=anchors, intermediates=intermediates, at=at,
                           purpose=purpose, name=name)
