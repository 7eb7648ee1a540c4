"""The frozen records the directory stores and serves, and how a certificate becomes one.

A CertRecord carries the certificate and the facts read off it once at publish time:
the names it is found under, its usage, its SMIMECapabilities (RFC 4262), the OCSP
CertID parts (RFC 6960 §4.1.1) and the RFC 4387 §2.2 search keys.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

# Re-exported: the directory's readers and tests know them from here.
from gateway.keys.capabilities import SMIME_CAPABILITIES_OID as SMIME_CAPABILITIES_OID
from gateway.keys.capabilities import capabilities_of as capabilities_of
from gateway.keys.identity import dns_names, email_addresses

# RFC 5280 §5.3.1 CRLReason names, as cryptography spells them (x509.ReasonFlags values).
REASONS = tuple(r.value for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl)

STATES = ("active", "revoked")


@dataclass(frozen=True, slots=True)
class CertRecord:
    fingerprint: str  # SHA-256 of the DER, lower-case hex
    der: bytes
    chain: tuple[str, ...]  # fingerprints of the issuing CAs, issuer first, anchor excluded
    domain: str  # the domain whose token published it
    names: tuple[str, ...]  # the domain and/or addresses it is found under
    serial: str  # lower-case hex
    issuer_key_id: str  # SHA-1 of the issuer's public key bits: OCSP issuerKeyHash
    subject: str
    issuer: str
    common_name: str
    not_before: int  # Unix seconds
    not_after: int
    usage: tuple[str, ...]  # "encryption", "signing"
    capabilities: tuple[str, ...] | None  # SMIMECapabilities, None when the cert has none
    cert_sha1: str  # RFC 4387 search keys (27-character base64 of SHA-1)
    subject_hash: str
    issuer_hash: str
    iands_hash: str
    skid_hash: str
    published_at: int
    state: str = "active"
    revoked_at: int | None = None
    revocation_reason: str | None = None

    def revoked(self, at: int, reason: str) -> CertRecord:
        return replace(self, state="revoked", revoked_at=at, revocation_reason=reason)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str  # short public handle, for `token revoke`
    domain: str
    hash: str  # SHA-256 of the token, hex; the token itself is never stored
    created_at: int
    revoked_at: int | None = None


def search_key(blob: bytes) -> str:
    """RFC 4387 §2.1: SHA-1 of the blob, base64, the trailing '=' dropped (27 characters)."""
    return base64.b64encode(hashlib.sha1(blob).digest()).decode().rstrip("=")  # noqa: S324


def key_bits(public: object) -> bytes:
    """The subjectPublicKey BIT STRING's contents: what OCSP's issuerKeyHash hashes."""
    if isinstance(public, rsa.RSAPublicKey):
        return public.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.PKCS1)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return public.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint)
    raise ValueError(f"unsupported public key type {type(public).__name__}")


def issuer_key_id(issuer: x509.Certificate) -> str:
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - RFC 6960 CertID default
    digest.update(key_bits(issuer.public_key()))
    return digest.finalize().hex()


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def usage_of(cert: x509.Certificate) -> tuple[str, ...]:
    """What the key may do for S/MIME, from keyUsage (no keyUsage: anything)."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return ("encryption", "signing")
    is_ec = isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    out = []
    if (ku.key_agreement if is_ec else ku.key_encipherment):
        out.append("encryption")
    if ku.digital_signature or ku.content_commitment:
        out.append("signing")
    return tuple(out)


def _iands(cert: x509.Certificate) -> bytes:
    """DER of IssuerAndSerialNumber (RFC 5652 §10.2.4) for the iAndSHash key."""
    ias = asn1_cms.IssuerAndSerialNumber({
        "issuer": asn1_core.Any.load(cert.issuer.public_bytes()),
        "serial_number": cert.serial_number,
    })
    return bytes(ias.dump())


def _skid(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(
            cert.public_key()).digest


def names_in_domain(cert: x509.Certificate, domain: str) -> tuple[str, ...]:
    """The names under which cert is listed for domain: the domain itself (dNSName)
    and the addresses within it (rfc822Name); names outside the domain are not listed,
    since another domain's owner did not publish them."""
    domain = domain.lower()
    names = [domain] if domain in dns_names(cert) else []
    names += [a for a in email_addresses(cert) if a.rpartition("@")[2] == domain]
    return tuple(names)


def make_record(cert: x509.Certificate, chain: tuple[x509.Certificate, ...], domain: str,
                published_at: int) -> CertRecord:
    """A record for cert published by domain; chain is its issuers up to the anchor
    (inclusive): chain[0] issued cert."""
    der = cert.public_bytes(serialization.Encoding.DER)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if cns else ""
    return CertRecord(
        fingerprint=fingerprint(der),
        der=der,
        chain=tuple(fingerprint(c.public_bytes(serialization.Encoding.DER))
                    for c in chain[:-1]),
        domain=domain,
        names=names_in_domain(cert, domain),
        serial=format(cert.serial_number, "x"),
        issuer_key_id=issuer_key_id(chain[0]),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        common_name=cn if isinstance(cn, str) else cn.decode("utf-8", "replace"),
        not_before=int(cert.not_valid_before_utc.timestamp()),
        not_after=int(cert.not_valid_after_utc.timestamp()),
        usage=usage_of(cert),
        capabilities=capabilities_of(cert),
        cert_sha1=search_key(der),
        subject_hash=search_key(cert.subject.public_bytes()),
        issuer_hash=search_key(cert.issuer.public_bytes()),
        iands_hash=search_key(_iands(cert)),
        skid_hash=search_key(_skid(cert)),
        published_at=published_at,
    )
