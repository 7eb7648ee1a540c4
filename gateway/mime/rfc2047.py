"""RFC 2047 encoded-words in header values, decoded for display and policy.

`decode_words` scans with str.find, never a backtracking regex: an encoded-word lies
inside one run of non-whitespace (§5) and is at most _MAX_WORD characters long here, so
each position is looked at a bounded number of times. Whitespace between two adjacent
encoded-words is dropped (§6.2); consecutive words in one charset are decoded together,
so a character split across two words survives. A word that does not decode (unknown
charset, bad base64) is left as it was, which is what §6.3 asks for.
"""

from __future__ import annotations

import binascii
import re

from gateway.mime.charsets import decode, text_codec

_MAX_WORD = 512  # §2 says 75; real mail exceeds it, nothing sane exceeds this
_WS = " \t\r\n"
_WS_RE = re.compile("[ \t\r\n]")  # one character class: no backtracking


def _word(value: str, j: int, stop: int) -> tuple[str, bytes, int] | None:
    """(charset, octets, end) of the encoded-word at value[j:] within value[:stop]."""
    limit = min(stop, j + _MAX_WORD)
    q1 = value.find("?", j + 2, limit)
    if q1 < 0 or q1 + 3 > limit or value[q1 + 2] != "?":
        return None
    charset = text_codec(value[j + 2 : q1].partition("*")[0])  # RFC 2231 §5 language
    encoding = value[q1 + 1]
    e = value.find("?=", q1 + 3, limit)
    if charset is None or e < 0:
        return None
    text = value[q1 + 3 : e]
    try:
        raw = text.encode("ascii")
        if encoding in "bB":
            octets = binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)
        elif encoding in "qQ":
            octets = binascii.a2b_qp(raw.replace(b"_", b" "))
        else:
            return None
    except (UnicodeEncodeError, binascii.Error):
        return None
    return charset, octets, e + 2


def decode_words(value: str) -> str:
    """value with its encoded-words decoded."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: tuple[str, bytearray] | None = None  # consecutive words in one charset
    gap_start = 0  # text since the last encoded-word (or the start)
    run_end = 0
    i = 0
    n = len(value)
    while i < n:
        j = value.find("=?", i)
        if j < 0:
            break
        # the run of non-whitespace that holds this candidate; found once per run
        if run_end <= j:
            ws = _WS_RE.search(value, j)
            run_end = ws.start() if ws else n
        found = _word(value, j, run_end)
        if found is None:
            i = j + 2
            continue
        charset, octets, end = found
        gap = value[gap_start:j]
        adjacent = pending is not None and not gap.strip(_WS)  # only whitespace: dropped (§6.2)
        if pending is not None and (not adjacent or pending[0] != charset):
            out.append(decode(bytes(pending[1]), pending[0]))
            pending = None
        if not adjacent:
            out.append(gap)
        if pending is None:
            pending = (charset, bytearray(octets))
        else:
            pending[1].extend(octets)
        gap_start = i = end
    if pending is not None:
        out.append(decode(bytes(pending[1]), pending[0]))
    out.append(value[gap_start:])
    return "".join(out)
