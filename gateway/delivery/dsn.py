"""Delivery status notifications (bounces): RFC 3464 inside RFC 6522 multipart/report.

The report has three parts: a human-readable explanation, a message/delivery-status
with one per-recipient block per failed recipient (Final-Recipient, Action: failed,
Status, Remote-MTA, Diagnostic-Code), and the original message's header section as
text/rfc822-headers (headers only: the body may be ciphertext or large). It is sent
from the null reverse-path (RFC 5321 §4.5.5) so it can never cause another bounce.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate

from gateway.envelope import Envelope


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    address: str
    status: str  # RFC 3463, e.g. "5.1.1" or "4.4.7" (expired)
    diagnostic: str  # the reply, e.g. "550 5.1.1 no such user"; "" if made up here
    remote: str = ""  # the next hop that said so


def header_section(data: bytes) -> bytes:
    """The message's header section, CRLF-terminated, without the blank line."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        lf = data.find(b"\n\n")
        return data if lf < 0 else data[:lf + 1]
    return data[:end + 2]


def build_dsn(*, queue_id: str, envelope: Envelope, data: bytes,
              failed: list[FailedRecipient], hostname: str, now: float | None = None,
              ) -> tuple[Envelope, bytes]:
    """The bounce for `failed` recipients of a message: its envelope and bytes (CRLF)."""
    now = time.time() if now is None else now
    boundary = f"=_dsn_{secrets.token_hex(12)}"
    sender = envelope.mail_from
    expired = all(f.status == "4.4.7" for f in failed)
    human = [
        f"This is the mail system at {hostname}.",
        "",
        "Your message could not be delivered to the recipient(s) below."
        + (" It stayed in the queue too long without being accepted." if expired else ""),
        "",
    ]
    for f in failed:
        human.append(f"<{f.address}>: {f.diagnostic or f.status}"
                     + (f" (from {f.remote})" if f.remote else ""))
    per_message = [
        f"Reporting-MTA: dns; {hostname}",
        f"X-Smimegate-Queue-ID: {queue_id}",
        f"Arrival-Date: {formatdate(envelope.received_at or now)}",
    ]
    blocks = []
    for f in failed:
        block = [
            f"Final-Recipient: rfc822; {f.address}",
            "Action: failed",
            f"Status: {f.status}",
        ]
        if f.remote:
            block.append(f"Remote-MTA: dns; {f.remote}")
        if f.diagnostic:
            block.append(f"Diagnostic-Code: smtp; {_one_line(f.diagnostic)}")
        block.append(f"Last-Attempt-Date: {formatdate(now)}")
        blocks.append("\r\n".join(block))
    status = "\r\n".join(per_message) + "\r\n\r\n" + "\r\n\r\n".join(blocks) + "\r\n"
    headers = header_section(data)
    eight_bit = not headers.isascii()
    subject = "Undelivered Mail Returned to Sender"
    top = "\r\n".join([
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(datetime.fromtimestamp(now, UTC))}",
        f"Message-ID: <{queue_id}.dsn@{hostname}>",
        "Auto-Submitted: auto-replied",  # RFC 3834: no auto-replies to this
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
    ])
    parts = [
        "\r\n".join([f"--{boundary}", "Content-Type: text/plain; charset=us-ascii",
                     "Content-Description: Notification", "", *human, ""]).encode(),
        "\r\n".join([f"--{boundary}", "Content-Type: message/delivery-status",
                     "Content-Description: Delivery report", "", ""]).encode()
        + status.encode("utf-8", "replace"),
        "\r\n".join([f"--{boundary}", "Content-Type: text/rfc822-headers",
                     "Content-Description: Undelivered message headers"]
                    + (["Content-Transfer-Encoding: 8bit"] if eight_bit else [])
                    + ["", ""]).encode() + headers,
    ]
    body = top.encode() + b"\r\n" + b"".join(parts) + f"--{boundary}--\r\n".encode()
    esmtp = (("BODY", "8BITMIME"),) if eight_bit else ()
    bounce = Envelope(mail_from="", rcpt_tos=(sender,), received_at=now, esmtp=esmtp,
                      helo=hostname)
    return bounce, body


def _one_line(text: str) -> str:
    return " ".join(text.split())
