"""RecipientInfo building: how the content-encryption key reaches each recipient.

- KeyTransRecipientInfo (RFC 5652 §6.2.1) for RSA certificates: RSA PKCS#1 v1.5
  (rsaEncryption, RFC 3370 §4.2.1) or RSAES-OAEP with SHA-256 and MGF1-SHA-256
  (RFC 8017 §7.1, parameters as RFC 4055 §4.1 writes them).
- KeyAgreeRecipientInfo (RFC 5652 §6.2.2) for EC P-256/P-384 certificates: ECDH
  ephemeral-static (RFC 5753 §3.1), dhSinglePass-stdDH-sha256kdf-scheme for P-256 and
  -sha384kdf- for P-384 (RFC 5753 §7.1.4, the pairing RFC 6318 suites use), the X9.63 KDF
  over ECC-CMS-SharedInfo (RFC 5753 §7.2), AES key wrap (RFC 3394 / RFC 3565) with the
  wrap size matching the content key.

Everything that depends only on the certificate (recipient identifier, public key,
curve, the fixed DER around the per-message values) is computed once per certificate
and cached; per message a recipient costs one RSA public operation, or one ephemeral EC
key, one ECDH and one key wrap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from gateway.smime import der
from gateway.smime.errors import SMIMEError

# Object identifiers (RFC 3370, RFC 3565, RFC 4055, RFC 5753, SEC 1).
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSAES_OAEP = "1.2.840.113549.1.1.7"
MGF1 = "1.2.840.113549.1.1.8"
SHA1 = "1.3.14.3.2.26"
SHA256 = "2.16.840.1.101.3.4.2.1"
SHA384 = "2.16.840.1.101.3.4.2.2"
SHA512 = "2.16.840.1.101.3.4.2.3"
SHA224 = "2.16.840.1.101.3.4.2.4"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
AES_WRAP = {16: "2.16.840.1.101.3.4.1.5", 24: "2.16.840.1.101.3.4.1.25",
            32: "2.16.840.1.101.3.4.1.45"}
# RFC 5753 §7.1.4 dhSinglePass-stdDH-*kdf-scheme, by KDF hash.
ECDH_STD_SCHEMES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.133.16.840.63.0.2": hashes.SHA1,   # the RFC 3278 scheme OpenSSL still defaults to
    "1.3.132.1.11.0": hashes.SHA224,
    "1.3.132.1.11.1": hashes.SHA256,
    "1.3.132.1.11.2": hashes.SHA384,
    "1.3.132.1.11.3": hashes.SHA512,
}
_SCHEME_FOR_CURVE = {"secp256r1": ("1.3.132.1.11.1", hashes.SHA256),
                     "secp384r1": ("1.3.132.1.11.2", hashes.SHA384)}

# RSAES-OAEP-params for SHA-256 / MGF1-SHA-256, default (empty) label. RFC 4055 §2.1 says
# the sha256 AlgorithmIdentifier in these parameters is written with NULL parameters.
_SHA256_ALG = der.algorithm(SHA256, der.NULL)
OAEP_SHA256_ALG = der.algorithm(RSAES_OAEP, der.seq(
    der.explicit(0, _SHA256_ALG),
    der.explicit(1, der.algorithm(MGF1, _SHA256_ALG)),
))
# RFC 3370 §4.2.1: rsaEncryption with NULL parameters.
PKCS1_ALG = der.algorithm(RSA_ENCRYPTION, der.NULL)

_OAEP_PAD = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                         label=None)
_PKCS1_PAD = padding.PKCS1v15()


def issuer_and_serial(cert: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber (RFC 5652 §10.2.4) from the certificate's own encodings."""
    return der.seq(cert.issuer.public_bytes(), der.integer(cert.serial_number))


@dataclass(frozen=True, slots=True)
class Recipient:
    """One certificate, ready to receive content keys. build(cek, oaep) -> RecipientInfo DER."""

    kind: str  # "rsa" | "ec"
    build: Callable[[bytes, bool], bytes]
    version: int  # the RecipientInfo version it writes (0 ktri, 3 kari)


def _rsa_recipient(cert: x509.Certificate, key: rsa.RSAPublicKey) -> Recipient:
    # KeyTransRecipientInfo ::= SEQUENCE { version 0, rid, keyEncryptionAlgorithm,
    # encryptedKey }: everything but encryptedKey is per certificate.
    rid = issuer_and_serial(cert)
    head_pkcs1 = der.integer(0) + rid + PKCS1_ALG
    head_oaep = der.integer(0) + rid + OAEP_SHA256_ALG
    encrypt = key.encrypt

    def build(cek: bytes, oaep: bool) -> bytes:
        if oaep:
            return der.seq(head_oaep, der.octets(encrypt(cek, _OAEP_PAD)))
        return der.seq(head_pkcs1, der.octets(encrypt(cek, _PKCS1_PAD)))

    return Recipient("rsa", build, 0)


def shared_info(wrap_oid: str, key_bytes: int, ukm: bytes | None = None) -> bytes:
    """ECC-CMS-SharedInfo (RFC 5753 §7.2): the wrap algorithm (parameters absent, RFC 3565
    §2.3.2), the ukm if any, and the KEK length in bits as a 32-bit big-endian integer."""
    parts = der.algorithm(wrap_oid)
    if ukm is not None:
        parts += der.explicit(0, der.octets(ukm))
    return der.seq(parts, der.explicit(2, der.octets((key_bytes * 8).to_bytes(4, "big"))))


def _ec_recipient(cert: x509.Certificate, key: ec.EllipticCurvePublicKey) -> Recipient:
    curve = key.curve
    if curve.name not in _SCHEME_FOR_CURVE:
        raise SMIMEError(f"EC recipient on curve {curve.name}: only P-256 and P-384 "
                         "are supported", "bad-key")
    scheme, kdf_hash = _SCHEME_FOR_CURVE[curve.name]
    rid = issuer_and_serial(cert)
    # Per content-key size (16 or 32 octets): keyEncryptionAlgorithm and SharedInfo.
    per_size = {
        size: (der.algorithm(scheme, der.algorithm(AES_WRAP[size])),
               shared_info(AES_WRAP[size], size))
        for size in (16, 32)
    }
    # originator [0] EXPLICIT OriginatorIdentifierOrKey, choice originatorKey [1] IMPLICIT
    # OriginatorPublicKey; RFC 5753 §3.1.1 lets the id-ecPublicKey parameters be absent
    # (the recipient's curve is implied), which is what OpenSSL writes.
    origin_alg = der.algorithm(EC_PUBLIC_KEY)

    def build(cek: bytes, oaep: bool) -> bytes:
        del oaep  # key agreement has no padding choice
        kea, info = per_size[len(cek)]
        ephemeral = ec.generate_private_key(curve)
        z = ephemeral.exchange(ec.ECDH(), key)
        kek = X963KDF(kdf_hash(), len(cek), info).derive(z)
        point = ephemeral.public_key().public_bytes(serialization.Encoding.X962,
                                                    serialization.PublicFormat.UncompressedPoint)
        originator = der.explicit(0, der.tlv(0xA1, origin_alg + der.tlv(0x03, b"\x00" + point)))
        rek = der.seq(rid, der.octets(aes_key_wrap(kek, cek)))
        # KeyAgreeRecipientInfo is [1] IMPLICIT inside the RecipientInfo CHOICE.
        return der.tlv(0xA1, der.integer(3) + originator + kea + der.seq(rek))

    return Recipient("ec", build, 3)


@lru_cache(maxsize=4096)
def recipient_for(cert: x509.Certificate) -> Recipient:
    """The cached recipient for a certificate (certificates hash by their DER)."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise SMIMEError(f"RSA recipient key of {key.key_size} bits is too weak "
                             "(RFC 8551 §4.3 asks for at least 2048)", "bad-key")
        return _rsa_recipient(cert, key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _ec_recipient(cert, key)
    raise SMIMEError(f"recipient certificate {cert.subject.rfc4514_string()} has a "
                     f"{type(key).__name__}, which cannot receive a key", "bad-key")
