"""RCPT-time certificate readiness (DESIGN.md, process model): the front end asks the
resolver for an outbound recipient's certificates before it says 250 to RCPT, so the
shared-memory cache holds the answer by the time the workers sign and encrypt.

A lookup that cannot finish within `wait` seconds is `451 4.4.3` at RCPT (the client
retries; the lookup keeps running and fills the cache for that retry). "none" and
"unavailable" are fine here: the job applies the policy's fallback.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.envelope import Reply
from gateway.lookup.resolver import CertificateResolver, LookupInputError
from gateway.outbound.replies import LOOKUP_TIMEOUT

log = logging.getLogger(__name__)


class CertificateReadiness:
    """The front end's RCPT check for outbound recipients."""

    def __init__(self, resolver: CertificateResolver, wait: float) -> None:
        self.resolver = resolver
        self.wait = wait

    async def check(self, address: str) -> Reply | None:
        """None when the recipient may be accepted, else the refusal."""
        try:
            result = await asyncio.wait_for(self.resolver.certificates_for(address),
                                            self.wait)
        except TimeoutError:
            log.warning("certificate lookup for %s did not finish in %.1f s: 451 at RCPT",
                        address, self.wait)
            return LOOKUP_TIMEOUT
        except LookupInputError:
            return None  # syntax was checked before; the job decides with no certificate
        log.debug("certificates for %s: %s", address, result.status)
        return None
