"""Shared vocabulary of the mail path: envelopes and SMTP replies.

Imports nothing else of ours, so the front end, the spool, the workers and delivery can
all use it without importing each other. Replies follow RFC 5321 §4.2 with RFC 3463
enhanced status codes (RFC 2034).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who a message is from and for, as the SMTP session said, and where it came from."""

    mail_from: str  # reverse-path without <>; "" for the null sender (bounces)
    rcpt_tos: tuple[str, ...]
    client_address: str = ""  # IP address of the SMTP client
    helo: str = ""
    received_at: float = 0.0  # Unix time the message was accepted
    esmtp: tuple[tuple[str, str], ...] = field(default=())  # e.g. (("BODY", "8BITMIME"),)
    # Set by the crypto job for one copy (gateway/outbound): the "tls-only" fallback
    # sends it unencrypted, so it leaves only over TLS with a verified certificate.
    require_tls: bool = False
    # Set when the crypto job refused this copy (the reply, e.g. "451 4.7.0 ..."): the
    # data is then the ORIGINAL message, never sent as it is. Delivery runs the job
    # again when due (a 4yz) or fails the recipients with it (a 5yz, a DSN follows).
    refused: str = ""

    @property
    def recipient_domains(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for rcpt in self.rcpt_tos:
            seen[domain_of(rcpt)] = None
        return tuple(seen)


def domain_of(address: str) -> str:
    """The lower-cased domain of an address (the part after the last @)."""
    return address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: basic code, enhanced status and text, e.g. 554 5.7.1 Relay denied."""

    code: int
    status: str  # RFC 3463 enhanced status, e.g. "5.7.1"
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    @classmethod
    def parse(cls, text: str) -> Reply:
        """The reply `str(reply)` wrote ("451 4.7.0 text"); ValueError if it is not one."""
        code, _, rest = text.partition(" ")
        status, _, words = rest.partition(" ")
        parts = status.split(".")
        if not (code.isdigit() and len(code) == 3 and code[0] in "245" and len(parts) == 3
                and parts[0] == code[0] and all(p.isdigit() for p in parts)):
            raise ValueError(f"not an SMTP reply with an enhanced status: {text!r}")
        return cls(int(code), status, words)

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500


class ReplyError(Exception):
    """An error that becomes an SMTP reply; raised anywhere on the mail path."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


# The catalogue: every reply the front end gives for a refusal, in one place.
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
SYSTEM_BUSY = Reply(451, "4.3.2", "System busy, try again later")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BARE_LF = Reply(554, "5.6.11", "Bare LF not allowed in SMTP (use CRLF)")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address")
