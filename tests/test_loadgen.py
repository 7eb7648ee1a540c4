"""The load generator and its counting sink, on loopback with real sockets.

Each side is also checked against an independent peer: the sink against the standard
library's smtplib, the client against aiosmtpd, so the pair cannot agree on a mistake.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import shutil
import smtplib
import socket
import ssl
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from benchmarks import loadgen
from benchmarks._loadgen_mail import MixError, parse_domain_mix, parse_size, parse_size_mix
from benchmarks.loadgen import LoadConfig, LoadResult, Sink, SinkProcess, query_stats, run_load

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def load_into(sink: Sink, **kw: Any) -> LoadResult:
    return await run_load(LoadConfig(port=sink.port, **kw))


def test_every_accepted_message_arrives_with_its_stamp() -> None:
    async def go() -> tuple[LoadResult, Sink]:
        async with Sink(keep_data=True) as sink:
            res = await load_into(sink, sessions=4, messages=10,
                                  sizes=((2048, 1), (30_000, 1)),
                                  domains=(("beta.test", 1), ("gamma.test", 1)))
            assert await sink.wait_for_ids(res.accepted_ids, timeout=10) == set()
            return res, sink

    res, sink = run(go())
    assert (res.attempted, res.accepted, res.errors, res.connections) == (40, 40, {}, 4)
    assert sink.received_ids == res.accepted_ids
    group = sink.groups[res.run_id]
    assert (group.messages, group.duplicates, group.bare_lf_messages) == (40, 0, 0)
    assert len(group.latencies_ns) == 40
    assert min(group.latencies_ns) > 0
    domains = {m.rcpt_tos[0].rpartition("@")[2] for m in sink.messages}
    assert domains == {"beta.test", "gamma.test"}
    kinds = set()
    for m in sink.messages:
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        assert msg["Message-ID"] == m.message_id
        assert msg["X-Loadgen-Stamp"].split()[0] == res.run_id
        kinds.add(tuple(p.get_content_type() for p in msg.walk()))
    assert kinds == {
        ("multipart/alternative", "text/plain", "text/html"),
        ("multipart/mixed", "multipart/alternative", "text/plain", "text/html",
         "application/octet-stream"),
    }
    sizes = sorted(len(m.data) for m in sink.messages)
    assert 1800 < sizes[0] < 2400
    assert 28_000 < sizes[-1] < 32_000


@pytest.mark.parametrize(("kw", "connections"), [
    pytest.param({"new_connection_per_message": True}, 12, id="new-connection-per-message"),
    pytest.param({"pipelining": False}, 3, id="no-pipelining"),
    pytest.param({"rcpts_per_message": 3}, 3, id="three-recipients"),
    pytest.param({"rate": 400.0}, 3, id="paced"),
])
def test_session_variants(kw: dict[str, Any], connections: int) -> None:
    async def go() -> tuple[LoadResult, Sink]:
        async with Sink(keep_data=True) as sink:
            res = await load_into(sink, sessions=3, messages=4, sizes=((2048, 1),), **kw)
            await sink.wait_for_ids(res.accepted_ids, timeout=10)
            return res, sink

    res, sink = run(go())
    assert (res.accepted, res.errors, res.connections) == (12, {}, connections)
    assert sink.received_ids == res.accepted_ids
    assert {len(m.rcpt_tos) for m in sink.messages} == {kw.get("rcpts_per_message", 1)}


@pytest.mark.parametrize(("sink_kw", "error"), [
    pytest.param({"fail_4xx_for": 60}, "data-end:451 4.3.0", id="4xx-data"),
    pytest.param({"fail_5xx_rate": 1.0}, "data-end:554 5.7.0", id="5xx-data"),
    pytest.param({"fail_5xx_rate": 1.0, "fail_stage": "rcpt"}, "rcpt:550 5.1.1", id="5xx-rcpt"),
    pytest.param({"fail_4xx_for": 60, "fail_stage": "mail"}, "mail:451 4.3.0", id="4xx-mail"),
    pytest.param({"max_message_size": 1000}, "mail:552 5.3.4", id="too-big-declared"),
    pytest.param({"drop_rate": 1.0}, "conn:reset", id="drop-at-end-of-data"),
])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_failure_modes_give_their_reply_codes(sink_kw: dict[str, Any], error: str,
                                              pipelining: bool) -> None:
    async def go() -> tuple[LoadResult, Sink]:
        async with Sink(**sink_kw) as sink:
            res = await load_into(sink, sessions=2, messages=3, sizes=((2048, 1),),
                                  pipelining=pipelining)
            return res, sink

    res, sink = run(go())
    assert res.accepted == 0
    assert res.errors == {error: 6}
    assert sink.received_ids == set()
    if error.startswith("data-end:4"):
        assert len(sink.deferred_ids) == 6
    if error.startswith("data-end:5") and "552" not in error:
        assert len(sink.rejected_ids) == 6
    if error == "conn:reset":
        assert len(sink.dropped_ids) == 6


def test_4xx_then_recovery_and_partial_5xx() -> None:
    async def go() -> tuple[LoadResult, LoadResult, Sink]:
        async with Sink(fail_4xx_for=60, fail_5xx_rate=0.5, seed=7) as sink:
            first = await load_into(sink, sessions=2, messages=3, sizes=((2048, 1),))
            sink.fail_4xx(0)  # the next hop recovers
            second = await load_into(sink, sessions=4, messages=10, sizes=((2048, 1),))
            return first, second, sink

    first, second, sink = run(go())
    assert first.errors == {"data-end:451 4.3.0": 6}
    refused = second.errors.get("data-end:554 5.7.0", 0)
    assert 0 < refused < 40
    assert second.accepted + refused == 40
    assert sink.received_ids == second.accepted_ids
    assert not sink.rejected_ids & sink.received_ids


def test_unreachable_server_is_counted_not_hung() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        res = run(run_load(LoadConfig(port=port, sessions=2, messages=3)))
    assert res.accepted == 0
    assert res.errors == {"conn:refused": 6}


def test_loopback_only() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        LoadConfig(host="192.0.2.1").validate()
    with pytest.raises(ValueError, match="not a loopback address"):
        run(Sink(host="0.0.0.0").start())  # noqa: S104 (it must refuse)
    with pytest.raises(ValueError, match="HOST:PORT"):
        loadgen.parse_hostport("127.0.0.1")


def test_mix_parsing() -> None:
    assert parse_size("100k") == 102_400
    assert parse_size("1m") == 1_048_576
    assert parse_size_mix("2k:50,10k:40,100k:10") == [(2048, 50), (10240, 40), (102400, 10)]
    assert parse_domain_mix("beta.test:3,gamma.test") == [("beta.test", 3), ("gamma.test", 1)]
    for bad in ("2x", "10k:0", "10k:-1", "", "50"):
        with pytest.raises(MixError):
            parse_size_mix(bad)
    with pytest.raises(MixError, match="bad domain"):
        parse_domain_mix("nodot:1")


def _chat(port: int, payload: bytes) -> bytes:
    """Send raw bytes in one write and read until the server closes (QUIT or error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_sink_protocol_edges() -> None:
    async def go() -> tuple[bytes, bytes, Sink]:
        async with Sink(keep_data=True) as sink:
            loop = asyncio.get_running_loop()
            pipelined = (b"EHLO x\r\nRCPT TO:<a@b.test>\r\nMAIL FROM:<s@a.test>\r\nDATA\r\n"
                         b"RCPT TO:<a@b.test>\r\nDATA\r\nMessage-ID: <m1@x>\r\n\r\n"
                         b"..leading dot\r\n.\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<c@b.test>\r\n"
                         b"DATA\r\n.\r\nXYZZY\r\nQUIT\r\n")
            a = await loop.run_in_executor(None, _chat, sink.port, pipelined)
            b = await loop.run_in_executor(None, _chat, sink.port, b"NOOP " + b"x" * 5000)
            big = (b"HELO x\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<a@b.test>\r\nDATA\r\n"
                   + b"y" * 200_000 + b"\r\n.\r\nQUIT\r\n")
            sink.max_message_size = 1000  # undeclared size: refused at the end of DATA
            c = await loop.run_in_executor(None, _chat, sink.port, big)
            assert b"552 5.3.4" in c
            assert sink.received_ids == {"<m1@x>"}
            return a, b, sink

    a, b, sink = run(go())
    codes = [ln[:3] for ln in a.split(b"\r\n") if ln[3:4] == b" "]
    assert codes == [b"220", b"250", b"503", b"250", b"554", b"250", b"354", b"250",
                     b"250", b"250", b"354", b"250", b"502", b"221"]
    assert [m.data for m in sink.messages] == [b"Message-ID: <m1@x>\r\n\r\n.leading dot\r\n",
                                               b""]
    assert b.endswith(b"500 5.5.2 Line too long\r\n")


def test_sink_against_smtplib() -> None:
    async def go() -> Sink:
        async with Sink(keep_data=True) as sink:
            def send() -> None:
                with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as c:
                    c.sendmail("s@alpha.test", ["r@beta.test"],
                               b"Message-ID: <std@x>\r\nSubject: hi\r\n\r\n.dot\r\nbody\r\n")
            await asyncio.get_running_loop().run_in_executor(None, send)
            return sink

    sink = run(go())
    assert sink.received_ids == {"<std@x>"}
    assert sink.messages[0].data.endswith(b"\r\n\r\n.dot\r\nbody\r\n")
    assert sink.messages[0].rcpt_tos == ("r@beta.test",)


def test_client_against_aiosmtpd() -> None:
    from aiosmtpd.controller import Controller

    got: list[bytes] = []
    lock = threading.Lock()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with lock:
                got.append(envelope.original_content)
            return "250 2.0.0 Ok"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        res = run(run_load(LoadConfig(port=port, sessions=3, messages=4,
                                      sizes=((2048, 1), (30_000, 1)))))
    finally:
        ctl.stop()
    assert (res.accepted, res.errors) == (12, {})
    ids = set()
    for raw in got:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        ids.add(msg["Message-ID"])
    assert ids == res.accepted_ids


def test_sink_process_and_command_line(tmp_path: Path) -> None:
    sink = SinkProcess().start()
    try:
        out = tmp_path / "report.json"
        status = loadgen.main(["--target", sink.address, "--sink-stats", sink.address,
                               "--sessions", "3", "--messages", "5", "--sizes", "2k:1,10k:1",
                               "--json", str(out)])
        assert status == 0
        report = json.loads(out.read_text())
        assert report["load"]["accepted"] == 15
        assert report["delivery"]["delivered"] == 15
        assert report["delivery"]["e2e_latency"]["p50_ms"] is not None
        stats = run(query_stats(sink.host, sink.port))
        assert stats["received"] == 15
    finally:
        sink.stop()
    assert loadgen.main(["--sessions", "1"]) == 2
    assert loadgen.main(["--target", "10.1.1.1:25", "--json", ""]) == 2


def test_percentiles_are_nearest_rank() -> None:
    from benchmarks._loadgen_stats import latency_summary_ms, percentile

    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 99, 100)] == [50.0, 99.0, 100.0]
    assert percentile([], 50) is None
    assert latency_summary_ms([2_000_000, 1_000_000]) == {
        "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 2.0}


def test_bench_ratios_are_medians_of_side_by_side_rounds() -> None:
    from benchmarks.bench_relay import ratios

    def row(target: str, rnd: int, rate: float, cpu: float | None) -> dict[str, Any]:
        return {"client": "loadgen", "size": 10240, "sessions": 20, "target": target,
                "round": rnd, "delivered_per_s": rate, "relay_cpu_ms_per_msg": cpu}

    rows = [row("postfix", 0, 100, 3.0), row("smimegate", 0, 400, 1.0),
            row("direct", 0, 9000, None),
            row("postfix", 1, 200, 2.0), row("smimegate", 1, 500, 1.0),
            row("postfix", 2, 300, 4.0), row("smimegate", 2, 600, 2.0)]
    assert ratios(rows) == [{"client": "loadgen", "size": 10240, "sessions": 20,
                             "smimegate_e2e_per_s": 500, "postfix_e2e_per_s": 200,
                             "ratio": 2.5, "rounds": 3, "smimegate_cpu_ms_per_msg": 1.0,
                             "postfix_cpu_ms_per_msg": 3.0, "cpu_ratio": 3.0}]
    assert ratios([row("postfix", 0, 100, 3.0)]) == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("postfix") is None or os.geteuid() != 0,
                    reason="needs Postfix installed and root (bench_relay installs it)")
def test_through_a_private_postfix_relay() -> None:
    from benchmarks._postfix import PostfixRelay

    async def go() -> tuple[LoadResult, Sink, int]:
        async with Sink() as sink:
            relay = PostfixRelay(_free_port(), sink.host, sink.port)
            try:
                await asyncio.get_running_loop().run_in_executor(None, relay.start)
                res = await run_load(LoadConfig(port=relay.port, sessions=4, messages=6,
                                                sizes=((2048, 1), (30_000, 1))))
                missing = await sink.wait_for_ids(res.accepted_ids, timeout=60)
                assert missing == set()
                return res, sink, relay.master_pid() or 0
            finally:
                relay.stop()

    res, sink, master = run(go())
    assert (res.accepted, res.errors) == (24, {})
    assert sink.groups[res.run_id].duplicates == 0
    assert master > 0
    with pytest.raises(ProcessLookupError):
        os.kill(master, 0)  # the private instance is gone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_client_aborts_mid_data_and_those_never_arrive() -> None:
    async def go() -> tuple[LoadResult, Sink]:
        async with Sink() as sink:
            res = await load_into(sink, sessions=3, messages=8, abort_rate=0.4,
                                  sizes=((30_000, 1),))
            await sink.wait_for_ids(res.accepted_ids, timeout=10)
            return res, sink

    res, sink = run(go())
    assert 0 < len(res.aborted_ids) < 24
    assert res.accepted + len(res.aborted_ids) == 24
    assert res.errors == {}
    assert sink.received_ids == res.accepted_ids
    assert not sink.received_ids & res.aborted_ids


def test_connect_retry_rides_out_a_restart() -> None:
    port = _free_port()

    async def go() -> tuple[LoadResult, Sink]:
        sink = Sink(port=port)

        async def late_start() -> None:
            await asyncio.sleep(0.5)  # the server is down when the load starts
            await sink.start()

        starter = asyncio.create_task(late_start())
        try:
            res = await run_load(LoadConfig(port=port, sessions=2, messages=3,
                                            connect_retry_for=30))
        finally:
            await starter
            await sink.stop()
        return res, sink

    res, sink = run(go())
    assert (res.accepted, res.errors) == (6, {})
    assert sink.received_ids == res.accepted_ids


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed localhost certificate, and a client
    context that trusts exactly that certificate."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
    return server, client


def test_sink_starttls(tmp_path: Path) -> None:
    server_ctx, client_ctx = _self_signed(tmp_path)

    async def go() -> tuple[Sink, LoadResult]:
        async with Sink(keep_data=True, tls_context=server_ctx) as sink:
            def send() -> None:
                with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as c:
                    c.ehlo("localhost")
                    assert c.has_extn("starttls")
                    c.starttls(context=client_ctx)
                    c.ehlo("localhost")
                    assert not c.has_extn("starttls")
                    c.sendmail("s@alpha.test", ["r@beta.test"],
                               b"Message-ID: <tls@x>\r\n\r\nhi\r\n")
            await asyncio.get_running_loop().run_in_executor(None, send)
            # A client that ignores STARTTLS still gets through in the clear.
            res = await load_into(sink, sessions=1, messages=2)
            await sink.wait_for_ids(res.accepted_ids, timeout=10)
            return sink, res

    sink, res = run(go())
    assert sink.tls_sessions == 1
    assert sink.received_ids == {"<tls@x>"} | res.accepted_ids


def test_sink_discards_commands_injected_before_tls(tmp_path: Path) -> None:
    server_ctx, _ = _self_signed(tmp_path)

    async def go() -> tuple[bytes, Sink]:
        async with Sink(tls_context=server_ctx) as sink:
            injected = b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\n"
            loop = asyncio.get_running_loop()

            def talk() -> bytes:
                with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as s:
                    s.sendall(injected)
                    out = b""
                    while b"220 2.0.0" not in out:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        out += chunk
                    return out
            return await loop.run_in_executor(None, talk), sink

    out, sink = run(go())
    assert out.endswith(b"220 2.0.0 Ready to start TLS\r\n")  # no 250 for the MAIL
    assert sink.replies.get("250 2.1.0") is None
