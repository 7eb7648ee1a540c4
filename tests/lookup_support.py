"""Shared pieces of the lookup tests: the demo PKI plus odd certificates, a scripted
directory (a real HTTP server on loopback that answers whatever the test says — the
honest one is the real directory, tests.directory_support), a cache per test, config."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.config.schema import LookupSection
from gateway.keys import load_certificates, load_private_key
from gateway.keys.demo import Issued, issue, name_of, new_key, write_demo_pki
from gateway.lookup import cache as certcache
from gateway.lookup._cache_py import CertCache

PEM = serialization.Encoding.PEM


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(PEM).decode()


def fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Pki:
    dir: Path
    root: x509.Certificate
    inter: Issued
    alice: x509.Certificate
    bob: x509.Certificate
    alpha_domain: x509.Certificate  # dNSName alpha.test
    self_signed_alice: x509.Certificate
    expired_alice: x509.Certificate
    ca_alice: x509.Certificate  # a CA certificate naming alice: not an end entity


@pytest.fixture(scope="session", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("lookup-pki")
    write_demo_pki(d)
    inter = Issued(load_private_key(d / "ca/intermediate.key"),
                   load_certificates(d / "ca/intermediate.pem")[0])
    now = dt.datetime.now(dt.UTC)
    alice_name = name_of("Alice", "Alpha", "alice@alpha.test")
    return Pki(
        d, load_certificates(d / "ca/root.pem")[0], inter,
        load_certificates(d / "alpha.test/alice.pem")[0],
        load_certificates(d / "beta.test/bob.pem")[0],
        load_certificates(d / "alpha.test/domain-ec.pem")[0],
        issue(alice_name, new_key("p256"), None, emails=("alice@alpha.test",)).certificate,
        issue(alice_name, new_key("p256"), inter, emails=("alice@alpha.test",),
              not_before=now - dt.timedelta(days=30),
              not_after=now - dt.timedelta(days=1)).certificate,
        issue(alice_name, new_key("p256"), inter, ca=True,
              emails=("alice@alpha.test",)).certificate)


def entry(cert: x509.Certificate, chain: tuple[x509.Certificate, ...] = (),
          state: str = "active", pem_text: str | None = None) -> dict[str, Any]:
    """A certificate as the directory's JSON lists it (gateway/directory/api_read.py)."""
    return {"fingerprint": fp(cert), "pem": pem_text if pem_text is not None else pem(cert),
            "chain": [pem(c) for c in chain], "state": state, "names": [], "usage": [],
            "not_before": None, "not_after": None, "smime_capabilities": None}


Answer = tuple[int, bytes]


@dataclass
class Scripted:
    """A directory on 127.0.0.1 that answers POST /v1/lookup from `listing` (name → list
    of entries; absent → missing), or with `override(names)` when set."""

    listing: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    override: Callable[[list[str]], Answer] | None = None
    requests: list[list[str]] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set, answers wait for it
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _lookup(self, request: web.Request) -> web.Response:
        body = await request.json()
        names = [*body.get("domains", []), *body.get("addresses", [])]
        self.requests.append(names)
        if self.gate is not None:
            await self.gate.wait()
        if self.override is not None:
            status, data = self.override(names)
            return web.Response(status=status, body=data, content_type="application/json")
        results = {n: self.listing[n] for n in names if n in self.listing}
        return web.json_response({"results": results,
                                  "missing": [n for n in names if n not in results]})

    async def start(self) -> Scripted:
        app = web.Application()
        app.router.add_post("/v1/lookup", self._lookup)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def json_answer(body: object, status: int = 200) -> Answer:
    return status, json.dumps(body).encode()


@pytest.fixture(name="cache")
def cache_fixture() -> Iterator[CertCache]:
    name = f"smimegate-test-lookup-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cache = certcache.CertCache.create(name, 1024, 1 << 20)
    yield cache
    cache.unlink()
    cache.close()


def lookup_config(**overrides: Any) -> LookupSection:
    base = LookupSection(srv=False, retries=1, timeout=5.0, batch_window=0.01)
    return replace(base, **overrides)


class Clock:
    """A clock the test moves (Unix time, starting now)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def run(coro_fn: Callable[[], Any]) -> None:
    asyncio.run(coro_fn())
