"""Building CMS SignedData (RFC 5652 §5) by concatenation, for the signing hot path.

Everything that depends only on the signer (certificates, SignerIdentifier, algorithm
identifiers, the SMIMECapabilities attribute of RFC 8551 §2.5.2) is encoded once per
(Identity, digest, padding) in a PreparedSigner; per message we hash the content once,
encode two small attributes, make one private-key operation and join pieces.

Signed attributes (RFC 5652 §5.3, §11): contentType, signingTime, messageDigest,
SMIMECapabilities, and SMIMEEncryptionKeyPreference (RFC 8551 §2.5.3) when the signing
certificate may also encrypt, sorted as a DER SET OF. Algorithms: RSA PKCS#1 v1.5
(rsaEncryption, as RFC 3370 §3.2 and OpenSSL write it), RSASSA-PSS with salt length =
hash length and MGF1 with the same hash (RFC 4056; gpgsm verifies only that salt length),
ECDSA (RFC 5753 §2.1, ecdsa-with-SHA*); digests SHA-256/384/512 (RFC 5754). The algorithm
tables here serve verify too; reading untrusted input lives in cms_signed_read.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from gateway.keys import Identity
from gateway.smime import der
from gateway.smime.errors import SMIMEError

# Object identifiers (RFC 5652 §14, RFC 5754, RFC 4055, RFC 5758, RFC 8551 §2.5.2).
ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ATTR_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ATTR_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
ATTR_SIGNING_TIME = "1.2.840.113549.1.9.5"
ATTR_SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"
ATTR_ENCRYPTION_KEY_PREFERENCE = "1.2.840.113549.1.9.16.2.11"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSASSA_PSS = "1.2.840.113549.1.1.10"
RSAES_OAEP = "1.2.840.113549.1.1.7"
MGF1 = "1.2.840.113549.1.1.8"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"

DIGEST_OIDS = {
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
DIGEST_BY_OID = {v: k for k, v in DIGEST_OIDS.items()}
# What we sign with (RFC 8551 §2.1 MUST/SHOULD+); sha1/sha224 are only ever reported.
SIGN_DIGESTS = ("sha256", "sha384", "sha512")
# RFC 8551 §3.5.3.2 micalg names.
MICALG = {"sha1": "sha1", "sha224": "sha-224", "sha256": "sha-256", "sha384": "sha-384",
          "sha512": "sha-512"}
HASH_CLASSES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}
# Signature algorithm OID → (kind, hash named by the OID or None when the digest
# algorithm field decides).
SIGNATURE_OIDS: dict[str, tuple[str, str | None]] = {
    RSA_ENCRYPTION: ("rsa-pkcs1v15", None),
    "1.2.840.113549.1.1.5": ("rsa-pkcs1v15", "sha1"),
    "1.2.840.113549.1.1.14": ("rsa-pkcs1v15", "sha224"),
    "1.2.840.113549.1.1.11": ("rsa-pkcs1v15", "sha256"),
    "1.2.840.113549.1.1.12": ("rsa-pkcs1v15", "sha384"),
    "1.2.840.113549.1.1.13": ("rsa-pkcs1v15", "sha512"),
    RSASSA_PSS: ("rsa-pss", None),
    EC_PUBLIC_KEY: ("ecdsa", None),  # some agents name the key, not the signature
    "1.2.840.10045.4.1": ("ecdsa", "sha1"),
    "1.2.840.10045.4.3.1": ("ecdsa", "sha224"),
    "1.2.840.10045.4.3.2": ("ecdsa", "sha256"),
    "1.2.840.10045.4.3.3": ("ecdsa", "sha384"),
    "1.2.840.10045.4.3.4": ("ecdsa", "sha512"),
}
_ECDSA_OID = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3",
              "sha512": "1.2.840.10045.4.3.4"}

MAX_CERTIFICATES = 64  # a SignedData carrying more is not a mail signature


def _digest_alg(name: str) -> bytes:
    # RFC 5754 §2: SHA-2 AlgorithmIdentifiers are written with parameters absent.
    return der.algorithm(DIGEST_OIDS[name])


def _pss_params(name: str) -> bytes:
    # RFC 4055 §3.1 RSASSA-PSS-params: hash, MGF1 with the same hash, salt = hash length.
    # Hash identifiers inside carry NULL parameters, as OpenSSL writes them.
    hash_alg = der.algorithm(DIGEST_OIDS[name], der.NULL)
    salt = HASH_CLASSES[name]().digest_size
    return der.seq(der.explicit(0, hash_alg), der.explicit(1, der.algorithm(MGF1, hash_alg)),
                   der.explicit(2, der.integer(salt)))


def _attribute(oid: str, value: bytes) -> bytes:
    return der.seq(der.oid(oid), der.tlv(der.SET, value))


# RFC 8551 §2.5.2: capabilities in order of preference. AES-GCM first (RFC 8551 §2.7
# MUST/SHOULD+), then AES-CBC for agents without AuthEnvelopedData (RFC 3565 §5:
# parameters absent), then RSAES-OAEP with SHA-256 (RFC 4055 §5 writes the parameters).
_OAEP_SHA256_PARAMS = der.seq(
    der.explicit(0, der.algorithm(DIGEST_OIDS["sha256"], der.NULL)),
    der.explicit(1, der.algorithm(MGF1, der.algorithm(DIGEST_OIDS["sha256"], der.NULL))))
SMIME_CAPABILITIES = (
    ("aes128-gcm", "2.16.840.1.101.3.4.1.6"),
    ("aes256-gcm", "2.16.840.1.101.3.4.1.46"),
    ("aes128-cbc", "2.16.840.1.101.3.4.1.2"),
    ("aes256-cbc", "2.16.840.1.101.3.4.1.42"),
    ("rsaes-oaep", RSAES_OAEP),
)
_CAPS_ATTR = _attribute(ATTR_SMIME_CAPABILITIES, der.seq(*[
    der.algorithm(oid, _OAEP_SHA256_PARAMS if oid == RSAES_OAEP else None)
    for _, oid in SMIME_CAPABILITIES]))
_CONTENT_TYPE_ATTR = _attribute(ATTR_CONTENT_TYPE, der.oid(ID_DATA))
_ST_ATTR_PREFIX = der.oid(ATTR_SIGNING_TIME)
_ID_DATA = der.oid(ID_DATA)
_SIGNED_DATA = der.oid(ID_SIGNED_DATA)
_VERSION_1 = der.integer(1)


@dataclass(frozen=True, slots=True)
class PreparedSigner:
    """Everything per-message signing needs that depends only on the signer's choices."""

    digest: str
    micalg: str
    hash_new: Callable[[], hashlib._Hash]
    sign: Callable[[bytes], bytes]  # DER of SET OF signed attributes → signature value
    digest_algs: bytes  # SET { digestAlgorithm }
    certificates: bytes  # [0] IMPLICIT CertificateSet
    signer_head: bytes  # SignerInfo's version, sid, digestAlgorithm
    signature_alg: bytes  # SignerInfo's signatureAlgorithm
    md_attr_head: bytes  # the messageDigest attribute up to the digest value (fixed size)
    static_attrs: tuple[bytes, ...]  # contentType, SMIMECapabilities, encryption key pref.


def _issuer_and_serial(cert: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber (RFC 5652 §10.2.4) from the certificate's ORIGINAL issuer
    encoding, so a verifier comparing octets finds it."""
    tbs = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    return der.seq(tbs["tbs_certificate"]["issuer"].dump(), der.integer(cert.serial_number))


def _can_encrypt(cert: x509.Certificate) -> bool:
    """Does the key usage let this certificate receive content keys (RFC 8550 §4.4.2)?"""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    if isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        return usage.key_agreement
    return usage.key_encipherment


def _signer_for(identity: Identity, digest: str, pss: bool) -> tuple[Callable[[bytes], bytes],
                                                                     bytes]:
    key = identity.key
    hash_obj = HASH_CLASSES[digest]()
    if isinstance(key, rsa.RSAPrivateKey):
        if pss:
            pad: padding.AsymmetricPadding = padding.PSS(
                mgf=padding.MGF1(hash_obj), salt_length=hash_obj.digest_size)
            alg = der.algorithm(RSASSA_PSS, _pss_params(digest))
        else:
            pad = padding.PKCS1v15()
            alg = der.algorithm(RSA_ENCRYPTION, der.NULL)
        rsa_sign = key.sign

        def sign_rsa(data: bytes) -> bytes:
            return rsa_sign(data, pad, hash_obj)

        return sign_rsa, alg
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if pss:
            raise SMIMEError("RSA-PSS asked for with an EC key", "bad-key")
        scheme = ec.ECDSA(hash_obj)
        ec_sign = key.sign

        def sign_ec(data: bytes) -> bytes:
            return ec_sign(data, scheme)

        return sign_ec, der.algorithm(_ECDSA_OID[digest])
    raise SMIMEError(f"cannot sign with a {type(key).__name__}", "bad-key")


# Keyed by the Identity object's id (hashing an Identity hashes its certificates: ~10 us a
# message); the entry holds the Identity itself, so that id cannot be reused meanwhile.
_PREPARED: dict[tuple[int, str, bool], tuple[Identity, PreparedSigner]] = {}
MAX_PREPARED = 256


def prepare(identity: Identity, digest: str = "sha256", pss: bool = False) -> PreparedSigner:
    """The PreparedSigner for identity; cached, so only the first message pays for it."""
    entry = _PREPARED.get((id(identity), digest, pss))
    if entry is not None and entry[0] is identity:
        return entry[1]
    prepared = _prepare(identity, digest, pss)
    if len(_PREPARED) >= MAX_PREPARED:
        _PREPARED.clear()
    _PREPARED[id(identity), digest, pss] = (identity, prepared)
    return prepared


def _prepare(identity: Identity, digest: str, pss: bool) -> PreparedSigner:
    if digest not in SIGN_DIGESTS:
        raise SMIMEError(f"digest {digest!r} is not one of {', '.join(SIGN_DIGESTS)}",
                         "unsupported")
    sign, sig_alg = _signer_for(identity, digest, pss)
    sid = _issuer_and_serial(identity.certificate)
    static = [_CONTENT_TYPE_ATTR, _CAPS_ATTR]
    if _can_encrypt(identity.certificate):
        # RFC 8551 §2.5.3: this certificate is also the one to encrypt to; the
        # issuerAndSerialNumber choice is [0] IMPLICIT.
        static.append(_attribute(ATTR_ENCRYPTION_KEY_PREFERENCE, der.retag(sid, 0xA0)))
    certs = [identity.certificate, *(c for c in identity.chain if c != identity.certificate)]
    cert_der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)
    return PreparedSigner(
        digest=digest,
        micalg=MICALG[digest],
        hash_new=getattr(hashlib, digest),
        sign=sign,
        digest_algs=der.tlv(der.SET, _digest_alg(digest)),
        certificates=der.tlv(0xA0, cert_der),
        signer_head=_VERSION_1 + sid + _digest_alg(digest),
        signature_alg=sig_alg,
        static_attrs=tuple(static),
        md_attr_head=_attribute(ATTR_MESSAGE_DIGEST, der.octets(
            bytes(HASH_CLASSES[digest]().digest_size)))[:-HASH_CLASSES[digest]().digest_size],
    )


_time_cache: tuple[int, bytes] = (-1, b"")


def _signing_time_attr(now: float | None) -> bytes:
    """signingTime (RFC 5652 §11.3): UTCTime through 2049, GeneralizedTime after."""
    global _time_cache
    second = int(time.time() if now is None else now)
    if _time_cache[0] == second:
        return _time_cache[1]
    t = time.gmtime(second)
    if 1950 <= t.tm_year < 2050:
        value = der.tlv(0x17, time.strftime("%y%m%d%H%M%SZ", t).encode())
    else:
        value = der.tlv(0x18, time.strftime("%Y%m%d%H%M%SZ", t).encode())
    attr = der.seq(_ST_ATTR_PREFIX, der.tlv(der.SET, value))
    if now is None:
        _time_cache = (second, attr)
    return attr


def _header(tag: int, size: int) -> bytes:
    return bytes((tag,)) + der.length(size)


def build_signed_data(signer: PreparedSigner, content: bytes | Sequence[bytes], *,
                      detached: bool, now: float | None = None) -> bytes:
    """ContentInfo{SignedData} over content (id-data): detached leaves eContent out.

    content may be given as pieces (e.g. an entity's header block and body), hashed one
    after the other and joined only in the output, so a large body is never copied to be
    signed."""
    pieces = (content,) if isinstance(content, bytes) else tuple(content)
    h = signer.hash_new()
    for piece in pieces:
        h.update(piece)
    md_attr = signer.md_attr_head + h.digest()
    attrs = b"".join(sorted((*signer.static_attrs, _signing_time_attr(now), md_attr)))
    signature = signer.sign(der.tlv(der.SET, attrs))
    signer_info = der.seq(signer.signer_head, der.tlv(0xA0, attrs), signer.signature_alg,
                          der.octets(signature))
    signer_infos = der.tlv(der.SET, signer_info)
    # The content is the one large piece: headers are computed around it so it is copied
    # once, in the final join.
    if detached:
        encap_parts: list[bytes] = [der.seq(_ID_DATA)]
    else:
        size = sum(len(p) for p in pieces)
        octet_hdr = _header(der.OCTET_STRING, size)
        explicit_len = len(octet_hdr) + size
        explicit_hdr = _header(0xA0, explicit_len)
        encap_len = len(_ID_DATA) + len(explicit_hdr) + explicit_len
        encap_parts = [_header(der.SEQUENCE, encap_len), _ID_DATA, explicit_hdr, octet_hdr,
                       *pieces]
    encap_len_total = sum(len(p) for p in encap_parts)
    sd_len = (len(_VERSION_1) + len(signer.digest_algs) + encap_len_total
              + len(signer.certificates) + len(signer_infos))
    sd_hdr = _header(der.SEQUENCE, sd_len)
    ex_len = len(sd_hdr) + sd_len
    ex_hdr = _header(0xA0, ex_len)
    ci_len = len(_SIGNED_DATA) + len(ex_hdr) + ex_len
    return b"".join((_header(der.SEQUENCE, ci_len), _SIGNED_DATA, ex_hdr, sd_hdr, _VERSION_1,
                     signer.digest_algs, *encap_parts, signer.certificates, signer_infos))
