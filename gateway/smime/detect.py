"""What S/MIME protection a message already carries, outermost layer first.

Layers (RFC 8551 §3.2–§3.5): "signed" (multipart/signed with an application/pkcs7-signature
part), "opaque-signed" (application/pkcs7-mime signed-data), "enveloped", "auth-enveloped"
(RFC 5083), "compressed" (RFC 3274). Nesting is followed where it can be seen without a
key: the first part of multipart/signed, the content of opaque signed-data and of
compressed-data, and a message/rfc822 wrapper (RFC 8551 §3.1 header protection). An
application/pkcs7-mime without smime-type (older clients, RFC 8551 §3.2.2) or an
application/octet-stream named *.p7m is classified by its ContentInfo contentType, parsed
with asn1crypto. Attachments inside multipart/mixed are content, not protection.

Also owns the RFC 2045 §5.1 Content-Type parser the engine uses (type/subtype + params).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

from asn1crypto import cms

from gateway.smime.errors import SMIMEError
from gateway.smime.message import Message, decode_base64_body, parse_message

SIGNED = "signed"
OPAQUE_SIGNED = "opaque-signed"
ENVELOPED = "enveloped"
AUTH_ENVELOPED = "auth-enveloped"
COMPRESSED = "compressed"
ENCRYPTED_LAYERS = frozenset({ENVELOPED, AUTH_ENVELOPED})
SIGNED_LAYERS = frozenset({SIGNED, OPAQUE_SIGNED})
MAX_DEPTH = 8  # deeper nesting than this is not mail anyone sends; stop looking
MAX_DECOMPRESSED = 64 * 1024 * 1024

PKCS7_MIME = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
PKCS7_SIGNATURE = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature"})
SMIME_TYPES = {"signed-data": OPAQUE_SIGNED, "enveloped-data": ENVELOPED,
                "authenveloped-data": AUTH_ENVELOPED, "compressed-data": COMPRESSED}
_CONTENT_TYPES = {"signed_data": OPAQUE_SIGNED, "enveloped_data": ENVELOPED,
                  "authenticated_enveloped_data": AUTH_ENVELOPED,
                  "compressed_data": COMPRESSED}
_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')


@dataclass(frozen=True, slots=True)
class ContentType:
    mime_type: str  # lower case "type/subtype"
    params: dict[str, str]  # names lower case, values unquoted as written


def parse_content_type(value: str | None) -> ContentType:
    """RFC 2045 §5.1; a missing or unreadable header is text/plain (RFC 2045 §5.2)."""
    if value is None:
        return ContentType("text/plain", {})
    if len(value) > _MEMO_LONGEST:
        return _parse_content_type(value)
    # Detection, decryption and verification each read the same few fields of a
    # message: they are parsed once; every caller gets its own params dict to keep.
    ct = _memo_content_type(value)
    return ContentType(ct.mime_type, dict(ct.params))


_MEMO_LONGEST = 1000  # longer values (not from any mail client) are not kept


def _parse_content_type(value: str) -> ContentType:
    text = value.strip()
    head, _, rest = text.partition(";")
    mime_type = head.strip().lower()
    if "/" not in mime_type:
        return ContentType("text/plain", {})
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        name = rest[i:eq].strip().lower()
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            out: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(rest[i])
                i += 1
            i += 1
            val = "".join(out)
        else:
            start = i
            while i < n and rest[i] != ";" and rest[i] not in " \t":
                i += 1
            val = rest[start:i]
        if name and name not in params:
            params[name] = val
    return ContentType(mime_type, params)


_memo_content_type = functools.lru_cache(maxsize=256)(_parse_content_type)


def content_type_of(msg: Message) -> ContentType:
    h = msg.get("content-type")
    return parse_content_type(h.value if h else None)


def is_p7m(ct: ContentType, msg: Message) -> bool:
    """application/pkcs7-mime, or application/octet-stream carrying a *.p7m file."""
    if ct.mime_type in PKCS7_MIME:
        return True
    if ct.mime_type != "application/octet-stream":
        return False
    name = ct.params.get("name", "")
    disp = msg.get("content-disposition")
    if disp is not None:
        name = parse_content_type("x/x;" + disp.value.partition(";")[2]).params.get(
            "filename", name)
    return name.lower().endswith(".p7m")


def _cms_body(msg: Message) -> bytes:
    cte = msg.get("content-transfer-encoding")
    if cte is None or cte.value.lower() == "base64":
        return decode_base64_body(msg.body)
    return msg.body


def _load_cms(data: bytes) -> cms.ContentInfo:
    try:
        info = cms.ContentInfo.load(data)
        info["content_type"].dotted  # noqa: B018 -- forces the lazy parse here
    except Exception as e:  # asn1crypto raises many types; all mean "not CMS"
        raise SMIMEError(f"not a CMS ContentInfo: {e}") from None
    return info


def p7m_kind(ct: ContentType, msg: Message) -> tuple[str, cms.ContentInfo | None]:
    """The layer of a pkcs7-mime entity: from smime-type when given, else from the DER."""
    declared = SMIME_TYPES.get(ct.params.get("smime-type", "").lower())
    if declared in ENCRYPTED_LAYERS:
        return declared, None  # nothing inside can be seen without a key
    info = _load_cms(_cms_body(msg))
    found = _CONTENT_TYPES.get(info["content_type"].native)
    if found is None:
        raise SMIMEError(f"pkcs7-mime carries {info['content_type'].dotted}", "not-smime")
    return found, info


def _inner_of(kind: str, info: cms.ContentInfo) -> bytes | None:
    """The encapsulated entity of opaque signed-data or compressed-data, when present."""
    try:
        if kind == OPAQUE_SIGNED:
            content = info["content"]["encap_content_info"]["content"]
            return None if content.native is None else bytes(content.native)
        if kind == COMPRESSED:
            packed = info["content"]["encap_content_info"]["content"].native
            if packed is None:
                return None
            unpacker = zlib.decompressobj()
            data = unpacker.decompress(bytes(packed), MAX_DECOMPRESSED)
            return None if unpacker.unconsumed_tail else data
    except Exception:  # an unreadable inside is simply not looked into
        return None
    return None


def _first_part(msg: Message, boundary: str) -> bytes | None:
    """The first body part of a multipart (RFC 2046 §5.1.1), or None if unframed."""
    delimiter = b"--" + boundary.encode("latin-1")
    body = b"\r\n" + msg.body
    start = body.find(b"\r\n" + delimiter)
    if start < 0:
        return None
    start = body.find(b"\r\n", start + 2 + len(delimiter))
    end = body.find(b"\r\n" + delimiter, start)
    if start < 0 or end < 0:
        return None
    return body[start + 2 : end]


@dataclass(frozen=True, slots=True)
class Detection:
    layers: tuple[str, ...]  # outermost first; () for none

    @property
    def outer(self) -> str:
        return self.layers[0] if self.layers else "none"

    @property
    def encrypted(self) -> bool:
        return any(layer in ENCRYPTED_LAYERS for layer in self.layers)

    @property
    def signed(self) -> bool:
        return any(layer in SIGNED_LAYERS for layer in self.layers)


def top_layer(msg: Message) -> str:
    """The outermost layer only, from headers alone where they say it (cheap)."""
    ct = content_type_of(msg)
    if ct.mime_type == "multipart/signed":
        proto = ct.params.get("protocol", "").lower()
        return SIGNED if proto in PKCS7_SIGNATURE else "none"
    if is_p7m(ct, msg):
        try:
            return p7m_kind(ct, msg)[0]
        except SMIMEError:
            return "none"
    return "none"


def detect_message(msg: Message) -> Detection:
    layers: list[str] = []
    current: Message | None = msg
    for _ in range(MAX_DEPTH):
        if current is None:
            break
        ct = content_type_of(current)
        nxt: bytes | None = None
        if ct.mime_type == "multipart/signed":
            if ct.params.get("protocol", "").lower() not in PKCS7_SIGNATURE:
                break
            layers.append(SIGNED)
            nxt = _first_part(current, ct.params.get("boundary", ""))
        elif is_p7m(ct, current):
            try:
                kind, info = p7m_kind(ct, current)
            except SMIMEError:
                break
            layers.append(kind)
            nxt = _inner_of(kind, info) if info is not None else None
        elif ct.mime_type == "message/rfc822":
            nxt = current.body  # a header-protection wrapper is transparent
        else:
            break
        if nxt is None:
            break
        try:
            current = parse_message(nxt)
        except SMIMEError:
            break
    return Detection(tuple(layers))


def detect(message: bytes) -> Detection:
    """The S/MIME layers of a whole CRLF message. Never raises on odd content: what
    cannot be read is not protection ("none" beyond that point); only an unparseable
    header block raises SMIMEError."""
    return detect_message(parse_message(message))
