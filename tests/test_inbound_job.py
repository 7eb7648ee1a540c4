"""The inbound path in-process: decrypt, verify, signer vs From, [inbound] actions.

Real keys (the demo PKI), real S/MIME made by our own sign + encrypt as alpha.test's
gateway would send it; beta.test's worker state loaded the way a worker loads it
(revocation off: these tests are about the path, gateway/revocation has its own).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config.schema import (
    InboundRevocationSection,
    InboundSection,
    KeysSection,
    PolicySection,
)
from gateway.envelope import Envelope
from gateway.inbound import metrics as inbound_metrics
from gateway.inbound.job import strip_our_results
from gateway.inbound.quarantine import Quarantine, QuarantineError
from gateway.keys import load_certificates, load_identity
from gateway.keys.demo import write_demo_pki
from gateway.lookup import cache as certcache
from gateway.lookup._cache_py import CertCache
from gateway.outbound.context import Loaded, WorkerContext, load
from gateway.outbound.job import process_with
from gateway.smime import detect, encrypt, sign, verify
from gateway.workers.jobs import Job, Result

HOST = "mx.beta.test"


@pytest.fixture(scope="module", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inbound-pki")
    write_demo_pki(d)
    return d


@pytest.fixture(name="cache")
def cache_fixture() -> Iterator[CertCache]:
    name = f"smimegate-test-inbound-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cache = certcache.CertCache.create(name, 64, 1 << 16)
    yield cache
    cache.unlink()
    cache.close()


def beta(pki: Path, cache: CertCache, qdir: Path, **inbound: Any) -> Loaded:
    b = pki / "beta.test"
    keys = KeysSection(certificates=(b / "domain-rsa-chain.pem", b / "bob-chain.pem"),
                       private_keys=(b / "domain-rsa.key", b / "bob.key"),
                       trust_anchors=(pki / "ca/root.pem",))
    section = dataclasses.replace(InboundSection(), **inbound)
    return load(WorkerContext(keys, PolicySection(), cache.name, ("beta.test",), 3600.0,
                              "info", section, InboundRevocationSection(mode="off"), HOST,
                              qdir))


def plain(sender: str = "alice@alpha.test", extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: bob@beta.test\r\nSubject: Hi\r\n{extra}"
            "Message-ID: <in1@alpha.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain\r\n\r\nHello Bob.\r\n").encode()


def alpha_signs(pki: Path, data: bytes, who: str = "domain-rsa") -> bytes:
    a = pki / "alpha.test"
    return sign(data, load_identity(a / f"{who}-chain.pem", a / f"{who}.key"))


def to(pki: Path, data: bytes, holder: str = "beta.test/bob.pem") -> bytes:
    return encrypt(data, load_certificates(pki / holder)[:1])


def run(state: Loaded, data: bytes, *rcpts: str) -> Result:
    env = Envelope("alice@alpha.test", rcpts or ("bob@beta.test",), "127.0.0.1")
    return process_with(state, Job(env, data))


def counts(result: Result) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(name, labels): n for name, labels, n in result.counts}


def test_signed_and_encrypted_passes_with_authentication_results(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    r = run(beta(pki, cache, tmp_path), to(pki, alpha_signs(pki, plain())))
    assert r.refusal is None
    assert not r.quarantined
    (out,) = r.outputs
    assert out.rcpt_tos == ("bob@beta.test",)
    head = out.data.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith(f"Authentication-Results: {HOST}; smime=pass")
    assert "body.smime-identifier=alice@alpha.test" in head.replace("\r\n ", " ")
    assert detect(out.data).layers == ("signed",)  # decrypted, signature kept
    assert verify(out.data, anchors=load_certificates(pki / "ca/root.pem")).ok
    assert counts(r)[("inbound_actions", ("pass", "deliver"))] == 1


def test_strip_signature_delivers_the_signed_content(pki: Path, cache: CertCache,
                                                      tmp_path: Path) -> None:
    state = beta(pki, cache, tmp_path, strip_signature=True)
    (out,) = run(state, to(pki, alpha_signs(pki, plain()))).outputs
    assert b"smime=pass" in out.data
    assert detect(out.data).layers == ()
    assert out.data.endswith(b"Hello Bob.\r\n")
    assert b"From: alice@alpha.test" in out.data


def test_opaque_signed_unencrypted_passes(pki: Path, cache: CertCache,
                                          tmp_path: Path) -> None:
    a = pki / "alpha.test"
    data = sign(plain(), load_identity(a / "alice-chain.pem", a / "alice.key"), opaque=True)
    (out,) = run(beta(pki, cache, tmp_path), data).outputs
    assert b"smime=pass" in out.data


def test_tampered_signature_fails_and_is_quarantined(pki: Path, cache: CertCache,
                                                     tmp_path: Path) -> None:
    signed = alpha_signs(pki, plain())
    tampered = signed.replace(b"Hello Bob.", b"Hello Rob.")
    assert tampered != signed
    data = to(pki, tampered)
    r = run(beta(pki, cache, tmp_path), data)
    assert r.refusal is None
    assert r.outputs == ()
    (qid,) = r.quarantined
    entry = Quarantine(tmp_path).get(qid)
    assert entry.verdict == "fail"
    assert "digest-mismatch" in entry.reason
    assert entry.envelope.rcpt_tos == ("bob@beta.test",)
    assert entry.data == data  # kept as received, still encrypted
    assert counts(r)[("inbound_actions", ("fail", "quarantine"))] == 1


def test_tampered_is_rejected_when_policy_says_reject(pki: Path, cache: CertCache,
                                                      tmp_path: Path) -> None:
    tampered = alpha_signs(pki, plain()).replace(b"Hello Bob.", b"Hello Rob.")
    r = run(beta(pki, cache, tmp_path, on_fail="reject"), tampered)
    assert r.refusal is not None
    assert (r.refusal.code, r.refusal.status) == (550, "5.7.7")
    assert "digest-mismatch" in r.refusal.text
    assert "\n" not in r.refusal.text


def test_signer_not_speaking_for_from_fails(pki: Path, cache: CertCache,
                                            tmp_path: Path) -> None:
    state = beta(pki, cache, tmp_path, on_fail="deliver")
    (out,) = run(state, alpha_signs(pki, plain(sender="mallory@gamma.test"))).outputs
    head = out.data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ")
    assert b"smime=fail" in head
    assert b"signer-mismatch" in head
    # A user certificate speaks for its own address only, a domain one for its domain.
    (out,) = run(state, alpha_signs(pki, plain(sender="ann@alpha.test"), "alice")).outputs
    assert b"smime=fail" in out.data
    (out,) = run(state, alpha_signs(pki, plain(sender="ann@alpha.test"))).outputs
    assert b"smime=pass" in out.data
    # A second From field (outside the signature) must be spoken for as well.
    signed = alpha_signs(pki, plain())
    (out,) = run(state, b"From: ceo@beta.test\r\n" + signed).outputs
    assert b"smime=fail" in out.data
    assert b"ceo@beta.test" in out.data.split(b"\r\n\r\n", 1)[0]


def test_wrong_recipient_is_undecryptable_and_quarantined(pki: Path, cache: CertCache,
                                                          tmp_path: Path) -> None:
    data = to(pki, alpha_signs(pki, plain()), "alpha.test/alice.pem")
    r = run(beta(pki, cache, tmp_path), data)
    (qid,) = r.quarantined
    entry = Quarantine(tmp_path).get(qid)
    assert entry.verdict == "undecryptable"
    assert "no-recipient" in entry.reason
    assert entry.data == data
    r = run(beta(pki, cache, tmp_path, on_undecryptable="defer"), data)
    assert r.refusal is not None
    assert (r.refusal.code, r.refusal.status) == (451, "4.7.5")


def test_unsigned_is_delivered_with_none_or_refused(pki: Path, cache: CertCache,
                                                    tmp_path: Path) -> None:
    (out,) = run(beta(pki, cache, tmp_path), plain()).outputs
    assert out.data == f"Authentication-Results: {HOST}; smime=none\r\n".encode() + plain()
    r = run(beta(pki, cache, tmp_path, on_none="reject"), plain())
    assert r.refusal is not None
    assert (r.refusal.code, r.refusal.status) == (550, "5.7.1")


def test_garbage_cms_is_neutral_and_follows_on_fail(pki: Path, cache: CertCache,
                                                   tmp_path: Path) -> None:
    data = (b"From: alice@alpha.test\r\nMIME-Version: 1.0\r\nContent-Type: "
            b"application/pkcs7-mime; smime-type=signed-data\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nMIIBAAAA\r\n")
    r = run(beta(pki, cache, tmp_path, on_fail="defer"), data)
    assert r.refusal is not None
    assert r.refusal.code == 451


def test_forged_authentication_results_for_our_id_are_removed(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    forged = (f"Authentication-Results: {HOST}; smime=pass\r\n"
              f"Authentication-Results: {HOST.upper()} (comment);\r\n smime=pass\r\n"
              "Authentication-Results: other.example; smime=pass\r\n")
    (out,) = run(beta(pki, cache, tmp_path), plain(extra=forged)).outputs
    text = out.data.decode()
    assert text.count("Authentication-Results:") == 2
    assert "other.example; smime=pass" in text
    assert f"{HOST}; smime=none" in text
    body_claim = plain() + f"Authentication-Results: {HOST}; x\r\n".encode()
    assert strip_our_results(body_claim, HOST) == body_claim  # the body is not headers


def test_mixed_recipients_and_counts_reach_the_front_end(pki: Path, cache: CertCache,
                                                        tmp_path: Path) -> None:
    before = inbound_metrics.ACTIONS.labels("none", "deliver")._value.get()
    r = run(beta(pki, cache, tmp_path), plain(), "bob@beta.test", "ann@beta.test")
    (out,) = r.outputs
    assert out.rcpt_tos == ("bob@beta.test", "ann@beta.test")
    inbound_metrics.apply(r.counts)
    assert inbound_metrics.ACTIONS.labels("none", "deliver")._value.get() == before + 1


def test_quarantine_store_round_trip_and_bad_ids(tmp_path: Path) -> None:
    q = Quarantine(tmp_path / "q")
    env = Envelope("a@alpha.test", ("b@beta.test",), "127.0.0.1", "h", 5.0,
                   (("BODY", "8BITMIME"),))
    qid = q.put(env, b"Subject: x\r\n\r\nbody\n\x00", reason="r", verdict="fail")
    assert q.ids() == [qid]
    e = q.get(qid)
    assert (e.envelope, e.data, e.reason) == (env, b"Subject: x\r\n\r\nbody\n\x00", "r")
    assert [x.id for x in q] == [qid]
    with pytest.raises(QuarantineError, match="not a quarantine id"):
        q.get("../etc/passwd")
    q.delete(qid)
    with pytest.raises(QuarantineError, match="no quarantined message"):
        q.delete(qid)
    assert q.ids() == []
