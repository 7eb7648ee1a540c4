"""Removing policy subject keywords (e.g. "[encrypt]") from a message's Subject field.

Works on the raw header block (RFC 5322 §2.2, folded lines included) and only where the
keyword appears literally; a keyword hidden in an RFC 2047 encoded-word stays (the
caller logs that). Nothing but the Subject field changes, byte for byte.
"""

from __future__ import annotations

import re

_SUBJECT = re.compile(rb"^Subject:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", re.IGNORECASE | re.MULTILINE)


def strip_keywords(message: bytes, keywords: tuple[str, ...]) -> tuple[bytes, bool]:
    """(message with each keyword removed from its Subject, whether all were found)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[:end + 2]
    m = _SUBJECT.search(head)
    if m is None or not keywords:
        return message, not keywords
    field = m.group(0)
    name, _, value = field.partition(b":")
    found = True
    for keyword in keywords:
        pattern = re.compile(re.escape(keyword.encode("utf-8")), re.IGNORECASE)
        value, n = pattern.subn(b"", value)
        found = found and n > 0
    # Collapse what the removal left: a fold line left blank (which would end the
    # header block early: RFC 5322 §2.2.3 forbids a line of only white space there),
    # doubled blanks, blanks at the end.
    value = re.sub(rb"\r\n[ \t]*(?=\r\n|$)", b"", value)
    value = re.sub(rb"[ \t]{2,}", b" ", value).rstrip(b" \t")
    if not value.startswith(b" "):
        value = b" " + value
    new = name + b":" + value
    return message[:m.start()] + new + message[m.end():], found
