"""encrypt(): a whole RFC 5322 message in, the same message S/MIME-encrypted out.

RFC 8551 §3.3: the MIME entity (Content-* headers and body) is encrypted; routing headers
(From, To, Subject, Date, ...) stay on the outer message. With protect_headers the whole
message is encrypted as a message/rfc822 entity (RFC 8551 §3.1), so the inner copy of
the headers is confidential and authoritative. The result is application/pkcs7-mime,
smime-type enveloped-data (CBC) or authEnveloped-data (GCM, RFC 5083 §4 / RFC 8551
§3.3), base64 in CRLF lines of at most 76 columns (RFC 2045 §6.8).

Input already encrypted (gateway.smime.detect) is returned unchanged (if_encrypted="skip")
or refused with SMIMEError code "already-protected" (if_encrypted="refuse").
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from gateway.smime.cms_enveloped import CIPHERS, build_envelope
from gateway.smime.detect import ENCRYPTED_LAYERS, top_layer
from gateway.smime.errors import SMIMEError
from gateway.smime.message import Header, base64_lines, parse_message

IF_ENCRYPTED = ("skip", "refuse")

_DISPOSITION = Header("Content-Disposition",
                      b"Content-Disposition: attachment; filename=smime.p7m\r\n")
_CTE = Header("Content-Transfer-Encoding", b"Content-Transfer-Encoding: base64\r\n")
_TYPE_CBC = Header("Content-Type", b"Content-Type: application/pkcs7-mime; "
                   b"smime-type=enveloped-data; name=smime.p7m\r\n")
_TYPE_GCM = Header("Content-Type", b"Content-Type: application/pkcs7-mime; "
                   b"smime-type=authEnveloped-data; name=smime.p7m\r\n")
# RFC 8551 §3.1 header protection: the whole message as the protected entity.
# "forwarded=no" marks it as a wrapper, not a forwarded message (the convention of the
# IETF LAMPS header-protection work for RFC 8551 wrapping).
WRAPPER = b"Content-Type: message/rfc822; forwarded=no\r\n\r\n"
_MIME_VERSION = b"MIME-Version: 1.0\r\n"


def encrypt(message: bytes, recipients: Sequence[x509.Certificate], *,
            cipher: str = "aes128-gcm", oaep: bool = False, protect_headers: bool = False,
            if_encrypted: str = "skip") -> bytes:
    """Encrypt a CRLF message to every certificate in recipients (RSA or EC P-256/P-384).

    cipher: "aes128-gcm" | "aes256-gcm" (AuthEnvelopedData) | "aes128-cbc" | "aes256-cbc"
    (EnvelopedData). oaep selects RSAES-OAEP-SHA256 over PKCS#1 v1.5 for RSA recipients.
    """
    if if_encrypted not in IF_ENCRYPTED:
        raise SMIMEError(f"if_encrypted must be one of {IF_ENCRYPTED}, not {if_encrypted!r}",
                         "unsupported")
    if cipher not in CIPHERS:
        raise SMIMEError(f"unknown cipher {cipher!r}; use one of {', '.join(CIPHERS)}",
                         "unsupported")
    msg = parse_message(message)
    layer = top_layer(msg)
    if layer in ENCRYPTED_LAYERS:
        if if_encrypted == "skip":
            return message
        raise SMIMEError(f"the message is already {layer}", "already-protected")
    inner = WRAPPER + message if protect_headers else msg.entity()
    return encrypt_entity([h.raw for h in msg.routing_headers()], inner, recipients,
                          cipher=cipher, oaep=oaep)


def encrypt_entity(outer: Sequence[bytes], inner: bytes,
                   recipients: Sequence[x509.Certificate], *, cipher: str = "aes128-gcm",
                   oaep: bool = False) -> bytes:
    """The encrypted message from its parts, nothing parsed: outer, the routing header
    fields (raw, CRLF; no Content-* nor MIME-Version) and inner, what is encrypted (the
    MIME entity, or WRAPPER + the whole message for header protection)."""
    envelope = build_envelope(inner, recipients, cipher=cipher, oaep=oaep)
    content_type = _TYPE_GCM if CIPHERS[cipher][2] else _TYPE_CBC
    return b"".join((*outer, _MIME_VERSION, content_type.raw, _DISPOSITION.raw, _CTE.raw,
                     b"\r\n", base64_lines(envelope)))
