"""The resolver end to end on loopback: a real directory found through a real _PKIXREP
SRV record, the shared-memory cache written for readers, coalescing and batching
counted at the directory, negative caching and the DANE SMIMEA source."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from prometheus_client import REGISTRY

from gateway.config import load_directory_config
from gateway.lookup._cache_py import CertCache
from gateway.lookup.resolver import CertificateResolver, LookupInputError
from tests.directory_support import DirectoryServer, http
from tests.dns_support import DnsServer, Zone
from tests.lookup_support import (
    Clock,
    Pki,
    Scripted,
    der,
    entry,
    lookup_config,
    pem,
    run,
)
from tests.lookup_support import cache_fixture as cache_fixture
from tests.lookup_support import pki_fixture as pki_fixture


@pytest.fixture(scope="module", name="directory")
def directory_fixture(pki: Pki, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[DirectoryServer]:
    config = load_directory_config(None, overrides={
        "server.data": str(tmp_path_factory.mktemp("lookup-dir")),
        "trust.anchors": [str(pki.dir / "ca/root.pem")]})
    server = DirectoryServer(config).start()
    try:
        token = server.token("alpha.test")
        for cert in (pki.alice, pki.alpha_domain):
            r = http("POST", server.url + "/v1/certificates",
                     {"certificate": pem(cert), "chain": [pem(pki.inter.certificate)]},
                     {"Authorization": f"Bearer {token}"})
            assert r.status == 201, r.body
        yield server
    finally:
        server.stop()


def lookups_at(server: DirectoryServer) -> float:
    """POST /v1/lookup requests the directory answered, from its own metrics."""
    assert server.directory is not None
    value = server.directory.metrics.registry.get_sample_value(
        "smimegate_directory_requests_total", {"route": "/v1/lookup", "status": "200"})
    return value or 0.0


def srv_zone(port: int) -> Zone:
    return Zone(records={"_pkixrep._http.alpha.test.": {"SRV": [f"10 0 {port} 127.0.0.1."]}})


def test_found_through_srv_and_cached_for_readers(pki: Pki, directory: DirectoryServer,
                                                  cache: CertCache) -> None:
    async def body() -> None:
        dns_server = await DnsServer(srv_zone(directory.port)).start()
        config = lookup_config(srv=True, dns_servers=(dns_server.hostport,),
                               positive_ttl=600.0)
        resolver = CertificateResolver(config, anchors=[pki.root], cache=cache)
        try:
            r = await resolver.certificates_for("Alice@Alpha.TEST")
            assert r.status == "found"
            assert r.user.certificates == (pki.alice,)
            assert r.user.source == "directory"
            assert r.domain.certificates == (pki.alpha_domain,)
            # written with expiry: min(positive_ttl, the certificates' own expiry)
            hit = cache.get("alice@alpha.test")
            assert hit is not None
            assert hit.ders == (der(pki.alice),)
            assert not hit.negative
            assert hit.expires_at <= resolver.clock() + 600.0
            again = await resolver.certificates_for("alice@alpha.test")
            assert again.user.source == "cache"
            assert again.domain.source == "cache"
            assert again.user.certificates == (pki.alice,)
            for bad in ("no-at-sign", "@alpha.test", "x@", "é" * 127 + "@a.test"):
                with pytest.raises(LookupInputError, match="not an e-mail address"):
                    await resolver.certificates_for(bad)
        finally:
            await resolver.close()
            dns_server.close()
        # a crypto worker: another process attaches by name and reads
        code = ("import sys; from gateway.lookup.cache import CertCache; "
                "c = CertCache.attach(sys.argv[1]); e = c.get('alpha.test'); "
                "print(len(e.ders), e.negative, e.ders[0].hex())")
        out = subprocess.run([sys.executable, "-c", code, cache.name], capture_output=True,
                             text=True, timeout=60, check=True,
                             cwd=Path(__file__).parent.parent)
        assert out.stdout.split() == ["1", "False", der(pki.alpha_domain).hex()]
    run(body)


def test_thousand_asks_for_a_new_domain_cost_one_request(
        pki: Pki, directory: DirectoryServer, cache: CertCache) -> None:
    async def body() -> None:
        dns_server = await DnsServer(srv_zone(directory.port)).start()
        config = lookup_config(srv=True, dns_servers=(dns_server.hostport,))
        resolver = CertificateResolver(config, anchors=[pki.root], cache=cache)
        try:
            before = lookups_at(directory)
            results = await asyncio.gather(*(resolver.certificates_for("alice@alpha.test")
                                              for _ in range(1000)))
            assert {r.status for r in results} == {"found"}
            assert lookups_at(directory) - before == 1  # address and domain in one POST
            assert dns_server.queries.count("_pkixrep._http.alpha.test. SRV") == 1
            # 40 different recipients at once: one batched POST of 40 addresses
            before = lookups_at(directory)
            names = [f"user{i}@alpha.test" for i in range(40)]
            results = await asyncio.gather(*(resolver.certificates_for(n) for n in names))
            assert lookups_at(directory) - before == 1
            # unknown users: no user certificate, the domain's from the cache
            assert {(r.user.status, r.domain.source) for r in results} == {("none", "cache")}
            assert all(r.status == "found" for r in results)
        finally:
            await resolver.close()
            dns_server.close()
    run(body)


def test_negative_answers_are_cached(pki: Pki, cache: CertCache) -> None:
    async def body() -> None:
        d = await Scripted().start()
        clock = Clock()
        config = lookup_config(default_directories=(d.url,), negative_ttl=60.0)
        resolver = CertificateResolver(config, anchors=[pki.root], cache=cache, clock=clock)
        try:
            r = await resolver.certificates_for("nobody@gamma.test")
            assert (r.status, r.user.status, r.domain.status) == ("none", "none", "none")
            assert len(d.requests) == 1
            entry_ = cache.get("nobody@gamma.test", now=clock())
            assert entry_ is not None
            assert entry_.negative
            assert entry_.expires_at == pytest.approx(clock() + 60.0)
            r = await resolver.certificates_for("nobody@gamma.test")
            assert r.status == "none"
            assert r.user.source == "cache"
            assert len(d.requests) == 1
            clock.now += 61  # past negative_ttl (and stale_bound 0 below): asked again
            resolver.config = lookup_config(default_directories=(d.url,), stale_bound=0.0)
            d.listing["gamma.test"] = [entry(pki.alpha_domain)]  # wrong domain: rejected
            r = await resolver.certificates_for("nobody@gamma.test")
            assert r.status == "none"
            assert r.user.source == "directory"
            assert len(d.requests) == 2
        finally:
            await resolver.close()
            await d.stop()
    run(body)


def test_no_directory_anywhere_is_none_not_unavailable(pki: Pki, cache: CertCache) -> None:
    async def body() -> None:
        resolver = CertificateResolver(lookup_config(), anchors=[pki.root], cache=cache)
        try:
            r = await resolver.certificates_for("x@nowhere.test")
            assert r.status == "none"
            assert r.user.reason == "no directory serves this domain"
        finally:
            await resolver.close()
    run(body)


def test_dane_smimea_is_a_source_that_passes_the_gate(pki: Pki, cache: CertCache) -> None:
    from gateway.lookup.dane import smimea_name

    async def body() -> None:
        zone = Zone(records={
            smimea_name("alice@alpha.test"): {"SMIMEA": [
                f"3 0 0 {der(pki.alice).hex()}",  # DANE-EE, full certificate
                f"2 0 0 {der(pki.inter.certificate).hex()}",  # DANE-TA: path building
                "3 1 1 " + "ab" * 32,  # a hash: cannot give a certificate
                f"3 0 0 {der(pki.self_signed_alice).hex()}",  # chains to nothing of ours
            ]},
            smimea_name("mallory@alpha.test"): {"SMIMEA": ["3 0 0 00ff00"]},
        })
        dns_server = await DnsServer(zone).start()
        d = await Scripted().start()  # the directory knows no one
        config = lookup_config(dane=True, dns_servers=(dns_server.hostport,),
                               default_directories=(d.url,))
        resolver = CertificateResolver(config, anchors=[pki.root], cache=cache)

        def rejected(reason: str) -> float:
            return REGISTRY.get_sample_value("smimegate_lookup_rejected_certificates_total",
                                             {"source": "dane", "reason": reason}) or 0.0

        try:
            before = (rejected("untrusted"), rejected("malformed"))
            r = await resolver.lookup("alice@alpha.test")
            assert (r.status, r.source, r.certificates) == ("found", "dane", (pki.alice,))
            hit = cache.get("alice@alpha.test")
            assert hit is not None
            assert hit.ders == (der(pki.alice),)
            assert rejected("untrusted") - before[0] == 1  # the self-signed one
            r = await resolver.lookup("mallory@alpha.test")
            assert r.status == "none"  # its one record is not a certificate
            assert rejected("malformed") - before[1] == 1
        finally:
            await resolver.close()
            await d.stop()
            dns_server.close()
    run(body)


def test_lookup_command(pki: Pki, directory: DirectoryServer,
                        capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main
    root = str(pki.dir / "ca/root.pem")
    assert main(["lookup", "--trust", root, "--directory", directory.url,
                 "alice@alpha.test"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("alice@alpha.test: found\n")
    assert "alice@alpha.test: found (source directory)" in out
    assert "alpha.test: found (source directory)" in out
    assert pki.alice.fingerprint(hashes.SHA256()).hex() in out
    # nobody: exit 1; a directory that is not there: unavailable, exit 1
    assert main(["lookup", "--trust", root, "--directory", directory.url,
                 "nobody@beta.test"]) == 1
    assert capsys.readouterr().out.startswith("nobody@beta.test: none\n")
    assert main(["lookup", "--trust", root, "--directory", "http://127.0.0.1:9/",
                 "alice@alpha.test"]) == 1
    assert capsys.readouterr().out.startswith("alice@alpha.test: unavailable\n")
    assert main(["lookup", "alice@alpha.test"]) == 2  # no trust anchors
    assert "no trust anchors" in capsys.readouterr().err
