"""Pure-Python twin (and specification) of _native/mimescan.pyx: the MIME scanner.

One pass per entity over a bytes buffer, never building email.message objects:
- header block split (RFC 5322 §2.2): a field is a name of printable ASCII but ":",
  a colon, and lines continued while the next starts with SP or HTAB; the block ends at
  an empty line. A line that is not a field ends the block there (a Defect), as the
  `email` package reads it.
- Content-Type and Content-Disposition values (RFC 2045 §5.1, RFC 2183) with quoted
  strings, comments, and RFC 2231 sections (gateway.mime.rfc2231).
- multipart bodies (RFC 2046 §5.1.1): delimiters found with bytes.find, a delimiter
  being "--" boundary at the start of a line, optional "--", then only SP/HTAB up to
  the line end; the line break before it belongs to it. message/rfc822 and
  message/global bodies (RFC 2046 §5.2.1, RFC 6532 §3.7) are scanned as messages.
Each level reads its own region once and levels are bounded by ScanLimits.max_depth,
so the cost is linear in the input. Lines may end in CRLF or a bare LF.
"""

from __future__ import annotations

from gateway.mime.rfc2231 import combine
from gateway.mime.scanned import (
    DEFAULT_LIMITS,
    Defect,
    MimeError,
    Part,
    ScanLimits,
    ScannedMessage,
)

__all__ = ["DEFAULT_LIMITS", "MimeError", "ScanLimits", "ScannedMessage", "scan"]

# RFC 2045 §5.1 token: US-ASCII printable but SPACE, CTLs and tspecials.
_TOKEN = bytes(
    1 if 33 <= c <= 126 and chr(c) not in '()<>@,;:\\"/[]?=' else 0 for c in range(256)
)
_VALUE_STOP = frozenset(b';"( \t\r\n')
_CFWS = frozenset(b" \t\r\n")
_new = tuple.__new__  # builds the NamedTuple results without their Python-level __new__
_MAX_BOUNDARY = 200  # RFC 2046 says 70; longer ones occur, absurd ones are refused
_OPAQUE = frozenset({"7bit", "8bit", "binary"})  # RFC 2045 §6.4 for composite types


def scan(data: bytes, *, limits: ScanLimits = DEFAULT_LIMITS) -> ScannedMessage:
    """The entity tree of a message, or MimeError."""
    if not isinstance(data, bytes):
        raise TypeError("scan() needs bytes")
    state = _State(data, limits)
    root = state.entity(0, len(data), (), "text/plain", 0)
    return _new(ScannedMessage, (data, root, tuple(state.defects)))


class _State:
    __slots__ = ("boundaries", "data", "defects", "limits", "parts")

    def __init__(self, data: bytes, limits: ScanLimits) -> None:
        self.data = data
        self.limits = limits
        self.defects: list[Defect] = []
        self.parts = 0
        self.boundaries: list[bytes] = []  # delimiters of the multiparts being scanned

    def entity(self, start: int, end: int, path: tuple[int, ...], default_type: str,
               depth: int) -> Part:
        data = self.data
        limits = self.limits
        self.parts += 1
        if self.parts > limits.max_parts:
            raise MimeError("5.3.4", f"more than {limits.max_parts} MIME parts", start)
        if depth > limits.max_depth:
            raise MimeError("5.6.0", f"MIME nesting deeper than {limits.max_depth}", start)
        header_end, body_start, fields, spans = self.header_block(start, end)
        ctype, params, cte, disposition, disp_params = self.content_fields(spans, default_type)
        children: tuple[Part, ...] = ()
        if ctype.startswith("multipart/"):
            if cte not in _OPAQUE:
                self.defects.append(
                    Defect(start, "multipart entity with a transfer encoding (RFC 2045 §6.4)"))
            children = self.multipart(body_start, end, path, ctype, params, depth)
        elif ctype in ("message/rfc822", "message/global"):
            if cte in _OPAQUE:
                children = (self.entity(body_start, end, (*path, 0), "text/plain", depth + 1),)
            else:
                self.defects.append(
                    Defect(start, "encoded message/rfc822 is not scanned inside"))
        return _new(Part, (data, path, start, header_end, body_start, end, fields, ctype,
                           params, cte, disposition, disp_params, children))

    def header_block(self, start: int, end: int
                     ) -> tuple[int, int, tuple[int, ...], tuple[int, int, int, int, int, int]]:
        """(header_end, body_start, fields, spans): spans are the value offsets of
        Content-Type, Content-Transfer-Encoding and Content-Disposition, -1 if absent."""
        data = self.data
        limits = self.limits
        fields: list[int] = []
        ctype_at = cte_at = disp_at = -1
        ctype_end = cte_end = disp_end = 0
        pos = start
        while True:
            # state: at the start of a line inside the header block
            if pos >= end:
                header_end = body_start = end
                break
            c = data[pos]
            if c == 0x0A:
                header_end, body_start = pos, pos + 1
                break
            if c == 0x0D and pos + 1 < end and data[pos + 1] == 0x0A:
                header_end, body_start = pos, pos + 2
                break
            colon = pos
            while colon < end and _FIELD_NAME[data[colon]]:
                colon += 1
            if colon == pos or colon >= end or data[colon] != 0x3A:
                self.defects.append(
                    Defect(pos, "header line is not a field; the body starts there"))
                header_end = body_start = pos
                break
            # the field runs to the line break not followed by SP/HTAB (a fold)
            j = colon + 1
            while True:
                lf = data.find(b"\n", j, end)
                if lf < 0:
                    fend = nxt = end
                    break
                nxt = lf + 1
                if nxt < end and data[nxt] in (0x20, 0x09):
                    j = nxt
                    continue
                fend = lf - 1 if data[lf - 1] == 0x0D else lf
                break
            if nxt - start > limits.max_header_bytes:
                raise MimeError(
                    "5.3.4", f"header block longer than {limits.max_header_bytes} octets", start)
            if len(fields) >= 3 * limits.max_header_count:
                raise MimeError(
                    "5.3.4", f"more than {limits.max_header_count} header fields", pos)
            nul = data.find(b"\x00", pos, fend)
            if nul >= 0:
                raise MimeError("5.6.0", "NUL octet in a header field", nul)
            fields += (pos, colon, fend)
            # Two Content-Type (or -Transfer-Encoding) fields let a filter and a client
            # read different structures (RFC 2045 §3 allows one): refuse.
            name_len = colon - pos
            if name_len == 12 and data[pos:colon].lower() == b"content-type":
                if ctype_at >= 0:
                    raise MimeError("5.6.0", "two Content-Type fields in one entity", pos)
                ctype_at, ctype_end = colon + 1, fend
            elif name_len == 25 and data[pos:colon].lower() == b"content-transfer-encoding":
                if cte_at >= 0:
                    raise MimeError(
                        "5.6.0", "two Content-Transfer-Encoding fields in one entity", pos)
                cte_at, cte_end = colon + 1, fend
            elif (name_len == 19 and disp_at < 0
                  and data[pos:colon].lower() == b"content-disposition"):
                disp_at, disp_end = colon + 1, fend  # the first one counts
            pos = nxt
        spans = (ctype_at, ctype_end, cte_at, cte_end, disp_at, disp_end)
        return header_end, body_start, tuple(fields), spans

    def content_fields(self, spans: tuple[int, int, int, int, int, int], default_type: str
                       ) -> tuple[str, tuple[tuple[str, str], ...], str, str,
                                  tuple[tuple[str, str], ...]]:
        """(content type, its params, transfer encoding, disposition, its params)."""
        data = self.data
        ctype_at, ctype_end, cte_at, cte_end, disp_at, disp_end = spans
        ctype = default_type
        params: tuple[tuple[str, str], ...] = ()
        if ctype_at >= 0:
            parsed = _content_type(data, ctype_at, ctype_end)
            if parsed is None:
                self.defects.append(Defect(ctype_at, "invalid Content-Type; read as text/plain"))
                ctype = "text/plain"  # RFC 2045 §5.2
            else:
                ctype, params = parsed
        cte = "7bit"  # RFC 2045 §6.1
        if cte_at >= 0:
            i = _skip_cfws(data, cte_at, cte_end)
            k = _token_end(data, i, cte_end)
            if k > i:
                cte = data[i:k].decode("ascii").lower()
        disposition = ""
        disp_params: tuple[tuple[str, str], ...] = ()
        if disp_at >= 0:
            i = _skip_cfws(data, disp_at, disp_end)
            k = _token_end(data, i, disp_end)
            disposition = data[i:k].decode("ascii").lower()
            disp_params = _params(data, k, disp_end)
        return ctype, params, cte, disposition, disp_params

    def multipart(self, start: int, end: int, path: tuple[int, ...], ctype: str,
                  params: tuple[tuple[str, str], ...], depth: int) -> tuple[Part, ...]:
        data = self.data
        boundary = None
        for name, value in params:
            if name == "boundary":
                if boundary is not None:
                    raise MimeError("5.6.0", f"two boundary parameters in {ctype}", start)
                boundary = value
        if not boundary:
            raise MimeError("5.6.0", f"{ctype} without a boundary parameter", start)
        dash = b"--" + boundary.encode("utf-8", "surrogateescape")
        if len(dash) > _MAX_BOUNDARY + 2:
            raise MimeError("5.6.0", f"boundary longer than {_MAX_BOUNDARY} octets", start)
        # An inner delimiter equal to an outer one would cut the outer entity in two
        # places at once (RFC 2046 §5.1.2): refuse rather than guess.
        if dash in self.boundaries:
            raise MimeError("5.6.0", "a nested multipart reuses an outer boundary", start)
        default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        found = _delimiter(data, dash, start, start, end)
        if found is None:
            raise MimeError("5.6.0", f"no delimiter line for the boundary of {ctype}", start)
        at, close, after = found
        if close:
            raise MimeError("5.6.0", f"{ctype} has no body part", at)
        self.boundaries.append(dash)
        children: list[Part] = []
        part_start = after
        while True:
            found = _delimiter(data, dash, start, part_start, end)
            if found is None:
                self.defects.append(Defect(end, f"{ctype} lacks its close delimiter"))
                # the last line break is taken as the missing delimiter's, as `email` does
                part_end = end
                if part_end > part_start and data[part_end - 1] == 0x0A:
                    part_end -= 1
                    if part_end > part_start and data[part_end - 1] == 0x0D:
                        part_end -= 1
            else:
                at, close, after = found
                part_end = at
                if at > part_start:  # the line break before "--" belongs to the delimiter
                    part_end = at - 2 if at - 2 >= part_start and data[at - 2] == 0x0D else at - 1
            children.append(self.entity(part_start, part_end, (*path, len(children)),
                                        default, depth + 1))
            if found is None or close:
                self.boundaries.pop()
                return tuple(children)
            part_start = after


def _delimiter(data: bytes, dash: bytes, region: int, pos: int,
               end: int) -> tuple[int, bool, int] | None:
    """The next delimiter line at or after pos: (offset of "--", is close, after line)."""
    n = len(dash)
    while True:
        at = data.find(dash, pos, end)
        if at < 0:
            return None
        pos = at + 1
        if at != region and data[at - 1] != 0x0A:
            continue  # not at the start of a line
        k = at + n
        close = k + 1 < end and data[k] == 0x2D and data[k + 1] == 0x2D
        if close:
            k += 2
        while k < end and data[k] in (0x20, 0x09):
            k += 1
        if k >= end:
            return at, close, end
        if data[k] == 0x0A:
            return at, close, k + 1
        if data[k] == 0x0D and k + 1 < end and data[k + 1] == 0x0A:
            return at, close, k + 2


# Header field names: printable US-ASCII except ":" (RFC 5322 §3.6.8).
_FIELD_NAME = bytes(1 if 33 <= c <= 126 and c != 0x3A else 0 for c in range(256))


def _token_end(data: bytes, i: int, end: int) -> int:
    while i < end and _TOKEN[data[i]]:
        i += 1
    return i


def _skip_cfws(data: bytes, i: int, end: int) -> int:
    """Past whitespace, line breaks of folds, and (nested) comments (RFC 5322 §3.2.2)."""
    while i < end:
        c = data[i]
        if c in _CFWS:
            i += 1
        elif c == 0x28:
            depth = 0
            while i < end:
                c = data[i]
                if c == 0x5C:
                    i += 2
                    continue
                if c == 0x28:
                    depth += 1
                elif c == 0x29:
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i = min(i + 1, end)
        else:
            break
    return i


def _content_type(data: bytes, i: int, end: int) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    t = _skip_cfws(data, i, end)
    type_end = _token_end(data, t, end)
    i = _skip_cfws(data, type_end, end)
    if type_end == t or i >= end or data[i] != 0x2F:
        return None
    s = _skip_cfws(data, i + 1, end)
    i = _token_end(data, s, end)
    if i == s:
        return None
    ctype = (data[t:type_end] + b"/" + data[s:i]).decode("ascii").lower()
    return ctype, _params(data, i, end)


def _params(data: bytes, i: int, end: int) -> tuple[tuple[str, str], ...]:
    """`;`-separated attribute=value pairs; anything unreadable is skipped to the next `;`."""
    out: list[tuple[str, str]] = []
    starred = False
    while True:
        i = _skip_cfws(data, i, end)
        if i >= end:
            break
        if data[i] != 0x3B:
            semi = data.find(b";", i, end)
            if semi < 0:
                break
            i = semi
        a = _skip_cfws(data, i + 1, end)
        i = _token_end(data, a, end)
        if i == a:
            continue
        name = data[a:i].decode("ascii").lower()
        i = _skip_cfws(data, i, end)
        if i >= end or data[i] != 0x3D:
            continue
        i = _skip_cfws(data, i + 1, end)
        if i < end and data[i] == 0x22:
            value = bytearray()
            i += 1
            while i < end:
                c = data[i]
                if c == 0x22:
                    i += 1
                    break
                if c == 0x5C and i + 1 < end:
                    value.append(data[i + 1])
                    i += 2
                    continue
                if c != 0x0D and c != 0x0A:
                    value.append(c)
                i += 1
            text = value.decode("utf-8", "surrogateescape")
        else:
            v = i
            while i < end and data[i] not in _VALUE_STOP:
                i += 1
            text = data[v:i].decode("utf-8", "surrogateescape")
        if "*" in name:
            starred = True
        out.append((name, text))
    return combine(out) if starred else tuple(out)
