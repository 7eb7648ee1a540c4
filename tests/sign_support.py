"""The demo PKI as the signature tests use it: identities, anchors, odd certificates."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.keys import Identity, load_certificates, load_identity, load_private_key
from gateway.keys.demo import Issued, issue, name_of, new_key, write_demo_pki

MESSAGE = (b"From: Alice <alice@alpha.test>\r\nTo: bob@beta.test\r\nSubject: hello\r\n"
           b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@alpha.test>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n"
           b"Gr\xc3\xbc\xc3\x9fe aus Z\xc3\xbcrich.\r\n"
           b"From here on, a line that starts with From.\r\n"
           b"trailing space \r\n\r\n")
ENTITY = MESSAGE[MESSAGE.index(b"Content-Type"):]
ROUTING = MESSAGE[:MESSAGE.index(b"MIME-Version")]


@dataclass(frozen=True)
class Signer:
    """An identity with the PEM files a peer tool needs."""

    name: str
    identity: Identity
    cert_pem: Path
    key_pem: Path
    is_rsa: bool


@dataclass(frozen=True)
class Pki:
    directory: Path
    root: x509.Certificate
    intermediate: x509.Certificate
    root_pem: Path
    intermediate_pem: Path
    inter_issued: Issued
    signers: dict[str, Signer]  # "rsa", "p256", "p384", "alice"

    def odd_signer(self, name: str, *, kind: str = "p256", issuer: Issued | None = None,
                   not_before: dt.datetime | None = None,
                   not_after: dt.datetime | None = None) -> Signer:
        """A signer with a certificate made for one test (expired, foreign CA, ...)."""
        issued = issue(name_of(name, "Odd"), new_key(kind), issuer or self.inter_issued,
                       emails=(f"{name}@alpha.test",), not_before=not_before,
                       not_after=not_after)
        return _write_signer(self.directory, name, issued, [self.intermediate])


def pem_bytes(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem_bytes(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def _write_signer(directory: Path, name: str, issued: Issued,
                  chain: list[x509.Certificate]) -> Signer:
    cert_pem = directory / f"{name}.pem"
    key_pem = directory / f"{name}.key"
    cert_pem.write_bytes(pem_bytes(issued.certificate))
    key_pem.write_bytes(key_pem_bytes(issued.key))
    key_pem.chmod(0o600)
    ident = Identity.create(issued.key, issued.certificate, tuple(chain))
    return Signer(name, ident, cert_pem, key_pem, kind_is_rsa(ident))


def kind_is_rsa(ident: Identity) -> bool:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return isinstance(ident.key, rsa.RSAPrivateKey)


def make_pki(directory: Path) -> Pki:
    write_demo_pki(directory)
    ca = directory / "ca"
    root = load_certificates(ca / "root.pem")[0]
    inter = load_certificates(ca / "intermediate.pem")[0]
    inter_issued = Issued(load_private_key(ca / "intermediate.key"), inter)
    signers: dict[str, Signer] = {}
    for name, stem in (("rsa", "alpha.test/domain-rsa"), ("p256", "alpha.test/domain-ec"),
                       ("alice", "alpha.test/alice")):
        ident = load_identity(directory / f"{stem}-chain.pem", directory / f"{stem}.key")
        signers[name] = Signer(name, ident, directory / f"{stem}.pem",
                               directory / f"{stem}.key", kind_is_rsa(ident))
    p384 = issue(name_of("carol", "Alpha"), new_key("p384"), inter_issued,
                 emails=("carol@alpha.test",))
    signers["p384"] = _write_signer(directory, "p384", p384, [inter])
    return Pki(directory, root, inter, ca / "root.pem", ca / "intermediate.pem",
               inter_issued, signers)
