"""Building EnvelopedData (RFC 5652 §6) and AuthEnvelopedData (RFC 5083) as DER.

Content encryption: AES-128/256-CBC (RFC 3565) in EnvelopedData, AES-128/256-GCM
(RFC 5084) in AuthEnvelopedData with a 12-octet nonce and a 16-octet ICV; the tag goes in
`mac` and authAttrs are absent, so the GCM additional data is empty (RFC 5083 §2.2).
One random content key per message, one AES pass over the content, then one
RecipientInfo per certificate (gateway.smime.recipients). The structure is joined from
pre-encoded pieces (gateway.smime.der); nothing here parses input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.smime import der
from gateway.smime.errors import SMIMEError
from gateway.smime.recipients import recipient_for

ID_DATA = "1.2.840.113549.1.7.1"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"

# cipher name -> (content algorithm OID, key length, AEAD?)
CIPHERS: dict[str, tuple[str, int, bool]] = {
    "aes128-cbc": ("2.16.840.1.101.3.4.1.2", 16, False),
    "aes256-cbc": ("2.16.840.1.101.3.4.1.42", 32, False),
    "aes128-gcm": ("2.16.840.1.101.3.4.1.6", 16, True),
    "aes256-gcm": ("2.16.840.1.101.3.4.1.46", 32, True),
}
GCM_NONCE = 12  # RFC 5084 §3.2: "the nonce ... a length of 12 octets is RECOMMENDED"
GCM_ICV = 16

_DATA_OID = der.oid(ID_DATA)
_ENVELOPED_OID = der.oid(ID_ENVELOPED_DATA)
_AUTH_ENVELOPED_OID = der.oid(ID_AUTH_ENVELOPED_DATA)
_ALG_OIDS = {name: der.oid(spec[0]) for name, spec in CIPHERS.items()}
# GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen INTEGER DEFAULT 12 }:
# 16 differs from the default, so it is written (DER omits only default values).
_ICV_LEN = der.integer(GCM_ICV)


def _encrypt_content(cipher: str, key: bytes, content: bytes
                     ) -> tuple[bytes, list[bytes | memoryview], bytes]:
    """(contentEncryptionAlgorithm DER, ciphertext pieces, mac or b"") with one AES pass.

    The ciphertext stays in pieces (memoryviews, no copies) until the one final join."""
    if CIPHERS[cipher][2]:
        nonce = os.urandom(GCM_NONCE)
        sealed = memoryview(AESGCM(key).encrypt(nonce, content, None))
        params = der.seq(der.octets(nonce), _ICV_LEN)
        return (der.seq(_ALG_OIDS[cipher], params), [sealed[:-GCM_ICV]],
                bytes(sealed[-GCM_ICV:]))
    iv = os.urandom(16)
    whole = len(content) - len(content) % 16
    pad = 16 - len(content) % 16  # PKCS #7 padding, RFC 5652 §6.3
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    pieces: list[bytes | memoryview] = [
        encryptor.update(memoryview(content)[:whole]),
        encryptor.update(content[whole:] + bytes((pad,)) * pad),
        encryptor.finalize()]
    return der.seq(_ALG_OIDS[cipher], der.octets(iv)), pieces, b""


def build_envelope(content: bytes, recipients: Sequence[x509.Certificate], *,
                   cipher: str = "aes128-gcm", oaep: bool = False) -> bytes:
    """ContentInfo DER holding content encrypted for every recipient certificate."""
    if cipher not in CIPHERS:
        raise SMIMEError(f"unknown cipher {cipher!r}; use one of {', '.join(CIPHERS)}",
                         "unsupported")
    if not recipients:
        raise SMIMEError("no recipient certificates to encrypt to", "bad-key")
    key_len = CIPHERS[cipher][1]
    cek = os.urandom(key_len)
    infos: list[bytes] = []
    version = 0
    seen: set[x509.Certificate] = set()
    for cert in recipients:
        if cert in seen:  # one key transport per certificate, however often it is named
            continue
        seen.add(cert)
        recipient = recipient_for(cert)
        infos.append(recipient.build(cek, oaep))
        version |= recipient.version
    alg, pieces, mac = _encrypt_content(cipher, cek, content)
    # The large ciphertext is copied once, by the final join: every header around it is
    # computed from lengths. encryptedContent is [0] IMPLICIT OCTET STRING.
    ct_len = sum(len(p) for p in pieces)
    ct_head = b"\x80" + der.length(ct_len)
    eci_len = len(_DATA_OID) + len(alg) + len(ct_head) + ct_len
    eci_head = b"\x30" + der.length(eci_len) + _DATA_OID + alg + ct_head
    if mac:
        # AuthEnvelopedData: version is always 0 (RFC 5083 §2.1).
        outer, head, tail = _AUTH_ENVELOPED_OID, der.integer(0), der.octets(mac)
    else:
        # RFC 5652 §6.1: version 0 when every RecipientInfo is version 0 (no kari), else 2.
        outer, head, tail = _ENVELOPED_OID, der.integer(0 if version == 0 else 2), b""
    head += der.set_of(infos)
    body_len = len(head) + len(eci_head) + ct_len + len(tail)
    body_head = b"\x30" + der.length(body_len)
    explicit_len = len(body_head) + body_len
    explicit_head = b"\xa0" + der.length(explicit_len)
    total = len(outer) + len(explicit_head) + explicit_len
    prefix = b"\x30" + der.length(total) + outer + explicit_head + body_head + head + eci_head
    return b"".join([prefix, *pieces, tail])
