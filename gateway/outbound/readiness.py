"""RCPT-time certificate readiness (DESIGN.md, process model): the front end asks the
resolver for an outbound recipient's certificates before it says 250 to RCPT, so the
shared-memory cache holds the answer by the time the workers sign and encrypt.

A lookup that cannot finish within `wait` seconds is `451 4.4.3` at RCPT (the client
retries; the lookup keeps running and fills the cache for that retry). "unavailable" is
fine here: the job applies the policy's fallback. "none" (the directory says the
recipient has no certificate) is refused at RCPT when the policy's decision for this
sender and recipient is made from the envelope alone (policy.engine.envelope_decision)
and says encrypt = "required" with fallback "reject" (`550 5.7.1`) or "defer"
(`451 4.7.0`): the job would refuse that recipient after DATA anyway, and a refusal at
RCPT refuses only that recipient (RFC 5321 §3.3) and leaves a deferred one with the
client, not as plaintext in our queue. The one difference: a message the client
already encrypted itself, which the job would pass on unchanged, is refused here too
(its protection cannot be seen before DATA).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from gateway.config.schema import PolicySection
from gateway.envelope import Reply
from gateway.lookup.resolver import CertificateResolver, LookupInputError
from gateway.outbound.replies import (
    LOOKUP_TIMEOUT,
    NO_CERTIFICATE_DEFER,
    NO_CERTIFICATE_REJECT,
)
from gateway.policy.cli import defaults_of
from gateway.policy.engine import envelope_decision

log = logging.getLogger(__name__)
# The fallbacks refused at RCPT when the envelope alone decides, and their replies.
_AT_RCPT = {"reject": NO_CERTIFICATE_REJECT, "defer": NO_CERTIFICATE_DEFER}


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

    async def refresh(self, addresses: Sequence[str]) -> None:
        """Bring the cache up to date for `addresses` as RCPT would, before delivery runs
        the job again for a copy it refused (gateway/delivery/agent.py): a negative
        answer that expired is asked again, so a certificate published since is found."""
        async def one(address: str) -> None:
            try:
                await asyncio.wait_for(self.resolver.certificates_for(address), self.wait)
            except (TimeoutError, LookupInputError) as e:
                log.info("certificate lookup for %s before processing again: %r", address, e)

        await asyncio.gather(*(one(a) for a in addresses))

    def refusal(self, address: str, sender: str, client_address: str) -> Reply | None:
        """For a recipient with no certificate: the refusal the policy makes at RCPT."""
        d = envelope_decision(self.rules, self.defaults, sender=sender, recipient=address,
                              client_address=client_address)
        if d is None or d.encrypt != "required" or d.fallback not in _AT_RCPT:
            return None
        reply = _AT_RCPT[d.fallback]
        log.warning("%s (from %s): no certificate, encrypt=required, fallback %s "
                    "(rules %s): %d at RCPT", address, sender or "<>", d.fallback,
                    ", ".join(d.matched) or "none", reply.code)
        return reply
