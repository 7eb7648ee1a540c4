"""Pure-Python twin (and specification) of _native/canon.pyx.

Canonical form for signing (RFC 8551 §3.1.1, RFC 5652 §5.4): every line ends in CRLF.
A bare LF becomes CRLF; an existing CRLF and a lone CR are left alone, so the bytes
that were already canonical are kept exactly, 8-bit octets included.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ContentFacts:
    """What a signer must know about an entity before it signs it."""

    has_8bit: bool  # an octet >= 0x80: needs 8BITMIME or a transfer encoding
    has_nul: bool  # a NUL octet: binary, cannot travel as 8bit text (RFC 2045 §2.8)
    has_bare_lf: bool  # a LF without CR before it: not canonical yet
    has_bare_cr: bool  # a CR without LF after it: binary by RFC 2045's definition
    max_line_length: int  # octets in the longest line, CRLF excluded
    trailing_whitespace: bool  # a line ending in space or tab: fragile across relays
    from_line: bool  # a line starting "From ": some agents rewrite it to ">From "


def canonicalize(data: bytes) -> bytes:
    """data with every bare LF turned into CRLF."""
    if b"\n" not in data:
        return data
    out = bytearray()
    start = 0
    while True:
        lf = data.find(b"\n", start)
        if lf < 0:
            out += data[start:]
            return bytes(out)
        if lf > 0 and data[lf - 1] == 0x0D:
            out += data[start : lf + 1]
        else:
            out += data[start:lf]
            out += b"\r\n"
        start = lf + 1


def content_facts(data: bytes) -> ContentFacts:
    """The ContentFacts of data, in one pass over its lines."""
    has_bare_lf = False
    has_bare_cr = False
    max_len = 0
    trailing_ws = False
    from_line = False
    pos = 0
    n = len(data)
    while pos < n:
        lf = data.find(b"\n", pos)
        end = n if lf < 0 else lf
        line_end = end
        if lf >= 0:
            if end > pos and data[end - 1] == 0x0D:
                line_end = end - 1
            else:
                has_bare_lf = True
        line = data[pos:line_end]
        if b"\r" in line:
            has_bare_cr = True
        max_len = max(max_len, len(line))
        if line and line[-1] in (0x20, 0x09):
            trailing_ws = True
        if line.startswith(b"From "):
            from_line = True
        if lf < 0:
            break
        pos = lf + 1
    return ContentFacts(
        has_8bit=any(b >= 0x80 for b in data) if not data.isascii() else False,
        has_nul=b"\x00" in data,
        has_bare_lf=has_bare_lf,
        has_bare_cr=has_bare_cr,
        max_line_length=max_len,
        trailing_whitespace=trailing_ws,
        from_line=from_line,
    )
