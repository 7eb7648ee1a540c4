"""What the MIME scanner returns, and the one error it raises.

Both scanners (the pure-Python twin `gateway.mime._scan_py` and the native
`gateway._ext.mimescan`) build these same frozen values, so callers cannot tell which
one ran. A scanned entity is a set of offsets into the original buffer: header fields
(RFC 5322 §2.2), header block and body (RFC 2045/2046), children for multipart and
message/rfc822 entities; slices are memoryviews, never copies. Lookups, unfolding and
decoding happen lazily here, off the scanning hot path.

Errors map to RFC 3463 enhanced status codes: 5.6.0 for malformed or ambiguous
structure, 5.3.4 for limits, 5.6.1 for content the gateway cannot interpret.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.envelope import Reply

SMIME_NONE = "none"
SMIME_SIGNED = "signed"  # multipart/signed with a PKCS#7 signature (RFC 8551 §3.5.3)
SMIME_OPAQUE_SIGNED = "opaque-signed"  # application/pkcs7-mime; smime-type=signed-data
SMIME_ENVELOPED = "enveloped"  # smime-type=enveloped-data (RFC 8551 §3.3)
SMIME_AUTH_ENVELOPED = "auth-enveloped"  # smime-type=authEnveloped-data (RFC 8551 §3.4)
SMIME_COMPRESSED = "compressed"  # smime-type=compressed-data (RFC 8551 §3.6)
SMIME_CERTS_ONLY = "certs-only"  # smime-type=certs-only (RFC 8551 §3.7)
SMIME_UNKNOWN = "pkcs7-unknown"  # a PKCS#7 object whose kind only its DER can tell

_SMIME_TYPES = {
    "signed-data": SMIME_OPAQUE_SIGNED,
    "enveloped-data": SMIME_ENVELOPED,
    "authenveloped-data": SMIME_AUTH_ENVELOPED,
    "compressed-data": SMIME_COMPRESSED,
    "certs-only": SMIME_CERTS_ONLY,
}
_PKCS7_MIME = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
_PKCS7_SIGNATURE = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature"})


class MimeError(ValueError):
    """Malformed, ambiguous or over-limit input: an RFC 3463 status and a precise reason."""

    def __init__(self, status: str, reason: str, offset: int = -1) -> None:
        self.status = status
        self.reason = reason
        self.offset = offset  # octet offset in the scanned buffer, -1 when not one place
        where = f" at offset {offset}" if offset >= 0 else ""
        super().__init__(f"{status} {reason}{where}")

    @property
    def reply(self) -> Reply:
        """The SMTP reply this error becomes after DATA (RFC 5321 §4.2.5)."""
        return Reply(552 if self.status == "5.3.4" else 554, self.status, self.reason)

    def __reduce__(self) -> tuple[type[MimeError], tuple[str, str, int]]:
        return (MimeError, (self.status, self.reason, self.offset))


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """Bounds that keep a hostile message cheap; each breach is a MimeError."""

    max_header_bytes: int = 102_400  # one header block, as Postfix's header_size_limit
    max_header_count: int = 1_000  # fields in one header block
    max_depth: int = 50  # nesting of multipart and message/rfc822 entities
    max_parts: int = 2_000  # entities in the whole message, the top level included

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_header_count", "max_depth", "max_parts"):
            if getattr(self, name) < 1:
                raise ValueError(f"ScanLimits.{name} must be at least 1")
        # The scanners recurse once per level; this keeps both far from any stack limit.
        if self.max_depth > 100:
            raise ValueError("ScanLimits.max_depth must be at most 100")


DEFAULT_LIMITS = ScanLimits()


@dataclass(frozen=True, slots=True)
class Defect:
    """Something tolerated but not conformant, where it was, and how it was read."""

    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field: offsets of its name, the octet after the colon, and its end."""

    data: bytes = field(repr=False, compare=False)
    start: int
    colon: int
    end: int  # before the CRLF that ends the field

    @property
    def name(self) -> str:
        return self.data[self.start : self.colon].decode("ascii")

    @property
    def raw_value(self) -> memoryview:
        """The value as sent: leading space and folding line breaks included."""
        return memoryview(self.data)[self.colon + 1 : self.end]

    @property
    def value(self) -> str:
        """The unfolded value (RFC 5322 §2.2.3), outer whitespace stripped, not decoded."""
        return unfold(self.data[self.colon + 1 : self.end])

    @property
    def decoded(self) -> str:
        """The value with RFC 2047 encoded-words decoded."""
        from gateway.mime.rfc2047 import decode_words

        return decode_words(self.value)


def unfold(raw: bytes) -> str:
    """RFC 5322 §2.2.3 unfolding: drop the line breaks, keep the whitespace after them."""
    if b"\n" in raw:
        raw = raw.replace(b"\r\n", b"").replace(b"\n", b"")
    # RFC 6532 allows UTF-8 here; other 8-bit octets survive as surrogates.
    return raw.strip(b" \t").decode("utf-8", "surrogateescape")


class Part(NamedTuple):
    """One MIME entity (RFC 2045 §2.4) as offsets into the scanned buffer.

    A NamedTuple rather than a frozen dataclass because a scan builds one per entity and
    tuple construction is several times cheaper: the scanners call `tuple.__new__`.
    """

    data: bytes
    path: tuple[int, ...]  # () for the message, (1, 0) for the first child of the second
    start: int  # first octet of the header block
    header_end: int  # end of the last header field's line break, before the blank line
    body_start: int
    end: int
    fields: tuple[int, ...]  # (start, colon, end) for each header field, in order
    content_type: str  # lower-case "type/subtype"; the RFC 2045 §5.2 default if absent
    params: tuple[tuple[str, str], ...]  # names lower-case, RFC 2231 already applied
    transfer_encoding: str  # lower-case; "7bit" when absent (RFC 2045 §6.1)
    disposition: str  # lower-case disposition type; "" when absent (RFC 2183)
    disposition_params: tuple[tuple[str, str], ...]
    children: tuple[Part, ...]

    def __repr__(self) -> str:  # the buffer is left out: it may be megabytes
        return (f"Part(path={self.path!r}, content_type={self.content_type!r}, "
                f"start={self.start}, body_start={self.body_start}, end={self.end}, "
                f"children={len(self.children)})")

    # --- structure -----------------------------------------------------------------
    @property
    def maintype(self) -> str:
        return self.content_type.partition("/")[0]

    @property
    def subtype(self) -> str:
        return self.content_type.partition("/")[2]

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")

    @property
    def depth(self) -> int:
        return len(self.path)

    def walk(self) -> Iterator[Part]:
        """This entity and every entity inside it, depth first, in document order."""
        stack = [self]
        while stack:
            part = stack.pop()
            yield part
            stack.extend(reversed(part.children))

    # --- slices (no copies) ---------------------------------------------------------
    @property
    def raw(self) -> memoryview:
        return memoryview(self.data)[self.start : self.end]

    @property
    def header_block(self) -> memoryview:
        return memoryview(self.data)[self.start : self.header_end]

    @property
    def body(self) -> memoryview:
        return memoryview(self.data)[self.body_start : self.end]

    # --- parameters -------------------------------------------------------------------
    def param(self, name: str, default: str | None = None) -> str | None:
        """The first Content-Type parameter called name (case-insensitive)."""
        return _lookup(self.params, name.lower(), default)

    def disposition_param(self, name: str, default: str | None = None) -> str | None:
        return _lookup(self.disposition_params, name.lower(), default)

    @property
    def charset(self) -> str:
        """The charset parameter, lower-case; us-ascii by default (RFC 2046 §4.1.2)."""
        return (self.param("charset") or "us-ascii").strip().lower()

    @property
    def filename(self) -> str | None:
        """Disposition filename, else Content-Type name (RFC 2183 §2.3), 2047-decoded."""
        name = self.disposition_param("filename")
        if name is None:
            name = self.param("name")
        if name is None:
            return None
        from gateway.mime.rfc2047 import decode_words

        # Outlook and others put encoded-words in quoted parameters, which RFC 2047 §5
        # forbids but every client decodes.
        return decode_words(name) if "=?" in name else name

    @property
    def smime(self) -> str:
        """The S/MIME kind of this entity itself (RFC 8551 §3.9), SMIME_NONE if none."""
        ctype = self.content_type
        if ctype == "multipart/signed":
            protocol = (self.param("protocol") or "").strip().lower()
            return SMIME_SIGNED if protocol in _PKCS7_SIGNATURE else SMIME_NONE
        if ctype in _PKCS7_MIME:
            kind = (self.param("smime-type") or "").strip().lower()
            return _SMIME_TYPES.get(kind, SMIME_UNKNOWN)
        if ctype == "application/octet-stream":
            # RFC 8551 §3.2.1: some agents send application/octet-stream with a .p7m name
            name = (self.filename or "").lower()
            if name.endswith((".p7m", ".p7z", ".p7c")):
                return SMIME_UNKNOWN
        return SMIME_NONE

    # --- header fields ------------------------------------------------------------------
    def header_fields(self, name: str | None = None) -> list[HeaderField]:
        """Every field (called name, case-insensitive, when given), in order."""
        f = self.fields
        data = self.data
        out = []
        key = name.lower().encode("ascii", "replace") if name is not None else None
        for i in range(0, len(f), 3):
            start, colon = f[i], f[i + 1]
            if key is not None and (
                colon - start != len(key) or data[start:colon].lower() != key
            ):
                continue
            out.append(HeaderField(data, start, colon, f[i + 2]))
        return out

    def header(self, name: str) -> str | None:
        """The unfolded value of the first field called name, or None."""
        found = self.header_fields(name)
        return found[0].value if found else None

    def headers(self, name: str) -> list[str]:
        """The unfolded values of every field called name, in order."""
        return [h.value for h in self.header_fields(name)]

    def decoded_header(self, name: str) -> str | None:
        """The first field called name with RFC 2047 encoded-words decoded."""
        found = self.header_fields(name)
        return found[0].decoded if found else None


def _lookup(params: tuple[tuple[str, str], ...], key: str, default: str | None) -> str | None:
    for k, v in params:
        if k == key:
            return v
    return default


@dataclass(frozen=True, slots=True)
class SmimeFinding:
    """An S/MIME entity and where it is: its path in the tree."""

    kind: str
    path: tuple[int, ...]


class ScannedMessage(NamedTuple):
    """A scanned message: the buffer, its entity tree, and what was tolerated."""

    data: bytes
    root: Part
    defects: tuple[Defect, ...]

    def __repr__(self) -> str:
        return f"ScannedMessage(root={self.root!r}, defects={self.defects!r})"

    def walk(self) -> Iterator[Part]:
        return self.root.walk()

    @property
    def part_count(self) -> int:
        return sum(1 for _ in self.root.walk())

    def header(self, name: str) -> str | None:
        return self.root.header(name)

    def headers(self, name: str) -> list[str]:
        return self.root.headers(name)

    def decoded_header(self, name: str) -> str | None:
        return self.root.decoded_header(name)

    @property
    def smime_findings(self) -> tuple[SmimeFinding, ...]:
        """Every S/MIME entity at any level, outermost first in document order."""
        return tuple(
            SmimeFinding(part.smime, part.path)
            for part in self.root.walk()
            if part.smime != SMIME_NONE
        )

    @property
    def smime(self) -> str:
        """The kind of the first (outermost) S/MIME entity, SMIME_NONE if there is none."""
        found = self.smime_findings
        return found[0].kind if found else SMIME_NONE
