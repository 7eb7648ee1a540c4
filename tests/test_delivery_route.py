"""Next hops from DNS (MX, implicit MX, null MX, NXDOMAIN) and the TLS policies."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.config.schema import DeliverySection
from gateway.config.types import HostPort
from gateway.delivery import RouteError, Router
from gateway.envelope import Envelope
from gateway.keys.demo import tls_server
from tests.delivery_sink import Sink
from tests.dns_support import DnsServer, Zone
from tests.test_delivery import DATA, delivery, gateway, parse_dsn, run, until

ZONE = Zone(records={
    "mx.test.": {"MX": ["20 backup.mx.test.", "10 mail.mx.test."]},
    "mail.mx.test.": {"A": ["127.0.0.1"]},
    "backup.mx.test.": {"A": ["127.0.0.2"]},
    "implicit.test.": {"A": ["127.0.0.1"]},
    "null.test.": {"MX": ["0 ."]},
})


def test_mx_then_address_records(tmp_path: Path) -> None:
    async def body() -> None:
        server = await DnsServer(ZONE).start()
        try:
            router = Router(delivery({}, dns_servers=(server.hostport,), smtp_port=2525))
            hosts = await router.hosts(router.destination("u@mx.test"))
            assert [(h.name, h.address, h.port) for h in hosts] == [
                ("mail.mx.test", "127.0.0.1", 2525), ("backup.mx.test", "127.0.0.2", 2525)]
            hosts = await router.hosts(router.destination("u@implicit.test"))
            assert [(h.name, h.address) for h in hosts] == [("implicit.test", "127.0.0.1")]
            assert "implicit.test. MX" in server.queries
            hosts = await router.hosts(router.destination("u@[IPv6:::1]"))
            assert [(h.address, h.port) for h in hosts] == [("::1", 2525)]
            with pytest.raises(RouteError, match="bad address literal"):
                await router.hosts(router.destination("u@[999.1.1.1]"))
        finally:
            server.close()
        named = Router(DeliverySection(transport=(("beta.test", HostPort("localhost", 2526)),)))
        hosts = await named.hosts(named.destination("u@beta.test"))
        assert ("127.0.0.1", 2526) in [(h.address, h.port) for h in hosts]  # /etc/hosts
    run(body)


def test_dns_routing_end_to_end_with_bounces(tmp_path: Path) -> None:
    async def body() -> None:
        dns_server = await DnsServer(ZONE).start()
        sink = await Sink().start()
        config = delivery({"alpha.test": sink.port}, smtp_port=sink.port,
                          dns_servers=(dns_server.hostport,))
        gw = await gateway(tmp_path, config)
        await gw.spool.enqueue(Envelope("alice@alpha.test", (
            "u@mx.test", "v@implicit.test", "w@null.test", "x@nx.test")), DATA)
        await until(lambda: gw.spool.stats()["total"] == 0 and len(sink.messages) == 3)
        await gw.stop()
        await sink.stop()
        dns_server.close()
        delivered = sorted(r for m in sink.messages if m.mail_from for r in m.rcpts)
        assert delivered == ["u@mx.test", "v@implicit.test"]
        (bounce,) = [m for m in sink.messages if not m.mail_from]
        _, blocks, _ = parse_dsn(bounce)
        statuses = {b.split("\r\n")[0]: b for b in blocks}
        assert "Status: 5.1.10" in statuses["Final-Recipient: rfc822; w@null.test"]
        assert "Status: 5.1.2" in statuses["Final-Recipient: rfc822; x@nx.test"]
    run(body)


def write_pki(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA (written as PEM) and an SSL server context for 127.0.0.1 that it issued."""
    ca_file, server = tls_server("127.0.0.1").write(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(server)
    return ca_file, ctx


@pytest.mark.parametrize(
    ("policy", "offer_tls", "trust", "outcome"),
    [
        ("verify", True, True, "tls"),
        ("required", True, False, "tls"),
        ("opportunistic", True, False, "tls"),
        ("opportunistic", False, False, "plain"),
        ("none", True, True, "plain"),
        ("required", False, False, "deferred"),
        ("verify", True, False, "deferred"),  # a certificate we cannot verify
        ("opportunistic", "broken", False, "plain"),  # RFC 7435: fall back to cleartext
        ("required", "broken", False, "deferred"),
    ],
)
def test_tls_policy(tmp_path: Path, policy: str, offer_tls: bool | str, trust: bool,
                    outcome: str) -> None:
    async def body() -> None:
        ca_file, server_ctx = write_pki(tmp_path)
        if offer_tls == "broken":  # offers STARTTLS, but has no certificate to shake on
            server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sink = await Sink(tls_context=server_ctx if offer_tls else None).start()
        config = delivery({"beta.test": sink.port}, tls="none", retry_initial=60.0,
                          tls_policy=(("beta.test", policy),),
                          tls_ca_file=ca_file if trust else None)
        gw = await gateway(tmp_path, config)
        qid = await gw.spool.enqueue(Envelope("a@alpha.test", ("b@beta.test",)), DATA)

        def settled() -> bool:
            entry = gw.spool.get(qid)
            return entry is None or entry.state.rcpts[0].attempts > 0

        await until(settled)
        entry = gw.spool.get(qid)
        await gw.stop()
        await sink.stop()
        if outcome == "deferred":
            assert sink.messages == []
            assert entry is not None
            assert entry.state.rcpts[0].reply.startswith("421 4.7.5")
        else:
            assert [m.tls for m in sink.messages] == [outcome == "tls"]
            assert sink.messages[0].data == DATA
    run(body)


def test_unknown_tls_policy_is_refused() -> None:
    with pytest.raises(ValueError, match=r"delivery\.tls_policy: 'beta\.test' has 'maybe'"):
        Router(delivery({}, tls_policy=(("beta.test", "maybe"),)))
