"""Fixtures for the envelope tests: one demo PKI per session plus a P-384 recipient.

Import the fixtures into a test module (`from tests.envelope_support import pki`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.keys import Identity, KeyRing, load_identity
from gateway.keys.demo import Issued, issue, name_of, new_key, write_demo_pki
from gateway.keys.load import write_private


@dataclass(frozen=True)
class Pki:
    root: Path
    directory: Path

    def pem(self, name: str) -> Path:
        """name like "beta.test/bob" or "beta.test/domain-ec"."""
        return self.directory / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def cert(self, name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.pem(name).read_bytes())

    def identity(self, name: str) -> Identity:
        return load_identity(self.directory / f"{name}-chain.pem", self.key(name))

    def ring(self, *names: str) -> KeyRing:
        return KeyRing([self.identity(n) for n in names])


BETA = ("beta.test/bob", "beta.test/domain-rsa", "beta.test/domain-ec", "beta.test/carol-p384")


def _add_p384(directory: Path) -> None:
    ca = directory / "ca"
    inter = Issued(serialization.load_pem_private_key((ca / "intermediate.key").read_bytes(),
                                                      None),  # type: ignore[arg-type]
                   x509.load_pem_x509_certificate((ca / "intermediate.pem").read_bytes()))
    item = issue(name_of("Carol", "Beta", "carol@beta.test"), new_key("p384"), inter,
                 emails=("carol@beta.test",))
    stem = directory / "beta.test" / "carol-p384"
    pem = item.certificate.public_bytes(serialization.Encoding.PEM)
    stem.with_suffix(".pem").write_bytes(pem)
    Path(f"{stem}-chain.pem").write_bytes(pem + inter.certificate.public_bytes(
        serialization.Encoding.PEM))
    write_private(stem.with_suffix(".key"), item.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("envelope-pki")
    write_demo_pki(directory)
    _add_p384(directory)
    return Pki(directory / "ca" / "root.pem", directory)


MESSAGE = (b"From: Alice <alice@alpha.test>\r\nTo: Bob <bob@beta.test>\r\n"
           b"Subject: quarterly figures\r\nDate: Sat, 28 Nov 2026 17:00:00 +0000\r\n"
           b"Message-ID: <1@alpha.test>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
           b"\r\nHello Bob,\r\nFrom the figures: caf\xc3\xa9 \xe2\x82\xac 12.\r\n")
ENTITY = MESSAGE[MESSAGE.index(b"Content-Type"):]
