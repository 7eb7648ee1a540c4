"""A demo PKI for loopback demos and tests: `smimegate pki demo DIR`.

Root CA → intermediate CA → domain certificates for alpha.test and beta.test (RSA-2048
and EC P-256 each), user certificates for alice@alpha.test and bob@beta.test, and an
OCSP responder certificate to which the intermediate delegates OCSP signing (RFC 6960
§4.2.2.2). Leaf certificates point their AIA OCSP URL at the demo directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from gateway.keys.identity import PrivateKey
from gateway.keys.load import write_private

DEFAULT_OCSP_URL = "http://127.0.0.1:8780/ocsp"
DOMAINS = ("alpha.test", "beta.test")
USERS = ("alice@alpha.test", "bob@beta.test")
DEMO_P12_PASSWORD = b"demo"  # the PKCS#12 files' password; a demo has no secrets


@dataclass(frozen=True)
class Issued:
    key: PrivateKey
    certificate: x509.Certificate


def name_of(cn: str, org: str = "smimegate demo", email: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
             x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


def new_key(kind: str) -> PrivateKey:
    """A fresh key: "rsa2048", "rsa3072", "p256" or "p384"."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(65537, int(kind[3:]))
    curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}[kind]
    return ec.generate_private_key(curve)


def issue(
    subject: x509.Name,
    key: PrivateKey,
    issuer: Issued | None,
    *,
    ca: bool = False,
    path_length: int | None = None,
    dns: tuple[str, ...] = (),
    emails: tuple[str, ...] = (),
    eku: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
    ocsp_url: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
    extensions: tuple[x509.ExtensionType, ...] = (),
) -> Issued:
    """A certificate for key, signed by issuer (self-signed when issuer is None)."""
    now = dt.datetime.now(dt.UTC)
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.certificate.subject if issuer else subject
    public = key.public_key()
    is_ec = isinstance(public, ec.EllipticCurvePublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=3 * 365 if ca else 2 * 365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.certificate.public_key()),  # type: ignore[arg-type]
            critical=False)
    if ca:
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False)
    else:
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                              key_encipherment=not is_ec, data_encipherment=False,
                              key_agreement=is_ec, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False)
    builder = builder.add_extension(usage, critical=True)
    if not ca and eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.RFC822Name(e) for e in emails]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ocsp_url and not ca:
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    for extra in extensions:  # e.g. SMIMECapabilities (RFC 4262) for a test's recipient
        builder = builder.add_extension(extra, critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    return Issued(key, cert)


@dataclass(frozen=True)
class TlsServer:
    """A throwaway CA and the TLS server certificate it issued (loopback tests, benches)."""

    ca: Issued
    server: Issued

    def write(self, folder: Path) -> tuple[Path, Path]:
        """(ca.pem, server.pem holding the leaf, the CA and the key) in folder."""
        ca_file, server = folder / "ca.pem", folder / "server.pem"
        ca_file.write_bytes(_pem(self.ca.certificate))
        server.write_bytes(_pem(self.server.certificate) + _pem(self.ca.certificate)
                           + _key_pem(self.server.key))
        server.chmod(0o600)
        return ca_file, server

    def der_chain(self) -> list[bytes]:
        """The chain a server sends, leaf first, in DER."""
        der = serialization.Encoding.DER
        return [self.server.certificate.public_bytes(der), self.ca.certificate.public_bytes(der)]


def tls_server(host: str) -> TlsServer:
    """A P-256 CA and a serverAuth certificate for host (a DNS name or an IP address)."""
    ca = issue(name_of(f"TLS test CA for {host}"), new_key("p256"), None, ca=True)
    try:
        san: tuple[x509.ExtensionType, ...] = (
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),)
        dns: tuple[str, ...] = ()
    except ValueError:
        san, dns = (), (host,)
    server = issue(name_of(host), new_key("p256"), ca, dns=dns, extensions=san,
                   eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    return TlsServer(ca, server)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(folder: Path, stem: str, item: Issued, chain: list[Issued]) -> None:
    (folder / f"{stem}.pem").write_bytes(_pem(item.certificate))
    (folder / f"{stem}-chain.pem").write_bytes(
        _pem(item.certificate) + b"".join(_pem(c.certificate) for c in chain))
    write_private(folder / f"{stem}.key", _key_pem(item.key))


def write_demo_pki(directory: Path, *, ocsp_url: str = DEFAULT_OCSP_URL) -> list[Path]:
    """Create the demo PKI in directory; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_dir = directory / "ca"
    ca_dir.mkdir(exist_ok=True)
    root = issue(name_of("smimegate demo root CA"), new_key("rsa2048"), None, ca=True)
    inter = issue(name_of("smimegate demo intermediate CA"), new_key("rsa2048"), root,
                  ca=True, path_length=0)
    ocsp = issue(name_of("smimegate demo OCSP responder"), new_key("rsa2048"), inter,
                 eku=(ExtendedKeyUsageOID.OCSP_SIGNING,))
    (ca_dir / "root.pem").write_bytes(_pem(root.certificate))
    write_private(ca_dir / "root.key", _key_pem(root.key))
    (ca_dir / "intermediate.pem").write_bytes(_pem(inter.certificate))
    write_private(ca_dir / "intermediate.key", _key_pem(inter.key))
    _write(ca_dir, "ocsp", ocsp, [inter])
    for domain in DOMAINS:
        folder = directory / domain
        folder.mkdir(exist_ok=True)
        org = domain.split(".")[0].capitalize()
        for kind, stem in (("rsa2048", "domain-rsa"), ("p256", "domain-ec")):
            item = issue(name_of(domain, org), new_key(kind), inter, dns=(domain,),
                         ocsp_url=ocsp_url)
            _write(folder, stem, item, [inter])
        for user in USERS:
            if user.endswith("@" + domain):
                local = user.split("@")[0]
                item = issue(name_of(local.capitalize(), org, user), new_key("rsa2048"), inter,
                             emails=(user,), ocsp_url=ocsp_url)
                _write(folder, local, item, [inter])
                p12 = pkcs12.serialize_key_and_certificates(
                    local.encode(), item.key, item.certificate, [inter.certificate],
                    serialization.BestAvailableEncryption(DEMO_P12_PASSWORD))
                write_private(folder / f"{local}.p12", p12)
    return sorted(p for p in directory.rglob("*") if p.is_file())
