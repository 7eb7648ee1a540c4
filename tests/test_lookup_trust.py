"""A directory is not trusted (DESIGN.md, trust model): what a lying directory offers is
never used, and is counted with its reason; a directory that is down gives stale
entries within their bound, then "unavailable" — never a silent "no certificate"."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.lookup._cache_py import CertCache
from gateway.lookup.resolver import CertificateResolver
from tests.lookup_support import Clock, Pki, Scripted, der, entry, json_answer, lookup_config, run
from tests.lookup_support import cache_fixture as cache_fixture
from tests.lookup_support import pki_fixture as pki_fixture

GARBAGE_PEM = "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("smimegate_lookup_rejected_certificates_total",
                                     {"source": "directory", "reason": reason}) or 0.0


def lies(pki: Pki) -> list[tuple[str, dict[str, Any]]]:
    """(the reason it must be refused for, what the directory says about alice)."""
    chain = (pki.inter.certificate,)
    return [
        ("wrong-name", entry(pki.bob, chain)),  # another domain's certificate
        ("untrusted", entry(pki.self_signed_alice)),
        ("expired", entry(pki.expired_alice, chain)),
        ("revoked", entry(pki.alice, chain, state="revoked")),
        ("bad-state", entry(pki.alice, chain, state="suspended")),
        ("malformed", entry(pki.alice, pem_text=GARBAGE_PEM)),
        ("malformed", entry(pki.alice, pem_text="not a certificate at all")),
        ("bad-usage", entry(pki.ca_alice, chain)),  # a CA, not an end entity
    ]


@pytest.mark.parametrize("index", range(8))
def test_a_lie_is_never_used_and_is_counted(pki: Pki, cache: CertCache, index: int) -> None:
    reason, lie = lies(pki)[index]

    async def body() -> None:
        d = await Scripted({"alice@alpha.test": [lie]}).start()
        resolver = CertificateResolver(lookup_config(default_directories=(d.url,)),
                                       anchors=[pki.root], cache=cache)
        try:
            before = rejected(reason)
            r = await resolver.lookup("alice@alpha.test")
            assert (r.status, r.certificates) == ("none", ())
            assert rejected(reason) - before == 1
            hit = cache.get("alice@alpha.test")
            assert hit is not None
            assert hit.negative
        finally:
            await resolver.close()
            await d.stop()
    run(body)


def test_lies_beside_the_truth_leave_only_the_truth(pki: Pki, cache: CertCache) -> None:
    async def body() -> None:
        good = entry(pki.alice, (pki.inter.certificate,))
        d = await Scripted({"alice@alpha.test": [lie for _, lie in lies(pki)] + [good],
                            "alpha.test": [entry(pki.alice, (pki.inter.certificate,)),
                                           entry(pki.alpha_domain, (pki.inter.certificate,))]
                            }).start()
        resolver = CertificateResolver(lookup_config(default_directories=(d.url,)),
                                       anchors=[pki.root], cache=cache)
        try:
            before = rejected("wrong-name")
            r = await resolver.certificates_for("alice@alpha.test")
            assert r.user.certificates == (pki.alice,)
            # a user's certificate is not a domain certificate, even of its own domain
            assert r.domain.certificates == (pki.alpha_domain,)
            assert rejected("wrong-name") - before == 2  # bob's, and alice's as a domain's
            hit = cache.get("alice@alpha.test")
            assert hit is not None
            assert hit.ders == (der(pki.alice),)
        finally:
            await resolver.close()
            await d.stop()
    run(body)


def test_huge_or_malformed_answers_are_unavailable(pki: Pki, cache: CertCache) -> None:
    async def body() -> None:
        huge = {"results": {"alice@alpha.test": [entry(pki.alice)] * 5000}, "missing": []}
        d = await Scripted(override=lambda names: json_answer(huge)).start()
        resolver = CertificateResolver(
            lookup_config(default_directories=(d.url,), max_answer=256 * 1024),
            anchors=[pki.root], cache=cache)
        try:
            r = await resolver.lookup("alice@alpha.test")
            assert (r.status, r.source) == ("unavailable", "unavailable")
            assert "too-large" in r.reason
            assert cache.get("alice@alpha.test", allow_stale=True) is None  # nothing written
            resolver._down.clear()  # the in-process failure memo; ask again now
            d.override = lambda names: json_answer({"results": {}})
            r = await resolver.lookup("alice@alpha.test")
            assert r.status == "unavailable"
            assert "'missing' is not a list" in r.reason
        finally:
            await resolver.close()
            await d.stop()
    run(body)


def test_directory_down_stale_within_bound_then_unavailable(pki: Pki,
                                                            cache: CertCache) -> None:
    async def body() -> None:
        chain = (pki.inter.certificate,)
        d = await Scripted({"alice@alpha.test": [entry(pki.alice, chain)],
                            "alpha.test": [entry(pki.alpha_domain, chain)]}).start()
        clock = Clock()
        config = lookup_config(default_directories=(d.url,), positive_ttl=100.0,
                               stale_bound=1000.0, retries=0)
        resolver = CertificateResolver(config, anchors=[pki.root], cache=cache, clock=clock)
        try:
            first = await resolver.certificates_for("alice@alpha.test")
            assert first.status == "found"
            await d.stop()  # the directory goes down
            clock.now += 500  # past positive_ttl, within stale_bound
            r = await resolver.certificates_for("alice@alpha.test")
            assert r.status == "found"
            assert r.user.stale
            assert r.domain.stale
            assert r.user.certificates == (pki.alice,)
            # the background refresh ran and failed; the stale entry is still there
            for task in list(resolver._inflight.values()):
                refreshed = await task
                assert refreshed.status == "unavailable"
            r = await resolver.certificates_for("alice@alpha.test")
            assert r.user.source == "stale"
            clock.now += 1000  # past the bound
            r = await resolver.certificates_for("alice@alpha.test")
            assert r.status == "unavailable"  # policy's fallback decides, not "none"
            assert (r.user.status, r.domain.status) == ("unavailable", "unavailable")
            assert "unreachable" in r.user.reason
        finally:
            await resolver.close()
            await d.stop()
    run(body)


def test_stale_entry_never_outlives_its_certificate(pki: Pki, cache: CertCache) -> None:
    """An entry capped by a certificate's expiry is not served stale past it."""
    async def body() -> None:
        d = await Scripted({"alice@alpha.test": [entry(pki.alice, (pki.inter.certificate,))]
                            }).start()
        clock = Clock()
        resolver = CertificateResolver(
            lookup_config(default_directories=(d.url,), positive_ttl=10.0 ** 9,
                          stale_bound=10.0 ** 9, retries=0),
            anchors=[pki.root], cache=cache, clock=clock)
        try:
            assert (await resolver.lookup("alice@alpha.test")).status == "found"
            hit = cache.get("alice@alpha.test", now=clock())
            assert hit is not None
            not_after = min(pki.alice.not_valid_after_utc, pki.inter.certificate.
                            not_valid_after_utc).timestamp()
            assert hit.expires_at == pytest.approx(not_after)
            await d.stop()
            clock.now = not_after + 1
            r = await resolver.lookup("alice@alpha.test")
            assert r.status == "unavailable"
        finally:
            await resolver.close()
            await d.stop()
    run(body)


def test_failover_to_the_next_directory_and_refused_names(pki: Pki, cache: CertCache) -> None:
    async def body() -> None:
        chain = (pki.inter.certificate,)
        d = await Scripted({"alice@alpha.test": [entry(pki.alice, chain)]}).start()
        down = await Scripted().start()
        await down.stop()  # its port now refuses connections
        resolver = CertificateResolver(
            lookup_config(default_directories=(down.url, d.url), retries=0),
            anchors=[pki.root], cache=cache)
        try:
            r = await resolver.lookup("alice@alpha.test")
            assert (r.status, r.certificates) == ("found", (pki.alice,))
            # a directory that refuses a name (400) will never list it: "none", not
            # "unavailable" (which would defer that recipient's mail forever)
            d.override = lambda names: json_answer({"error": "bad-address"}, 400)
            r = await resolver.lookup('"odd local"@alpha.test')
            assert (r.status, r.source) == ("none", "directory")
        finally:
            await resolver.close()
            await d.stop()
    run(body)
