"""RFC 2231 parameter value continuations, charsets and languages.

Both scanners call `combine` only when a parameter name contains "*", which is rare, so
this stays pure Python. `name*=charset'lang'%XX..` is an encoded value (§4);
`name*0=..; name*1=..` are continuations (§3), and `name*0*=..` mixes both (§4.1).
"""

from __future__ import annotations

from gateway.mime.charsets import decode, text_codec

_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_SECTIONS = 1000  # RFC 2231 sets no bound; past this the parameter is garbage


def _percent_decode(value: bytes) -> bytes:
    """%XX escapes decoded; a % not followed by two hex digits is kept as it is."""
    if b"%" not in value:
        return value
    out = bytearray()
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == 0x25 and i + 2 < n and value[i + 1] in _HEX and value[i + 2] in _HEX:
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _decode(raw: bytes, charset: str) -> str:
    # an unknown charset: read it as the most likely one; bad octets are shown, not fatal
    return decode(raw, text_codec(charset) or "utf-8")


def combine(params: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Parameters (names lower-case, values as scanned) with RFC 2231 sections merged.

    A merged parameter takes the place of its first section; an extended value wins
    over a plain parameter of the same name (§4: the plain one is a fallback for old
    agents), which is dropped. Sections stop at the first missing number (§3). Other
    parameters, duplicates included, stay as and where they were.
    """
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    keyed: list[tuple[str, str, bool]] = []  # (name, value, is_section)
    for name, value in params:
        if "*" not in name:
            keyed.append((name, value, False))
            continue
        base, _, rest = name.partition("*")
        encoded = rest.endswith("*") or rest == ""
        number_text = rest.rstrip("*")
        if rest == "":
            number = 0
        elif number_text.isdigit() and number_text.isascii() and len(number_text) <= 4:
            number = int(number_text)
        else:
            continue  # "a*x": not RFC 2231; dropped as unparseable
        if number >= _MAX_SECTIONS:
            continue
        sections.setdefault(base, {}).setdefault(number, (value, encoded))
        keyed.append((base, "", True))
    out: list[tuple[str, str]] = []
    merged: set[str] = set()
    for name, value, is_section in keyed:
        if name in sections:
            if is_section and name not in merged:
                merged.add(name)
                out.append((name, _merge(sections[name])))
            continue
        out.append((name, value))
    return tuple(out)


def _merge(parts: dict[int, tuple[str, bool]]) -> str:
    raw = bytearray()
    charset = ""
    number = 0
    while number in parts:
        value, encoded = parts[number]
        octets = value.encode("utf-8", "surrogateescape")
        if encoded:
            if number == 0:
                # charset'language'value; a value without the two quotes is taken as is
                first = octets.find(b"'")
                second = octets.find(b"'", first + 1) if first >= 0 else -1
                if second >= 0:
                    charset = octets[:first].decode("ascii", "replace").strip().lower()
                    octets = octets[second + 1 :]
            raw += _percent_decode(octets)
        else:
            raw += octets
        number += 1
    if charset:
        return _decode(bytes(raw), charset)
    return bytes(raw).decode("utf-8", "surrogateescape")
