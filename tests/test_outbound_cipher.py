"""The outbound cipher follows what recipient certificates say they take (RFC 4262).

A GCM decision becomes AuthEnvelopedData only when every certificate of the group lists
that GCM algorithm in SMIMECapabilities; otherwise EnvelopedData with CBC of the same key
size, counted and logged. Real demo PKI, a real shared-memory cache, real S/MIME.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.keys import KeyRing, load_certificates, load_identity, load_private_key
from gateway.keys.capabilities import (
    AES128_GCM,
    SMIME_CAPABILITIES_OID,
    capabilities_of,
    capability_oids,
    narrowed_cipher,
)
from gateway.keys.demo import Issued, issue, name_of, new_key
from gateway.lookup import cache as certcache
from gateway.lookup._cache_py import CertCache
from gateway.outbound.job import process_with
from gateway.smime import decrypt, verify
from tests.test_outbound_job import counts, job, root, state
from tests.test_outbound_job import pki_fixture as pki_fixture  # the fixture

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


def capabilities(*names: str) -> x509.UnrecognizedExtension:
    der = asn1_cms.SMIMECapabilites([{"capability_id": n} for n in names]).dump()
    return x509.UnrecognizedExtension(SMIME_CAPABILITIES_OID, der)


def recipient(pki: Path, address: str, *extensions: x509.ExtensionType) -> Issued:
    inter = Issued(load_private_key(pki / "ca/intermediate.key"),
                   load_certificates(pki / "ca/intermediate.pem")[0])
    return issue(name_of(address.split("@")[0], "beta", address), new_key("rsa2048"), inter,
                 emails=(address,), extensions=extensions)


def ring(tmp: Path, who: Issued) -> KeyRing:
    (tmp / "r.pem").write_bytes(who.certificate.public_bytes(PEM))
    (tmp / "r.key").write_bytes(who.key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp / "r.key").chmod(0o600)
    return KeyRing([load_identity(tmp / "r.pem", tmp / "r.key")])


@pytest.fixture(name="gcm")
def gcm_fixture(pki: Path) -> Issued:
    return recipient(pki, "gcm@beta.test", capabilities("aes128_gcm", "aes128_cbc"))


@pytest.fixture(name="cache")
def cache_fixture(pki: Path, gcm: Issued) -> Iterator[CertCache]:
    name = f"smimegate-test-outbound-cipher-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cache = certcache.CertCache.create(name, 1024, 1 << 20)
    later = time.time() + 3600
    bob = load_certificates(pki / "beta.test/bob.pem")[0].public_bytes(DER)
    cache.put("bob@beta.test", [bob], later)
    cache.put("gcm@beta.test", [gcm.certificate.public_bytes(DER)], later)
    # One recipient with two certificates: only one of them takes GCM.
    cache.put("both@beta.test", [gcm.certificate.public_bytes(DER), bob], later)
    yield cache
    cache.unlink()
    cache.close()


def test_recipient_without_capabilities_gets_cbc_enveloped_data(pki: Path,
                                                                cache: CertCache) -> None:
    r = process_with(state(pki, cache), job("bob@beta.test"))  # default aes128-gcm
    out = r.outputs[0].data
    assert b"smime-type=enveloped-data" in out
    assert b"authEnveloped-data" not in out
    c = counts(r)
    assert c[("cipher_narrowed", ("aes128-gcm", "aes128-cbc"))] == 1
    assert c[("encrypted", ("aes128-cbc",))] == 1
    assert ("encrypted", ("aes128-gcm",)) not in c


def test_aes256_gcm_narrows_to_aes256_cbc(pki: Path, cache: CertCache) -> None:
    r = process_with(state(pki, cache, default_cipher="aes256-gcm"), job("gcm@beta.test"))
    # The certificate lists AES-128-GCM only: AES-256-GCM is not known to be taken.
    assert b"smime-type=enveloped-data" in r.outputs[0].data
    assert counts(r)[("cipher_narrowed", ("aes256-gcm", "aes256-cbc"))] == 1


def test_recipient_listing_gcm_gets_auth_enveloped_data(pki: Path, cache: CertCache,
                                                        gcm: Issued, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="gateway.outbound.job")
    r = process_with(state(pki, cache), job("gcm@beta.test"))
    out = r.outputs[0].data
    assert b"smime-type=authEnveloped-data" in out
    c = counts(r)
    assert c[("encrypted", ("aes128-gcm",))] == 1
    assert not any(name == "cipher_narrowed" for name, _ in c)
    v = verify(decrypt(out, ring(tmp_path, gcm)), anchors=root(pki))
    assert v.ok, v.reason
    assert "<m1@alpha.test> to gcm@beta.test: encrypted" in caplog.text
    assert "instead" not in caplog.text


def test_every_certificate_of_the_group_must_list_gcm(pki: Path, cache: CertCache,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="gateway.outbound.job")
    r = process_with(state(pki, cache), job("both@beta.test"))
    assert b"smime-type=enveloped-data" in r.outputs[0].data
    assert counts(r)[("cipher_narrowed", ("aes128-gcm", "aes128-cbc"))] == 1
    # One info line for the group: its outcome with the narrowing as a note.
    (line,) = [r.getMessage() for r in caplog.records if "both@beta.test" in r.getMessage()]
    assert line.startswith("<m1@alpha.test> to both@beta.test: encrypted (")
    assert "aes128-gcm not listed in every recipient certificate's SMIMECapabilities" in line
    assert line.endswith("aes128-cbc instead")


def test_gcm_without_capabilities_skips_the_narrowing(pki: Path, cache: CertCache) -> None:
    r = process_with(state(pki, cache, gcm_without_capabilities=True), job("bob@beta.test"))
    assert b"smime-type=authEnveloped-data" in r.outputs[0].data
    assert counts(r)[("encrypted", ("aes128-gcm",))] == 1


def test_cbc_decision_stays_cbc(pki: Path, cache: CertCache) -> None:
    r = process_with(state(pki, cache, default_cipher="aes256-cbc"), job("gcm@beta.test"))
    assert b"smime-type=enveloped-data" in r.outputs[0].data
    c = counts(r)
    assert c[("encrypted", ("aes256-cbc",))] == 1
    assert not any(name == "cipher_narrowed" for name, _ in c)


def test_narrowed_cipher_rule(pki: Path, gcm: Issued) -> None:
    bob = load_certificates(pki / "beta.test/bob.pem")[0]
    both = recipient(pki, "x@beta.test", capabilities("aes256_gcm", "aes128_gcm")).certificate
    g = gcm.certificate
    assert capability_oids(g) == {AES128_GCM, "2.16.840.1.101.3.4.1.2"}
    assert capability_oids(bob) == frozenset()
    assert narrowed_cipher("aes128-gcm", (g,)) == "aes128-gcm"
    assert narrowed_cipher("aes128-gcm", (g, bob)) == "aes128-cbc"
    assert narrowed_cipher("aes256-gcm", (g,)) == "aes256-cbc"
    assert narrowed_cipher("aes256-gcm", (both, both)) == "aes256-gcm"
    assert narrowed_cipher("aes128-cbc", (bob,)) == "aes128-cbc"


def test_unreadable_capabilities_count_as_not_listing_gcm(pki: Path) -> None:
    bad = x509.UnrecognizedExtension(SMIME_CAPABILITIES_OID, b"\x30\x05\x06\x01")
    cert = recipient(pki, "bad@beta.test", bad).certificate
    assert capabilities_of(cert) == ()
    assert capability_oids(cert) == frozenset()
    assert narrowed_cipher("aes128-gcm", (cert,)) == "aes128-cbc"
