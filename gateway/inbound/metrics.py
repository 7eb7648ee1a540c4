"""Prometheus metrics of the inbound path (counted in the worker, applied in the front end).

The job tallies increments into Result.counts (as gateway/outbound does); apply() adds
the inbound ones here and hands the rest to gateway.outbound.metrics.apply, so the pool
needs one on_counts hook for both directions.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter

from gateway.outbound import metrics as outbound_metrics
from gateway.revocation import metrics as revocation_metrics

VERDICTS = Counter("smimegate_inbound_verdicts",
                   "inbound messages by S/MIME verdict (RFC 7281 result, or undecryptable)",
                   ["verdict"], registry=REGISTRY)
ACTIONS = Counter("smimegate_inbound_actions",
                  "inbound messages by verdict and the action policy took",
                  ["verdict", "action"], registry=REGISTRY)

COUNTERS: dict[str, Counter] = {"inbound_verdicts": VERDICTS, "inbound_actions": ACTIONS}


def apply(counts: tuple[tuple[str, tuple[str, ...], float], ...]) -> None:
    """The pool's on_counts hook for the crypto job: inbound, revocation and outbound."""
    rest = []
    for name, labels, n in revocation_metrics.apply(counts):
        counter = COUNTERS.get(name)
        if counter is not None:
            counter.labels(*labels).inc(n)
        else:
            rest.append((name, labels, n))
    outbound_metrics.apply(tuple(rest))
