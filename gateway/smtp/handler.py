"""The aiosmtpd handler hooks: EHLO keywords, MAIL and RCPT checks.

EHLO advertises PIPELINING (RFC 2920) and ENHANCEDSTATUSCODES (RFC 2034) next to what
aiosmtpd offers (SIZE, RFC 1870; 8BITMIME, RFC 6152; STARTTLS, RFC 3207) and drops AUTH.
MAIL applies backpressure (451 4.3.2 before the client sends a byte of content); RCPT
applies the recipient limit (452 4.5.3, RFC 5321 §4.5.3.1.8) and relay control.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway import metrics
from gateway.envelope import SYSTEM_BUSY, TOO_MANY_RECIPIENTS, Reply, domain_of
from gateway.smtp.relay import RelayPolicy
from gateway.smtp.replies import BAD_RECIPIENT, BAD_SENDER, OK_MAIL, OK_RCPT, reason

if TYPE_CHECKING:
    from gateway.smtp.server import FrontEnd


# RFC 5321 §4.1.2 Mailbox: a local part (dot-string or quoted string) "@" a domain or an
# address literal. Checked so that nothing unparseable reaches the spool or a next hop.
_MAILBOX = re.compile(r"""(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+|"(?:[^"\\\r\n]|\\.)*")"""
                      r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?|\[[^\]\s]+\])")


def is_mailbox(address: str) -> bool:
    return len(address) <= 254 and _MAILBOX.fullmatch(address) is not None


# An extra RCPT check for recipients outside local_domains, run after relay control
# (e.g. gateway.outbound.readiness: the certificate lookup); None or the refusal.
# Called with (recipient, sender ("" for <>), client IP address).
RcptCheck = Callable[[str, str, str], Awaitable[Reply | None]]


def _refuse(reply: Reply) -> str:
    metrics.REFUSED.labels(reason(reply)).inc()
    return str(reply)


class Handler:
    """Hooks called by every Session; holds nothing per session."""

    def __init__(self, front: FrontEnd, relay: RelayPolicy,
                 outbound_check: RcptCheck | None = None) -> None:
        self.front = front
        self.relay = relay
        self.outbound_check = outbound_check

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        keep = [r for r in responses[:-1] if not r.startswith("250-AUTH")]
        return [*keep, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        if address != "<>" and not is_mailbox(address):
            return _refuse(BAD_SENDER)
        if not self.front.acceptor.has_room():
            return _refuse(SYSTEM_BUSY)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return str(OK_MAIL)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if not is_mailbox(address):
            return _refuse(BAD_RECIPIENT)
        if len(envelope.rcpt_tos) >= self.front.config.max_recipients:
            return _refuse(TOO_MANY_RECIPIENTS)
        trusted = self.relay.is_trusted(server.client_address)
        refusal = self.relay.check(trusted, address)
        if refusal is not None:
            return _refuse(refusal)
        if self.outbound_check is not None and not self.relay.is_local(domain_of(address)):
            sender = "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from)
            refusal = await self.outbound_check(address, sender, server.client_address)
            if refusal is not None:
                return _refuse(refusal)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return str(OK_RCPT)
