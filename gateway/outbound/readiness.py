"""RCPT-time certificate readiness (DESIGN.md, process model): the front end asks the
resolver for an outbound recipient's certificates before it says 250 to RCPT, so the
shared-memory cache holds the answer by the time the workers sign and encrypt.

A lookup that cannot finish within `wait` seconds is `451 4.4.3` at RCPT (the client
retries; the lookup keeps running and fills the cache for that retry). "unavailable" is
fine here: the job applies the policy's fallback. "none" (the directory says the
recipient has no certificate) is refused at RCPT with `550 5.7.1` when the policy's
decision for this sender and recipient is made from the envelope alone
(policy.engine.envelope_decision) and says encrypt = "required" with fallback
"reject": the job would refuse the message after DATA anyway, and a refusal at RCPT
costs the client nothing and refuses only that recipient (RFC 5321 §3.3). The one
difference: a message the client already encrypted itself, which the job would pass on
unchanged, is refused here too (its protection cannot be seen before DATA).
"""

from __future__ import annotations

import asyncio
import logging

from gateway.config.schema import PolicySection
from gateway.envelope import Reply
from gateway.lookup.resolver import CertificateResolver, LookupInputError
from gateway.outbound.replies import LOOKUP_TIMEOUT, NO_CERTIFICATE_REJECT
from gateway.policy.cli import defaults_of
from gateway.policy.engine import envelope_decision

log = logging.getLogger(__name__)


class CertificateReadiness:
    """The front end's RCPT check for outbound recipients."""

    def __init__(self, resolver: CertificateResolver, wait: float,
                 policy: PolicySection | None = None) -> None:
        self.resolver = resolver
        self.wait = wait
        self.rules = policy.rules if policy is not None else ()
        self.defaults = defaults_of(policy if policy is not None else PolicySection())

    async def check(self, address: str, sender: str = "",
                    client_address: str = "") -> Reply | None:
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
        if result.status != "none":
            return None
        return self.refusal(address, sender, client_address)

    def refusal(self, address: str, sender: str, client_address: str) -> Reply | None:
        """For a recipient with no certificate: the refusal the policy makes at RCPT."""
        d = envelope_decision(self.rules, self.defaults, sender=sender, recipient=address,
                              client_address=client_address)
        if d is None or d.encrypt != "required" or d.fallback != "reject":
            return None
        log.warning("%s (from %s): no certificate, encrypt=required, fallback reject "
                    "(rules %s): 550 at RCPT", address, sender or "<>",
                    ", ".join(d.matched) or "none")
        return NO_CERTIFICATE_REJECT
