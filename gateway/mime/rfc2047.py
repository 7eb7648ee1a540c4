"""RFC 2047 encoded-words in header values, decoded for display and policy.

`words` scans with str.find, never a backtracking regex: an encoded-word lies inside one
run of non-whitespace (§5) and is at most _MAX_WORD characters long here, so each
position is looked at a bounded number of times. `runs` groups adjacent encoded-words:
whitespace between two of them is dropped (§6.2), and consecutive words in one charset
are decoded together (`decode_run`), so a character split across two words survives. A
word that does not decode (unknown charset, bad base64) is left as it was, which is what
§6.3 asks for. `decode_words` is the three together; gateway/outbound/subject.py edits
a Subject along the same runs, so what policy matched is what gets stripped.
"""

from __future__ import annotations

import binascii
import bisect
import itertools
import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

from gateway.mime.charsets import decode, text_codec

_MAX_WORD = 512  # §2 says 75; real mail exceeds it, nothing sane exceeds this
_WS = " \t\r\n"
_WS_RE = re.compile("[ \t\r\n]")  # one character class: no backtracking


class Word(NamedTuple):
    """One encoded-word that decodes: value[start:end], its codec and its octets."""

    start: int
    end: int
    charset: str
    octets: bytes


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


def words(value: str) -> Iterator[Word]:
    """The encoded-words in value that decode, in order."""
    if "=?" not in value:
        return
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
        yield Word(j, end, charset, octets)
        i = end


def runs(value: str) -> list[list[Word]]:
    """The encoded-words of value grouped into runs: words with only whitespace between
    them (§6.2), which decode as one text."""
    out: list[list[Word]] = []
    for w in words(value):
        if out and not value[out[-1][-1].end : w.start].strip(_WS):
            out[-1].append(w)
        else:
            out.append([w])
    return out


def decode_run(run: list[Word]) -> str:
    """The text of one run; consecutive words in one charset are decoded together."""
    parts: list[str] = []
    charset = run[0].charset
    octets = bytearray()
    for w in run:
        if w.charset != charset:
            parts.append(decode(bytes(octets), charset))
            charset, octets = w.charset, bytearray()
        octets.extend(w.octets)
    parts.append(decode(bytes(octets), charset))
    return "".join(parts)


def decode_words(value: str) -> str:
    """value with its encoded-words decoded."""
    if "=?" not in value:
        return value
    out: list[str] = []
    last = 0  # end of the previous run (or the start)
    for run in runs(value):
        out.append(value[last : run[0].start])
        out.append(decode_run(run))
        last = run[-1].end
    out.append(value[last:])
    return "".join(out)


# --- encoding ------------------------------------------------------------------------------------

_OVERHEAD = len("=?UTF-8?Q??=")
# §5 (3): the characters a Q-encoded word may carry as they are in any position; the rest
# (and "=", "?", "_") are written as =XX, a space as "_" (§4.2 (2)).
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q = tuple(chr(c) if c in _Q_SAFE else "_" if c == 0x20 else f"={c:02X}" for c in range(256))
_Q_LEN = tuple(map(len, _Q))


def _b64_len(n: int) -> int:
    return (n + 2) // 3 * 4


def _ends(cum: list[int], first: int, rest: int, payload: Callable[[int], int]) -> list[int]:
    """Where words end (character indices), greedily: cum[k] is the size of the
    characters before k, payload(limit) what a word of that length holds. A character
    larger than the room goes alone (only a `first` below what one needs)."""
    ends: list[int] = []
    a, n, limit = 0, len(cum) - 1, first
    while a < n:
        b = max(bisect.bisect_right(cum, cum[a] + payload(limit)) - 1, a + 1)
        ends.append(b)
        a, limit = b, rest
    return ends


def encode_words(text: str, first: int = 75, rest: int = 75) -> list[str]:
    """text as UTF-8 encoded-words, Q or B whichever is shorter in all: the first at most
    `first` characters long, the others at most `rest` (§2: 75). A character is never
    split across two words (§5), so `first` must leave room for one (24 always does)."""
    data = text.encode("utf-8", "replace")
    starts = [i for i, o in enumerate(data) if o & 0xC0 != 0x80]  # where characters start
    starts.append(len(data))
    q_cum = list(itertools.accumulate(map(_Q_LEN.__getitem__, data), initial=0))
    q_ends = _ends([q_cum[i] for i in starts], first, rest, lambda limit: limit - _OVERHEAD)
    b_ends = _ends(starts, first, rest, lambda limit: (limit - _OVERHEAD) // 4 * 3)
    q_len = q_cum[-1] + _OVERHEAD * len(q_ends)
    b_len = sum(_b64_len(starts[e] - starts[a]) + _OVERHEAD
                for a, e in zip([0, *b_ends], b_ends, strict=False))
    out: list[str] = []
    a = 0
    for e in q_ends if q_len <= b_len else b_ends:
        chunk = data[starts[a] : starts[e]]
        if q_len <= b_len:
            out.append("=?UTF-8?Q?" + "".join(map(_Q.__getitem__, chunk)) + "?=")
        else:
            out.append("=?UTF-8?B?" + binascii.b2a_base64(chunk, newline=False).decode() + "?=")
        a = e
    return out
