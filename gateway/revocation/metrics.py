"""Prometheus metrics of revocation checking, in the gateway's default registry.

Module-level, as gateway.metrics does. A crypto worker counts in its own process, which
nobody scrapes: drain() hands the increments since the last call to the job's result, and
the front end adds them here in its own registry (gateway.inbound.metrics.apply).
The counters note each increment as it happens (_Drained), so a drain costs a dict swap
per job instead of a Prometheus collect of every counter.
"""

from __future__ import annotations

import os
import threading

from prometheus_client import REGISTRY, Counter

Counts = tuple[tuple[str, tuple[str, ...], float], ...]

# (metric name, label values) → increments since the last drain(), noted by _Drained.inc.
_pending: dict[tuple[str, tuple[str, ...]], float] = {}
_lock = threading.Lock()  # OCSP and CRL fetches may count from other threads


class _Drained(Counter):
    """A Counter that also notes its increments for drain(). labels() makes its children
    of this class too, so `.labels(...).inc()` anywhere is seen."""

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        super().inc(amount, exemplar)
        key = (self._name, self._labelvalues)
        with _lock:
            _pending[key] = _pending.get(key, 0.0) + amount


def _forget_in_child() -> None:
    _pending.clear()  # a forked child must not report its parent's increments again


os.register_at_fork(after_in_child=_forget_in_child)

# result: good | revoked | unknown (the responder's answer) or the failure kind:
# no-url | http-error | timeout | malformed | unsuccessful | bad-signature | certid |
# stale | nonce
OCSP_REQUESTS = _Drained("smimegate_revocation_ocsp_requests",
                          "OCSP requests sent, by result", ["result"], registry=REGISTRY)
CACHE_HITS = _Drained("smimegate_revocation_cache_hits",
                       "revocation checks answered from the in-process cache, by kind of "
                       "entry (answer: a responder's answer; failure: a remembered failure)",
                       ["kind"], registry=REGISTRY)
# result: ok (fetched and signed by the asking CA) or the failure kind: http-error | timeout
# | too-large | malformed | stale | unusable (delta, indirect, partial, critical extension)
# | wrong-issuer | bad-signature
CRL_FETCHES = _Drained("smimegate_revocation_crl_fetches", "CRL downloads, by result",
                        ["result"], registry=REGISTRY)
CRL_CACHE_HITS = _Drained("smimegate_revocation_crl_cache_hits",
                           "revocation checks answered from a cached CRL (kind crl) or a "
                           "remembered CRL failure (kind failure), without a download",
                           ["kind"], registry=REGISTRY)
VERDICTS = _Drained("smimegate_revocation_verdicts",
                     "revocation checks of signer certificates, by mode and status",
                     ["mode", "status"], registry=REGISTRY)

# name in Result.counts → (counter, its label names in order)
COUNTERS: dict[str, tuple[Counter, tuple[str, ...]]] = {
    "revocation_ocsp_requests": (OCSP_REQUESTS, ("result",)),
    "revocation_cache_hits": (CACHE_HITS, ("kind",)),
    "revocation_verdicts": (VERDICTS, ("mode", "status")),
    "revocation_crl_fetches": (CRL_FETCHES, ("result",)),
    "revocation_crl_cache_hits": (CRL_CACHE_HITS, ("kind",)),
}

# prometheus name of each counter above → its name in Result.counts
_NAMES = {counter._name: name for name, (counter, _) in COUNTERS.items()}


def drain() -> Counts:
    """What this process counted since the last drain, as (name, labels, increment)."""
    global _pending
    if not _pending:
        return ()  # the common case for a job that checked nothing: no lock, no copy
    with _lock:
        taken, _pending = _pending, {}
    return tuple((_NAMES[metric], labels, n) for (metric, labels), n in taken.items()
                 if n > 0)


def apply(counts: Counts) -> Counts:
    """Add the revocation counts a worker returned; the others are handed back."""
    rest = []
    for name, labels, n in counts:
        entry = COUNTERS.get(name)
        if entry is None:
            rest.append((name, labels, n))
        else:
            entry[0].labels(*labels).inc(n)
    return tuple(rest)
