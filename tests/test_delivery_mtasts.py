"""MTA-STS for delivery (RFC 8461): the TXT record from a real DNS server on loopback, the
policy from a real HTTPS server on loopback (aiohttp, a certificate for
mta-sts.beta.test), and a real SMTP sink with STARTTLS as the MX host."""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from gateway.config import ConfigError, GatewayConfig, parse_config
from gateway.delivery import Router, mtasts
from gateway.delivery.route import Host
from gateway.envelope import Envelope
from gateway.keys.demo import tls_server
from gateway.spool import QueueEntry
from tests.delivery_sink import Received, Sink
from tests.dns_support import DnsServer, Zone
from tests.test_delivery import DATA, delivery, gateway, run, until

ENFORCE = "version: STSv1\r\nmode: enforce\r\nmx: mail.beta.test\r\nmax_age: 86400\r\n"


# -- the parsers, as tables -----------------------------------------------------------

@pytest.mark.parametrize(("texts", "ident"), [
    (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
    (["v=STSv1;id=abc"], "abc"),
    (["v=spf1 -all", "v=STSv1; id=abc; ext=1"], "abc"),  # other records are ignored
    (["v=STSv1; id=abc", "v=STSv1; id=def"], None),  # more than one: no policy
    (["v=STSv1"], None),  # no id
    (["v=STSv1; id=ab-c"], None),  # id is letters and digits only
    (["v=STSv1; id=" + "a" * 33], None),  # at most 32 of them
    (["v=STSv1; id=a; id=b"], None),
    (["v=STSv10; id=a"], None),
    (["v=STSv1; id=a; =x"], None),
    ([], None),
])
def test_txt_record(texts: list[str], ident: str | None) -> None:
    assert mtasts.parse_txt(texts) == ident


def test_policy_parses() -> None:
    policy = mtasts.parse_policy(
        "version: STSv1\nmode: testing\nmx: Mail.Beta.Test.\nmx: *.beta.test\n"
        "max_age:604800\nfuture_field: x y\n")
    assert policy == mtasts.Policy("testing", ("mail.beta.test", "*.beta.test"), 604800)
    assert mtasts.parse_policy("version: STSv1\nmode: none\nmax_age: 0").mx == ()
    assert mtasts.parse_policy(f"max_age: {mtasts.MAX_AGE_LIMIT}\nmode: enforce\n"
                               "mx: a.b\nversion: STSv1\r\n").max_age == 31557600


@pytest.mark.parametrize(("text", "error"), [
    ("", "version is None"),
    ("version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1", "version is 'STSv2'"),
    ("version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1", "mode is 'strict'"),
    ("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1", "max_age is '-1'"),
    ("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601", "above 31557600"),
    ("version: STSv1\nmode: enforce\nmax_age: 1", "names no mx"),
    ("version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1", "line 3: mx 'a.*.b'"),
    ("version: STSv1\nmode: enforce\nmx: com\nmax_age: 1", "line 3: mx 'com'"),
    ("version: STSv1\nmode: enforce\nmode: none\nmx: a.b\nmax_age: 1", "mode given twice"),
    ("version: STSv1\n\nmode: enforce", "line 2 is not"),
    ("<html>hello</html>", "line 1 is not"),
])
def test_malformed_policy(text: str, error: str) -> None:
    with pytest.raises(mtasts.PolicyError, match=error.replace("*", r"\*")):
        mtasts.parse_policy(text)


@pytest.mark.parametrize(("host", "allowed"), [
    ("mail.beta.test", True), ("MAIL.beta.test.", True), ("mx1.example.net", True),
    ("example.net", False), ("a.mx1.example.net", False), ("mail.beta.test.evil", False),
    ("beta.test", False),
])
def test_mx_patterns(host: str, allowed: bool) -> None:
    policy = mtasts.Policy("enforce", ("mail.beta.test", "*.example.net"), 1)
    assert policy.allows(host) is allowed


# -- end to end ------------------------------------------------------------------------

@dataclass
class PolicyServer:
    """HTTPS on 127.0.0.1 serving mta-sts.beta.test's policy, as the test sets it."""

    context: ssl.SSLContext
    body: str = ENFORCE
    status: int = 200
    content_type: str = "text/plain"
    chunked: bool = False  # no Content-Length: the size cap counts what arrives
    requests: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> PolicyServer:
        app = web.Application()
        app.router.add_get("/.well-known/mta-sts.txt", self._policy)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, ssl_context=self.context).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _policy(self, request: web.Request) -> web.Response:
        self.requests.append(request.host)
        if self.status in (301, 302):
            raise web.HTTPFound("https://elsewhere.test/.well-known/mta-sts.txt")
        response = web.Response(status=self.status, text=self.body,
                                content_type=self.content_type)
        if self.chunked:
            response.enable_chunked_encoding()
        return response


def server_context(tmp_path: Path, host: str) -> tuple[Path, ssl.SSLContext]:
    folder = tmp_path / host
    folder.mkdir()
    ca_file, server = tls_server(host).write(folder)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(server)
    return ca_file, ctx


@dataclass
class Outcome:
    messages: list[Received]
    connections: int
    entries: list[QueueEntry | None]  # None: delivered and removed
    policy_requests: list[str]
    counted: dict[str, float]

    def reply(self, i: int = 0) -> str:
        entry = self.entries[i]
        assert entry is not None
        return entry.state.rcpts[0].reply


RESULTS = ("fetched", "cached", "none", "failed", "enforced", "refused", "testing-refused")


def counts() -> dict[str, float]:
    return {r: REGISTRY.get_sample_value("smimegate_delivery_mta_sts_total",
                                         {"result": r}) or 0.0 for r in RESULTS}


async def attempt(tmp_path: Path, *, txt: str | None = "v=STSv1; id=1",
                  mx_trusted: bool = True, messages: int = 1, require_tls: bool = False,
                  between: Any = None, **settings: Any) -> Outcome:
    """Send `messages` messages to b@beta.test one after the other (MX mail.beta.test,
    the sink), each waited for until its first try; `between(policy_server, zone)` runs
    after the first. The MX certificate chains to tls_ca_file when mx_trusted."""
    sts_ca, sts_ctx = server_context(tmp_path, "mta-sts.beta.test")
    mx_ca, mx_ctx = server_context(tmp_path, "mail.beta.test")
    ca_file = tmp_path / "cas.pem"
    ca_file.write_bytes(sts_ca.read_bytes() + (mx_ca.read_bytes() if mx_trusted else b""))
    policy_server = await PolicyServer(sts_ctx).start()
    for key in ("body", "status", "content_type", "chunked"):
        if key in settings:
            setattr(policy_server, key, settings.pop(key))
    zone = Zone(records={
        "beta.test.": {"MX": ["10 mail.beta.test."]},
        "mail.beta.test.": {"A": ["127.0.0.1"]},
        "mta-sts.beta.test.": {"A": ["127.0.0.1"]},
        "_mta-sts.beta.test.": {"TXT": [f'"{txt}"'] if txt else []},
    })
    dns_server = await DnsServer(zone).start()
    sink = await Sink(tls_context=mx_ctx).start()
    config = delivery({}, dns_servers=(dns_server.hostport,), smtp_port=sink.port,
                      mta_sts=True, mta_sts_port=policy_server.port, tls_ca_file=ca_file,
                      retry_initial=60.0, **{"tls": "none", **settings})
    gw = await gateway(tmp_path, config)
    before = counts()
    entries: list[QueueEntry | None] = []
    try:
        for i in range(messages):
            if i == 1 and between is not None:
                await between(policy_server, zone)
            qid = await gw.spool.enqueue(Envelope("a@alpha.test", ("b@beta.test",),
                                                  require_tls=require_tls), DATA)

            def settled(qid: str = qid) -> bool:
                entry = gw.spool.get(qid)
                return entry is None or entry.state.rcpts[0].attempts > 0

            await until(settled)
            entries.append(gw.spool.get(qid))
    finally:
        await gw.stop()
        await sink.stop()
        await policy_server.stop()
        dns_server.close()
    after = counts()
    return Outcome(sink.messages, sink.connections, entries, policy_server.requests,
                   {r: after[r] - before[r] for r in RESULTS if after[r] != before[r]})


def test_enforce_with_listed_mx_and_valid_certificate_delivers_over_tls(
        tmp_path: Path) -> None:
    # delivery.tls is "none": the policy alone makes the session verified TLS.
    out = run_attempt(tmp_path)
    assert [m.tls for m in out.messages] == [True]
    assert out.messages[0].data == DATA
    assert out.entries == [None]
    assert [h.partition(":")[0] for h in out.policy_requests] == ["mta-sts.beta.test"]
    assert out.counted == {"fetched": 1, "enforced": 1}


def test_enforce_defers_when_no_mx_is_listed(tmp_path: Path) -> None:
    out = run_attempt(tmp_path, body=ENFORCE.replace("mail.beta.test", "mx.other.test"))
    assert out.connections == 0
    assert out.messages == []
    assert out.reply().startswith("451 4.7.5 no MX host of beta.test is listed")
    assert out.counted == {"fetched": 1, "refused": 1}


def test_enforce_defers_when_the_certificate_does_not_verify(tmp_path: Path) -> None:
    out = run_attempt(tmp_path, mx_trusted=False)
    assert out.messages == []
    assert out.reply().startswith("421 4.7.5 TLS with mail.beta.test")
    assert "certificate verify failed" in out.reply()
    assert out.counted == {"fetched": 1, "refused": 1}


def test_require_tls_copy_under_enforce(tmp_path: Path) -> None:
    # A "tls-only" copy is "verify" already: a policy that validates lets it go...
    out = run_attempt(tmp_path, require_tls=True)
    assert [m.tls for m in out.messages] == [True]
    assert out.counted == {"fetched": 1, "enforced": 1}
    # ...and one that does not list the MX host keeps it queued, like any other.
    out = run_attempt(tmp_path / "2", require_tls=True,
                      body=ENFORCE.replace("mail.beta.test", "*.other.test"))
    assert out.messages == []
    assert out.reply().startswith("451 4.7.5")


def test_testing_mode_delivers_and_counts_what_enforce_would_refuse(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "smimegate.delivery")
    body = ENFORCE.replace("enforce", "testing") + "mx: *.other.test\n"
    out = run_attempt(tmp_path, body=body, mx_trusted=False, tls="opportunistic")
    assert [m.tls for m in out.messages] == [True]  # opportunistic, as before
    assert out.entries == [None]
    assert out.counted == {"fetched": 1, "testing-refused": 1}
    assert "enforce would refuse mail.beta.test" in caplog.text
    # An MX host the policy does not list is still used, and counted.
    out = run_attempt(tmp_path / "2", body=body.replace("mx: mail.beta.test\r\n", ""))
    assert [m.tls for m in out.messages] == [False]  # tls = none, as before
    assert out.counted == {"fetched": 1, "testing-refused": 1}


def test_no_txt_record_delivers_as_before(tmp_path: Path) -> None:
    out = run_attempt(tmp_path, txt=None)
    assert [m.tls for m in out.messages] == [False]
    assert out.policy_requests == []
    assert out.counted == {"none": 1}


@pytest.mark.parametrize(("server", "logged"), [
    ({"body": "version: STSv1\nmode: enforce\nmax_age: 86400\n"}, "names no mx"),
    ({"content_type": "text/html"}, "is text/html, not text/plain"),
    ({"status": 404}, "answered HTTP 404"),
    ({"status": 302}, "answered HTTP 302"),  # redirects are not followed
    ({"body": "mx: a.b\n" * 9000}, "larger than 65536 bytes"),
    ({"body": "mx: a.b\n" * 9000, "chunked": True}, "larger than 65536 bytes"),
])
def test_unusable_policy_is_ignored_with_a_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, server: dict[str, Any],
        logged: str) -> None:
    caplog.set_level(logging.WARNING, "smimegate.delivery")
    out = run_attempt(tmp_path, **server)
    assert [m.tls for m in out.messages] == [False]  # as if there were no policy
    assert out.counted == {"failed": 1}
    assert "MTA-STS policy of beta.test" in caplog.text
    assert logged in caplog.text
    assert caplog.text.rstrip().endswith("; ignored")


def test_cached_policy_is_used_when_the_policy_server_is_down(tmp_path: Path) -> None:
    async def between(policy_server: PolicyServer, zone: Zone) -> None:
        await policy_server.stop()  # and a new id, so the policy is fetched again
        zone.records["_mta-sts.beta.test."]["TXT"] = ['"v=STSv1; id=2"']

    # connection_idle 0: the second message opens a session of its own.
    out = run_attempt(tmp_path, messages=2, between=between, connection_idle=0.0)
    # delivery.tls is "none": TLS on the second message is the cached policy's doing.
    assert [m.tls for m in out.messages] == [True, True]
    assert out.counted == {"fetched": 1, "failed": 1, "enforced": 2}


def test_same_id_uses_the_cache_without_fetching(tmp_path: Path) -> None:
    out = run_attempt(tmp_path, messages=2, connection_idle=0.0)
    assert len(out.policy_requests) == 1
    assert out.counted == {"fetched": 1, "cached": 1, "enforced": 2}


def test_mta_sts_port_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"delivery\.mta_sts_port"):
        parse_config(GatewayConfig, {"delivery": {"mta_sts_port": 0}})
    assert parse_config(GatewayConfig, {}).delivery.mta_sts is False  # off by default


def run_attempt(tmp_path: Path, **kw: Any) -> Outcome:
    tmp_path.mkdir(parents=True, exist_ok=True)
    result: list[Outcome] = []

    async def body() -> None:
        result.append(await attempt(tmp_path, **kw))

    run(body)
    return result[0]



def test_enforce_makes_hosts_verify_and_dane_goes_first(tmp_path: Path) -> None:
    """RFC 8461 §2: where DANE authenticates a host, its TLSA records decide; elsewhere
    enforce means "verify", whatever delivery.tls says."""
    async def body() -> None:
        zone = Zone(records={"_25._tcp.mail.beta.test.": {"TLSA": ["3 1 1 " + "ab" * 32]}},
                    secure={"_25._tcp.mail.beta.test."})
        server = await DnsServer(zone).start()
        try:
            for tls in ("none", "opportunistic", "required", "verify"):
                router = Router(delivery({}, tls=tls, dns_servers=(server.hostport,)))
                dest = router.destination("b@beta.test")
                for secure, dane_on, expected in ((False, False, "verify"),
                                                  (True, False, "verify"),
                                                  (True, True, "dane")):
                    router = Router(delivery({}, tls=tls, dane=dane_on,
                                             dns_servers=(server.hostport,)))
                    host = Host("mail.beta.test", "127.0.0.1", 25, secure, sts="enforce")
                    assert (await router.host_tls(dest, host))[0] == expected, (tls, secure)
                    testing = Host("mail.beta.test", "127.0.0.1", 25, secure, sts="testing")
                    assert (await router.host_tls(dest, testing))[0] in (tls, "dane")
        finally:
            server.close()
    run(body)


def test_new_txt_id_fetches_the_policy_again(tmp_path: Path) -> None:
    async def between(policy_server: PolicyServer, zone: Zone) -> None:
        # RFC 8461 §10.2: a domain leaving MTA-STS publishes mode none under a new id.
        policy_server.body = "version: STSv1\nmode: none\nmax_age: 86400\n"
        zone.records["_mta-sts.beta.test."]["TXT"] = ['"v=STSv1; id=2"']

    out = run_attempt(tmp_path, messages=2, between=between, connection_idle=0.0)
    assert [m.tls for m in out.messages] == [True, False]  # tls = none once it is gone
    assert len(out.policy_requests) == 2
    assert out.counted == {"fetched": 2, "enforced": 1}
