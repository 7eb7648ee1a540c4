"""Prometheus metrics of revocation checking, in the gateway's default registry.

Module-level, as gateway.metrics does. A crypto worker counts in its own process, which
nobody scrapes: drain() hands the increments since the last call to the job's result, and
the front end adds them here in its own registry (gateway.inbound.metrics.apply).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter

Counts = tuple[tuple[str, tuple[str, ...], float], ...]

# result: good | revoked | unknown (the responder's answer) or the failure kind:
# no-url | http-error | timeout | malformed | unsuccessful | bad-signature | certid |
# stale | nonce
OCSP_REQUESTS = Counter("smimegate_revocation_ocsp_requests",
                        "OCSP requests sent, by result", ["result"], registry=REGISTRY)
CACHE_HITS = Counter("smimegate_revocation_cache_hits",
                     "revocation checks answered from the in-process cache, by kind of "
                     "entry (answer: a responder's answer; failure: a remembered failure)",
                     ["kind"], registry=REGISTRY)
# result: ok (fetched and signed by the asking CA) or the failure kind: http-error | timeout
# | too-large | malformed | stale | unusable (delta, indirect, partial, critical extension)
# | wrong-issuer | bad-signature
CRL_FETCHES = Counter("smimegate_revocation_crl_fetches", "CRL downloads, by result",
                      ["result"], registry=REGISTRY)
CRL_CACHE_HITS = Counter("smimegate_revocation_crl_cache_hits",
                         "revocation checks answered from a cached CRL (kind crl) or a "
                         "remembered CRL failure (kind failure), without a download",
                         ["kind"], registry=REGISTRY)
VERDICTS = Counter("smimegate_revocation_verdicts",
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

_drained: dict[tuple[str, tuple[str, ...]], float] = {}


def drain() -> Counts:
    """What this process counted since the last drain, as (name, labels, increment)."""
    out: list[tuple[str, tuple[str, ...], float]] = []
    for name, (counter, label_names) in COUNTERS.items():
        for family in counter.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels = tuple(sample.labels[n] for n in label_names)
                seen = _drained.get((name, labels), 0.0)
                if sample.value > seen:
                    out.append((name, labels, sample.value - seen))
                    _drained[(name, labels)] = sample.value
    return tuple(out)


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
