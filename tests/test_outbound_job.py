"""The crypto job in-process: policy → sign → encrypt per recipient group, each fallback.

Real keys (the demo PKI), a real shared-memory cache filled the way the resolver fills
it (DER certificates per address or domain, negative entries), real S/MIME; the job
function is called directly with the loaded state a worker would hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.config.schema import KeysSection, PolicySection, WorkersSection
from gateway.envelope import Envelope
from gateway.keys import KeyRing, load_certificates, load_identity
from gateway.keys.demo import write_demo_pki
from gateway.keys.identity import dns_names
from gateway.lookup import cache as certcache
from gateway.lookup._cache_py import CertCache
from gateway.outbound import metrics
from gateway.outbound.certs import certificates_for
from gateway.outbound.context import Loaded, WorkerContext, load
from gateway.outbound.job import process_with
from gateway.outbound.subject import strip_keywords
from gateway.policy.rules import compile_rules
from gateway.smime import decrypt, detect, encrypt, verify
from gateway.workers import WorkerPool
from gateway.workers.jobs import Job, Result

DER = serialization.Encoding.DER


@pytest.fixture(scope="module", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("outbound-job-pki")
    write_demo_pki(d)
    return d


@pytest.fixture(name="cache")
def cache_fixture(pki: Path) -> Iterator[CertCache]:
    name = f"smimegate-test-outbound-job-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cache = certcache.CertCache.create(name, 1024, 1 << 20)
    later = time.time() + 3600
    beta = pki / "beta.test"
    bob = load_certificates(beta / "bob.pem")[0].public_bytes(DER)
    domain = load_certificates(beta / "domain-rsa.pem")[0].public_bytes(DER)
    cache.put("bob@beta.test", [bob], later)
    cache.put_negative("carol@beta.test", later)
    cache.put("beta.test", [domain], later)
    cache.put_negative("gamma.test", later)
    cache.put_negative("dave@gamma.test", later)
    yield cache
    cache.unlink()
    cache.close()


def state(pki: Path, cache: CertCache, rules: list[dict[str, Any]] | None = None,
          **policy: Any) -> Loaded:
    alpha = pki / "alpha.test"
    keys = KeysSection(certificates=(alpha / "domain-rsa-chain.pem", alpha / "alice-chain.pem"),
                       private_keys=(alpha / "domain-rsa.key", alpha / "alice.key"),
                       trust_anchors=(pki / "ca/root.pem",))
    section = dataclasses.replace(PolicySection(), rules=compile_rules(rules or []), **policy)
    return load(WorkerContext(keys, section, cache.name, ("alpha.test",), 3600.0))


def message(subject: str = "Hello") -> bytes:
    return (f"From: alice@alpha.test\r\nTo: bob@beta.test\r\nSubject: {subject}\r\n"
            "Message-ID: <m1@alpha.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain\r\n\r\nHi Bob.\r\n").encode()


def job(*rcpts: str, sender: str = "alice@alpha.test", data: bytes | None = None) -> Job:
    return Job(Envelope(sender, rcpts, "127.0.0.1"), data or message())


def bob_ring(pki: Path) -> KeyRing:
    beta = pki / "beta.test"
    return KeyRing([load_identity(beta / "bob.pem", beta / "bob.key"),
                    load_identity(beta / "domain-rsa.pem", beta / "domain-rsa.key")])


def root(pki: Path) -> list[Any]:
    return load_certificates(pki / "ca/root.pem")


def reply(result: Any) -> tuple[int, str] | None:
    return None if result.refusal is None else (result.refusal.code, result.refusal.status)


def counts(result: Any) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(name, labels): n for name, labels, n in result.counts}


def test_local_recipients_pass_and_outbound_are_signed_and_encrypted(
        pki: Path, cache: CertCache) -> None:
    r = process_with(state(pki, cache), job("ann@alpha.test", "bob@beta.test"))
    assert r.refusal is None
    local, out = r.outputs
    # Local recipients take the inbound path (gateway/inbound): unsigned → delivered
    # with our Authentication-Results.
    assert local.rcpt_tos == ("ann@alpha.test",)
    assert local.data.startswith(b"Authentication-Results: smimegate.localdomain; "
                                 b"smime=none")
    assert local.data.endswith(message())
    assert out.rcpt_tos == ("bob@beta.test",)
    assert detect(out.data).layers[0] == "enveloped"  # no SMIMECapabilities: CBC
    inner = decrypt(out.data, bob_ring(pki))
    v = verify(inner, anchors=root(pki))
    assert v.ok, v.reason
    signer = v.signers[0].certificate
    assert signer is not None
    assert dns_names(signer) == ("alpha.test",)  # the sender domain's identity
    assert counts(r)[("decisions", ("opportunistic", "encrypted"))] == 1


def test_recipients_sharing_decision_and_certificates_share_one_copy(
        pki: Path, cache: CertCache) -> None:
    s = state(pki, cache, default_certificate="domain-only")
    r = process_with(s, job("bob@beta.test", "carol@beta.test"))
    assert [o.rcpt_tos for o in r.outputs] == [("bob@beta.test", "carol@beta.test")]
    # user-then-domain: bob has his own certificate, carol only the domain's: two copies
    r = process_with(state(pki, cache), job("bob@beta.test", "carol@beta.test"))
    assert sorted(o.rcpt_tos for o in r.outputs) == [("bob@beta.test",), ("carol@beta.test",)]


def test_sign_never_encrypts_without_signature(pki: Path, cache: CertCache) -> None:
    r = process_with(state(pki, cache, default_sign="never"), job("bob@beta.test"))
    inner = decrypt(r.outputs[0].data, bob_ring(pki))
    assert detect(inner).layers == ()
    assert counts(r)[("unsigned", ("policy",))] == 1


def test_sender_identity_when_policy_says_sender(pki: Path, cache: CertCache) -> None:
    s = state(pki, cache, [{"name": "own", "sender": ["alice@alpha.test"],
                            "signing_certificate": "sender"}])
    r = process_with(s, job("bob@beta.test"))
    v = verify(decrypt(r.outputs[0].data, bob_ring(pki)), anchors=root(pki))
    assert v.ok, v.reason
    assert v.signers[0].speaks_for("alice@alpha.test")


def test_null_sender_is_signed_for_its_from_address(pki: Path, cache: CertCache) -> None:
    r = process_with(state(pki, cache), job("bob@beta.test", sender=""))
    v = verify(decrypt(r.outputs[0].data, bob_ring(pki)), anchors=root(pki))
    assert v.ok, v.reason


def test_required_signature_without_identity_is_451_4_7_5(pki: Path, cache: CertCache
                                                         ) -> None:
    r = process_with(state(pki, cache), job("bob@beta.test", sender="eve@other.test"))
    assert reply(r) == (451, "4.7.5")
    r = process_with(state(pki, cache, default_sign="if-possible"),
                     job("bob@beta.test", sender="eve@other.test"))
    assert r.refusal is None
    assert detect(decrypt(r.outputs[0].data, bob_ring(pki))).layers == ()
    assert counts(r)[("unsigned", ("no-identity",))] == 1


def test_opportunistic_without_certificate_sends_signed_only(pki: Path,
                                                             cache: CertCache) -> None:
    for rcpt, status in (("dave@gamma.test", "none"), ("zed@uncached.test", "unknown")):
        r = process_with(state(pki, cache), job(rcpt))
        assert r.refusal is None
        assert detect(r.outputs[0].data).layers == ("signed",)
        assert verify(r.outputs[0].data, anchors=root(pki)).ok
        assert counts(r)[("fallbacks", ("plain", status))] == 1


@pytest.mark.parametrize(("fallback", "code", "status"), [
    ("defer", 451, "4.7.0"), ("reject", 550, "5.7.1")])
def test_required_without_certificate_applies_the_fallback(
        pki: Path, cache: CertCache, fallback: str, code: int, status: str) -> None:
    s = state(pki, cache, [{"name": "must", "recipient_domain": ["gamma.test"],
                            "encrypt": "required", "fallback": fallback}])
    # Alone, the refused group refuses the message: the client keeps it.
    r = process_with(s, job("dave@gamma.test"))
    assert reply(r) == (code, status)
    assert not r.outputs
    # With a group that goes on, the message is accepted: bob's copy is encrypted, and
    # dave's ORIGINAL is handed back marked refused (delivery retries or bounces it).
    original = message("Mixed")
    r = process_with(s, job("bob@beta.test", "dave@gamma.test", data=original))
    assert r.refusal is None
    sent, kept = r.outputs
    assert (sent.rcpt_tos, sent.refused) == (("bob@beta.test",), None)
    assert detect(sent.data).layers == ("enveloped",)
    assert kept.rcpt_tos == ("dave@gamma.test",)
    assert kept.data == original
    assert kept.refused is not None
    assert (kept.refused.code, kept.refused.status) == (
        code, status)
    outcome = "deferred" if code == 451 else "bounced"
    assert counts(r)[("refused_recipients", (outcome,))] == 1


def test_tls_only_sends_signed_copy_that_requires_verified_tls(pki: Path,
                                                                cache: CertCache) -> None:
    s = state(pki, cache, [{"name": "must", "recipient_domain": ["gamma.test"],
                            "encrypt": "required", "fallback": "tls-only"}])
    r = process_with(s, job("bob@beta.test", "dave@gamma.test"))
    assert r.refusal is None
    by_rcpt = {o.rcpt_tos: o for o in r.outputs}
    assert not by_rcpt[("bob@beta.test",)].require_tls  # encrypted: any route will do
    dave = by_rcpt[("dave@gamma.test",)]
    assert dave.require_tls
    assert dave.refused is None
    assert detect(dave.data).layers == ("signed",)
    assert counts(r)[("fallbacks", ("tls-only", "none"))] == 1
    assert counts(r)[("decisions", ("required", "tls-only"))] == 1


def test_sender_or_domain_signs_with_the_domain_when_the_sender_has_none(
        pki: Path, cache: CertCache) -> None:
    def signed_as(choice: str, sender: str) -> tuple[int, str] | str | None:
        s = state(pki, cache, [{"name": "s", "sender_domain": ["alpha.test"],
                                "signing_certificate": choice}])
        r = process_with(s, job("bob@beta.test", sender=sender))
        return reply(r) or next(
            (labels[0] for (name, labels) in counts(r) if name == "signed"), None)

    assert signed_as("sender-or-domain", "alice@alpha.test") == "sender"
    assert signed_as("sender-or-domain", "carl@alpha.test") == "domain"  # has none of his own
    assert signed_as("domain", "alice@alpha.test") == "domain"
    assert signed_as("sender", "carl@alpha.test") == (451, "4.7.5")  # strictly his own


def test_required_defaults_to_defer_and_reject_wins_over_defer(pki: Path,
                                                               cache: CertCache) -> None:
    s = state(pki, cache, [
        {"name": "gamma", "recipient_domain": ["gamma.test"], "encrypt": "required"},
        {"name": "nowhere", "recipient_domain": ["uncached.test"], "encrypt": "required",
         "fallback": "reject"}])
    r = process_with(s, job("dave@gamma.test"))
    assert (reply(r) or (0, ""))[0] == 451
    r = process_with(s, job("dave@gamma.test", "zed@uncached.test"))
    assert reply(r) == (550, "5.7.1")
    assert counts(r)[("refused", ("no-certificate-reject",))] == 1


def test_user_only_ignores_the_domain_certificate(pki: Path, cache: CertCache) -> None:
    s = state(pki, cache, [{"name": "users", "recipient_domain": ["beta.test"],
                            "certificate": "user-only", "encrypt": "required",
                            "fallback": "reject"}])
    assert process_with(s, job("bob@beta.test")).refusal is None
    r = process_with(s, job("carol@beta.test"))
    assert (reply(r) or (0, ""))[0] == 550


def test_already_encrypted_is_not_encrypted_again(pki: Path, cache: CertCache) -> None:
    sealed = encrypt(message(), load_certificates(pki / "beta.test/bob.pem"))
    r = process_with(state(pki, cache), job("bob@beta.test", data=sealed))
    assert r.outputs[0].data == sealed
    assert counts(r)[("decisions", ("opportunistic", "already-encrypted"))] == 1


def test_subject_keyword_is_stripped_and_cipher_kept(pki: Path, cache: CertCache) -> None:
    s = state(pki, cache, [{"name": "kw", "subject_keyword": ["[secure]"],
                            "strip_subject_keyword": True, "encrypt": "required",
                            "cipher": "aes256-cbc"}])
    r = process_with(s, job("bob@beta.test", data=message("[SECURE] Salaries 2027")))
    out = r.outputs[0].data
    assert b"\r\nSubject: Salaries 2027\r\n" in out
    assert b"smime-type=enveloped-data" in out  # CBC: EnvelopedData, not authEnveloped
    assert counts(r)[("encrypted", ("aes256-cbc",))] == 1


def test_an_encoded_subject_keyword_matches_and_is_stripped(pki: Path, cache: CertCache) -> None:
    # issue 6: Outlook and Thunderbird encode any non-ASCII subject (RFC 2047)
    s = state(pki, cache, [{"name": "kw", "subject_keyword": ["[secure]"],
                            "strip_subject_keyword": True, "encrypt": "required"}])
    subject = "=?UTF-8?Q?=5BSecure=5D_Geh=C3=A4lter?="
    r = process_with(s, job("bob@beta.test", data=message(subject)))
    assert b"\r\nSubject: =?UTF-8?B?R2Vow6RsdGVy?=\r\n" in r.outputs[0].data
    assert counts(r)[("decisions", ("required", "encrypted"))] == 1


def test_unscannable_message_is_refused_with_the_scanners_reply(pki: Path,
                                                                cache: CertCache) -> None:
    bad = (b"From: a@alpha.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed"
           b"\r\n\r\nno boundary parameter\r\n")
    r = process_with(state(pki, cache), job("bob@beta.test", data=bad))
    assert reply(r) == (554, "5.6.0")
    assert counts(r)[("refused", ("unscannable",))] == 1


def test_counts_apply_to_the_front_ends_counters(pki: Path, cache: CertCache) -> None:
    # bob's certificate lists no SMIMECapabilities: the default GCM narrows to CBC.
    before = metrics.ENCRYPTED.labels("aes128-cbc")._value.get()
    narrowed = metrics.NARROWED.labels("aes128-gcm", "aes128-cbc")._value.get()
    r = process_with(state(pki, cache), job("bob@beta.test"))
    metrics.apply(r.counts)
    assert metrics.ENCRYPTED.labels("aes128-cbc")._value.get() == before + 1
    assert metrics.NARROWED.labels("aes128-gcm", "aes128-cbc")._value.get() == narrowed + 1


@pytest.mark.parametrize(("head", "expected", "complete"), [
    (b"Subject: [encrypt] Hi\r\n", b"Subject: Hi\r\n", True),
    (b"Subject: Hi [ENCRYPT] there\r\n", b"Subject: Hi there\r\n", True),
    (b"subject: Hi\r\n [encrypt]\r\n", b"subject: Hi\r\n", True),
    (b"Subject: =?utf-8?q?=5Bencrypt=5D?= Hi\r\n", b"Subject: Hi\r\n", True),  # issue 6
    (b"Subject: =?x-unknown?q?=5Bencrypt=5D?= Hi\r\n",
     b"Subject: =?x-unknown?q?=5Bencrypt=5D?= Hi\r\n", False),  # undecodable: left, logged
])
def test_strip_keywords(head: bytes, expected: bytes, complete: bool) -> None:
    msg = b"From: a@b\r\n" + head + b"X-Subject: [encrypt]\r\n\r\nSubject: [encrypt]\r\n"
    out, found = strip_keywords(msg, ("[encrypt]",))
    rest = b"X-Subject: [encrypt]\r\n\r\nSubject: [encrypt]\r\n"  # untouched
    assert out == b"From: a@b\r\n" + expected + rest
    assert found is complete


def test_stale_entries_are_used_within_the_bound_only(pki: Path, cache: CertCache) -> None:
    expiry = cache.get("bob@beta.test", allow_stale=True)
    assert expiry is not None
    within = certificates_for(cache, "bob@beta.test", "user-then-domain", stale_bound=60.0,
                              now=expiry.expires_at + 30)
    assert (within.status, within.kind) == ("found", "user")
    past = certificates_for(cache, "bob@beta.test", "user-then-domain", stale_bound=60.0,
                            now=expiry.expires_at + 120)
    assert past.status == "unknown"
    assert not past.certificates


def test_the_pool_initialises_each_worker_and_applies_its_counts(
        pki: Path, cache: CertCache) -> None:
    context = state(pki, cache).context
    seen: list[tuple[tuple[str, tuple[str, ...], float], ...]] = []

    async def go() -> Result:
        pool = WorkerPool(WorkersSection(processes=1), job_function="gateway.outbound.job:"
                          "process", initializer="gateway.outbound.context:init_worker",
                          init_arg=context, on_counts=seen.append)
        await pool.start()
        try:
            return await pool.run(job("bob@beta.test"))
        finally:
            await pool.stop()

    result = asyncio.run(go())
    assert result.refusal is None
    assert detect(result.outputs[0].data).layers[0] == "enveloped"
    assert seen
    assert ("encrypted", ("aes128-cbc",), 1.0) in seen[0]


def test_a_worker_that_cannot_load_its_keys_never_starts(pki: Path, cache: CertCache,
                                                        tmp_path: Path) -> None:
    context = state(pki, cache).context
    bad = dataclasses.replace(context, keys=dataclasses.replace(
        context.keys, private_keys=(tmp_path / "missing.key",)))

    async def go() -> None:
        pool = WorkerPool(WorkersSection(processes=1), job_function="gateway.outbound.job:"
                          "process", initializer="gateway.outbound.context:init_worker",
                          init_arg=bad)
        await pool.start()

    with pytest.raises(RuntimeError, match="failed to start"):
        asyncio.run(go())
