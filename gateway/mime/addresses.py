"""Mailbox addresses from From, Sender, Reply-To, To and Cc (RFC 5322 §3.4).

A small lexer (atoms, quoted strings, domain literals, specials; comments skipped, RFC
5322 §3.2.2) and a recursive-descent reader of address-list with groups (§3.4) and
quoted local parts (§3.4.1). UTF-8 in atoms is allowed (RFC 6532 §3.2). Display names
have their RFC 2047 encoded-words decoded. One pass over the value: linear time.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.mime.rfc2047 import decode_words
from gateway.mime.scanned import MimeError, Part

_SPECIALS = frozenset("()<>[]:;@\\,\"")
_WS = frozenset(" \t\r\n")
_ATOM, _QUOTED, _LITERAL, _SPECIAL = range(4)


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox: display name, local part, domain, and the group it was listed in."""

    display_name: str
    local_part: str
    domain: str
    group: str | None = None

    @property
    def addr_spec(self) -> str:
        """local@domain, with the local part quoted when it is not a dot-atom."""
        local = self.local_part
        if not _is_dot_atom(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}"


def _is_dot_atom(text: str) -> bool:
    return bool(text) and all(
        atom and not any(c in _SPECIALS or c in _WS or c == "." for c in atom)
        for atom in text.split(".")
    )


def _lex(value: str) -> list[tuple[int, str]]:
    tokens: list[tuple[int, str]] = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c in _WS:
            i += 1
        elif c == "(":
            depth = 0
            while i < n:
                c = value[i]
                if c == "\\":
                    i += 2
                    continue
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
        elif c == '"':
            out = []
            i += 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(value[i])
                i += 1
            if i >= n:
                raise MimeError("5.6.0", f"unterminated quoted string in address {value!r}")
            i += 1
            tokens.append((_QUOTED, "".join(out)))
        elif c == "[":
            end = value.find("]", i)
            if end < 0:
                raise MimeError("5.6.0", f"unterminated domain literal in address {value!r}")
            tokens.append((_LITERAL, value[i : end + 1]))
            i = end + 1
        elif c in _SPECIALS or c == ")":
            tokens.append((_SPECIAL, c))
            i += 1
        else:
            start = i
            while i < n and value[i] not in _SPECIALS and value[i] not in _WS:
                i += 1
            tokens.append((_ATOM, value[start:i]))
    return tokens


class _Reader:
    def __init__(self, value: str) -> None:
        self.value = value
        self.tokens = _lex(value)
        self.i = 0

    def fail(self, what: str) -> MimeError:
        return MimeError("5.6.0", f"{what} in address list {self.value!r}")

    def peek(self) -> tuple[int, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def special(self, char: str) -> bool:
        tok = self.peek()
        if tok is not None and tok == (_SPECIAL, char):
            self.i += 1
            return True
        return False

    def words(self) -> list[tuple[int, str]]:
        out = []
        while (tok := self.peek()) is not None and tok[0] in (_ATOM, _QUOTED):
            out.append(tok)
            self.i += 1
        return out

    def addresses(self) -> tuple[Address, ...]:
        out: list[Address] = []
        while self.peek() is not None:
            if self.special(","):
                continue  # RFC 5322 §4.4 obs-addr-list allows empty elements
            start = self.i
            phrase = self.words()
            if phrase and self.special(":"):
                group = _phrase(phrase)
                while not self.special(";"):
                    if self.peek() is None:
                        break  # a group without its ";" at the end: read as closed
                    if self.special(","):
                        continue
                    out.append(self.mailbox(group))
            else:
                self.i = start
                out.append(self.mailbox(None))
            tok = self.peek()
            if tok is not None and tok != (_SPECIAL, ","):
                raise self.fail(f"unexpected {tok[1]!r}")
        return tuple(out)

    def mailbox(self, group: str | None) -> Address:
        start = self.i
        phrase = self.words()
        if self.special("<"):
            local, domain = self.addr_spec()
            if not self.special(">"):
                raise self.fail("missing '>'")
            return Address(_phrase(phrase), local, domain, group)
        self.i = start
        local, domain = self.addr_spec()
        return Address("", local, domain, group)

    def addr_spec(self) -> tuple[str, str]:
        local = self.dotted(allow_quoted=True)
        if not local:
            raise self.fail("missing local part")
        if not self.special("@"):
            raise self.fail(f"no '@' after {local!r}")
        tok = self.peek()
        if tok is not None and tok[0] == _LITERAL:
            self.i += 1
            return local, tok[1]
        domain = self.dotted(allow_quoted=False)
        if not domain:
            raise self.fail("missing domain")
        return local, domain

    def dotted(self, *, allow_quoted: bool) -> str:
        """A dot-atom (atoms carry their dots), or a quoted string for a local part."""
        tok = self.peek()
        if tok is None:
            return ""
        if tok[0] == _QUOTED and allow_quoted:
            self.i += 1
            return tok[1]
        parts = []
        while (tok := self.peek()) is not None and tok[0] == _ATOM:
            parts.append(tok[1])
            self.i += 1
        return "".join(parts)


def _phrase(words: list[tuple[int, str]]) -> str:
    return decode_words(" ".join(text for _, text in words))


def parse_addresses(value: str) -> tuple[Address, ...]:
    """Every mailbox in an address-list value, groups flattened (group name kept)."""
    return _Reader(value).addresses()


def addresses(part: Part, *names: str) -> tuple[Address, ...]:
    """The mailboxes of every field called one of names, in field order."""
    if not names:
        names = ("from", "sender", "reply-to", "to", "cc")
    wanted = {name.lower() for name in names}
    out: list[Address] = []
    for field in part.header_fields():
        if field.name.lower() in wanted:
            out.extend(parse_addresses(field.value))
    return tuple(out)
