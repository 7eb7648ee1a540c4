"""[inbound] harvest: signer certificates of verified inbound mail as a lookup source.

Resolver level: an offered certificate passes the same trust gate as a directory's
(encryption, naming the address) or is refused and counted; it fills only an empty or
negative entry, never replaces a directory's answer, and expires at min(notAfter,
positive_ttl). Worker level: the crypto job with harvesting returns the signer's chain
for a passing message, and the plain job returns nothing.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from prometheus_client import REGISTRY

from gateway.envelope import Envelope
from gateway.keys.demo import issue, name_of, new_key
from gateway.lookup._cache_py import CertCache
from gateway.lookup.resolver import CertificateResolver
from gateway.outbound import context as worker_context
from gateway.outbound.job import process as crypto_job
from gateway.workers.jobs import Job
from tests.lookup_support import Clock, Pki, Scripted, der, entry, lookup_config, run
from tests.lookup_support import cache_fixture as cache_fixture
from tests.lookup_support import pki_fixture as pki_fixture
from tests.test_inbound_job import alpha_signs, beta, plain, to

ALICE = "alice@alpha.test"


def harvested(result: str) -> float:
    return REGISTRY.get_sample_value("smimegate_lookup_harvested_total",
                                     {"result": result}) or 0.0


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("smimegate_lookup_rejected_certificates_total",
                                     {"source": "harvested", "reason": reason}) or 0.0


def resolver(pki: Pki, cache: CertCache, clock: Clock | None = None,
             **config: object) -> CertificateResolver:
    # No directory configured: every fetch answers "none" without the network.
    return CertificateResolver(lookup_config(**config), anchors=[pki.root], cache=cache,
                               clock=clock or Clock())


def signing_only(pki: Pki) -> x509.Certificate:
    """alice's name, our CA, email protection, but keyUsage digitalSignature only."""
    key = new_key("p256")
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder()
            .subject_name(name_of("Alice", "Alpha", ALICE))
            .issuer_name(pki.inter.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                         False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(ALICE)]),
                           critical=False)
            .sign(pki.inter.key, hashes.SHA256()))


def test_a_valid_certificate_is_stored_and_served_as_harvested(pki: Pki,
                                                               cache: CertCache) -> None:
    clock = Clock()
    r = resolver(pki, cache, clock, positive_ttl=3600.0)
    before = harvested("stored")
    assert r.offer_harvested("Alice@Alpha.test", [der(pki.alice), der(pki.inter.certificate)]
                             ) == "stored"
    assert harvested("stored") - before == 1
    hit = cache.get(ALICE, now=clock.now)
    assert hit is not None
    assert hit.ders == (der(pki.alice),)
    assert hit.expires_at == min(clock.now + 3600.0,
                                 pki.alice.not_valid_after_utc.timestamp(),
                                 pki.inter.certificate.not_valid_after_utc.timestamp())

    async def body() -> None:
        try:
            got = await r.certificates_for(ALICE)
            assert (got.user.status, got.user.source) == ("found", "harvested")
            assert got.user.certificates == (pki.alice,)
            assert got.status == "found"
        finally:
            await r.close()
    run(body)


def test_expiry_is_the_certificates_when_it_comes_first(pki: Pki, cache: CertCache) -> None:
    clock = Clock()
    short = issue(name_of("Alice", "Alpha", ALICE), new_key("p256"), pki.inter,
                  emails=(ALICE,), not_after=dt.datetime.fromtimestamp(clock.now + 600,
                                                                       dt.UTC))
    r = resolver(pki, cache, clock, positive_ttl=3600.0)
    assert r.offer_harvested(ALICE, [der(short.certificate), der(pki.inter.certificate)]
                             ) == "stored"
    hit = cache.get(ALICE, now=clock.now)
    assert hit is not None
    assert hit.expires_at == short.certificate.not_valid_after_utc.timestamp()
    run(r.close)


@pytest.mark.parametrize("case", ["wrong-name", "untrusted", "signing-only", "garbage",
                                  "not-an-address"])
def test_what_fails_the_trust_gate_is_rejected_and_counted(pki: Pki, cache: CertCache,
                                                           case: str) -> None:
    address, chain, reason = {
        "wrong-name": (ALICE, [der(pki.bob), der(pki.inter.certificate)], "wrong-name"),
        "untrusted": (ALICE, [der(pki.self_signed_alice)], "untrusted"),
        "signing-only": (ALICE, [der(signing_only(pki)), der(pki.inter.certificate)],
                         "bad-usage"),
        "garbage": (ALICE, [b"\x30\x03garbage"], "malformed"),
        "not-an-address": ("alpha.test", [der(pki.alpha_domain)], "malformed"),
    }[case]
    r = resolver(pki, cache)
    before, before_reason = harvested("rejected"), rejected(reason)
    assert r.offer_harvested(address, chain) == "rejected"
    assert harvested("rejected") - before == 1
    assert rejected(reason) - before_reason == 1
    assert cache.get(address) is None
    run(r.close)


def test_a_directory_answer_is_never_replaced(pki: Pki, cache: CertCache) -> None:
    other = issue(name_of("Alice", "Alpha", ALICE), new_key("p256"), pki.inter,
                  emails=(ALICE,)).certificate

    async def body() -> None:
        d = await Scripted({ALICE: [entry(pki.alice, (pki.inter.certificate,))]}).start()
        r = resolver(pki, cache, default_directories=(d.url,))
        try:
            assert (await r.lookup(ALICE)).certificates == (pki.alice,)
            before = harvested("skipped")
            assert r.offer_harvested(ALICE, [der(other), der(pki.inter.certificate)]
                                     ) == "skipped"
            assert harvested("skipped") - before == 1
            again = await r.lookup(ALICE)
            assert (again.certificates, again.source) == ((pki.alice,), "cache")
        finally:
            await r.close()
            await d.stop()
    run(body)


def test_a_negative_entry_is_filled_and_the_next_directory_answer_wins(
        pki: Pki, cache: CertCache) -> None:
    clock = Clock()

    async def body() -> None:
        d = await Scripted({}).start()  # the directory lists nothing for alice
        r = resolver(pki, cache, clock, default_directories=(d.url,), positive_ttl=60.0,
                     stale_bound=0.0)
        try:
            assert (await r.lookup(ALICE)).status == "none"
            assert r.offer_harvested(ALICE, [der(pki.alice), der(pki.inter.certificate)]
                                     ) == "stored"
            got = await r.lookup(ALICE)
            assert (got.certificates, got.source) == ((pki.alice,), "harvested")
            clock.now += 61.0  # past the harvest's expiry: the directory is asked again
            d.listing[ALICE] = [entry(pki.alice, (pki.inter.certificate,))]
            fresh = await r.lookup(ALICE)
            assert (fresh.certificates, fresh.source) == ((pki.alice,), "directory")
            assert (await r.lookup(ALICE)).source == "cache"
        finally:
            await r.close()
            await d.stop()
    run(body)


# -- the worker's half ----------------------------------------------------------------

def test_a_passing_message_returns_its_signer_only_with_harvesting(
        pki: Pki, cache: CertCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_context, "_loaded", beta(pki.dir, cache, tmp_path, harvest=True))
    data = to(pki.dir, alpha_signs(pki.dir, plain(), who="alice"))
    job = Job(Envelope(ALICE, ("bob@beta.test",), "127.0.0.1"), data)

    with_harvest = crypto_job(job)
    assert b"smime=pass" in with_harvest.outputs[0].data
    ((address, chain),) = with_harvest.harvested
    assert address == ALICE
    assert chain[:2] == (der(pki.alice), der(pki.inter.certificate))
    # What the front end then does with it: the certificate is usable for encryption.
    r = resolver(pki, cache)
    assert r.offer_harvested(address, chain) == "stored"
    run(r.close)

    # A domain certificate names no address, and a failing signature gives nothing.
    domain_signed = to(pki.dir, alpha_signs(pki.dir, plain()))
    assert crypto_job(Job(job.envelope, domain_signed)).harvested == ()
    forged = to(pki.dir, alpha_signs(pki.dir, plain(sender="carol@alpha.test"), who="alice"))
    assert crypto_job(Job(job.envelope, forged)).harvested == ()
    # With harvesting off (the default) nothing is returned.
    monkeypatch.setattr(worker_context, "_loaded", beta(pki.dir, cache, tmp_path))
    assert crypto_job(job).harvested == ()
