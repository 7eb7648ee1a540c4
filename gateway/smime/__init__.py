"""The S/MIME 4.0 engine (RFC 8551 on CMS, RFC 5652): pure functions on bytes and keys."""

from gateway.smime.decrypt import decrypt
from gateway.smime.detect import Detection, detect
from gateway.smime.encrypt import encrypt
from gateway.smime.errors import SMIMEError
from gateway.smime.sign import sign
from gateway.smime.sign_encrypt import sign_and_encrypt
from gateway.smime.verify import (
    RevocationCheck,
    RevocationStatus,
    SignerInfoResult,
    VerifyResult,
    verify,
)

__all__ = [
    "Detection",
    "RevocationCheck",
    "RevocationStatus",
    "SMIMEError",
    "SignerInfoResult",
    "VerifyResult",
    "decrypt",
    "detect",
    "encrypt",
    "sign",
    "sign_and_encrypt",
    "verify",
]
