"""What a revocation source (OCSP or CRL) concluded about one certificate.

Shared by gateway.revocation.ocsp and gateway.revocation.crlsource so the two sources
answer in one shape; RevocationStatus (gateway.smime.verify) is what verify() sees.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.smime.verify import RevocationStatus


@dataclass(frozen=True)
class Outcome:
    """A status with its reason; a revocation's time and RFC 5280 §5.3.1 reason name."""

    status: str  # "good" | "revoked" | "unknown"
    reason: str
    url: str = ""
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None  # RFC 5280 §5.3.1 name, e.g. "keyCompromise"
    next_update: dt.datetime | None = None
    cached: bool = False
    source: str = "ocsp"  # "ocsp" | "crl" | "none" (not asked)

    def as_status(self) -> RevocationStatus:
        return RevocationStatus(self.status, self.reason)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
