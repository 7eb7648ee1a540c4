"""Transfer and charset decoding of one entity, for content inspection, within a budget.

Lazier than the scan: only the parts a policy looks at are decoded, and never more than
`budget` octets of each. Base64 (RFC 2045 §6.8) is decoded strictly: a character
outside the alphabet or broken padding is a MimeError 5.6.0, since what a client shows
of it is anyone's guess. Quoted-printable (§6.7) is decoded leniently, as §6.7 (1)
advises. An unknown transfer encoding or charset is 5.6.1 (media not supported).
"""

from __future__ import annotations

import binascii
from typing import NamedTuple

from gateway.mime.charsets import decode, text_codec
from gateway.mime.scanned import MimeError, Part

_IDENTITY = frozenset({"7bit", "8bit", "binary"})


class DecodedBytes(NamedTuple):
    data: bytes
    complete: bool  # False when the budget cut the content short


class DecodedText(NamedTuple):
    text: str
    complete: bool


def _where(part: Part) -> str:
    return "part " + (".".join(str(i + 1) for i in part.path) or "0 (the message)")


def decoded_bytes(part: Part, budget: int) -> DecodedBytes:
    """At most budget octets of the part's body, transfer encoding undone."""
    if part.is_multipart or part.children:
        raise ValueError("a composite entity has no body of its own to decode")
    if budget < 0:
        raise ValueError("budget must not be negative")
    body = part.body
    cte = part.transfer_encoding
    if cte in _IDENTITY:
        return DecodedBytes(bytes(body[:budget]), len(body) <= budget)
    if cte == "base64":
        # 3 octets per 4 characters; lines of 76 plus CRLF; a margin for odd wrapping
        limit = (budget // 3 + 2) * 4 * 80 // 76 + 160
        cut = limit < len(body)
        text = bytes(body[:limit]).translate(None, b" \t\r\n")
        if cut:
            text = text[: len(text) - len(text) % 4]
        try:
            raw = binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error as exc:
            raise MimeError("5.6.0", f"bad base64 in {_where(part)}: {exc}",
                            part.body_start) from None
        return DecodedBytes(raw[:budget], not cut and len(raw) <= budget)
    if cte == "quoted-printable":
        limit = budget * 3 + 2
        cut = limit < len(body)
        chunk = bytes(body[:limit])
        if cut:
            # end on a line break so no escape or soft break is split; a line longer
            # than the budget (not RFC 2045 §6.7 conformant) is cut before a last escape
            nl = chunk.rfind(b"\n")
            chunk = chunk[: nl + 1] if nl >= 0 else chunk[:-2]
        raw = binascii.a2b_qp(chunk)
        return DecodedBytes(raw[:budget], not cut and len(raw) <= budget)
    raise MimeError("5.6.1", f"transfer encoding {cte!r} of {_where(part)} is not supported",
                    part.start)


def decoded_text(part: Part, budget: int) -> DecodedText:
    """The body as text: transfer decoding, then the charset (RFC 2046 §4.1.2)."""
    raw, complete = decoded_bytes(part, budget)
    charset = part.charset
    if charset in ("us-ascii", "ascii", ""):
        charset = "utf-8"  # a superset; 8-bit text mislabelled as ASCII still reads
    codec = text_codec(charset)
    if codec is None:
        raise MimeError("5.6.1", f"unknown charset {part.charset!r} in {_where(part)}",
                        part.start)
    # final=complete: a character the budget cut in half is dropped, not garbled
    return DecodedText(decode(raw, codec, final=complete), complete)
