"""Removing policy subject keywords (e.g. "[encrypt]") from a message's Subject field.

Policy matches keywords in the decoded Subject (gateway/mime/rfc2047.py decode_words,
lower-cased), so this removes them from the same decoded text: literal, inside RFC 2047
encoded-words (Q or B, any charset the scanner decodes; adjacent words are one run,
§6.2), or spanning both. Works on the raw header block (RFC 5322 §2.2, CRLF line ends,
folded lines included) of every Subject field; nothing else changes, byte for byte.

The Subject is a sequence of atoms, each one character of the decoded text: a literal
character (a fold's CRLF travels with the whitespace after it) or a character of one
run's decoded text. Keywords are removed with a stack (linear, and what remains holds no
keyword: removing one cannot join two halves of another unnoticed); where a removal
left whitespace on both sides one is kept, at the start or end none. Literal atoms that
survive are written as they were; a run none of whose atoms changed is written as it
was; a changed run is written anew as UTF-8 encoded-words (Q or B, whichever is
shorter; §2: at most 75 characters each), lines folded at 78 (RFC 5322 §2.1.1) and never
leaving a line of only whitespace (§2.2.3: it would end the header block). Encoded-words
that do not decode (unknown charset, bad base64) are literal text here as in policy: a
keyword inside one is not found, and the caller logs that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.mime.rfc2047 import decode_run, decode_words, encode_words, runs
from gateway.mime.scanned import unfold

_SUBJECT = re.compile(rb"^Subject:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", re.IGNORECASE | re.MULTILINE)
_WSP = " \t\r\n"
_LINE = 78  # RFC 5322 §2.1.1: SHOULD be no more than 78 characters
_MIN_ROOM = 24  # an encoded-word of one 4-octet character, Q-encoded, fits in this
_NEXT_WS = re.compile(r"[ \t\r\n]")


def _lower(text: str) -> str:
    """text lower-cased as policy does (str.lower), one character for one (_low where
    str.lower would change the length)."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(map(_low, text))


def _low(c: str) -> str:
    """c lower-cased as str.lower does, kept when that would change its length (so a
    match maps back to whole atoms; only a few letters, e.g. U+0130, differ)."""
    low = c.lower()
    return low if len(low) == 1 else c


@dataclass(slots=True)
class _Run:
    """One run of adjacent encoded-words: value[start:end], its atoms atoms[first:last]."""

    start: int
    end: int
    first: int
    last: int
    lead: str = ""  # whitespace that must now live inside the run (see _separate)


class _Subject:
    """One Subject value (after the colon) as atoms."""

    def __init__(self, value: str) -> None:
        self.value = value
        body = value.strip(_WSP)
        self.lo = len(value) - len(value.lstrip(_WSP))  # prefix: kept as it is
        self.hi = self.lo + len(body)  # suffix from here: kept as it is
        self.chars: list[str] = []  # the decoded text, one atom per character
        self.raw: list[str] = []  # a literal atom's text as written ("" in a run)
        self.owner: list[int] = []  # index into self.runs, -1 for literal
        self.alive: list[bool] = []
        self.at: list[int] = []  # where a literal atom starts in value (a run's start)
        self.runs: list[_Run] = []
        pos = self.lo
        for words in runs(value):
            self._literal(pos, words[0].start)
            text = decode_run(words)
            n = len(text)
            run = _Run(words[0].start, words[-1].end, len(self.chars), len(self.chars) + n)
            self._atoms(list(text), [""] * n, len(self.runs), [run.start] * n)
            self.runs.append(run)
            pos = run.end
        self._literal(pos, self.hi)
        self.low = list(_lower("".join(self.chars)))  # as policy sees it (whole text)

    def _atoms(self, chars: list[str], raw: list[str], owner: int, at: list[int]) -> None:
        self.chars += chars
        self.raw += raw
        self.owner += [owner] * len(chars)
        self.alive += [True] * len(chars)
        self.at += at

    def _literal(self, pos: int, stop: int) -> None:
        """Atoms of value[pos:stop], literal text: one per character, a fold's CRLF
        joined to the whitespace after it."""
        v = self.value
        while pos < stop:
            fold = v.find("\r\n", pos, stop)
            end = stop if fold < 0 or fold + 2 >= stop else fold
            self._atoms(list(v[pos:end]), list(v[pos:end]), -1, list(range(pos, end)))
            if end == stop:
                break
            self._atoms([v[end + 2]], [v[end : end + 3]], -1, [end])
            pos = end + 3

    def living(self) -> list[int]:
        return [i for i, a in enumerate(self.alive) if a]

    def text(self) -> str:
        return "".join(self.chars[i] for i in self.living())

    def remove(self, keywords: list[str]) -> set[str]:
        """Remove every occurrence of the keywords (lower-case) from the text; the ones
        found. One stack for all: what a removal joins is seen as the next atom comes, so
        no keyword is left in the text (each is checked where its last atom was pushed,
        and nothing below a surviving atom changes later)."""
        by_last: dict[str, list[str]] = {}
        for k in keywords:
            if k:
                by_last.setdefault(k[-1], []).append(k)
        stack: list[int] = []
        low: list[str] = []
        found: set[str] = set()
        for i in self.living():
            stack.append(i)
            low.append(self.low[i])
            for k in by_last.get(low[-1], ()):
                m = len(k)
                if len(low) >= m and "".join(low[-m:]) == k:
                    for j in stack[-m:]:
                        self.alive[j] = False
                    del stack[-m:], low[-m:]
                    found.add(k)
                    break
        return found

    def tidy(self, before: list[int]) -> None:
        """Whitespace left on both sides of a removal (before: the atoms alive before
        it): keep one, a fold if any (lines keep their length), else a literal one (it
        separates an encoded-word from its neighbours); at either end of the text none."""
        now = self.living()
        if len(now) == len(before) or not now:
            return
        rank = {a: n for n, a in enumerate(before)}
        # seam g: something was removed between now[g - 1] and now[g] (g = 0: before
        # the first, g = len(now): after the last)
        seams = {g for g in range(1, len(now)) if rank[now[g]] - rank[now[g - 1]] > 1}
        if rank[now[0]] > 0:
            seams.add(0)
        if rank[now[-1]] < len(before) - 1:
            seams.add(len(now))
        a = 0
        while a < len(now):
            if not self.chars[now[a]].isspace():
                a += 1
                continue
            b = a
            while b < len(now) and self.chars[now[b]].isspace():
                b += 1
            if any(g in seams for g in range(a, b + 1)):
                stretch = now[a:b]
                literal = [i for i in stretch if self.owner[i] < 0]
                folds = [i for i in literal if len(self.raw[i]) > 1]
                keep = -1 if a == 0 or b == len(now) else (folds or literal or stretch)[0]
                for i in stretch:
                    if i != keep:
                        self.alive[i] = False
            a = b

    def _changed(self, run: _Run) -> bool:
        return bool(run.lead) or not all(self.alive[run.first:run.last])

    def _separate(self) -> None:
        """Two runs with only whitespace left between them would now be one run, and
        decoding drops that whitespace (§6.2): carry it inside the second run."""
        prev: _Run | None = None
        for run in self.runs:
            if not any(self.alive[run.first:run.last]):
                continue
            if prev is not None:
                between = [i for i in range(prev.last, run.first)
                           if self.alive[i] and self.owner[i] < 0]
                if between and all(self.chars[i].isspace() for i in between):
                    run.lead = "".join(self.chars[i] for i in between)
            prev = run

    def render(self, name_len: int) -> str:
        """The value written back; name_len: the field name and colon before it."""
        if not any(self.alive):  # nothing left: no prefix fold, no suffix, one space
            return " "
        self._separate()
        w = _Writer(name_len)
        w.add(self.value[: self.lo])
        dirty = False  # this line holds encoded-words written here
        i = 0
        r = 0
        while i < len(self.chars) or r < len(self.runs):  # an empty run may come last
            if r < len(self.runs) and self.runs[r].first == i:
                run = self.runs[r]
                r += 1
                i = run.last
                if not self._changed(run):
                    w.add(self.value[run.start : run.end])
                    continue
                text = run.lead + "".join(self.chars[j] for j in range(run.first, run.last)
                                          if self.alive[j])
                if text:
                    w.words(text)
                    dirty = True
                continue
            if self.alive[i]:
                piece = self.raw[i]
                if piece.startswith("\r\n"):
                    dirty = False
                elif (dirty and piece in (" ", "\t") and w.col + 1 + self._next_len(i) > _LINE
                      and self._solid_after(i)):
                    piece = "\r\n" + piece  # the encoded-words pushed what follows out
                    dirty = False
                w.add(piece)
            i += 1
        w.add(self.value[self.hi :])
        return w.text()

    def _solid_after(self, i: int) -> bool:
        """Whether what is written next after atom i is text (an encoded-word or a
        literal that is not whitespace): a fold before whitespace only would leave a
        line of only whitespace."""
        for j in range(i + 1, len(self.chars)):
            if self.alive[j]:
                return self.owner[j] >= 0 or self.raw[j][0] not in _WSP
        return False

    def _next_len(self, i: int) -> int:
        """Length of the literal token after atom i as written (up to the next
        whitespace in the original value: removals may have shortened it)."""
        start = self.at[i] + len(self.raw[i])
        m = _NEXT_WS.search(self.value, start)
        return (m.start() if m else len(self.value)) - start


class _Writer:
    """A field value being written, with the column and whether the line holds text."""

    def __init__(self, name_len: int) -> None:
        self.out: list[str] = []
        self.col = name_len
        self.solid = True  # the current line has more than whitespace ("Subject:")

    def add(self, piece: str) -> None:
        if not piece:
            return
        if "\n" in piece:
            tail = piece.rpartition("\n")[2]
            self.col, self.solid = len(tail), bool(tail.strip(" \t"))
        else:
            self.col += len(piece)
            self.solid = self.solid or bool(piece.strip(" \t"))
        self.out.append(piece)

    def words(self, text: str) -> None:
        """text as encoded-words, folded at 78 where whitespace allows."""
        room = _LINE - self.col
        last = self.out[-1] if self.out else ""
        if room < _MIN_ROOM and last[-1:] in (" ", "\t") and self.solid:
            # fold at the whitespace before the run (RFC 5322 §2.2.3); the line it
            # leaves still has text, so no line of only whitespace
            self.out[-1] = last[:-1] + "\r\n" + last[-1]
            self.col, self.solid, room = 1, False, _LINE - 1
        for n, word in enumerate(encode_words(text, max(room, _MIN_ROOM), _LINE - 3)):
            if n:
                self.add("\r\n " if self.col + 1 + len(word) > _LINE else " ")
            self.add(word)

    def text(self) -> str:
        return "".join(self.out)


def _strip_value(value: str, keywords: tuple[str, ...], name_len: int) -> tuple[str, set[str]]:
    """(value with keywords removed, the keywords found)."""
    wanted = [_lower(k) for k in keywords]
    seen = _lower(decode_words(unfold(value.encode("utf-8", "surrogateescape"))))
    if not any(k in seen for k in wanted):  # the common case: nothing to do
        return value, set()
    s = _Subject(value)
    found: set[str] = set()
    found |= {k for k in wanted if not k}  # "" is in every text
    while True:  # until tidying whitespace joins no keyword (one with a space in it)
        before = s.living()
        found |= s.remove(wanted)
        s.tidy(before)
        text = "".join(s.low[i] for i in s.living())
        if len(s.living()) == len(before) or not any(k and k in text for k in wanted):
            break
    if all(s.alive):  # nothing removed (only "" was "found")
        return value, found
    new = s.render(name_len)
    expected = s.text().strip(_WSP)
    if decode_words(unfold(new.encode("utf-8", "surrogateescape"))) != expected:
        # A literal "=?" the removal completed into an encoded-word, or the like: write
        # the whole text as encoded-words, which always decodes to exactly this.
        w = _Writer(name_len)
        w.add(" ")
        if expected:
            w.words(expected)
        new = w.text()
    return new, found


def strip_keywords(message: bytes, keywords: tuple[str, ...]) -> tuple[bytes, bool]:
    """(message with each keyword removed from its Subject fields, whether all were
    found). Keywords match case-insensitively in the decoded Subject, as policy does."""
    if not keywords:
        return message, True
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    pieces: list[bytes] = []
    last = 0
    found: set[str] = set()
    for m in _SUBJECT.finditer(head):
        field = m.group(0)
        name_len = field.index(b":") + 1
        value = field[name_len:].decode("utf-8", "surrogateescape")  # RFC 6532: UTF-8
        new, got = _strip_value(value, keywords, name_len)
        found |= got
        pieces += [message[last : m.start()], field[:name_len],
                   new.encode("utf-8", "surrogateescape")]
        last = m.end()
    if not pieces:
        return message, False
    pieces.append(message[last:])
    return b"".join(pieces), all(_lower(k) in found for k in keywords)
