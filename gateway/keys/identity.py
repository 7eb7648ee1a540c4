"""An identity (private key + certificate + chain) and the ring of this gateway's identities."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def subject_key_identifier(cert: x509.Certificate) -> bytes:
    """The certificate's SKI extension, or the RFC 5280 §4.2.1.2 method-1 value."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def email_addresses(cert: x509.Certificate) -> tuple[str, ...]:
    """rfc822Name SANs (and, as RFC 8550 §3 allows for old certificates, subject emailAddress)."""
    found: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found += [a.lower() for a in san.get_values_for_type(x509.RFC822Name)]
    except x509.ExtensionNotFound:
        pass
    for attr in cert.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode()
        if value.lower() not in found:
            found.append(value.lower())
    return tuple(found)


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """dNSName SANs, lower-cased: the domains a domain certificate speaks for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))


@dataclass(frozen=True)
class Identity:
    """One of our keys with its certificate and the intermediates that chain it."""

    key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    source: str = ""
    ski: bytes = field(default=b"", compare=False)

    @classmethod
    def create(cls, key: PrivateKey, certificate: x509.Certificate,
               chain: tuple[x509.Certificate, ...] = (), source: str = "") -> Identity:
        if _spki(key.public_key()) != _spki(certificate.public_key()):  # type: ignore[arg-type]
            raise ValueError("the private key does not belong to the certificate "
                             f"{certificate.subject.rfc4514_string()}")
        return cls(key, certificate, chain, source, subject_key_identifier(certificate))

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    @property
    def addresses(self) -> tuple[str, ...]:
        return email_addresses(self.certificate)

    @property
    def domains(self) -> tuple[str, ...]:
        return dns_names(self.certificate)

    def allows_email_protection(self) -> bool:
        try:
            eku = self.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        except x509.ExtensionNotFound:
            return True  # no EKU restricts nothing (RFC 5280 §4.2.1.12)
        return ExtendedKeyUsageOID.EMAIL_PROTECTION in eku.value or \
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku.value


class KeyRing:
    """This gateway's identities, found by address, domain, issuer+serial or SKI."""

    def __init__(self, identities: list[Identity] | tuple[Identity, ...] = ()) -> None:
        self._all = tuple(identities)
        self._by_issuer_serial = {
            (i.certificate.issuer.public_bytes(), i.certificate.serial_number): i
            for i in self._all
        }
        self._by_ski = {i.ski: i for i in self._all}
        # Names read from each certificate once, not per message (the crypto job asks for
        # every message it signs); the first identity naming one wins, as a scan would.
        self._by_address: dict[str, Identity] = {}
        self._by_domain: dict[str, Identity] = {}
        for ident in self._all:
            for address in ident.addresses:
                self._by_address.setdefault(address, ident)
            for domain in ident.domains:
                self._by_domain.setdefault(domain, ident)

    def __iter__(self) -> Iterator[Identity]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def by_issuer_serial(self, issuer_der: bytes, serial: int) -> Identity | None:
        return self._by_issuer_serial.get((issuer_der, serial))

    def by_ski(self, ski: bytes) -> Identity | None:
        return self._by_ski.get(ski)

    def for_address(self, address: str) -> Identity | None:
        """The user identity for address, else the domain identity of its domain."""
        address = address.lower()
        return self.for_user(address) or self.for_domain(address.rpartition("@")[2])

    def for_user(self, address: str) -> Identity | None:
        """The identity whose certificate names address (rfc822Name), if any."""
        return self._by_address.get(address.lower())

    def for_domain(self, domain: str) -> Identity | None:
        return self._by_domain.get(domain.lower())
