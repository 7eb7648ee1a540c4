"""decrypt(): an S/MIME-encrypted RFC 5322 message in, the plaintext message out.

Reads application/pkcs7-mime enveloped-data (RFC 5652 §6, RFC 8551 §3.3) and
authEnveloped-data (RFC 5083), DER or indefinite-length BER, base64 or binary transfer
encoding. Picks the RecipientInfo naming one of our identities (issuerAndSerialNumber or
subjectKeyIdentifier, for key transport and key agreement alike) and recovers the key
(gateway.smime.unwrap, which documents the Bleichenbacher defence). The result is the
outer routing headers followed by the decrypted entity's headers and body; if the
entity is a message/rfc822 wrapper (RFC 8551 §3.1 header protection), the wrapped
message itself is the result.

Errors (SMIMEError codes): "not-smime" (no encrypted entity at the top), "malformed",
"unsupported", "no-recipient" (no RecipientInfo for any of our keys), "decrypt-failed"
(a key matched but the tag, padding or content is wrong).
"""

from __future__ import annotations

from asn1crypto import x509 as asn1_x509

from gateway.keys.identity import Identity, KeyRing
from gateway.smime.cms_open import Envelope, KeyAgree, KeyTrans, decrypt_content
from gateway.smime.cms_open_fast import parse_envelope
from gateway.smime.detect import (
    ENCRYPTED_LAYERS,
    SMIME_TYPES,
    content_type_of,
    is_p7m,
    parse_content_type,
)
from gateway.smime.errors import SMIMEError
from gateway.smime.message import (
    MAX_HEADER_BLOCK,
    Message,
    build_message,
    decode_base64_body,
    header_field,
    parse_message,
)
from gateway.smime.unwrap import unwrap_key_agree, unwrap_key_trans

_MIME_VERSION = header_field("MIME-Version", "1.0")  # what build_message writes


def _find_identity(ri: KeyTrans | KeyAgree, keys: KeyRing) -> Identity | None:
    if ri.ski is not None:
        return keys.by_ski(ri.ski)
    if ri.issuer is None or ri.serial is None:
        return None
    found = keys.by_issuer_serial(ri.issuer, ri.serial)
    if found is not None:
        return found
    # The sender may have re-encoded the issuer Name (e.g. another string type): compare
    # the RFC 5280 §7.1 normalised forms asn1crypto implements. Only for our certificates
    # with that serial: a recipient that is someone else's (most of them, in mail to many
    # organisations) costs an integer comparison per identity, no Name parsing.
    same_serial = [i for i in keys if i.certificate.serial_number == ri.serial]
    if not same_serial:
        return None
    try:
        wanted = asn1_x509.Name.load(ri.issuer)
        for ident in same_serial:
            if asn1_x509.Name.load(ident.certificate.issuer.public_bytes()) == wanted:
                return ident
    except Exception:  # an unreadable issuer simply matches nothing
        return None
    return None


def _envelope_bytes(msg: Message) -> bytes:
    ct = content_type_of(msg)
    if not is_p7m(ct, msg):
        raise SMIMEError(f"the message is {ct.mime_type}, not application/pkcs7-mime",
                         "not-smime")
    declared = SMIME_TYPES.get(ct.params.get("smime-type", "").lower())
    if declared is not None and declared not in ENCRYPTED_LAYERS:
        raise SMIMEError(f"the message is S/MIME {ct.params['smime-type']}, not encrypted",
                         "not-smime")
    cte = msg.get("content-transfer-encoding")
    encoding = cte.value.lower() if cte else "7bit"
    if encoding == "base64":
        return decode_base64_body(msg.body)
    if encoding in ("binary", "8bit", "7bit"):
        return msg.body
    raise SMIMEError(f"pkcs7-mime in transfer encoding {encoding!r}", "unsupported")


def _restore(outer: Message, plain: bytes) -> tuple[bytes, Message | None]:
    try:
        inner = parse_message(plain)
    except SMIMEError:
        # After a CBC decryption with the wrong (e.g. Bleichenbacher-substituted) key,
        # the padding can pass by chance; garbage is then caught here, with the same code.
        raise SMIMEError("decrypted content is not a MIME entity: wrong key or tampered "
                         "message", "decrypt-failed") from None
    h = inner.get("content-type")
    if h is not None and parse_content_type(h.value).mime_type == "message/rfc822":
        return inner.body, None  # RFC 8551 §3.1: the wrapped message is the message
    routing = outer.routing_headers()  # MIME-Version is not among them
    headers = (*routing, _MIME_VERSION, *inner.headers)
    # What parse_message would make of the bytes built here, without parsing them again;
    # None when their header block is too large for it (the caller's parse then says so).
    size = sum(len(h.raw) for h in headers)
    parsed = Message(headers, inner.body) if size <= MAX_HEADER_BLOCK else None
    return build_message(routing, list(inner.headers), inner.body), parsed


def decrypt_envelope(env: Envelope, keys: KeyRing) -> bytes:
    """The plaintext content of a parsed envelope, with the first recipient that works."""
    candidates = [(ri, ident) for ri in env.recipients
                  if (ident := _find_identity(ri, keys)) is not None]
    if not candidates:
        raise SMIMEError(f"none of the {len(env.recipients)} recipient(s) is one of our "
                         f"{len(keys)} key(s)", "no-recipient")
    failure: SMIMEError | None = None
    for ri, ident in candidates:
        try:
            if isinstance(ri, KeyTrans):
                cek = unwrap_key_trans(ri, ident.key, env.key_length)
            else:
                cek = unwrap_key_agree(ri, ident.key, env.key_length)
            return decrypt_content(env, cek)
        except SMIMEError as e:
            failure = e  # another of our identities may be named too: try it
    assert failure is not None
    raise failure


def decrypt(message: bytes, keys: KeyRing) -> bytes:
    """Decrypt a whole CRLF message with whichever of our identities it names."""
    return decrypt_parsed(parse_message(message), keys)[0]


def decrypt_parsed(outer: Message, keys: KeyRing) -> tuple[bytes, Message | None]:
    """decrypt() of a message already parsed (parse_message), for a caller that parsed it
    anyway: the plaintext message and the same parsed, so that nobody parses it twice
    (None when it must be parsed: a header-protection wrapper, a huge header block)."""
    env = parse_envelope(_envelope_bytes(outer))
    return _restore(outer, decrypt_envelope(env, keys))
