"""The spool: durability, group commit, per-recipient state, recovery, the lock."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.config.schema import SpoolSection
from gateway.envelope import Envelope
from gateway.spool import (
    DELIVERED,
    PENDING,
    RecipientState,
    Spool,
    SpoolFormatError,
    SpoolLocked,
)
from gateway.spool.format import decode_header, encode_message
from gateway.spool.layout import Layout, read_entry

ENV = Envelope("alice@alpha.test", ("bob@beta.test", "carol@gamma.test"),
               client_address="127.0.0.1", helo="mta.alpha.test", received_at=1_700_000_000.0,
               esmtp=(("BODY", "8BITMIME"),))
DATA = b"Subject: hello\r\n\r\nline one\r\n.leading dot\r\n\xc3\xa9t\xc3\xa9\r\n"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def section(tmp_path: Path, **kw: object) -> SpoolSection:
    return SpoolSection(directory=tmp_path / "spool", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_enqueued_message_survives_reopen_byte_for_byte(tmp_path: Path, sync: str) -> None:
    async def body() -> None:
        spool = await Spool.open(section(tmp_path, sync=sync))
        qid = await spool.enqueue(ENV, DATA)
        await spool.close()
        spool = await Spool.open(section(tmp_path))
        entry = spool.get(qid)
        assert entry is not None
        assert entry.envelope == ENV
        assert await spool.read(entry) == DATA
        assert [r.status for r in entry.state.rcpts] == [PENDING, PENDING]
        assert spool.take_ready() == [qid]  # recovered mail is handed to delivery
        await spool.close()
    run(body)


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_concurrent_enqueues_share_fsync_rounds(tmp_path: Path, sync: str) -> None:
    async def body() -> None:
        spool = await Spool.open(section(tmp_path, group_commit_window=0.0, sync=sync))
        ids = await asyncio.gather(*(spool.enqueue(ENV, DATA + str(i).encode())
                                     for i in range(64)))
        stats = spool._committer.stats
        assert len(set(ids)) == 64
        assert stats.changes == 64
        assert stats.rounds <= 2, stats  # one fsync round per message would be 64
        assert stats.fsyncs < 2 * 64
        if sync == "syncfs":
            assert stats.fsyncs <= 2 * stats.rounds  # data once, names once, per round
        await spool.close()
        layout = Layout(tmp_path / "spool")
        assert sorted(os.listdir(layout.queue)) == sorted(ids)
        assert os.listdir(layout.tmp) == []
    run(body)


def test_has_room_until_max_messages(tmp_path: Path) -> None:
    async def body() -> None:
        spool = await Spool.open(section(tmp_path, max_messages=2))
        assert spool.has_room()
        await spool.enqueue(ENV, DATA)
        assert spool.has_room()
        await spool.enqueue(ENV, DATA)
        assert not spool.has_room()
        assert spool.stats() == {"active": 2, "deferred": 0, "hold": 0, "total": 2}
        await spool.close()
    run(body)


def test_recipient_state_and_removal_are_durable(tmp_path: Path) -> None:
    async def body() -> None:
        spool = await Spool.open(section(tmp_path))
        qid = await spool.enqueue(ENV, DATA)
        gone = await spool.enqueue(ENV, DATA)
        later = 4_000_000_000.0
        await spool.set_rcpts(qid, {
            0: RecipientState(DELIVERED, 1, 0.0, "250 2.0.0 ok", "[127.0.0.1]:25"),
            1: RecipientState(PENDING, 1, later, "451 4.3.0 busy", "[127.0.0.1]:25")})
        await spool.remove(gone)
        await spool.close()
        spool = await Spool.open(section(tmp_path))
        entry = spool.get(qid)
        assert entry is not None
        assert spool.get(gone) is None
        assert entry.state.rcpts[0].status == DELIVERED
        assert entry.state.rcpts[1] == RecipientState(PENDING, 1, later, "451 4.3.0 busy",
                                                      "[127.0.0.1]:25")
        assert entry.status() == "deferred"
        assert spool.stats()["deferred"] == 1
        await spool.close()
    run(body)


def test_recovery_cleans_up_after_a_crash(tmp_path: Path) -> None:
    async def body() -> None:
        spool = await Spool.open(section(tmp_path))
        qid = await spool.enqueue(ENV, DATA)
        await spool.close()
        layout = Layout(tmp_path / "spool")
        # What a crash can leave: a half-written file, a state whose message was removed,
        # and (disk trouble) a message file that is not one.
        (layout.tmp / "0123456789ABCDEF01234.1.1").write_bytes(b"SMIMEGATE-SPOOL/1 99\n{")
        (layout.state / "0123456789ABCDEF0FFFF").write_bytes(b'{"v": 1}')
        (layout.queue / "0123456789ABCDEF0AAAA").write_bytes(b"garbage")
        spool = await Spool.open(section(tmp_path))
        assert [e.queue_id for e in spool.entries()] == [qid]
        assert os.listdir(layout.tmp) == []
        assert os.listdir(layout.state) == []
        assert os.listdir(layout.corrupt) == ["0123456789ABCDEF0AAAA"]
        await spool.close()
    run(body)


def test_one_owner_per_spool(tmp_path: Path) -> None:
    async def body() -> None:
        spool = await Spool.open(section(tmp_path))
        with pytest.raises(SpoolLocked, match=f"pid {os.getpid()}"):
            await Spool.open(section(tmp_path), lock_wait=0.0)
        await spool.close()
        again = await Spool.open(section(tmp_path), lock_wait=0.0)
        await again.close()
    run(body)


def test_dsn_enqueue_with_fixed_id_is_idempotent(tmp_path: Path) -> None:
    async def body() -> None:
        spool = await Spool.open(section(tmp_path))
        qid = await spool.enqueue(ENV, DATA)
        dsn_id = qid + "B"
        assert await spool.enqueue(ENV, b"first", queue_id=dsn_id) == dsn_id
        assert await spool.enqueue(ENV, b"second", queue_id=dsn_id) == dsn_id
        entry = spool.get(dsn_id)
        assert entry is not None
        assert await spool.read(entry) == b"first"
        with pytest.raises(ValueError, match="not a queue ID"):
            await spool.enqueue(ENV, DATA, queue_id="../etc")
        with pytest.raises(ValueError, match="without recipients"):
            await spool.enqueue(Envelope("a@b", ()), DATA)
        await spool.close()
    run(body)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "bad magic"),
        (b"SMIMEGATE-SPOOL/1 12", "truncated header"),
        (b"SMIMEGATE-SPOOL/1 x\n{}", "bad envelope length"),
        (b"SMIMEGATE-SPOOL/1 50\n{}\n", "truncated envelope"),
        (b"SMIMEGATE-SPOOL/1 2\n[]\n", "not a JSON object"),
        (b"SMIMEGATE-SPOOL/1 2\n{}\n", "bad envelope"),
        (b"SMIMEGATE-SPOOL/1 3\n{x}\n", "not JSON"),
    ],
)
def test_unreadable_headers_are_named(raw: bytes, words: str) -> None:
    with pytest.raises(SpoolFormatError, match=words):
        decode_header(raw)


def test_large_envelope_reads_back(tmp_path: Path) -> None:
    env = Envelope("a@alpha.test", tuple(f"user{i:04d}@beta.test" for i in range(500)))
    layout = Layout(tmp_path)
    (tmp_path / "queue").mkdir()
    (tmp_path / "queue" / "0123456789ABCDEF01234").write_bytes(encode_message(env, DATA))
    entry = read_entry(layout, "0123456789ABCDEF01234")
    assert entry.envelope == env
    assert entry.size == len(DATA)


CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from gateway.config.schema import SpoolSection
    from gateway.envelope import Envelope

    from gateway.spool import Spool

    async def writer(spool, w):
        n = 0
        while True:
            n += 1
            data = f"Subject: {w}-{n}\\r\\n\\r\\n".encode() + b"x" * 5000 + b"\\r\\n"
            qid = await spool.enqueue(Envelope("a@alpha.test", ("b@beta.test",)), data)
            print(qid, f"{w}-{n}", flush=True)

    async def main():
        spool = await Spool.open(SpoolSection(directory=Path(sys.argv[1])))
        await asyncio.gather(*(writer(spool, w) for w in range(8)))

    asyncio.run(main())
""")


def test_kill_9_during_enqueue_loses_nothing_acknowledged(tmp_path: Path) -> None:
    async def body() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(tmp_path / "spool"),
            stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parent.parent)
        assert proc.stdout is not None
        acked: dict[str, str] = {}
        while len(acked) < 300:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the child died"
            qid, tag = line.decode().split()
            acked[qid] = tag
        proc.send_signal(signal.SIGKILL)  # mid-flight: other writes are under way
        await proc.wait()
        spool = await Spool.open(section(tmp_path))
        for qid, tag in acked.items():
            entry = spool.get(qid)
            assert entry is not None, f"acknowledged {qid} lost"
            assert (await spool.read(entry)).startswith(f"Subject: {tag}\r\n".encode())
        for entry in spool.entries():  # everything visible is whole
            assert (await spool.read(entry)).endswith(b"x\r\n")
        assert os.listdir(tmp_path / "spool" / "corrupt") == []
        await spool.close()
    run(body)


def test_a_failing_change_fails_only_its_caller(tmp_path: Path) -> None:
    from gateway.spool.commit import Change, GroupCommitter

    async def body() -> None:
        (tmp_path / "tmp").mkdir()
        committer = GroupCommitter(tmp_path / "tmp")
        good = [committer.commit(Change(writes=[(tmp_path / f"ok{i}", b"x")])) for i in range(3)]
        bad = committer.commit(Change(writes=[(tmp_path / "missing" / "f", b"x")]))
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        await committer.close()
        assert results[:3] == [None, None, None]
        assert isinstance(results[3], FileNotFoundError)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ok0", "ok1", "ok2", "tmp"]
        assert os.listdir(tmp_path / "tmp") == []  # the failed one's temp file is gone
    run(body)


def test_queue_ids_are_unique_and_well_formed_even_within_one_microsecond() -> None:
    from gateway.spool.format import is_queue_id, new_queue_id

    ids = [new_queue_id() for _ in range(100_000)]  # many fall in the same microsecond
    assert len(set(ids)) == len(ids)
    assert all(is_queue_id(i) for i in ids)
