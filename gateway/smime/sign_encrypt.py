"""Sign, then encrypt (RFC 8551 §3.6) in one call, without reading back what was built.

encrypt(sign(message)) parses the signed message it was just handed to find its routing
header fields and its MIME entity, and reads its Content-Type to learn that it is not
already encrypted: all known, since sign() built it. Here sign()'s pieces go straight
to the envelope (gateway.smime.sign.signed_parts, gateway.smime.encrypt.encrypt_entity),
so the output is what encrypt(sign(message)) gives (header protection included: the
inner message is the whole signed message, RFC 8551 §3.1) with one parse fewer.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from gateway.keys import Identity
from gateway.smime.encrypt import WRAPPER, encrypt_entity
from gateway.smime.sign import MIME_VERSION, signed_parts


def sign_and_encrypt(message: bytes, signer: Identity,
                     recipients: Sequence[x509.Certificate], *, digest: str = "sha256",
                     pss: bool = False, opaque: bool = False, cipher: str = "aes128-gcm",
                     oaep: bool = False, protect_headers: bool = False) -> bytes:
    """encrypt(sign(message, signer, ...), recipients, ...) for input that is neither
    signed nor encrypted yet (the caller knows: it checked; an already signed message
    is signed again, as sign() does by default). SMIMEError as sign() and encrypt()."""
    outer, entity = signed_parts(message, signer, digest=digest, pss=pss, opaque=opaque)
    if protect_headers:
        inner = b"".join((WRAPPER, *outer, MIME_VERSION, *entity))
    else:
        inner = b"".join(entity)
    return encrypt_entity(outer, inner, recipients, cipher=cipher, oaep=oaep)
