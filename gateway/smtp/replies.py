"""Protocol text of replies: enhanced status codes on every reply, refusal reasons.

RFC 2034 §3: once ENHANCEDSTATUSCODES is advertised, every 2xx, 4xx and 5xx reply
except the greeting and the EHLO response carries an RFC 3463 status after the code.
Our own replies come from the catalogue in gateway.envelope with their status; the
replies aiosmtpd writes itself ("501 Syntax: ...", "503 Error: need MAIL command") get
the status this table gives their basic code.
"""

from __future__ import annotations

import re

from gateway import envelope as catalogue
from gateway.envelope import Reply

# Basic code → the RFC 3463 status aiosmtpd's own replies of that code mean.
DEFAULT_STATUS: dict[int, str] = {
    211: "2.0.0", 214: "2.0.0", 221: "2.0.0", 250: "2.0.0", 251: "2.1.5", 252: "2.5.0",
    421: "4.3.0", 450: "4.2.0", 451: "4.3.0", 452: "4.3.1", 454: "4.7.0",
    500: "5.5.2",  # syntax error, command unrecognised (or line too long)
    501: "5.5.4",  # syntax error in parameters or arguments
    502: "5.5.1", 503: "5.5.1", 504: "5.5.4",
    530: "5.7.0", 550: "5.1.1", 552: "5.3.4", 553: "5.1.3", 554: "5.7.0", 555: "5.5.4",
}

_HAS_STATUS = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
_CODE = re.compile(r"([245]\d\d)([ -])(.*)", re.DOTALL)


def with_status(line: str) -> str:
    """`line` with an enhanced status code after the basic one if it has none."""
    if _HAS_STATUS.match(line):
        return line
    m = _CODE.fullmatch(line)
    if m is None:
        return line
    code = int(m.group(1))
    status = DEFAULT_STATUS.get(code, f"{m.group(1)[0]}.0.0")
    return f"{m.group(1)}{m.group(2)}{status} {m.group(3)}"


# Label values of smimegate_smtp_refused_total, one per refusal in the catalogue.
REASONS: dict[Reply, str] = {
    catalogue.RELAY_DENIED: "relay_denied",
    catalogue.MESSAGE_TOO_BIG: "too_big",
    catalogue.TOO_MANY_RECIPIENTS: "too_many_recipients",
    catalogue.INSUFFICIENT_STORAGE: "storage",
    catalogue.SYSTEM_BUSY: "busy",
    catalogue.LINE_TOO_LONG: "line_too_long",
    catalogue.BARE_LF: "bare_lf",
    catalogue.LOCAL_ERROR: "local_error",
    catalogue.TIMEOUT: "timeout",
    catalogue.TOO_MANY_CONNECTIONS: "too_many_connections",
}


def reason(reply: Reply) -> str:
    """The metrics label of a refusal; replies outside the catalogue count by class."""
    if reply.text.startswith("Bare LF"):
        return "bare_lf"
    if reply.code == 421 and reply.status == "4.3.2":
        return "too_many_sessions" if reply.text.startswith("Too many") else "shutting_down"
    return REASONS.get(reply) or f"other_{reply.code // 100}xx"


OK_MAIL = Reply(250, "2.1.0", "Ok")
OK_RCPT = Reply(250, "2.1.5", "Ok")
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
BAD_SENDER = Reply(553, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT = Reply(553, "5.1.3", "Bad recipient address syntax")
BARE_LF_COMMAND = Reply(500, "5.5.2", "Bare LF not allowed in SMTP commands (use CRLF)")
NO_AUTH = Reply(502, "5.5.1", "AUTH not supported here")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
TOO_MANY_SESSIONS = Reply(421, "4.3.2", "Too many sessions, try again later")


def queued(queue_ids: list[str]) -> Reply:
    return Reply(250, "2.0.0", "Ok: queued as " + " ".join(queue_ids))
