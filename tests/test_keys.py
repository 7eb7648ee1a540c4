"""Key material: permission checks, formats, the demo PKI's shape."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from gateway.keys import (
    KeyMaterialError,
    KeyRing,
    load_certificates,
    load_identity,
    load_private_key,
    load_trust_anchors,
)
from gateway.keys.demo import write_demo_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    write_demo_pki(d)
    return d


def test_demo_pki_chains_for_openssl(pki: Path) -> None:
    for leaf in ["alpha.test/alice.pem", "beta.test/bob.pem", "alpha.test/domain-rsa.pem",
                 "beta.test/domain-ec.pem"]:
        out = subprocess.run(
            ["openssl", "verify", "-CAfile", str(pki / "ca/root.pem"), "-untrusted",
             str(pki / "ca/intermediate.pem"), "-purpose", "smimesign", str(pki / leaf)],
            capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


def test_private_keys_are_owner_only(pki: Path) -> None:
    for key in pki.rglob("*.key"):
        assert key.stat().st_mode & 0o077 == 0, key


def test_readable_key_refused_unless_allowed(pki: Path, tmp_path: Path) -> None:
    exposed = tmp_path / "k.pem"
    exposed.write_bytes((pki / "alpha.test/alice.key").read_bytes())
    os.chmod(exposed, 0o644)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        load_private_key(exposed)
    assert load_private_key(exposed, allow_group_readable=True) is not None


def test_identity_from_pem_and_pkcs12_agree(pki: Path) -> None:
    pem = load_identity(pki / "alpha.test/alice-chain.pem", pki / "alpha.test/alice.key")
    p12 = load_identity(pki / "alpha.test/alice.p12", password=b"demo")
    assert pem.fingerprint == p12.fingerprint
    assert pem.addresses == ("alice@alpha.test",)
    assert len(pem.chain) == 1


def test_key_must_match_certificate(pki: Path) -> None:
    with pytest.raises(KeyMaterialError, match="does not belong"):
        load_identity(pki / "alpha.test/alice.pem", pki / "beta.test/bob.key")


@pytest.mark.parametrize("content", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nxx\n"])
def test_bad_certificate_files(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "c.pem"
    f.write_bytes(content)
    with pytest.raises(KeyMaterialError):
        load_certificates(f)


def test_missing_and_wrong_password(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="no such file"):
        load_private_key(tmp_path / "nope.key")
    with pytest.raises(KeyMaterialError, match="password"):
        load_identity(pki / "alpha.test/alice.p12", password=b"wrong")


def test_trust_anchors_must_be_cas(pki: Path) -> None:
    anchors = load_trust_anchors([pki / "ca/root.pem"])
    assert isinstance(anchors[0], x509.Certificate)
    with pytest.raises(KeyMaterialError, match="not a CA"):
        load_trust_anchors([pki / "alpha.test/alice.pem"])


def test_keyring_finds_by_address_domain_and_serial(pki: Path) -> None:
    alice = load_identity(pki / "alpha.test/alice.pem", pki / "alpha.test/alice.key")
    dom = load_identity(pki / "alpha.test/domain-rsa.pem", pki / "alpha.test/domain-rsa.key")
    ring = KeyRing([alice, dom])
    assert ring.for_address("Alice@alpha.test") is alice
    assert ring.for_address("carol@alpha.test") is dom
    assert ring.for_address("x@beta.test") is None
    cert = dom.certificate
    assert ring.by_issuer_serial(cert.issuer.public_bytes(), cert.serial_number) is dom
    assert ring.by_ski(alice.ski) is alice
