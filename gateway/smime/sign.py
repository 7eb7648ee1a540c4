"""S/MIME signing of a whole RFC 5322 message (RFC 8551 §3.5, RFC 1847 §2.1).

The MIME entity (Content-* headers and body, RFC 8551 §3.1) is put in canonical CRLF form
(gateway.mime.canon, RFC 8551 §3.1.1) and signed as it is: 8-bit octets are kept byte
for byte, so a signature the entity already carries stays valid. Output is either
multipart/signed with an application/pkcs7-signature part (RFC 8551 §3.5.3, micalg
naming the digest actually used, §3.5.3.2) or opaque application/pkcs7-mime;
smime-type=signed-data (§3.5.2). Routing headers stay on the outer message.
"""

from __future__ import annotations

import itertools
import os

from gateway.keys import Identity
from gateway.mime.canon import canonicalize
from gateway.smime.cms_signed import PreparedSigner, build_signed_data, prepare
from gateway.smime.detect import SIGNED_LAYERS, top_layer
from gateway.smime.errors import SMIMEError
from gateway.smime.message import Header, Message, base64_lines, parse_message

IF_SIGNED = ("sign", "skip", "refuse")

_OPAQUE_HEADERS = [
    Header("Content-Type", b'Content-Type: application/pkcs7-mime; smime-type=signed-data;'
                          b' name="smime.p7m"\r\n'),
    Header("Content-Transfer-Encoding", b"Content-Transfer-Encoding: base64\r\n"),
    Header("Content-Disposition", b'Content-Disposition: attachment; filename="smime.p7m"\r\n'),
]
_SIGNATURE_PART_HEADERS = (
    b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
    b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n")
MIME_VERSION = b"MIME-Version: 1.0\r\n"
_PREAMBLE = b"This is an S/MIME signed message\r\n\r\n"


def sign(message: bytes, signer: Identity, *, digest: str = "sha256", pss: bool = False,
         opaque: bool = False, if_signed: str = "sign") -> bytes:
    """message signed by signer; if_signed says what to do with already signed input:
    "sign" wraps it in another signature, "skip" returns it unchanged (canonical CRLF),
    "refuse" raises SMIMEError(code="already-protected")."""
    if if_signed not in IF_SIGNED:
        raise SMIMEError(f"if_signed must be one of {', '.join(IF_SIGNED)}", "unsupported")
    prepared = prepare(signer, digest, pss)
    data = canonicalize(message)
    msg = parse_message(data)
    if if_signed != "sign" and top_layer(msg) in SIGNED_LAYERS:
        if if_signed == "skip":
            return data
        raise SMIMEError("the message is already signed", "already-protected")
    outer, entity = _signed(msg, prepared, opaque)
    return b"".join((*outer, MIME_VERSION, *entity))


def signed_parts(message: bytes, signer: Identity, *, digest: str = "sha256",
                 pss: bool = False, opaque: bool = False) -> tuple[list[bytes], list[bytes]]:
    """sign() in pieces, for a caller that goes on to encrypt (gateway.smime.sign_encrypt):
    (the routing header fields, the signed MIME entity), so that the signed message is
    sign()'s output, b"".join((*outer, MIME_VERSION, *entity)), and is never parsed back."""
    return _signed(parse_message(canonicalize(message)), prepare(signer, digest, pss), opaque)


def _signed(msg: Message, prepared: PreparedSigner, opaque: bool
            ) -> tuple[list[bytes], list[bytes]]:
    # The entity as two pieces (content header block, body): hashed in turn and joined
    # into the output once, so a large body is copied as few times as possible.
    # RFC 8551 §3.1: Content-* headers go inside with the body, the rest stays outside;
    # one pass, the same split as Message.content_headers()/routing_headers().
    inner: list[bytes] = []
    outer: list[bytes] = []
    for h in msg.headers:
        key = h.name.lower()
        if key.startswith("content-"):
            inner.append(h.raw)
        elif key != "mime-version":
            outer.append(h.raw)
    inner.append(b"\r\n")
    entity = (b"".join(inner), msg.body)
    if opaque:
        cms = build_signed_data(prepared, entity, detached=False)
        return outer, [*(h.raw for h in _OPAQUE_HEADERS), b"\r\n", base64_lines(cms)]
    cms = build_signed_data(prepared, entity, detached=True)
    boundary = _boundary(entity)
    delimiter = b"--" + boundary
    content_type = (b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";'
                    b" micalg=" + prepared.micalg.encode() + b';\r\n\tboundary="' + boundary
                    + b'"\r\n\r\n')
    return outer, [content_type, _PREAMBLE, delimiter, b"\r\n", *entity, b"\r\n", delimiter,
                   b"\r\n", _SIGNATURE_PART_HEADERS, base64_lines(cms), delimiter, b"--\r\n"]


_BOUNDARY_PREFIX = b"----smimegate-" + os.urandom(8).hex().encode() + b"-"
_serial = itertools.count()


def _boundary(entity: tuple[bytes, bytes]) -> bytes:
    """A boundary that does not occur in entity (RFC 2046 §5.1.1): a random per-process
    prefix and a counter (no system call per message); checked, so it cannot collide."""
    while True:
        boundary = _BOUNDARY_PREFIX + str(next(_serial)).encode()
        if boundary not in entity[0] and boundary not in entity[1]:
            return boundary
