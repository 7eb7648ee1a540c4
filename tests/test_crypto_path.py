"""The per-message crypto path without its overhead: each shortcut gives what it replaced.

sign_and_encrypt against encrypt(sign(...)) (and OpenSSL reading it), the struct-cut
base64 lines and table DER lengths against the plain formulas, the key ring's name maps
against a scan, facts that keep only the header fields someone reads, the job's one
info line per recipient group, the revocation counts an outbound-only job leaves for
the next inbound one, and the Received date formatted once per second.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import os
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY

from gateway.config.schema import WorkersSection
from gateway.envelope import Envelope, Reply
from gateway.keys import KeyRing
from gateway.lookup import cache as certcache
from gateway.lookup._cache_py import CertCache
from gateway.mime.scan import scan
from gateway.outbound.job import process_with
from gateway.policy.extract import facts_from_scan, header_names
from gateway.policy.rules import compile_rules
from gateway.revocation import metrics as revocation_metrics
from gateway.smime import decrypt, encrypt, sign, sign_and_encrypt, verify
from gateway.smime.der import length
from gateway.smime.message import base64_lines, parse_message
from gateway.smtp.accept import _date
from gateway.workers import WorkerPool
from gateway.workers.jobs import Job, Output, Result, WorkerStats
from tests import peers
from tests.envelope_support import ENTITY, MESSAGE, Pki, pki
from tests.test_outbound_job import job, state

__all__ = ["pki"]

needs_openssl = pytest.mark.skipif(peers.OPENSSL is None, reason="openssl not installed")
SIGNERS = ("alpha.test/domain-rsa", "alpha.test/domain-ec")


def _head(message: bytes) -> bytes:
    return message[: message.index(b"\r\n\r\n")]


# --- sign_and_encrypt ---------------------------------------------------------------------

@pytest.mark.parametrize("signer", SIGNERS)
@pytest.mark.parametrize("cipher", ["aes128-gcm", "aes128-cbc"])
@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
@pytest.mark.parametrize("protect", [False, True], ids=["plain-headers", "protected"])
def test_sign_and_encrypt_is_encrypt_of_sign(pki: Pki, signer: str, cipher: str,
                                             opaque: bool, protect: bool) -> None:
    ident = pki.identity(signer)
    bob = [pki.cert("beta.test/bob")]
    ours = sign_and_encrypt(MESSAGE, ident, bob, cipher=cipher, opaque=opaque,
                            protect_headers=protect)
    theirs = encrypt(sign(MESSAGE, ident, opaque=opaque), bob, cipher=cipher,
                     protect_headers=protect)
    # The same outer message (routing headers, MIME-Version, the pkcs7-mime headers) ...
    assert _head(ours) == _head(theirs)
    # ... around a signature over the original entity, byte for byte, under the original
    # routing headers (with protect_headers decrypt() unwraps the message/rfc822 copy).
    routing = [h.raw for h in parse_message(MESSAGE).routing_headers()]
    for out in (ours, theirs):
        v = verify(decrypt(out, pki.ring("beta.test/bob")), anchors=[pki.cert("ca/root")])
        assert v.ok, v.reason
        assert v.content == ENTITY
        assert [h.raw for h in v.outer_headers] == routing
    if protect:  # the inner copy of the headers is the authoritative one: it was wrapped
        swapped = ours.replace(b"Subject: quarterly figures", b"Subject: outer copy only")
        assert b"Subject: quarterly figures" in decrypt(swapped, pki.ring("beta.test/bob"))
    assert v.opaque is opaque


@needs_openssl
@pytest.mark.interop
@pytest.mark.parametrize("signer", SIGNERS)
def test_openssl_opens_and_verifies_sign_and_encrypt(pki: Pki, tmp_path: Path,
                                                     signer: str) -> None:
    out = sign_and_encrypt(MESSAGE, pki.identity(signer), [pki.cert("beta.test/bob")],
                           cipher="aes128-gcm")
    path = tmp_path / "in.eml"
    path.write_bytes(out)
    signed = peers.openssl_cms("-decrypt", "-in", str(path), "-inkey",
                               str(pki.key("beta.test/bob")), "-recip",
                               str(pki.pem("beta.test/bob")))
    path.write_bytes(signed)
    checked = peers.run(["openssl", "cms", "-verify", "-in", str(path), "-CAfile",
                         str(pki.root)], check=False)
    assert checked.returncode == 0, checked.stderr.decode()
    assert checked.stdout == ENTITY


# --- base64 lines and DER lengths ------------------------------------------------------

def _lines(data: bytes, width: int = 76) -> bytes:
    encoded = base64.b64encode(data)
    return b"".join(encoded[i:i + width] + b"\r\n" for i in range(0, len(encoded), width))


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 114, 57 * 255, 57 * 256 - 1, 57 * 256,
                                  57 * 256 + 1, 57 * 512, 57 * 513 + 20, 100_000])
def test_base64_lines_cut_like_the_formula(size: int) -> None:
    data = os.urandom(size)
    assert base64_lines(data) == _lines(data)
    assert base64_lines(data, 64) == _lines(data, 64)
    assert all(len(line) <= 76 for line in base64_lines(data).split(b"\r\n"))


@pytest.mark.parametrize("n", [*range(0, 300), 0xFFFF, 0x10000, 0xFFFFFF, 2**32 + 5])
def test_der_length_is_x690_minimal_definite_form(n: int) -> None:
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    assert length(n) == (bytes((n,)) if n < 0x80 else bytes((0x80 | len(body),)) + body)


# --- names on the key ring ---------------------------------------------------------------

def test_key_ring_maps_names_as_a_scan_would(pki: Pki) -> None:
    ring = pki.ring("alpha.test/domain-rsa", "alpha.test/alice", "alpha.test/domain-ec")
    alice = next(i for i in ring if "alice@alpha.test" in i.addresses)
    first_domain = next(i for i in ring if "alpha.test" in i.domains)
    assert ring.for_user("Alice@Alpha.TEST") is alice
    assert ring.for_user("nobody@alpha.test") is None
    assert ring.for_domain("ALPHA.test") is first_domain  # the first one naming it
    assert ring.for_domain("beta.test") is None
    assert ring.for_address("alice@alpha.test") is alice
    assert ring.for_address("bob@alpha.test") is first_domain
    assert KeyRing().for_domain("alpha.test") is None


# --- facts: only the header fields someone reads -----------------------------------------

FACTS_MESSAGE = (b"From: =?utf-8?q?Alic=C3=A9?= <alice@alpha.test>\r\nTo: bob@beta.test\r\n"
                 b"Subject: =?utf-8?q?caf=C3=A9?=\r\nX-Class: =?utf-8?q?secr=C3=A8t?=\r\n"
                 b"Message-ID: <f@alpha.test>\r\n\r\nbody\r\n")


def test_facts_keep_only_the_wanted_header_fields() -> None:
    rules = compile_rules([{"name": "classified", "header": {"X-Class": "secr"},
                            "encrypt": "required"}])
    wanted = header_names(rules, ("Message-ID", "from"))
    assert wanted == {"x-class", "message-id", "from"}
    msg = scan(FACTS_MESSAGE)
    some = facts_from_scan(msg, len(FACTS_MESSAGE), want_text=False, budget=1000,
                           want_headers=wanted)
    every = facts_from_scan(msg, len(FACTS_MESSAGE), want_text=False, budget=1000)
    assert [k for k, _ in some.headers] == ["from", "x-class", "message-id"]
    assert some.header_values("x-class") == ("secrèt",) == every.header_values("x-class")
    assert some.header_values("to") == ()
    assert every.header_values("to") == ("bob@beta.test",)
    assert some.subject == every.subject == "café"  # the subject rules always see


# --- the job: one info line per recipient group ------------------------------------------

def _info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "gateway.outbound.job" and r.levelno == logging.INFO]


def test_one_info_line_per_group_with_the_whole_trace(outbound_pki: Path, cache: CertCache,
                                                      caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    caplog.set_level("INFO", logger="gateway.outbound.job")
    rules = [{"name": "gcm-for-bob", "recipient": "bob@beta.test", "cipher": "aes256-gcm"}]
    st = state(outbound_pki, cache, rules)
    j = job("bob@beta.test", "ann@beta.test", "carl@beta.test")
    r = process_with(st, Job(j.envelope, j.data, "0123456789ABCDEF01234"))
    assert r.refusal is None
    assert len(r.outputs) == 2
    lines = _info_lines(caplog)
    assert len(lines) == 2  # bob's group and the domain certificate's group
    bob = next(line for line in lines if " to bob@beta.test: " in line)
    rest = next(line for line in lines if " to ann@beta.test, carl@beta.test: " in line)
    for line in (bob, rest):
        assert line.startswith("0123456789ABCDEF01234 to ")
        assert "message-id=<m1@alpha.test>, from=<alice@alpha.test>" in line
    assert ": encrypted (" in bob
    assert "rules gcm-for-bob" in bob
    assert "aes256-gcm not listed" in bob
    assert bob.endswith("aes256-cbc instead")
    assert "domain certificate" in rest
    assert "rules none" in rest


def test_nothing_at_info_when_info_is_off(outbound_pki: Path, cache: CertCache,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="gateway.outbound.job")
    r = process_with(state(outbound_pki, cache), job("bob@beta.test"))
    assert r.refusal is None
    assert caplog.records == []


def test_revocation_counts_wait_for_an_inbound_job(outbound_pki: Path, cache: CertCache) -> None:
    st = state(outbound_pki, cache)
    revocation_metrics.drain()  # start from nothing pending
    revocation_metrics.CACHE_HITS.labels("answer").inc()
    outbound_only = process_with(st, job("bob@beta.test"))
    assert not any(n.startswith("revocation_") for n, _, _ in outbound_only.counts)
    with_inbound = process_with(st, job("ann@alpha.test"))
    assert ("revocation_cache_hits", ("answer",), 1.0) in with_inbound.counts


@pytest.fixture(name="outbound_pki")
def outbound_pki_alias(pki: Pki) -> Path:
    """The outbound job's state() wants the demo PKI's directory."""
    return pki.directory


@pytest.fixture(name="cache")
def cache_fixture(pki: Pki) -> Iterator[CertCache]:
    """bob@beta.test's own certificate and beta.test's domain certificate, as RCPT left them."""
    cache = certcache.CertCache.create(f"smimegate-test-crypto-path-{os.getpid()}-"
                                       f"{uuid.uuid4().hex[:8]}", 64, 1 << 18)
    later = time.time() + 3600
    der = serialization.Encoding.DER
    cache.put("bob@beta.test", [pki.cert("beta.test/bob").public_bytes(der)], later)
    cache.put("beta.test", [pki.cert("beta.test/domain-rsa").public_bytes(der)], later)
    yield cache
    cache.unlink()
    cache.close()


# --- the Received header's date ------------------------------------------------------------

@pytest.mark.parametrize("at", [0.0, 1_795_000_000.25, 1_795_000_000.75, 1_795_000_001.0,
                                1_795_003_600.5])
def test_received_date_is_formatdate_of_the_second(at: float) -> None:
    assert _date(at) == email.utils.formatdate(int(at), localtime=True)
    assert _date(at) == _date(at)


def test_parse_of_signed_output_splits_as_before(pki: Pki) -> None:
    """sign() is now the join of signed_parts(): one MIME-Version, routing headers first."""
    signed = sign(MESSAGE, pki.identity("alpha.test/domain-ec"))
    msg = parse_message(signed)
    assert [h.key for h in msg.headers][:5] == ["from", "to", "subject", "date", "message-id"]
    assert [h.key for h in msg.headers].count("mime-version") == 1
    assert msg.get("content-type") is not None


# --- across the process boundary -----------------------------------------------------------

def test_records_cross_processes_whole() -> None:
    env = Envelope("a@alpha.test", ("b@beta.test", "c@beta.test"), "192.0.2.1", "client",
                   1_795_000_000.5, (("BODY", "8BITMIME"),), True, "451 4.7.0 later")
    records: list[object] = [
        env, Job(env, b"data\r\n", "0123456789ABCDEF01234"),
        Result(outputs=(Output(("b@beta.test",), b"x", True, Reply(451, "4.7.0", "later")),),
               refusal=Reply(550, "5.7.1", "no"), quarantined=("q1",),
               counts=(("signed", ("domain",), 1.0),), harvested=(("a@b", (b"der",)),),
               capabilities=(("b@beta.test", ("2.16.840.1.101.3.4.1.6",), 5.0),)),
        WorkerStats(7, 0.5, 0.25, 1), Result()]
    for record in records:
        wire = pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
        assert pickle.loads(wire) == record  # noqa: S301 - bytes made just above


def test_the_pool_applies_a_batch_of_counts_at_once(outbound_pki: Path,
                                                    cache: CertCache) -> None:
    context = state(outbound_pki, cache).context
    seen: list[tuple[tuple[str, tuple[str, ...], float], ...]] = []
    ok = REGISTRY.get_sample_value("smimegate_worker_jobs_total", {"result": "ok"}) or 0.0

    async def go() -> list[Result]:
        pool = WorkerPool(WorkersSection(processes=1), job_function="gateway.outbound.job:"
                          "process", initializer="gateway.outbound.context:init_worker",
                          init_arg=context, on_counts=seen.append)
        await pool.start()
        try:
            return await asyncio.gather(*(pool.run(job("bob@beta.test")) for _ in range(6)))
        finally:
            await pool.stop()

    results = asyncio.run(go())
    assert all(r.refusal is None for r in results)
    assert REGISTRY.get_sample_value("smimegate_worker_jobs_total", {"result": "ok"}) == ok + 6
    for counts in seen:  # one entry per counter and labels in each call
        assert len({(name, labels) for name, labels, _ in counts}) == len(counts)
    assert sum(n for counts in seen for name, labels, n in counts
               if (name, labels) == ("encrypted", ("aes128-cbc",))) == 6
