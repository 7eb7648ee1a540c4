"""Prometheus metrics of the outbound path (counted in the process that does the work).

Decisions and fallbacks are counted per recipient; signatures and envelopes per copy.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter

DECISIONS = Counter("smimegate_outbound_decisions",
                    "outbound recipients by policy encrypt decision and outcome "
                    "(encrypted, signed-only, plain, already-encrypted, deferred, rejected, "
                    "quarantined)",
                    ["encrypt", "outcome"], registry=REGISTRY)
FALLBACKS = Counter("smimegate_outbound_fallbacks",
                    "outbound recipients with no usable certificate, by the fallback used",
                    ["fallback", "certificate_status"], registry=REGISTRY)
SIGNED = Counter("smimegate_outbound_signed", "copies signed, by signing certificate policy",
                 ["signing_certificate"], registry=REGISTRY)
UNSIGNED = Counter("smimegate_outbound_unsigned", "copies sent unsigned, by reason",
                   ["reason"], registry=REGISTRY)
ENCRYPTED = Counter("smimegate_outbound_encrypted", "copies encrypted, by cipher",
                    ["cipher"], registry=REGISTRY)
NARROWED = Counter("smimegate_outbound_cipher_narrowed",
                   "copies encrypted with CBC instead of the decided GCM cipher because a "
                   "recipient certificate does not list it in SMIMECapabilities (RFC 4262)",
                   ["from", "to"], registry=REGISTRY)
LEARNED = Counter("smimegate_outbound_cipher_learned",
                  "copies encrypted with the decided GCM cipher, which a recipient "
                  "certificate does not list, because the recipient's latest verified "
                  "signed mail announced it (RFC 8551 §2.7.1, [inbound] learn_capabilities)",
                  ["cipher"], registry=REGISTRY)
REFUSED = Counter("smimegate_outbound_refused",
                  "messages refused as a whole at DATA by the crypto job, by reason "
                  "(no-certificate-defer, no-certificate-reject, no-signing-identity, "
                  "crypto-failed, inbound, unscannable)",
                  ["reason"], registry=REGISTRY)
REFUSED_RECIPIENTS = Counter(
    "smimegate_outbound_refused_recipients",
    "recipients the crypto job refused in a message it accepted for others: their "
    "original is queued to be processed again later (deferred) or bounced",
    ["outcome"], registry=REGISTRY)

# A worker's own registry is never scraped: the job tallies its increments, they travel
# back in Result.counts, and the front end's pool applies them here (apply()).
COUNTERS: dict[str, Counter] = {"decisions": DECISIONS, "fallbacks": FALLBACKS,
                                "signed": SIGNED, "unsigned": UNSIGNED,
                                "encrypted": ENCRYPTED, "cipher_narrowed": NARROWED,
                                "cipher_learned": LEARNED,
                                "refused": REFUSED,
                                "refused_recipients": REFUSED_RECIPIENTS}

Count = tuple[str, tuple[str, ...], float]


class Tally:
    """The metric increments of one job, by counter name and label values."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, tuple[str, ...]], float] = {}

    def inc(self, name: str, *labels: str, n: float = 1.0) -> None:
        key = (name, labels)
        self._counts[key] = self._counts.get(key, 0.0) + n

    def counts(self) -> tuple[Count, ...]:
        return tuple((name, labels, n) for (name, labels), n in self._counts.items())


def apply(counts: tuple[Count, ...]) -> None:
    """Add a job's tallied increments to this process's counters (the front end's)."""
    for name, labels, n in counts:
        counter = COUNTERS.get(name)
        if counter is not None:
            counter.labels(*labels).inc(n)
