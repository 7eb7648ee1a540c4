"""Recovering the content-encryption key from a RecipientInfo with one of our keys.

- KeyTrans RSA PKCS#1 v1.5 (RFC 3370 §4.2.1). Bleichenbacher defence (RFC 3218 §2.3.2,
  as RFC 5652 §6.2.1 / RFC 8017 §7.2.2 note): a random key of the expected length is
  drawn BEFORE the RSA operation; if the padding is bad (an exception, or OpenSSL's
  implicit-rejection output) or the unwrapped key has the wrong length, that random key
  is used instead and decryption simply continues. The failure then shows up only as
  a bad CBC padding / GCM tag / unparseable content, i.e. the same "decrypt-failed"
  error as any other corrupted message, so no caller can tell a padding error apart.
- KeyTrans RSAES-OAEP (RFC 8017 §7.1, RFC 4055 §4.1 parameters: SHA-1/224/256/384/512,
  MGF1, optional pSpecified label).
- KeyAgree ECDH ephemeral-static (RFC 5753 §3.1.2): originator public key on our curve,
  X9.63 KDF with the scheme's hash over ECC-CMS-SharedInfo, AES key unwrap (RFC 3394).
"""

from __future__ import annotations

import functools
import os

from asn1crypto import algos
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from gateway.keys.identity import PrivateKey
from gateway.smime.cms_open import KeyAgree, KeyTrans
from gateway.smime.errors import SMIMEError
from gateway.smime.recipients import (
    AES_WRAP,
    ECDH_STD_SCHEMES,
    RSA_ENCRYPTION,
    RSAES_OAEP,
    shared_info,
)

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}
_WRAP_SIZES = {oid: size for size, oid in AES_WRAP.items()}
_CURVES = {"1.2.840.10045.3.1.7": "secp256r1", "1.3.132.0.34": "secp384r1",
           "1.3.132.0.35": "secp521r1"}


def _hash(name: str) -> hashes.HashAlgorithm:
    if name not in _HASHES:
        raise SMIMEError(f"OAEP hash {name} is not supported", "unsupported")
    return _HASHES[name]()


def _oaep_padding(parameters: bytes | None) -> padding.OAEP:
    try:
        params = algos.RSAESOAEPParams.load(parameters or b"\x30\x00")
        digest = params["hash_algorithm"]["algorithm"].native
        mgf = params["mask_gen_algorithm"]
        if mgf["algorithm"].native != "mgf1":
            raise SMIMEError(f"OAEP mask generation {mgf['algorithm'].dotted}", "unsupported")
        mgf_digest = mgf["parameters"]["algorithm"].native
        source = params["p_source_algorithm"]
        label = source["parameters"].native if source["algorithm"].native == "p_specified" \
            else None
    except SMIMEError:
        raise
    except Exception as e:
        raise SMIMEError(f"malformed RSAES-OAEP parameters: {e}"[:200]) from None
    return padding.OAEP(mgf=padding.MGF1(_hash(mgf_digest)), algorithm=_hash(digest),
                        label=bytes(label) if label else None)


def unwrap_key_trans(ri: KeyTrans, key: PrivateKey, key_length: int) -> bytes:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SMIMEError("key transport to a non-RSA key", "bad-key")
    if ri.algorithm == RSA_ENCRYPTION:
        fallback = os.urandom(key_length)  # drawn first: same work on every path
        try:
            cek = key.decrypt(ri.encrypted_key, padding.PKCS1v15())
        except ValueError:
            return fallback
        return cek if len(cek) == key_length else fallback
    if ri.algorithm == RSAES_OAEP:
        pad = _oaep_padding(ri.parameters)
        try:
            cek = key.decrypt(ri.encrypted_key, pad)
        except ValueError:
            raise SMIMEError("RSA-OAEP key transport failed: wrong key or tampered "
                             "message", "decrypt-failed") from None
        if len(cek) != key_length:
            raise SMIMEError(f"RSA-OAEP delivered a {len(cek)}-octet key, the content "
                             f"cipher needs {key_length}", "decrypt-failed")
        return cek
    raise SMIMEError(f"key transport algorithm {ri.algorithm} is not supported",
                     "unsupported")


@functools.lru_cache(maxsize=8)  # keyed by wrap OID and size: a handful in all
def _shared_info(wrap: str, kek_length: int) -> bytes:
    """ECC-CMS-SharedInfo without ukm (what OpenSSL and we send), built once per size."""
    return shared_info(wrap, kek_length)


def unwrap_key_agree(ri: KeyAgree, key: PrivateKey, key_length: int) -> bytes:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SMIMEError("key agreement with a non-EC key", "bad-key")
    kdf_hash = ECDH_STD_SCHEMES.get(ri.scheme)
    if kdf_hash is None:
        raise SMIMEError(f"key agreement scheme {ri.scheme} is not supported "
                         "(only dhSinglePass-stdDH)", "unsupported")
    if ri.wrap not in _WRAP_SIZES:
        raise SMIMEError(f"key wrap algorithm {ri.wrap} is not supported", "unsupported")
    if ri.originator_point is None:
        raise SMIMEError("key agreement without an originator public key", "unsupported")
    if ri.originator_curve is not None and _CURVES.get(ri.originator_curve) != key.curve.name:
        raise SMIMEError("originator key is on another curve than ours", "decrypt-failed")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, ri.originator_point)
    except ValueError:
        raise SMIMEError("originator public key is not a point on our curve",
                         "malformed") from None
    kek_length = _WRAP_SIZES[ri.wrap]
    z = key.exchange(ec.ECDH(), peer)
    info = _shared_info(ri.wrap, kek_length) if ri.ukm is None else \
        shared_info(ri.wrap, kek_length, ri.ukm)
    kek = X963KDF(kdf_hash(), kek_length, info).derive(z)
    try:
        cek = aes_key_unwrap(kek, ri.encrypted_key)
    except (InvalidUnwrap, ValueError):
        raise SMIMEError("AES key unwrap failed: wrong key or tampered message",
                         "decrypt-failed") from None
    if len(cek) != key_length:
        raise SMIMEError(f"key agreement delivered a {len(cek)}-octet key, the content "
                         f"cipher needs {key_length}", "decrypt-failed")
    return cek
