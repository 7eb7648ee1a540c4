"""The directory client over real HTTP on loopback: coalescing, batching, retries,
size limit and precise errors for answers that are not the documented shape."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from gateway.lookup.client import MAX_BATCH, DirectoryClient, DirectoryError, parse_answer
from tests.lookup_support import Answer, Pki, Scripted, entry, json_answer, lookup_config, run
from tests.lookup_support import pki_fixture as pki_fixture


def test_coalescing_and_batching(pki: Pki) -> None:
    async def body() -> None:
        d = await Scripted({"alice@alpha.test": [entry(pki.alice)]}).start()
        client = DirectoryClient(lookup_config())
        try:
            # 1,000 concurrent asks for one name: one request
            answers = await asyncio.gather(*(client.lookup(d.url, "alice@alpha.test")
                                             for _ in range(1000)))
            assert len(d.requests) == 1
            assert all(a == answers[0] and len(a) == 1 for a in answers)
            assert answers[0][0].pem == entry(pki.alice)["pem"]
            # 250 different names at once: batches of MAX_BATCH, each name asked once
            names = [f"u{i}@alpha.test" for i in range(250)] + ["alpha.test"]
            got = await asyncio.gather(*(client.lookup(d.url, n) for n in names))
            assert all(g == () for g in got)
            batches = d.requests[1:]
            assert len(batches) == 3
            assert max(len(b) for b in batches) == MAX_BATCH
            assert sorted(n for b in batches for n in b) == sorted(names)
        finally:
            await client.close()
            await d.stop()
    run(body)


def test_asks_made_while_busy_go_out_together(pki: Pki) -> None:
    async def body() -> None:
        gate = asyncio.Event()
        d = await Scripted(gate=gate).start()
        client = DirectoryClient(lookup_config(batch_window=0.05))
        try:
            first = asyncio.ensure_future(client.lookup(d.url, "a.test"))
            while len(d.requests) < 1:  # the idle directory is asked at once
                await asyncio.sleep(0.005)
            names = [f"n{i}.test" for i in range(10)]
            rest = asyncio.ensure_future(asyncio.gather(*(client.lookup(d.url, n)
                                                          for n in names)))
            while len(d.requests) < 2:  # gathered while the first is in flight
                await asyncio.sleep(0.005)
            gate.set()
            assert await first == ()
            assert await rest == [()] * 10
            assert d.requests == [["a.test"], names]
        finally:
            gate.set()
            await client.close()
            await d.stop()
    run(body)


def test_retries_transient_failures_only(pki: Pki) -> None:
    async def body() -> None:
        calls = {"n": 0}

        def flaky(names: list[str]) -> Answer:
            calls["n"] += 1
            if calls["n"] == 1:
                return json_answer({"error": "busy"}, 503)
            return json_answer({"results": {}, "missing": names})

        d = await Scripted(override=flaky).start()
        client = DirectoryClient(lookup_config(retries=2))
        try:
            assert await client.lookup(d.url, "alpha.test") == ()
            assert len(d.requests) == 2  # the 503 was retried once
            d.override = lambda names: json_answer({"error": "no"}, 403)
            with pytest.raises(DirectoryError) as e:
                await client.lookup(d.url, "beta.test")
            assert (e.value.code, e.value.status) == ("http-status", 403)
            assert len(d.requests) == 3  # a 4xx is final
            d.override = lambda names: json_answer({"error": "down"}, 502)
            with pytest.raises(DirectoryError, match="HTTP 502"):
                await client.lookup(d.url, "gamma.test")
            assert len(d.requests) == 3 + 3  # the first try and two retries
        finally:
            await client.close()
            await d.stop()
    run(body)


def test_a_refused_name_does_not_sink_its_batch(pki: Pki) -> None:
    async def body() -> None:
        def picky(names: list[str]) -> Answer:
            if "bad..name@alpha.test" in names:
                return json_answer({"error": "bad-address"}, 400)
            return json_answer({"results": {}, "missing": names})

        d = await Scripted(override=picky).start()
        client = DirectoryClient(lookup_config(retries=0))
        try:
            good, bad = await asyncio.gather(
                client.lookup(d.url, "alice@alpha.test"),
                client.lookup(d.url, "bad..name@alpha.test"), return_exceptions=True)
            assert good == ()
            assert isinstance(bad, DirectoryError)
            assert bad.status == 400
            assert sorted(d.requests[0]) == ["alice@alpha.test", "bad..name@alpha.test"]
            assert len(d.requests) == 3  # the batch, then each name alone
        finally:
            await client.close()
            await d.stop()
    run(body)


@pytest.mark.parametrize(("answer", "message"), [
    (b"not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"results": [], "missing": []}', "'results' is not an object"),
    (b'{"results": {}}', "'missing' is not a list"),
    (b'{"results": {}, "missing": []}', "says nothing of 'a.test'"),
    (b'{"results": {"a.test": {}}, "missing": []}', r"results\['a.test'\] is not a list"),
    (b'{"results": {"a.test": [1]}, "missing": []}', r"results\['a.test'\]\[0\] is not an obj"),
    (b'{"results": {"a.test": [{"pem": 5, "state": "active"}]}, "missing": []}',
     r"\[0\].pem is not a string"),
    (b'{"results": {"a.test": [{"pem": "", "chain": "x", "state": "active"}]}, "missing": []}',
     r"\[0\].chain is not a list of strings"),
    (b'{"results": {"a.test": [{"pem": ""}]}, "missing": []}', r"\[0\].state is not a string"),
])
def test_malformed_answers_are_precise_errors(answer: bytes, message: str) -> None:
    with pytest.raises(DirectoryError, match=message) as e:
        parse_answer("http://d", answer, ["a.test"])
    assert e.value.code == "malformed-answer"


def test_size_limit_unreachable_and_timeout(pki: Pki) -> None:
    async def body() -> None:
        huge = {"results": {"alpha.test": [entry(pki.alpha_domain)] * 2000}, "missing": []}
        d = await Scripted(override=lambda names: json_answer(huge)).start()
        client = DirectoryClient(lookup_config(max_answer=64 * 1024, retries=0, timeout=0.5))
        slow_server: asyncio.Server | None = None
        try:
            with pytest.raises(DirectoryError, match=r"exceeds lookup\.max_answer") as e:
                await client.lookup(d.url, "alpha.test")
            assert e.value.code == "too-large"
            # a port nobody listens on
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                closed = s.getsockname()[1]
            with pytest.raises(DirectoryError) as e:
                await client.lookup(f"http://127.0.0.1:{closed}", "alpha.test")
            assert e.value.code == "unreachable"

            # a server that accepts and never answers
            held: list[Any] = []

            async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                held.append(writer)
                await reader.read(65536)
                await asyncio.sleep(30)

            slow_server = await asyncio.start_server(hold, "127.0.0.1", 0)
            port = slow_server.sockets[0].getsockname()[1]
            with pytest.raises(DirectoryError) as e:
                await client.lookup(f"http://127.0.0.1:{port}", "alpha.test")
            assert e.value.code == "timeout"
            for w in held:
                w.close()
        finally:
            await client.close()
            await d.stop()
            if slow_server is not None:
                slow_server.close()
    run(body)
