"""The outbound fallback "quarantine": the original message is kept, never sent.

Same real parts as tests/test_outbound_job.py (demo PKI, shared-memory cache, real
S/MIME, the quarantine store the inbound path uses); the job is called in-process.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gateway.inbound.quarantine import Quarantine
from gateway.keys import load_certificates
from gateway.lookup._cache_py import CertCache
from gateway.outbound.context import Loaded
from gateway.outbound.job import process_with
from gateway.smime import decrypt, detect, encrypt
from tests.test_outbound_job import (  # noqa: F401  (pytest fixtures by name)
    bob_ring,
    cache_fixture,
    counts,
    job,
    message,
    pki_fixture,
    reply,
    state,
)

GAMMA_QUARANTINE = {"name": "gamma-q", "recipient_domain": ["gamma.test"],
                    "encrypt": "required", "fallback": "quarantine"}


def held_state(pki: Path, cache: CertCache, qdir: Path,
               rules: list[dict[str, Any]] | None = None) -> Loaded:
    s = state(pki, cache, rules or [GAMMA_QUARANTINE])
    return dataclasses.replace(s, context=dataclasses.replace(s.context, quarantine_dir=qdir))


def test_no_certificate_with_quarantine_keeps_the_original_and_sends_the_rest(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    r = process_with(held_state(pki, cache, tmp_path),
                     job("bob@beta.test", "dave@gamma.test"))
    assert r.refusal is None
    (out,) = r.outputs  # bob's copy goes out encrypted as usual
    assert out.rcpt_tos == ("bob@beta.test",)
    assert detect(decrypt(out.data, bob_ring(pki))).layers == ("signed",)
    (qid,) = r.quarantined
    entry = Quarantine(tmp_path).get(qid)
    assert entry.envelope.rcpt_tos == ("dave@gamma.test",)
    assert entry.envelope.mail_from == "alice@alpha.test"
    assert entry.reason == "outbound: no certificate for dave@gamma.test (rule gamma-q)"
    assert entry.verdict == "no-certificate"
    assert entry.data == message()  # the original: never signed, never sent
    c = counts(r)
    assert c[("fallbacks", ("quarantine", "none"))] == 1
    assert c[("decisions", ("required", "quarantined"))] == 1
    assert c[("decisions", ("opportunistic", "encrypted"))] == 1


def test_unknown_certificate_status_is_quarantined_too_and_the_default_rule_named(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    s = held_state(pki, cache, tmp_path, [
        {"name": "must", "recipient_domain": ["uncached.test"], "encrypt": "required"},
        {"name": "q", "fallback": "quarantine"}])
    r = process_with(s, job("zed@uncached.test", "yan@uncached.test"))
    assert r.outputs == ()
    (qid,) = r.quarantined  # one entry for the group that shares the decision
    entry = Quarantine(tmp_path).get(qid)
    assert entry.envelope.rcpt_tos == ("zed@uncached.test", "yan@uncached.test")
    assert entry.reason.endswith("(rule q)")
    assert counts(r)[("fallbacks", ("quarantine", "unknown"))] == 2


def test_a_quarantined_group_accepts_the_message_and_a_refused_one_bounces(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    s = held_state(pki, cache, tmp_path, [
        GAMMA_QUARANTINE,
        {"name": "nowhere", "recipient_domain": ["uncached.test"], "encrypt": "required",
         "fallback": "reject"}])
    r = process_with(s, job("dave@gamma.test", "zed@uncached.test"))
    assert r.refusal is None
    assert len(r.quarantined) == 1
    assert Quarantine(tmp_path).ids() == list(r.quarantined)
    (kept,) = r.outputs  # zed's original, for delivery to bounce (never sent)
    assert kept.rcpt_tos == ("zed@uncached.test",)
    assert kept.refused is not None
    assert kept.refused.status == "5.7.1"


def test_a_message_refused_as_a_whole_quarantines_nothing(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    s = held_state(pki, cache, tmp_path, [
        {"name": "nowhere", "recipient_domain": ["uncached.test"], "encrypt": "required",
         "fallback": "reject"}])
    r = process_with(s, job("zed@uncached.test", "yan@uncached.test"))
    assert reply(r) == (550, "5.7.1")
    assert (r.outputs, r.quarantined) == ((), ())
    assert Quarantine(tmp_path).ids() == []


def test_an_inbound_refusal_beside_an_outbound_quarantine_is_kept_for_a_bounce(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    s = held_state(pki, cache, tmp_path)
    s = dataclasses.replace(s, inbound=dataclasses.replace(
        s.inbound, actions={**s.inbound.actions, "none": "reject"}))
    r = process_with(s, job("dave@gamma.test", "ann@alpha.test"))
    assert r.refusal is None
    assert len(r.quarantined) == 1
    (kept,) = r.outputs
    assert kept.rcpt_tos == ("ann@alpha.test",)
    assert kept.refused is not None
    assert kept.refused.code == 550


def test_inbound_and_outbound_quarantine_ids_are_both_reported(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    s = held_state(pki, cache, tmp_path)
    s = dataclasses.replace(s, inbound=dataclasses.replace(
        s.inbound, actions={**s.inbound.actions, "none": "quarantine"}))
    r = process_with(s, job("dave@gamma.test", "ann@alpha.test"))
    assert r.refusal is None
    assert r.outputs == ()
    assert sorted(r.quarantined) == Quarantine(tmp_path).ids()
    assert len(r.quarantined) == 2


def test_already_encrypted_input_is_passed_not_quarantined(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    sealed = encrypt(message(), load_certificates(pki / "beta.test/bob.pem")[:1])
    r = process_with(held_state(pki, cache, tmp_path),
                     job("dave@gamma.test", data=sealed))
    assert r.quarantined == ()
    assert [o.rcpt_tos for o in r.outputs] == [("dave@gamma.test",)]


def test_a_quarantine_store_that_cannot_be_written_fails_the_job(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")  # a file where the directory should be
    s = held_state(pki, cache, blocker / "q")
    # The worker turns a raising job into 451 (gateway/workers/child.py).
    with pytest.raises(NotADirectoryError):
        process_with(s, job("dave@gamma.test"))


def test_a_job_run_twice_keeps_one_quarantine_entry_per_copy(
        pki: Path, cache: CertCache, tmp_path: Path) -> None:
    # A worker replaced mid-batch has its batch run again: the entries it wrote are
    # keyed by the queue ID and whose copy they are, so the re-run replaces them.
    s = held_state(pki, cache, tmp_path)
    s = dataclasses.replace(s, inbound=dataclasses.replace(
        s.inbound, actions={**s.inbound.actions, "none": "quarantine"}))
    once = dataclasses.replace(job("dave@gamma.test", "ann@alpha.test"),
                               queue_id="0661234567890ABCDE1")
    first = process_with(s, once)
    again = process_with(s, once)
    assert sorted(first.quarantined) == sorted(again.quarantined)
    assert len(first.quarantined) == 2
    assert Quarantine(tmp_path).ids() == sorted(first.quarantined)
    other = process_with(s, dataclasses.replace(once, queue_id="0661234567890ABCDE2"))
    assert len(Quarantine(tmp_path).ids()) == 4  # another message: entries of its own
    assert set(other.quarantined).isdisjoint(first.quarantined)
