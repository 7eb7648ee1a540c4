"""Inbound revocation against a real directory's OCSP responder on loopback.

A fresh signer under the demo intermediate is published to the directory, its mail
passes; revoked in the directory, its next message fails and is quarantined (a fresh
worker state: the previous "good" would otherwise stand until its nextUpdate). With the
verification server unreachable: strict → temperror → deferred (451 4.7.5), soft → pass
with the reason noted in Authentication-Results.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from gateway.config.schema import (
    InboundRevocationSection,
    InboundSection,
    KeysSection,
    PolicySection,
)
from gateway.envelope import Envelope
from gateway.inbound.quarantine import Quarantine
from gateway.lookup import cache as certcache
from gateway.lookup._cache_py import CertCache
from gateway.outbound.context import Loaded, WorkerContext, load
from gateway.outbound.job import process_with
from gateway.smime import sign
from gateway.workers.jobs import Job, Result
from tests.directory_support import DirectoryServer
from tests.directory_world import (  # noqa: F401 - fixtures are used by name
    World,
    alpha_fixture,
    fp,
    publish,
    revoke,
    server_fixture,
    world_fixture,
)
from tests.revocation_support import closed_port_url, identity, leaf


@pytest.fixture(name="cache")
def cache_fixture() -> Iterator[CertCache]:
    name = f"smimegate-test-inbound-rev-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cache = certcache.CertCache.create(name, 64, 1 << 16)
    yield cache
    cache.unlink()
    cache.close()


def beta(world: World, cache: CertCache, qdir: Path, mode: str, url: str) -> Loaded:
    b = world.dir / "beta.test"
    keys = KeysSection(certificates=(b / "domain-rsa-chain.pem",),
                       private_keys=(b / "domain-rsa.key",),
                       trust_anchors=(world.dir / "ca/root.pem",))
    revocation = InboundRevocationSection(
        mode=mode, servers=((fp(world.inter.certificate), url),), use_aia=False,
        timeout=2.0)
    return load(WorkerContext(keys, PolicySection(), cache.name, ("beta.test",), 3600.0,
                              "info", InboundSection(), revocation, "mx.beta.test", qdir))


def mail(world: World, sender: str) -> tuple[bytes, x509.Certificate]:
    """A message signed by a fresh certificate for sender; and that certificate."""
    item = leaf(world.inter, sender)
    body = (f"From: {sender}\r\nTo: bob@beta.test\r\nSubject: r\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain\r\n\r\nHi.\r\n").encode()
    return sign(body, identity(item, world.inter)), item.certificate


def run(state: Loaded, data: bytes) -> Result:
    return process_with(state, Job(Envelope("x@alpha.test", ("bob@beta.test",)), data))


def test_published_signer_passes_then_revoked_fails_into_quarantine(
        world: World, server: DirectoryServer, alpha: str, cache: CertCache,
        tmp_path: Path) -> None:
    url = server.url + "/ocsp"
    data, signer = mail(world, "erin@alpha.test")
    assert publish(server, alpha, signer, (world.inter.certificate,)).status == 201
    (out,) = run(beta(world, cache, tmp_path, "strict", url), data).outputs
    assert b"smime=pass" in out.data
    assert revoke(server, alpha, fp(signer), "keyCompromise").status == 200
    r = run(beta(world, cache, tmp_path, "strict", url), data)
    assert r.outputs == ()
    (qid,) = r.quarantined
    entry = Quarantine(tmp_path).get(qid)
    assert entry.verdict == "fail"
    assert "revoked" in entry.reason


def test_unreachable_server_strict_defers_soft_passes_with_a_note(
        world: World, cache: CertCache, tmp_path: Path) -> None:
    data, _ = mail(world, "fred@alpha.test")
    url = closed_port_url()
    r = run(beta(world, cache, tmp_path, "strict", url), data)
    assert r.refusal is not None
    assert (r.refusal.code, r.refusal.status) == (451, "4.7.5")
    (out,) = run(beta(world, cache, tmp_path, "soft", url), data).outputs
    head = out.data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ")
    assert b"smime=pass" in head
    assert b"revocation status unknown" in head
