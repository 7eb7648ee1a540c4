"""SMIMECapabilities learnt from verified signed mail choose the cipher (RFC 8551 §2.7.1).

The verifier reports the signer's smimeCapabilities attribute (ours and OpenSSL's; garbage
is ignored, never raised); the inbound job returns it only for mail that passed and whose
signer speaks for From; the front end's resolver keeps the newest per name in the shared
cache, where a worker reads it; the outbound job then keeps a GCM decision for a
recipient whose certificate lists nothing but whose signed mail announced GCM, and
narrows to CBC otherwise. Real demo PKI, real S/MIME, a real shared-memory cache.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms as acms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from prometheus_client import REGISTRY

from gateway.envelope import Envelope
from gateway.keys import load_certificates, load_identity
from gateway.lookup import cache as certcache
from gateway.lookup import learned
from gateway.lookup._cache_py import CertCache
from gateway.lookup.resolver import CertificateResolver
from gateway.outbound.cipher import choose, learned_names
from gateway.outbound.job import process_with
from gateway.smime import cms_signed, sign, verify
from gateway.smime import cms_signed_read as cr
from gateway.workers.jobs import Job, Result
from tests import peers
from tests.lookup_support import Clock, lookup_config, run
from tests.test_inbound_e2e import World, beta_world, openssl_mail, send, toml
from tests.test_inbound_job import alpha_signs, beta, plain, to
from tests.test_inbound_job import pki_fixture as pki_fixture  # the fixture
from tests.test_outbound_job import state as alpha_state
from tests.test_smime_cli import smimegate

ALICE = "alice@alpha.test"
AES128_GCM, AES256_GCM = "2.16.840.1.101.3.4.1.6", "2.16.840.1.101.3.4.1.46"
AES128_CBC, AES256_CBC = "2.16.840.1.101.3.4.1.2", "2.16.840.1.101.3.4.1.42"
OURS = tuple(oid for _, oid in cms_signed.SMIME_CAPABILITIES)
DER = serialization.Encoding.DER
needs_openssl = pytest.mark.skipif(peers.OPENSSL is None, reason="openssl not installed")


@pytest.fixture(name="cache")
def cache_fixture() -> Iterator[CertCache]:
    name = f"smimegate-test-learned-caps-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cache = certcache.CertCache.create(name, 256, 1 << 20)
    yield cache
    cache.unlink()
    cache.close()


def anchors(pki: Path) -> list[x509.Certificate]:
    return load_certificates(pki / "ca/root.pem")


def learned_total(result: str) -> float:
    return REGISTRY.get_sample_value("smimegate_lookup_capabilities_learned_total",
                                     {"result": result}) or 0.0


def counts(result: Result) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(name, labels): n for name, labels, n in result.counts}


def resolver(pki: Path, cache: CertCache, clock: Clock) -> CertificateResolver:
    # No directory configured: nothing here reaches the network.
    return CertificateResolver(lookup_config(), anchors=anchors(pki), cache=cache, clock=clock)


# -- 1. the verifier ------------------------------------------------------------------

@pytest.mark.parametrize("opaque", [False, True], ids=["multipart", "opaque"])
def test_verifier_reports_our_capabilities_in_order(pki: Path, opaque: bool) -> None:
    a = pki / "alpha.test"
    data = sign(plain(), load_identity(a / "alice-chain.pem", a / "alice.key"), opaque=opaque)
    v = verify(data, anchors=anchors(pki))
    assert v.ok, v.reason
    assert v.signers[0].capabilities == OURS
    assert v.signers[0].capabilities[:2] == (AES128_GCM, AES256_GCM)


@needs_openssl
@pytest.mark.parametrize(("flags", "expected"), [
    ((), (AES256_CBC, "2.16.840.1.101.3.4.1.22", AES128_CBC)),
    (("-nodetach",), (AES256_CBC, "2.16.840.1.101.3.4.1.22", AES128_CBC)),
    (("-nosmimecap",), ()),
    (("-noattr",), ()),
], ids=["detached", "nodetach", "nosmimecap", "noattr"])
def test_verifier_reports_openssl_capabilities(pki: Path, tmp_path: Path,
                                               flags: tuple[str, ...],
                                               expected: tuple[str, ...]) -> None:
    entity = tmp_path / "entity"
    entity.write_bytes(b"Content-Type: text/plain\r\n\r\nHello from openssl.\r\n")
    a = pki / "alpha.test"
    out = peers.openssl_cms("-sign", "-in", str(entity), "-signer", str(a / "alice.pem"),
                            "-inkey", str(a / "alice.key"), "-certfile",
                            str(pki / "ca/intermediate.pem"), *flags)
    v = verify(b"From: alice@alpha.test\r\n" + out, anchors=anchors(pki))
    assert v.ok, v.reason
    caps = v.signers[0].capabilities
    # OpenSSL 3 announces AES-CBC (256, 192, 128) first, then legacy ciphers; never GCM.
    assert caps[:len(expected)] == expected
    assert AES128_GCM not in caps
    assert bool(caps) == bool(expected)


def _resigned(pki: Path, spoil: str) -> bytes:
    """alpha.test's opaque RSA signature with one tag in its SMIMECapabilities value
    changed (spoil: the value's own, or its first algorithm OID's), signed again so that
    it still verifies."""
    a = pki / "alpha.test"
    ident = load_identity(a / "domain-rsa-chain.pem", a / "domain-rsa.key")
    cms = bytearray(peers.opaque_der(sign(plain(), ident, opaque=True)))
    si = acms.ContentInfo.load(bytes(cms))["content"]["signer_infos"][0]
    attr = next(x for x in si["signed_attrs"] if x["type"].dotted == cms_signed.
                ATTR_SMIME_CAPABILITIES)
    value = attr["values"][0].dump()
    at = bytes(cms).index(value) + (0 if spoil == "value" else value.index(b"\x06\x09"))
    cms[at] = 0x04 if cms[at] != 0x04 else 0x05  # an OCTET STRING where it does not belong
    old_sig = si["signature"].native
    si2 = acms.ContentInfo.load(bytes(cms))["content"]["signer_infos"][0]
    signed_attrs = b"\x31" + si2["signed_attrs"].dump()[1:]  # RFC 5652 §5.4: as a SET
    assert isinstance(ident.key, rsa.RSAPrivateKey)
    new_sig = ident.key.sign(signed_attrs, padding.PKCS1v15(), hashes.SHA256())
    assert len(new_sig) == len(old_sig)
    return peers.opaque_signed(b"From: alice@alpha.test\r\n",
                               bytes(cms).replace(old_sig, new_sig))


@pytest.mark.parametrize("spoil", ["value", "oid"], ids=["not-a-sequence", "not-an-oid"])
def test_garbage_capabilities_are_ignored_and_the_signature_still_passes(
        pki: Path, spoil: str) -> None:
    v = verify(_resigned(pki, spoil), anchors=anchors(pki))
    assert v.ok, v.reason
    assert v.signers[0].capabilities_der  # the attribute is there...
    assert v.signers[0].capabilities == ()  # ...and unreadable: nothing learnt


def test_decode_capabilities_never_raises() -> None:
    good = acms.SMIMECapabilites([{"capability_id": "aes128_gcm"}]).dump()
    many = acms.SMIMECapabilites([{"capability_id": "aes128_cbc"}] * 100).dump()
    assert cr.decode_capabilities((good,)) == (AES128_GCM,)
    assert cr.decode_capabilities((many,)) == (AES128_CBC,) * cr.MAX_CAPABILITIES
    for values in [None, (), (good, good), (b"",), (b"\x30\x05\x06\x01",), (good[:-1],),
                   (good + b"\x00",), (b"\x30\x03\x02\x01\x01",), (b"\x04\x00",),
                   (b"\x30\x80" + b"\x30" * 5000,)]:
        assert cr.decode_capabilities(values) == (), values


# -- 2. the inbound job ---------------------------------------------------------------

def _inbound(pki: Path, cache: CertCache, tmp: Path, data: bytes, **inbound: object) -> Result:
    env = Envelope(ALICE, ("bob@beta.test",), "127.0.0.1", received_at=1_000_000.0)
    return process_with(beta(pki, cache, tmp, **inbound), Job(env, data))


def test_a_passing_user_signature_returns_its_capabilities(pki: Path, cache: CertCache,
                                                            tmp_path: Path) -> None:
    before = time.time()
    r = _inbound(pki, cache, tmp_path, to(pki, alpha_signs(pki, plain(), who="alice")))
    assert b"smime=pass" in r.outputs[0].data
    ((name, oids, signed_at),) = r.capabilities
    assert (name, oids) == (ALICE, OURS)
    assert before - 1 <= signed_at <= time.time()  # the signingTime we wrote


def test_a_domain_signature_teaches_the_domain(pki: Path, cache: CertCache,
                                               tmp_path: Path) -> None:
    # alpha.test's gateway signed: the list is its own, kept for the domain.
    r = _inbound(pki, cache, tmp_path, to(pki, alpha_signs(pki, plain())))
    assert [(n, o) for n, o, _ in r.capabilities] == [("alpha.test", OURS)]


@pytest.mark.parametrize("case", ["forged-from", "unsigned", "bad-signature",
                                  "learning-off", "quarantined"])
def test_nothing_is_learnt_unless_it_passed_and_was_delivered(pki: Path, cache: CertCache,
                                                               tmp_path: Path,
                                                               case: str) -> None:
    inbound: dict[str, object] = {}
    if case == "forged-from":  # alice's signature on carol's From: fail, signer-mismatch
        data = to(pki, alpha_signs(pki, plain(sender="carol@alpha.test"), who="alice"))
    elif case == "unsigned":
        data = to(pki, plain())
    elif case == "bad-signature":
        data = alpha_signs(pki, plain(), who="alice").replace(b"Hello Bob.", b"Hello Bub.")
    elif case == "learning-off":
        data, inbound = alpha_signs(pki, plain(), who="alice"), {"learn_capabilities": False}
    else:
        data, inbound = alpha_signs(pki, plain(), who="alice"), {"on_pass": "quarantine"}
    r = _inbound(pki, cache, tmp_path, data, **inbound)
    assert r.refusal is None
    assert r.capabilities == ()


# -- 3. the resolver keeps the newest; a worker reads it ----------------------------------

def test_the_resolver_stores_and_a_worker_side_read_sees_it(pki: Path,
                                                            cache: CertCache) -> None:
    clock = Clock()
    r = resolver(pki, cache, clock)
    reader = certcache.CertCache.attach(cache.name)
    try:
        before = learned_total("stored")
        assert r.offer_capabilities("Alice@Alpha.test", OURS, clock.now - 60, ttl=600.0
                                    ) == "stored"
        assert learned_total("stored") - before == 1
        got = learned.read(reader, ALICE, now=clock.now)
        assert got == learned.Learned(OURS, clock.now - 60)
        # A certificate entry for the same address is a different key.
        assert reader.get(ALICE) is None
        assert learned.read(reader, ALICE, now=clock.now + 601) is None  # ttl passed
    finally:
        reader.close()
        run(r.close)


def test_only_newer_wins_and_absence_erases_nothing(pki: Path, cache: CertCache) -> None:
    clock = Clock()
    r = resolver(pki, cache, clock)
    t = clock.now - 3600
    assert r.offer_capabilities(ALICE, (AES128_GCM,), t, ttl=600.0) == "stored"
    before = learned_total("older")
    assert r.offer_capabilities(ALICE, (AES128_CBC,), t - 1, ttl=600.0) == "older"
    assert r.offer_capabilities(ALICE, (AES128_CBC,), t, ttl=600.0) == "older"
    assert learned_total("older") - before == 2
    assert learned.read(cache, ALICE, now=clock.now) == learned.Learned((AES128_GCM,), t)
    assert r.offer_capabilities(ALICE, (AES128_CBC,), t + 1, ttl=600.0) == "stored"
    assert learned.read(cache, ALICE, now=clock.now) == learned.Learned((AES128_CBC,), t + 1)
    # A signing time far ahead of our clock is never taken (RFC 8551 §2.7.1).
    ahead = clock.now + learned.MAX_CLOCK_SKEW + 60
    assert r.offer_capabilities(ALICE, (AES128_GCM,), ahead, ttl=600.0) == "future"
    # Once expired, any list is taken again, even one signed earlier.
    clock.now += 601
    assert r.offer_capabilities(ALICE, (AES256_GCM,), t, ttl=600.0) == "stored"
    run(r.close)


@pytest.mark.parametrize(("name", "oids", "signed_at"), [
    ("", (AES128_GCM,), 1.0), ("x" * 300 + "@alpha.test", (AES128_GCM,), 1.0),
    (ALICE, (), 1.0), (ALICE, ("aes128-gcm",), 1.0), (ALICE, ("1.2.3\x00",), 1.0),
    (ALICE, (AES128_GCM,) * 65, 1.0), (ALICE, (AES128_GCM,), float("nan")),
    (ALICE, (AES128_GCM,), -5.0), (ALICE, (7,), 1.0), (ALICE, "1.2.3", 1.0),
])
def test_bad_offers_are_rejected_and_counted_never_raised(pki: Path, cache: CertCache,
                                                          name: str, oids: object,
                                                          signed_at: float) -> None:
    r = resolver(pki, cache, Clock())
    before = learned_total("rejected")
    assert r.offer_capabilities(name, oids, signed_at, ttl=60.0) == "rejected"  # type: ignore[arg-type]
    assert learned_total("rejected") - before == 1
    run(r.close)


def test_an_entry_not_written_by_learned_reads_as_nothing(cache: CertCache) -> None:
    later = time.time() + 60
    cache.put("caps:a@alpha.test", [b"\x30\x03garbage"], later)
    cache.put("caps:b@alpha.test", [b"signed-at 12", b"not an oid"], later)
    cache.put_negative("caps:c@alpha.test", later)
    for who in ("a@alpha.test", "b@alpha.test", "c@alpha.test", "x" * 300):
        assert learned.read(cache, who) is None
    assert learned.read(None, ALICE) is None


# -- 4. the outbound cipher ---------------------------------------------------------------

def _bob_cache(pki: Path, cache: CertCache) -> None:
    later = time.time() + 3600
    beta_dir = pki / "beta.test"
    cache.put("bob@beta.test", [load_certificates(beta_dir / "bob.pem")[0].public_bytes(DER)],
              later)
    cache.put_negative("carol@beta.test", later)  # carol: the domain certificate
    cache.put("beta.test", [load_certificates(beta_dir / "domain-rsa.pem")[0]
                            .public_bytes(DER)], later)


def _send(pki: Path, cache: CertCache, rcpt: str, **policy: Any) -> Result:
    msg = (f"From: alice@alpha.test\r\nTo: {rcpt}\r\nSubject: Hi\r\nMessage-ID: "
           "<m1@alpha.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHi.\r\n")
    return process_with(alpha_state(pki, cache, **policy),
                        Job(Envelope(ALICE, (rcpt,), "127.0.0.1"), msg.encode()))


def _learn(cache: CertCache, name: str, *oids: str) -> None:
    assert learned.store(cache, name, learned.Learned(oids, time.time() - 10),
                         now=time.time(), ttl=600.0) == "stored"


def test_learnt_gcm_keeps_gcm_for_a_certificate_without_the_extension(
        pki: Path, cache: CertCache, caplog: pytest.LogCaptureFixture) -> None:
    _bob_cache(pki, cache)
    _learn(cache, "bob@beta.test", AES128_GCM, AES128_CBC)
    caplog.set_level("INFO", logger="gateway.outbound.job")
    r = _send(pki, cache, "bob@beta.test")
    assert b"smime-type=authEnveloped-data" in r.outputs[0].data
    c = counts(r)
    assert c[("cipher_learned", ("aes128-gcm",))] == 1
    assert c[("encrypted", ("aes128-gcm",))] == 1
    assert not any(name == "cipher_narrowed" for name, _ in c)
    assert "announced in their latest verified signed mail" in caplog.text


@pytest.mark.parametrize("case", ["nothing-learnt", "cbc-only", "other-key-size",
                                  "someone-else", "user-list-for-domain-certificate"])
def test_otherwise_gcm_narrows_to_cbc(pki: Path, cache: CertCache, case: str) -> None:
    _bob_cache(pki, cache)
    rcpt, cipher = "bob@beta.test", "aes128-gcm"
    if case == "cbc-only":
        _learn(cache, "bob@beta.test", AES256_CBC, AES128_CBC)
    elif case == "other-key-size":
        _learn(cache, "bob@beta.test", AES128_GCM)
        cipher = "aes256-gcm"
    elif case == "someone-else":
        _learn(cache, "dave@beta.test", AES128_GCM)
    elif case == "user-list-for-domain-certificate":
        # carol's own client announced GCM; her mail is encrypted to beta's gateway.
        _learn(cache, "carol@beta.test", AES128_GCM)
        rcpt = "carol@beta.test"
    r = _send(pki, cache, rcpt, default_cipher=cipher)
    assert b"smime-type=enveloped-data" in r.outputs[0].data
    c = counts(r)
    narrow = cipher.replace("gcm", "cbc")
    assert c[("cipher_narrowed", (cipher, narrow))] == 1
    assert not any(name == "cipher_learned" for name, _ in c)


def test_a_domain_list_serves_the_domain_certificate(pki: Path, cache: CertCache) -> None:
    _bob_cache(pki, cache)
    _learn(cache, "beta.test", AES128_GCM)
    r = _send(pki, cache, "carol@beta.test")
    assert b"smime-type=authEnveloped-data" in r.outputs[0].data
    assert counts(r)[("cipher_learned", ("aes128-gcm",))] == 1


def test_choose_needs_every_recipient_of_the_group(pki: Path, cache: CertCache) -> None:
    domain = load_certificates(pki / "beta.test/domain-rsa.pem")[0]
    _learn(cache, "bob@beta.test", AES128_GCM)
    both = ("bob@beta.test", "dave@beta.test")
    assert choose("aes128-gcm", (domain,), "user", both, cache).by == "narrowed"
    _learn(cache, "dave@beta.test", AES128_GCM)
    assert choose("aes128-gcm", (domain,), "user", both, cache).by == "learned"
    assert choose("aes128-cbc", (domain,), "user", both, cache).by == "policy"
    assert choose("aes128-gcm", (), "user", both, cache).by == "policy"
    assert choose("aes128-gcm", (domain,), "user", both, None).cipher == "aes128-cbc"
    assert learned_names("domain", ("A@beta.test", "b@beta.test")) == ("beta.test",)
    assert learned_names("user", ("A@beta.test", "a@beta.test")) == ("a@beta.test",)


def test_inbound_to_resolver_to_outbound_in_one_chain(pki: Path, cache: CertCache,
                                                      tmp_path: Path) -> None:
    """beta.test's gateway: alice's signed mail in, then bob's reply out to her."""
    state = beta(pki, cache, tmp_path)
    inbound = process_with(state, Job(Envelope(ALICE, ("bob@beta.test",), "127.0.0.1"),
                                      to(pki, alpha_signs(pki, plain(), who="alice"))))
    clock = Clock()
    r = resolver(pki, cache, clock)
    for name, oids, signed_at in inbound.capabilities:
        assert r.offer_capabilities(name, oids, signed_at, ttl=600.0) == "stored"
    run(r.close)
    alice = load_certificates(pki / "alpha.test/alice.pem")[0]
    cache.put(ALICE, [alice.public_bytes(DER)], time.time() + 600)
    reply = (b"From: bob@beta.test\r\nTo: alice@alpha.test\r\nSubject: Re: Hi\r\n"
             b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHi Alice.\r\n")
    out = process_with(state, Job(Envelope("bob@beta.test", (ALICE,), "127.0.0.1"), reply))
    assert b"smime-type=authEnveloped-data" in out.outputs[0].data
    assert counts(out)[("cipher_learned", ("aes128-gcm",))] == 1


# -- 5. end to end: `smimegate run` learns ---------------------------------------------

@pytest.fixture(scope="module", name="world")
def world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    pki = tmp_path_factory.mktemp("learned-e2e-pki")
    tmp = tmp_path_factory.mktemp("learned-gw")

    def config_for(sink_port: int) -> str:
        # A cache name of our own: another test run on this machine may hold the usual one.
        return toml(pki, tmp, sink_port).replace(
            'name = "smimegate-test-inbound-',
            f'name = "smimegate-test-learned-{uuid.uuid4().hex[:8]}-')

    yield from beta_world(pki, tmp, config_for)


@needs_openssl
@pytest.mark.timeout(180)
def test_the_gateway_learns_from_verified_mail(world: World) -> None:
    stored = 'smimegate_lookup_capabilities_learned_total{result="stored"}'
    send(world, openssl_mail(world.pki, world.tmp, "beta.test/bob.pem", "Caps"),
         "caps@alpha.test")
    assert b"smime=pass" in world.arrived("caps@alpha.test")
    assert world.gateway.metric(stored) == 1



def test_smime_verify_cli_says_what_the_signer_announces(pki: Path) -> None:
    signed = alpha_signs(pki, plain(), who="alice")
    done = smimegate("smime", "verify", "--trust", pki / "ca/root.pem", stdin=signed)
    assert done.returncode == 0, done.stderr
    assert b"the signer announces: aes128-gcm, aes256-gcm, aes128-cbc" in done.stderr
