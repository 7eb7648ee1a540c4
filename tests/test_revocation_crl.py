"""CRL checks (RFC 5280 §5, §6.3) in the inbound revocation path, against a real HTTP
server on loopback serving CRLs made with cryptography's CertificateRevocationListBuilder.

A small PKI under the demo root: an intermediate naming the root's CRL, leaves naming the
intermediate's. A revoked intermediate makes verify's verdict revoked and the inbound
message fail into quarantine; a CRL that is expired, signed by another key, issued by
someone else, garbage, missing (404), never answered, oversized, a delta, scoped away or
carrying an unknown critical extension gives "unknown" with its reason (strict:
temperror); a second message is answered from the cache (requests counted at the
server); crl = false keeps the old behaviour.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from gateway.config.schema import (
    InboundRevocationSection,
    InboundSection,
    KeysSection,
    PolicySection,
)
from gateway.envelope import Envelope
from gateway.inbound.quarantine import Quarantine
from gateway.keys.demo import Issued, issue, name_of, new_key
from gateway.lookup import cache as certcache
from gateway.lookup._cache_py import CertCache
from gateway.outbound.context import Loaded, WorkerContext, load
from gateway.outbound.job import process_with
from gateway.revocation import CrlSource, OcspClient, RevocationPolicy
from gateway.smime import sign, verify
from gateway.workers.jobs import Job, Result
from tests.crl_support import (  # noqa: F401 - fixtures are used by name
    CrlHttp,
    Pki,
    cdp,
    crls_fixture,
    hits,
    make_crl,
    make_pki,
    serve,
    silent_fixture,
)
from tests.directory_world import World, world_fixture  # noqa: F401
from tests.revocation_support import counter, identity

KEY_COMPROMISE = x509.ReasonFlags.key_compromise


@pytest.fixture(name="cache")
def cache_fixture() -> Iterator[CertCache]:
    name = f"smimegate-test-crl-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cache = certcache.CertCache.create(name, 64, 1 << 16)
    yield cache
    cache.unlink()
    cache.close()


@pytest.fixture(name="pki")
def pki_fixture(world: World, crls: CrlHttp) -> Pki:
    return make_pki(world, crls, uuid.uuid4().hex[:8])


def publish_good(crls: CrlHttp, pki: Pki) -> None:
    serve(crls, pki.root_crl, make_crl(pki.root))
    serve(crls, pki.inter_crl, make_crl(pki.inter))


def beta(world: World, cache: CertCache, qdir: Path, mode: str, *, crl: bool = True,
         timeout: float = 2.0) -> Loaded:
    """beta.test's worker state: no OCSP server configured, AIA off: CRLs or nothing."""
    b = world.dir / "beta.test"
    keys = KeysSection(certificates=(b / "domain-rsa-chain.pem",),
                       private_keys=(b / "domain-rsa.key",),
                       trust_anchors=(world.dir / "ca/root.pem",))
    revocation = InboundRevocationSection(mode=mode, use_aia=False, timeout=timeout, crl=crl)
    return load(WorkerContext(keys, PolicySection(), cache.name, ("beta.test",), 3600.0,
                              "info", InboundSection(), revocation, "mx.beta.test", qdir))


def mail(item: Issued, pki: Pki, sender: str) -> bytes:
    body = (f"From: {sender}\r\nTo: bob@beta.test\r\nSubject: r\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain\r\n\r\nHi.\r\n").encode()
    return sign(body, identity(item, pki.inter))


def run(state: Loaded, data: bytes) -> Result:
    return process_with(state, Job(Envelope("x@alpha.test", ("bob@beta.test",)), data))


def header(result: Result) -> bytes:
    (out,) = result.outputs
    return out.data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ")


# --- end to end through the inbound worker ---------------------------------------------

def test_good_crls_pass_and_the_second_message_is_served_from_the_cache(
        world: World, crls: CrlHttp, pki: Pki, cache: CertCache, tmp_path: Path) -> None:
    publish_good(crls, pki)
    item = pki.leaf("gina@alpha.test")
    state = beta(world, cache, tmp_path, "strict")
    hits_before = counter("smimegate_revocation_crl_cache_hits", {"kind": "crl"})
    ok_before = counter("smimegate_revocation_crl_fetches", {"result": "ok"})
    first = run(state, mail(item, pki, "gina@alpha.test"))
    # The worker hands its CRL counts to the front end with the result.
    assert ("revocation_crl_fetches", ("ok",)) in {(n, ls) for n, ls, _ in first.counts}
    head = header(first)
    assert b"smime=pass" in head
    assert b"revocation" not in head
    assert (hits(crls, pki.root_crl), hits(crls, pki.inter_crl)) == (1, 1)
    assert counter("smimegate_revocation_crl_fetches", {"result": "ok"}) == ok_before + 2
    other = pki.leaf("hugo@alpha.test")  # another leaf on the same CRL: no download either
    assert b"smime=pass" in header(run(state, mail(other, pki, "hugo@alpha.test")))
    assert (hits(crls, pki.root_crl), hits(crls, pki.inter_crl)) == (1, 1)
    assert counter("smimegate_revocation_crl_cache_hits", {"kind": "crl"}) == hits_before + 2


def test_revoked_intermediate_fails_into_quarantine(
        world: World, crls: CrlHttp, pki: Pki, cache: CertCache, tmp_path: Path) -> None:
    serve(crls, pki.root_crl, make_crl(pki.root, [
        (pki.inter.certificate.serial_number, x509.ReasonFlags.ca_compromise)]))
    serve(crls, pki.inter_crl, make_crl(pki.inter))
    item = pki.leaf("ida@alpha.test")
    data = mail(item, pki, "ida@alpha.test")
    policy = RevocationPolicy("soft", OcspClient(use_aia=False, crl=CrlSource()))
    result = verify(data, anchors=[pki.root.certificate], revocation=policy.check)
    assert result.signers[0].revocation == "revoked"
    assert policy.verdict(result).result == "fail"
    r = run(beta(world, cache, tmp_path, "soft"), data)  # soft: revoked fails all the same
    assert r.outputs == ()
    (qid,) = r.quarantined
    entry = Quarantine(tmp_path).get(qid)
    assert entry.verdict == "fail"
    assert "revoked" in entry.reason
    assert "cACompromise" in entry.reason


def test_revoked_leaf_fails(world: World, crls: CrlHttp, pki: Pki, cache: CertCache,
                            tmp_path: Path) -> None:
    item = pki.leaf("jan@alpha.test")
    serve(crls, pki.root_crl, make_crl(pki.root))
    serve(crls, pki.inter_crl, make_crl(pki.inter, [(item.certificate.serial_number,
                                                     KEY_COMPROMISE)], pem=True))
    r = run(beta(world, cache, tmp_path, "strict"), mail(item, pki, "jan@alpha.test"))
    (qid,) = r.quarantined
    assert "keyCompromise since" in Quarantine(tmp_path).get(qid).reason


def test_bad_crl_strict_defers_soft_passes_with_the_reason(
        world: World, crls: CrlHttp, pki: Pki, cache: CertCache, tmp_path: Path) -> None:
    serve(crls, pki.root_crl, make_crl(pki.root))
    serve(crls, pki.inter_crl, b"this is not a CRL")
    data = mail(pki.leaf("kai@alpha.test"), pki, "kai@alpha.test")
    r = run(beta(world, cache, tmp_path, "strict"), data)
    assert r.refusal is not None
    assert (r.refusal.code, r.refusal.status) == (451, "4.7.5")
    head = header(run(beta(world, cache, tmp_path, "soft"), data))
    assert b"smime=pass" in head
    assert b"revocation status unknown" in head
    assert b"not a CRL" in head


def test_crl_off_keeps_the_old_behaviour(world: World, crls: CrlHttp, pki: Pki,
                                         cache: CertCache, tmp_path: Path) -> None:
    serve(crls, pki.root_crl, make_crl(pki.root, [(pki.inter.certificate.serial_number,
                                                   KEY_COMPROMISE)]))
    item = pki.leaf("lea@alpha.test")
    client = OcspClient(use_aia=False)  # what from_config builds with crl = false
    inter = client.check(pki.inter.certificate, pki.root.certificate)
    assert inter.status == "good"
    assert "not asked" in inter.reason
    assert "CRL checks are off" in inter.reason
    assert client.check(item.certificate, pki.inter.certificate).status == "unknown"
    r = run(beta(world, cache, tmp_path, "strict", crl=False),
            mail(item, pki, "lea@alpha.test"))
    assert r.refusal is not None
    assert r.refusal.status == "4.7.5"
    assert sum(crls.hits.values()) == 0


# --- the CRL source on its own: each bad CRL is "unknown" with its reason ---------------

def other_key_crl(pki: Pki) -> bytes:
    return make_crl(pki.inter, key=new_key("p256"))


LEAF_SERIAL = 0x5EED
BAD: dict[str, tuple[Callable[[Pki], bytes], int, str]] = {
    "expired": (lambda p: make_crl(p.inter, this_update=dt.timedelta(days=-2),
                                   next_update=dt.timedelta(days=-1)), 200, "expired"),
    "future": (lambda p: make_crl(p.inter, this_update=dt.timedelta(hours=1),
                                  next_update=dt.timedelta(hours=2)), 200, "in the future"),
    "other-key": (other_key_crl, 200, "signature does not verify"),
    "wrong-issuer": (lambda p: make_crl(p.inter, issuer=name_of("Someone Else CA")), 200,
                     "not by the issuing CA"),
    "garbage": (lambda p: b"\x30\x03\x02\x01\x00", 200, "not a CRL"),
    "404": (lambda p: make_crl(p.inter), 404, "HTTP 404"),
    "delta": (lambda p: make_crl(p.inter, extensions=[(x509.DeltaCRLIndicator(1), True)]),
              200, "delta CRL"),
    "critical": (lambda p: make_crl(p.inter, extensions=[(x509.UnrecognizedExtension(
        ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"), True)]), 200,
        "unrecognised critical extension"),
    "ca-only": (lambda p: make_crl(p.inter, extensions=[(x509.IssuingDistributionPoint(
        None, None, False, True, None, False, False), True)]), 200,
        "covers only CA certificates"),
    "other-point": (lambda p: make_crl(p.inter, extensions=[(x509.IssuingDistributionPoint(
        [x509.UniformResourceIdentifier("http://elsewhere.test/x.crl")], None, False, False,
        None, False, False), True)]), 200, "does not name the point"),
    "indirect": (lambda p: make_crl(p.inter, extensions=[(x509.IssuingDistributionPoint(
        None, None, False, False, None, True, False), True)]), 200, "indirect CRL"),
    "critical-entry": (lambda p: make_crl(p.inter, [(LEAF_SERIAL, None)],
                                          entry_extensions=[(x509.UnrecognizedExtension(
                                              ObjectIdentifier("1.3.6.1.4.1.55555.2"),
                                              b"\x05\x00"), True)]), 200,
                       "entry has an unrecognised critical extension"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_crl_is_unknown_with_its_reason(crls: CrlHttp, pki: Pki, case: str) -> None:
    make, status, reason = BAD[case]
    serve(crls, pki.inter_crl, make(pki), status)
    item = issue(name_of("mo", "Alpha", "mo@alpha.test"), new_key("p256"), pki.inter,
                 emails=("mo@alpha.test",), serial=LEAF_SERIAL,
                 extensions=(cdp(pki.inter_crl),))
    client = OcspClient(use_aia=False, crl=CrlSource(timeout=2.0))
    out = client.check(item.certificate, pki.inter.certificate)
    assert (out.status, out.source) == ("unknown", "crl"), out.reason
    assert reason in out.reason
    assert pki.inter_crl in out.reason
    policy = RevocationPolicy("strict", client)
    assert policy(item.certificate, pki.inter.certificate).status == "unknown"


def test_a_server_that_never_answers_times_out(pki: Pki, silent: str) -> None:
    item = pki.leaf("nia@alpha.test", cdp(silent))
    source = CrlSource(timeout=0.3)
    before = counter("smimegate_revocation_crl_fetches", {"result": "timeout"})
    out = source.check(item.certificate, pki.inter.certificate)
    assert out.status == "unknown"
    assert "no answer within 0.3 s" in out.reason
    assert counter("smimegate_revocation_crl_fetches", {"result": "timeout"}) == before + 1
    again = source.check(item.certificate, pki.inter.certificate)  # remembered: no wait
    assert again.status == "unknown"
    assert source.fetches == 1


def test_an_oversized_crl_is_refused(crls: CrlHttp, pki: Pki) -> None:
    item = pki.leaf("ole@alpha.test")
    big = [(n, None) for n in range(1, 400)]
    serve(crls, pki.inter_crl, make_crl(pki.inter, big))
    out = CrlSource(max_size=4096).check(item.certificate, pki.inter.certificate)
    assert out.status == "unknown"
    assert "larger than 4096 bytes" in out.reason


def test_failures_are_remembered_for_failure_cache(crls: CrlHttp, pki: Pki) -> None:
    item = pki.leaf("pia@alpha.test")
    source = CrlSource()
    before = counter("smimegate_revocation_crl_cache_hits", {"kind": "failure"})
    for _ in range(3):
        assert source.check(item.certificate, pki.inter.certificate).status == "unknown"
    assert hits(crls, pki.inter_crl) == 1
    assert counter("smimegate_revocation_crl_cache_hits", {"kind": "failure"}) == before + 2
    serve(crls, pki.inter_crl, make_crl(pki.inter))
    fresh = CrlSource(failure_cache=0)  # nothing remembered: every check asks again
    for _ in range(2):
        assert fresh.check(item.certificate, pki.inter.certificate).status == "good"
    assert hits(crls, pki.inter_crl) == 1 + 1  # the good CRL is cached


def test_cache_is_bounded_in_count_and_until_next_update(crls: CrlHttp, pki: Pki) -> None:
    leaves = [pki.leaf(f"q{i}@alpha.test", cdp(crls.url(f"/bound-{i}.crl")))
              for i in range(3)]
    for i in range(3):
        serve(crls, crls.url(f"/bound-{i}.crl"), make_crl(pki.inter))
    source = CrlSource(cache_entries=2)
    for item in [*leaves, leaves[2], leaves[0]]:
        assert source.check(item.certificate, pki.inter.certificate).status == "good"
    # 0, 1, 2 fetched; 2 cached; 0 was evicted by 2 and is fetched again.
    assert [hits(crls, crls.url(f"/bound-{i}.crl")) for i in range(3)] == [2, 1, 1]
    short = CrlSource(cache_max=0)  # nextUpdate an hour away, but cache_max caps it
    for _ in range(2):
        short.check(leaves[1].certificate, pki.inter.certificate)
    assert hits(crls, crls.url("/bound-1.crl")) == 3
    assert short.cached_bytes() == 0
    assert source.cached_bytes() > 0


def test_points_that_are_not_http_are_skipped_and_said(pki: Pki) -> None:
    ldap = pki.leaf("rai@alpha.test", cdp("ldap://ldap.example/cn=CA?certificateRevocationList"))
    client = OcspClient(use_aia=False, crl=CrlSource())
    out = client.check(ldap.certificate, pki.inter.certificate)
    assert out.status == "unknown"
    assert "only http CRLs are fetched" in out.reason
    indirect = pki.leaf("sam@alpha.test", cdp(pki.inter_crl, crl_issuer=name_of("CRL signer")))
    out = client.check(indirect.certificate, pki.inter.certificate)
    assert out.status == "unknown"
    assert "indirect CRL" in out.reason
    ca = issue(name_of("ldap-only CA"), new_key("p256"), pki.inter, ca=True,
               extensions=(cdp("ldap://ldap.example/x"),))
    out = client.check(ca.certificate, pki.inter.certificate)
    assert out.status == "good"
    assert "not asked" in out.reason
    assert "ldap" in out.reason


def test_pem_crl_is_read_and_revocation_carries_date_and_reason(crls: CrlHttp,
                                                                 pki: Pki) -> None:
    item = pki.leaf("tom@alpha.test")
    serve(crls, pki.inter_crl, make_crl(pki.inter, [(item.certificate.serial_number,
                                                     KEY_COMPROMISE)], pem=True))
    out = CrlSource().check(item.certificate, pki.inter.certificate)
    assert (out.status, out.revocation_reason, out.source) == ("revoked", "keyCompromise",
                                                               "crl")
    assert out.revoked_at is not None
    assert abs(out.revoked_at - dt.datetime.now(dt.UTC)) < dt.timedelta(hours=1)


def test_another_ca_asking_about_a_cached_crl_is_refused(crls: CrlHttp, pki: Pki,
                                                         world: World) -> None:
    publish_good(crls, pki)
    item = pki.leaf("uma@alpha.test")
    source = CrlSource()
    assert source.check(item.certificate, pki.inter.certificate).status == "good"
    # A certificate of the demo intermediate pointing at this intermediate's CRL.
    stray = issue(name_of("vic", "Alpha", "vic@alpha.test"), new_key("p256"), world.inter,
                  emails=("vic@alpha.test",), extensions=(cdp(pki.inter_crl),))
    out = source.check(stray.certificate, world.inter.certificate)
    assert out.status == "unknown"
    assert "not by the issuing CA" in out.reason
    assert hits(crls, pki.inter_crl) == 1
