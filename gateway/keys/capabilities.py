"""What a certificate says its holder's software can decrypt: SMIMECapabilities (RFC 4262).

RFC 4262 §2 puts the RFC 8551 §2.5.2 SMIMECapabilities attribute into a certificate as an
extension. The directory records it (gateway/directory/records.py) and the outbound path
uses it to choose between AuthEnvelopedData (GCM, RFC 5083/5084) and EnvelopedData (CBC):
GCM only where every recipient certificate lists it (DESIGN.md, Protocols), or where the
recipient's own signed mail announced it (RFC 8551 §2.7.1: gateway/outbound/cipher.py).
"""

from __future__ import annotations

from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

SMIME_CAPABILITIES_OID = ObjectIdentifier("1.2.840.113549.1.9.15")  # RFC 4262 §2

AES128_GCM = "2.16.840.1.101.3.4.1.6"  # id-aes128-GCM, RFC 5084 §3.2
AES256_GCM = "2.16.840.1.101.3.4.1.46"  # id-aes256-GCM

# Our GCM cipher names, the algorithm a certificate must list for each, and the CBC
# cipher of the same key size used otherwise.
GCM_CIPHERS = {"aes128-gcm": (AES128_GCM, "aes128-cbc"),
               "aes256-gcm": (AES256_GCM, "aes256-cbc")}


def _parsed(cert: x509.Certificate) -> asn1_cms.SMIMECapabilites | None:
    """The extension's value, None if absent; raises ValueError if it cannot be read."""
    try:
        ext = cert.extensions.get_extension_for_oid(SMIME_CAPABILITIES_OID).value
    except x509.ExtensionNotFound:
        return None
    raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
    try:
        caps = asn1_cms.SMIMECapabilites.load(raw)  # sic: asn1crypto spells it so
        caps.native  # noqa: B018 - asn1crypto parses lazily; force it here
    except Exception as e:  # bad DER raises many kinds
        raise ValueError(f"unreadable SMIMECapabilities: {e}") from None
    return caps


def capabilities_of(cert: x509.Certificate) -> tuple[str, ...] | None:
    """The SMIMECapabilities extension as algorithm names, None if absent."""
    try:
        caps = _parsed(cert)
    except ValueError:
        return ()  # present but unreadable: known to exist, contents unknown
    return None if caps is None else tuple(str(c["capability_id"].native) for c in caps)


# capability_oids per certificate: asn1crypto takes ~10 µs to read the extension, and a
# worker encrypts to the same few certificates again and again.
_MEMO_MAX = 10_000
_oids: dict[x509.Certificate, frozenset[str]] = {}


def capability_oids(cert: x509.Certificate) -> frozenset[str]:
    """The dotted algorithm OIDs the certificate lists; empty if none or unreadable."""
    known = _oids.get(cert)
    if known is not None:
        return known
    try:
        caps = _parsed(cert)
        oids = frozenset() if caps is None else \
            frozenset(c["capability_id"].dotted for c in caps)
    except ValueError:
        oids = frozenset()
    if len(_oids) >= _MEMO_MAX:
        _oids.clear()
    _oids[cert] = oids
    return oids


def narrowed_cipher(cipher: str, certs: tuple[x509.Certificate, ...]) -> str:
    """cipher, or its CBC counterpart when it is GCM and not every certificate lists it."""
    gcm = GCM_CIPHERS.get(cipher)
    if gcm is None or not certs:
        return cipher
    oid, cbc = gcm
    return cipher if all(oid in capability_oids(c) for c in certs) else cbc
