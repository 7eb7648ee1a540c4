"""The spool's file pool: removed message files overwritten by new mail, never misread."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.config.schema import SpoolSection
from gateway.envelope import Envelope
from gateway.spool import Spool
from gateway.spool.commit import Change, GroupCommitter
from gateway.spool.format import encode_message
from gateway.spool.layout import Layout, read_data, read_entry, still_queued
from gateway.spool.pool import FilePool

ENV = Envelope("alice@alpha.test", ("bob@beta.test",), client_address="127.0.0.1",
               helo="mta.alpha.test", received_at=1_700_000_000.0)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def dirs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "queue").mkdir()
    return tmp_path / "tmp", tmp_path / "queue"


def test_a_removed_file_is_overwritten_by_later_mail(tmp_path: Path) -> None:
    async def body() -> None:
        tmp, queue = dirs(tmp_path)
        pool = FilePool(tmp, delay=0.0)
        committer = GroupCommitter(tmp, pool=pool)
        await committer.commit(Change(writes=[(queue / "a", b"A" * 5000)]))
        inode = os.stat(queue / "a").st_ino
        await committer.commit(Change(removes=[queue / "a"]))
        assert os.listdir(queue) == []
        assert len(pool) == 1
        # Shorter content: the old tail must be gone, not read as part of the message.
        await committer.commit(Change(writes=[(queue / "b", b"short")]))
        await committer.close()
        assert os.stat(queue / "b").st_ino == inode
        assert (queue / "b").read_bytes() == b"short"
        assert committer.stats.reused == 1
        assert os.listdir(tmp) == []
    run(body)


def test_a_file_can_be_made_to_wait_before_reuse(tmp_path: Path) -> None:
    async def body() -> None:
        tmp, queue = dirs(tmp_path)
        committer = GroupCommitter(tmp, pool=FilePool(tmp, delay=60.0))
        await committer.commit(Change(writes=[(queue / "a", b"old message")]))
        with open(queue / "a", "rb") as reader:  # e.g. delivery, just before the removal
            await committer.commit(Change(removes=[queue / "a"]))
            await committer.commit(Change(writes=[(queue / "b", b"new message!")]))
            assert reader.read() == b"old message"
        await committer.close()
        assert committer.stats.reused == 0  # still waiting out its delay
        assert (queue / "b").read_bytes() == b"new message!"
    run(body)


def test_a_reader_never_takes_new_mail_for_the_removed_message(tmp_path: Path) -> None:
    async def body() -> None:
        layout = Layout(tmp_path)
        tmp, queue = dirs(tmp_path)
        committer = GroupCommitter(tmp, pool=FilePool(tmp))
        old = "0123456789ABCDEF01234"
        await committer.commit(Change(writes=[(queue / old, encode_message(ENV, b"old"))]))
        entry = read_entry(layout, old)
        assert read_data(layout, entry) == b"old"
        with open(queue / old, "rb") as reader:  # opened just before the removal
            await committer.commit(Change(removes=[queue / old]))
            new = queue / "0123456789ABCDEF05678"
            await committer.commit(Change(writes=[(new, encode_message(ENV, b"new"))]))
            assert committer.stats.reused == 1
            assert os.fstat(reader.fileno()).st_ino == os.stat(new).st_ino
            with pytest.raises(FileNotFoundError):
                still_queued(queue / old, reader)
        with pytest.raises(FileNotFoundError):
            read_data(layout, entry)
        await committer.close()
    run(body)


def test_a_file_set_aside_is_offered_only_once_added(tmp_path: Path) -> None:
    # The committer adds files only after the queue directory's fsync: before it, the old
    # entry could come back after a crash, and must not carry new mail's content.
    tmp, queue = dirs(tmp_path)
    (queue / "a").write_bytes(b"x")
    pool = FilePool(tmp)
    kept = pool.set_aside(queue / "a")
    assert kept is not None
    assert not (queue / "a").exists()
    assert pool.take() is None
    pool.add([kept])
    assert pool.take() == kept
    assert pool.set_aside(queue / "gone") is None  # nothing to keep: the caller unlinks


def test_the_pool_is_bounded_in_files_and_size(tmp_path: Path) -> None:
    async def body() -> None:
        tmp, queue = dirs(tmp_path)
        pool = FilePool(tmp, limit=1, max_size=100, delay=60.0)
        committer = GroupCommitter(tmp, pool=pool)
        await committer.commit(Change(writes=[(queue / "big", b"x" * 101),
                                              (queue / "s1", b"x"), (queue / "s2", b"x")]))
        await committer.commit(Change(removes=[queue / "big", queue / "s1", queue / "s2"]))
        await committer.close()
        assert os.listdir(queue) == []
        assert len(pool) == 1
        assert len(os.listdir(tmp)) == 1  # the other two were unlinked
    run(body)


def test_idle_pooled_files_are_deleted(tmp_path: Path) -> None:
    async def body() -> None:
        tmp, queue = dirs(tmp_path)
        pool = FilePool(tmp, delay=0.0, idle=0.0)
        committer = GroupCommitter(tmp, pool=pool)
        await committer.commit(Change(writes=[(queue / "a", b"x")]))
        await committer.commit(Change(removes=[queue / "a"]))
        await committer.commit(Change())  # the next round trims
        await committer.close()
        assert len(pool) == 0
        assert os.listdir(tmp) == []
    run(body)


def test_a_pooled_file_that_vanished_is_replaced_by_a_new_one(tmp_path: Path) -> None:
    async def body() -> None:
        tmp, queue = dirs(tmp_path)
        committer = GroupCommitter(tmp, pool=FilePool(tmp, delay=0.0))
        await committer.commit(Change(writes=[(queue / "a", b"x")]))
        await committer.commit(Change(removes=[queue / "a"]))
        for name in os.listdir(tmp):
            os.unlink(tmp / name)
        await committer.commit(Change(writes=[(queue / "b", b"content")]))
        await committer.close()
        assert committer.stats.reused == 0
        assert (queue / "b").read_bytes() == b"content"
    run(body)


def test_spool_mail_written_over_pooled_files_reads_back_after_reopen(tmp_path: Path) -> None:
    config = SpoolSection(directory=tmp_path / "spool")

    async def body() -> None:
        spool = await Spool.open(config)
        first = [await spool.enqueue(ENV, b"%d\r\n" % i * (3000 - 100 * i)) for i in range(10)]
        await asyncio.gather(*(spool.remove(qid) for qid in first))
        datas = [b"Subject: %d\r\n\r\n" % i + b"y" * (50 * i) + b"\r\n" for i in range(12)]
        ids = [await spool.enqueue(ENV, data) for data in datas]
        assert spool._committer.stats.reused == 10
        await spool.close()
        spool = await Spool.open(config)
        for qid, data in zip(ids, datas, strict=True):
            entry = spool.get(qid)
            assert entry is not None
            assert await spool.read(entry) == data
        assert len(spool.entries()) == len(ids)
        await spool.close()
        # Recovery deleted the pool along with anything else under tmp/.
        assert os.listdir(Layout(tmp_path / "spool").tmp) == []
    run(body)
