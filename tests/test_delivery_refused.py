"""Copies the crypto job marked: "verified TLS only", and refused originals that delivery
must never send as they are (bounced, or processed again when due). Real spool, real
agent, a real SMTP sink on loopback; the reprocess hook is a plain function standing in
for the worker pool's run (what the pool runs is tested in test_outbound_job.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.schema import SpoolSection
from gateway.delivery import DeliveryAgent
from gateway.envelope import Envelope, Reply
from gateway.spool import DELIVERED, FAILED, PENDING, Spool
from gateway.spool.format import (
    SpoolFormatError,
    decode_header,
    encode_message,
    envelope_from_json,
    envelope_to_json,
)
from gateway.workers.jobs import Job, Output, Result
from tests.delivery_sink import Sink
from tests.test_delivery import DATA, delivery, parse_dsn, run, until
from tests.test_delivery_route import write_pki

DEFER = "451 4.7.0 No usable certificate for a recipient, try again later"
REJECT = "550 5.7.1 No usable certificate for a recipient"


async def start(tmp_path: Path, config: object, reprocess: object = None
                ) -> tuple[Spool, DeliveryAgent]:
    spool = await Spool.open(SpoolSection(directory=tmp_path / "spool", control_poll=0.02))
    agent = DeliveryAgent(spool, config, hostname="gw.alpha.test",  # type: ignore[arg-type]
                          reprocess=reprocess)  # type: ignore[arg-type]
    await agent.start()
    return spool, agent


def test_envelope_flags_round_trip_and_bad_ones_are_refused() -> None:
    env = Envelope("a@alpha.test", ("b@beta.test",), require_tls=True, refused=DEFER)
    back, _ = decode_header(encode_message(env, b"x"))
    assert (back.require_tls, back.refused) == (True, DEFER)
    plain, _ = decode_header(encode_message(Envelope("a@x.test", ("b@y.test",)), b"x"))
    assert (plain.require_tls, plain.refused) == (False, "")
    for key, value in (("require_tls", 1), ("refused", None)):
        obj = {**envelope_to_json(env), key: value}
        with pytest.raises(SpoolFormatError, match="require_tls must be a boolean"):
            envelope_from_json(obj)


def test_reply_parse() -> None:
    assert Reply.parse(DEFER) == Reply(451, "4.7.0", DEFER[10:])
    for text in ("", "hello", "451 5.7.0 mismatched class", "250 2.0 short", "999 9.9.9 x"):
        with pytest.raises(ValueError, match="not an SMTP reply"):
            Reply.parse(text)


@pytest.mark.parametrize("trusted", [True, False])
def test_verified_tls_only_copy_never_goes_in_clear(tmp_path: Path, trusted: bool) -> None:
    async def body() -> None:
        ca_file, server_ctx = write_pki(tmp_path)
        sink = await Sink(tls_context=server_ctx).start()
        # The domain's own policy would send in clear; the copy's flag overrides it.
        config = delivery({"beta.test": sink.port}, tls="none", retry_initial=60.0,
                          tls_ca_file=ca_file if trusted else None)
        spool, agent = await start(tmp_path, config)
        env = Envelope("a@alpha.test", ("b@beta.test",), require_tls=True)
        qid = await spool.enqueue(env, DATA)
        plain = await spool.enqueue(Envelope("a@alpha.test", ("c@beta.test",)), DATA)

        def settled() -> bool:
            return all(spool.get(q) is None or spool.get(q).state.rcpts[0].attempts  # type: ignore[union-attr]
                       for q in (qid, plain))

        await until(settled)
        entry = spool.get(qid)
        await agent.stop()
        await spool.close()
        await sink.stop()
        assert [(m.rcpts, m.tls) for m in sink.messages if m.rcpts == ["c@beta.test"]] == [
            (["c@beta.test"], False)]
        flagged = [m for m in sink.messages if m.rcpts == ["b@beta.test"]]
        if trusted:
            assert [m.tls for m in flagged] == [True]
        else:
            assert flagged == []  # an unverifiable certificate: deferred, not sent
            assert entry is not None
            assert entry.state.rcpts[0].reply.startswith("421 4.7.5")
    run(body)


def test_permanently_refused_original_bounces_and_is_never_sent(tmp_path: Path) -> None:
    async def body() -> None:
        sink = await Sink().start()
        spool, agent = await start(tmp_path, delivery({"beta.test": sink.port,
                                                       "alpha.test": sink.port}))
        env = Envelope("alice@alpha.test", ("zed@beta.test",), refused=REJECT)
        qid = await spool.enqueue(env, DATA)
        await until(lambda: spool.get(qid) is None and len(sink.messages) == 1)
        await agent.stop()
        await spool.close()
        await sink.stop()
        (dsn,) = sink.messages
        assert dsn.rcpts == ["alice@alpha.test"]
        _, blocks, _ = parse_dsn(dsn)
        assert "Status: 5.7.1" in blocks[0]
        assert "zed@beta.test" in blocks[0]
        assert "No usable certificate" in blocks[0]
    run(body)


def test_deferred_original_is_processed_again_when_due(tmp_path: Path) -> None:
    calls: list[Job] = []

    async def reprocess(job: Job) -> Result:
        calls.append(job)
        if len(calls) == 1:  # still no certificate: refused again
            return Result(refusal=Reply.parse(DEFER))
        return Result(outputs=(Output(job.envelope.rcpt_tos, b"Subject: sealed\r\n\r\nX\r\n"),))

    async def body() -> None:
        sink = await Sink().start()
        config = delivery({"beta.test": sink.port}, retry_initial=0.05, retry_max=0.1)
        spool, agent = await start(tmp_path, config, reprocess)
        env = Envelope("alice@alpha.test", ("dave@beta.test", "erin@beta.test"),
                       refused=DEFER)
        qid = await spool.enqueue(env, DATA)
        await until(lambda: spool.get(qid) is None and len(sink.messages) == 1)
        await agent.stop()
        await spool.close()
        await sink.stop()
        # Attempt 1 was the job at DATA; then the hook ran twice, the second time with
        # success: the new copy went out, the original never did.
        assert len(calls) == 2
        assert all(j.envelope.refused == "" and j.data == DATA and j.queue_id == qid
                   for j in calls)
        assert calls[0].envelope.rcpt_tos == ("dave@beta.test", "erin@beta.test")
        (msg,) = sink.messages
        assert msg.data == b"Subject: sealed\r\n\r\nX\r\n"
        assert msg.rcpts == ["dave@beta.test", "erin@beta.test"]
    run(body)


def test_a_partial_success_keeps_the_refused_recipients_on_the_original(
        tmp_path: Path) -> None:
    async def reprocess(job: Job) -> Result:
        return Result(outputs=(
            Output(("dave@beta.test",), b"Subject: sealed\r\n\r\nX\r\n"),
            Output(("erin@beta.test",), job.data, refused=Reply.parse(DEFER))))

    async def body() -> None:
        sink = await Sink().start()
        config = delivery({"beta.test": sink.port}, retry_initial=0.05, retry_max=30.0)
        spool, agent = await start(tmp_path, config, reprocess)
        env = Envelope("alice@alpha.test", ("dave@beta.test", "erin@beta.test"),
                       refused=DEFER)
        qid = await spool.enqueue(env, DATA)

        def handed_on() -> bool:
            e = spool.get(qid)
            return e is not None and e.state.rcpts[0].status == DELIVERED

        await until(handed_on)
        await until(lambda: len(sink.messages) == 1)
        entry = spool.get(qid)
        await agent.stop()
        await spool.close()
        await sink.stop()
        assert entry is not None
        dave, erin = entry.state.rcpts
        assert dave.reply.startswith("250 2.0.0 processed again")
        assert (erin.status, erin.attempts) == (PENDING, 2)  # DATA, then this run
        assert sink.messages[0].rcpts == ["dave@beta.test"]
    run(body)


def test_without_a_crypto_job_the_original_waits_then_expires(tmp_path: Path) -> None:
    async def body() -> None:
        sink = await Sink().start()
        config = delivery({"beta.test": sink.port, "alpha.test": sink.port},
                          retry_initial=0.05, retry_max=0.05, max_queue_lifetime=0.5)
        spool, agent = await start(tmp_path, config)
        qid = await spool.enqueue(
            Envelope("alice@alpha.test", ("dave@beta.test",), refused=DEFER), DATA)
        await until(lambda: spool.get(qid) is None and len(sink.messages) == 1)
        await agent.stop()
        await spool.close()
        await sink.stop()
        (dsn,) = sink.messages
        assert dsn.rcpts == ["alice@alpha.test"]  # a bounce; dave never got the original
        _, blocks, _ = parse_dsn(dsn)
        assert "dave@beta.test" in blocks[0]
    run(body)


def test_a_failing_hook_is_retried_and_nothing_is_sent(tmp_path: Path) -> None:
    calls = 0

    async def reprocess(job: Job) -> Result:
        nonlocal calls
        calls += 1
        raise OSError("disk full")

    async def body() -> None:
        sink = await Sink().start()
        config = delivery({"beta.test": sink.port}, retry_initial=0.05, retry_max=0.05)
        spool, agent = await start(tmp_path, config, reprocess)
        qid = await spool.enqueue(
            Envelope("alice@alpha.test", ("dave@beta.test",), refused=DEFER), DATA)
        await until(lambda: calls >= 2)
        entry = spool.get(qid)
        await agent.stop()
        await spool.close()
        await sink.stop()
        assert sink.messages == []
        assert entry is not None
        assert entry.state.rcpts[0].status != FAILED
    run(body)


@settings(max_examples=200, deadline=None)
@given(require_tls=st.booleans(),
       refused=st.one_of(st.just(""), st.builds(
           lambda c, s, t: f"{c} {c // 100}.{s} {t}",
           st.sampled_from([451, 550, 554]),
           st.sampled_from(["7.0", "7.1", "4.3"]),
           st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                   max_size=40))),
       rcpts=st.lists(st.emails(), min_size=1, max_size=4))
def test_envelope_round_trips_through_the_spool_format(
        require_tls: bool, refused: str, rcpts: list[str]) -> None:
    env = Envelope("a@alpha.test", tuple(rcpts), "127.0.0.1", "h", 1.5,
                   (("BODY", "8BITMIME"),), require_tls=require_tls, refused=refused)
    back, offset = decode_header(encode_message(env, b"DATA"))
    assert back == env
    assert encode_message(env, b"DATA")[offset:] == b"DATA"
    if refused:
        assert str(Reply.parse(refused)) == refused
