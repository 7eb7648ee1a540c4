"""Outbound header hygiene: header fields that say something internal are removed.

`[policy] strip_headers` names the fields (default X-Originating-IP: the internal client
address webmail and Exchange add). They are removed from the message's header block
(RFC 5322 §2.2: a field with its folded continuation lines; names compared without
case, §1.2.2) before it is signed and encrypted, so they appear neither in the outer
headers nor inside the envelope. The body and every other field stay byte for byte.
"""

from __future__ import annotations


def strip_fields(message: bytes, names: tuple[str, ...]) -> tuple[bytes, int]:
    """(message without the header fields called names, how many fields were removed)."""
    if not names:
        return message, 0
    wanted = {n.lower().encode("ascii", "replace") for n in names}
    end = message.find(b"\r\n\r\n")
    head, rest = (message, b"") if end < 0 else (message[:end + 2], message[end + 2:])
    lowered = head.lower()
    if not any(name in lowered for name in wanted):
        return message, 0  # most mail has none of them: one search, not a split per line
    kept: list[bytes] = []
    dropping = False
    removed = 0
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a continuation belongs to the field before it
            if not dropping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].rstrip(b" \t").lower() if b":" in line else None
        dropping = name in wanted
        removed += dropping
        if not dropping:
            kept.append(line)
    return b"".join(kept) + rest, removed
