"""RFC 5322 message framing for S/MIME: which headers travel outside, which go inside.

RFC 8551 §3.1: only the MIME entity (Content-* headers and body) is signed or
encrypted; the routing headers (From, To, Subject, Date, Received, ...) stay on the outer
message. A header block is kept as its original lines (folding included) so nothing is
rewritten that a signature may cover. Input must use CRLF line ends (canonicalise first).
"""

from __future__ import annotations

import base64
import functools
import re
import struct
from dataclasses import dataclass

from gateway.smime.errors import SMIMEError

MAX_HEADER_BLOCK = 1024 * 1024  # a header block this large is not mail

# Headers that describe the MIME entity and therefore move inside the protected part.
_CONTENT_PREFIX = b"content-"
# RFC 5322 §3.6.8 field-name: printable ASCII but colon (checked per header on the hot path).
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


@dataclass(frozen=True, slots=True)
class Header:
    """One header field as it appeared: name, and the whole raw field (folded lines, CRLF)."""

    name: str  # as written
    raw: bytes  # "Name: value\r\n\tcontinued\r\n"

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def value(self) -> str:
        """Unfolded value, decoded as Latin-1 so any octet survives (no RFC 2047 decoding)."""
        _, _, v = self.raw.partition(b":")
        return v.replace(b"\r\n", b"").strip().decode("latin-1")


@dataclass(frozen=True, slots=True)
class Message:
    headers: tuple[Header, ...]
    body: bytes

    def get(self, name: str) -> Header | None:
        key = name.lower()
        return next((h for h in self.headers if h.key == key), None)

    def content_headers(self) -> tuple[Header, ...]:
        return tuple(h for h in self.headers if h.key.encode().startswith(_CONTENT_PREFIX))

    def routing_headers(self) -> tuple[Header, ...]:
        """Everything but Content-* and MIME-Version (re-added by whoever builds the outer)."""
        return tuple(h for h in self.headers
                     if not h.key.encode().startswith(_CONTENT_PREFIX) and h.key != "mime-version")

    def entity(self) -> bytes:
        """The MIME entity that is signed or encrypted: content headers, blank line, body."""
        return b"".join(h.raw for h in self.content_headers()) + b"\r\n" + self.body

    def to_bytes(self) -> bytes:
        return b"".join(h.raw for h in self.headers) + b"\r\n" + self.body


def parse_message(data: bytes) -> Message:
    """Split a CRLF message into header fields and body. A message with no blank line
    is all header; a body-less header block is fine."""
    end = data.find(b"\r\n\r\n")
    if data.startswith(b"\r\n"):
        head, body = b"", data[2:]
    elif end < 0:
        head, body = data if data.endswith(b"\r\n") or not data else data + b"\r\n", b""
    else:
        head, body = data[: end + 2], data[end + 4 :]
    if len(head) > MAX_HEADER_BLOCK:
        raise SMIMEError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
    headers: list[Header] = []
    for line in head.split(b"\r\n")[:-1] if head else []:
        if line[:1] in (b" ", b"\t"):
            if not headers:
                raise SMIMEError("header block starts with a continuation line")
            last = headers[-1]
            headers[-1] = Header(last.name, last.raw + line + b"\r\n")
            continue
        name, colon, _ = line.partition(b":")
        if not colon or _FIELD_NAME.fullmatch(name) is None:
            raise SMIMEError(f"malformed header line {line[:60]!r}")
        headers.append(Header(name.decode("ascii"), line + b"\r\n"))
    return Message(tuple(headers), body)


def header_field(name: str, value: str) -> Header:
    return Header(name, f"{name}: {value}\r\n".encode())


def build_message(outer: tuple[Header, ...] | list[Header], content: list[Header],
                  body: bytes) -> bytes:
    """Outer routing headers + MIME-Version + the new content headers + body."""
    parts = [h.raw for h in outer if h.key != "mime-version"]
    parts.append(b"MIME-Version: 1.0\r\n")
    parts += [h.raw for h in content]
    return b"".join(parts) + b"\r\n" + body


def base64_lines(data: bytes, width: int = 76) -> bytes:
    """Base64 in CRLF-terminated lines of at most width columns (RFC 2045 §6.8)."""
    encoded = base64.b64encode(data)
    if not encoded:
        return b""
    if width != _WIDTH:
        return b"\r\n".join([encoded[i : i + width]
                              for i in range(0, len(encoded), width)]) + b"\r\n"
    # Whole lines are cut by struct's C loop ("76s" repeated), not a Python slice per
    # line: the line breaking cost twice the base64 encoding itself (14 KB: 16 vs 5 us).
    size = len(encoded)
    lines: list[bytes] = []
    offset = 0
    while size - offset >= _BLOCK.size:
        lines += _BLOCK.unpack_from(encoded, offset)
        offset += _BLOCK.size
    lines += _lines_struct((size - offset) // _WIDTH).unpack_from(encoded, offset)
    offset += (size - offset) // _WIDTH * _WIDTH
    if offset < size:
        lines.append(encoded[offset:])
    return b"\r\n".join(lines) + b"\r\n"


_WIDTH = 76
_BLOCK = struct.Struct(f"{_WIDTH}s" * 256)  # 256 lines per call bounds the format's size


@functools.lru_cache(maxsize=256)  # counts 0..255: every one fits
def _lines_struct(count: int) -> struct.Struct:
    return struct.Struct(f"{_WIDTH}s" * count)


def decode_base64_body(body: bytes) -> bytes:
    """A base64 body, strictly: only the alphabet, padding, line breaks and blanks."""
    compact = body.translate(None, b"\r\n \t")  # one pass, not one per character kind
    try:
        return base64.b64decode(compact, validate=True)
    except ValueError as e:
        raise SMIMEError(f"bad base64 body: {e}") from None

