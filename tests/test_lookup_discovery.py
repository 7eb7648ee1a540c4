"""Which directory serves a domain: config → _PKIXREP SRV (RFC 4386, RFC 2782 order) →
defaults, over real DNS on loopback; and the SMIMEA owner name of RFC 8162."""

from __future__ import annotations

import asyncio
import hashlib
import random

from gateway.lookup.dane import smimea_name
from gateway.lookup.discovery import Discovery, SrvTarget, make_resolver, order_srv, srv_url
from tests.dns_support import DnsServer, Zone
from tests.lookup_support import lookup_config, run


def test_srv_url_scheme_follows_port() -> None:
    assert srv_url("dir.example.net.", 443) == "https://dir.example.net"
    assert srv_url("dir.example.net", 8780) == "http://dir.example.net:8780"
    assert srv_url("::1", 80) == "http://[::1]:80"


def test_srv_order_priority_then_weight() -> None:
    recs = [SrvTarget(20, 0, 443, "c"), SrvTarget(10, 90, 443, "a"),
            SrvTarget(10, 10, 443, "b"), SrvTarget(30, 5, 443, "d")]
    rng = random.Random(7)
    firsts = {"a": 0, "b": 0}
    for _ in range(2000):
        order = [r.target for r in order_srv(recs, rng)]
        assert order[2:] == ["c", "d"]  # lower priority value always first
        assert sorted(order[:2]) == ["a", "b"]
        firsts[order[0]] += 1
    # weight 90 against 10: "a" leads about 90 % of the time (seeded, so deterministic)
    assert 1700 < firsts["a"] < 1900, firsts


def test_zero_weight_is_chosen_last_when_others_weigh() -> None:
    recs = [SrvTarget(1, 0, 443, "zero"), SrvTarget(1, 1000, 443, "heavy")]
    rng = random.Random(1)
    leads = sum(order_srv(recs, rng)[0].target == "zero" for _ in range(500))
    assert leads < 10  # only when the draw is exactly 0 (RFC 2782)


def test_smimea_owner_name_rfc8162() -> None:
    # RFC 8162 §3: SHA2-256 of the local part, truncated to 28 octets, hex.
    digest = hashlib.sha256(b"hugh").digest()[:28].hex()
    assert smimea_name("hugh@example.com") == f"{digest}._smimecert.example.com."
    assert len(digest) == 56


ZONE = Zone(records={
    "_pkixrep._http.srv.test.": {"SRV": ["20 0 8780 backup.example.", "10 5 443 dir.example."]},
    "_pkixrep._http.dot.test.": {"SRV": ["0 0 0 ."]},
    "_pkixrep._http.conf.test.": {"SRV": ["10 0 443 ignored.example."]},
}, ttl={"_pkixrep._http.srv.test.": 300}, servfail={"_pkixrep._http.broken.test."})


def test_discovery_order_over_real_dns() -> None:
    async def body() -> None:
        dns_server = await DnsServer(ZONE).start()
        try:
            config = lookup_config(
                srv=True, dns_servers=(dns_server.hostport,), dns_timeout=2.0,
                directories=(("conf.test", "http://127.0.0.1:1/"),),
                default_directories=("https://default.example",))
            disc = Discovery(config, make_resolver(config.dns_servers, config.dns_timeout))
            # 1. per-domain config wins, DNS not asked
            d = await disc.directories("CONF.test.")
            assert (d.source, d.urls) == ("config", ("http://127.0.0.1:1/",))
            assert not any("conf.test" in q for q in dns_server.queries)
            # 2. SRV, by priority, https on 443 and http elsewhere
            d = await disc.directories("srv.test")
            assert (d.source, d.urls) == ("srv", ("https://dir.example",
                                                  "http://backup.example:8780"))
            # 3. no record, "." (no service), or a failing DNS: the defaults
            for domain in ("none.test", "dot.test", "broken.test"):
                d = await disc.directories(domain)
                assert (d.source, d.urls) == ("default", ("https://default.example",)), domain
            assert "_pkixrep._http.none.test. SRV" in dns_server.queries
            # cached for the TTL: asking again costs no query
            before = len(dns_server.queries)
            await disc.directories("srv.test")
            await disc.directories("none.test")
            assert len(dns_server.queries) == before
            # no defaults and nothing else: "none"
            bare = Discovery(lookup_config(srv=True, dns_servers=(dns_server.hostport,)))
            d = await bare.directories("none.test")
            assert (d.source, d.urls) == ("none", ())
            # srv off: DNS never asked
            off = Discovery(lookup_config(srv=False, dns_servers=(dns_server.hostport,)))
            before = len(dns_server.queries)
            assert (await off.directories("srv.test")).urls == ()
            assert len(dns_server.queries) == before
        finally:
            dns_server.close()
    run(body)


def test_srv_cache_expires_with_ttl() -> None:
    async def body() -> None:
        dns_server = await DnsServer(ZONE).start()
        now = [1000.0]
        try:
            config = lookup_config(srv=True, dns_servers=(dns_server.hostport,))
            disc = Discovery(config, clock=lambda: now[0])
            await disc.directories("srv.test")
            await disc.directories("srv.test")
            assert disc.srv_queries == 1
            now[0] += 299
            await disc.directories("srv.test")
            assert disc.srv_queries == 1
            now[0] += 2  # past the record's 300 s TTL
            await disc.directories("srv.test")
            assert disc.srv_queries == 2
        finally:
            dns_server.close()
    run(body)


def test_concurrent_discovery_is_one_query() -> None:
    async def body() -> None:
        dns_server = await DnsServer(ZONE).start()
        try:
            disc = Discovery(lookup_config(srv=True, dns_servers=(dns_server.hostport,)))
            answers = await asyncio.gather(*(disc.directories("srv.test") for _ in range(500)))
            assert {a.urls for a in answers} == {("https://dir.example",
                                                  "http://backup.example:8780")}
            assert dns_server.queries.count("_pkixrep._http.srv.test. SRV") == 1
        finally:
            dns_server.close()
    run(body)
