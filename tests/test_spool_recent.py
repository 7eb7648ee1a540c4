"""New mail's data held in memory for delivery's first read: bounded, same bytes as disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config.schema import SpoolSection
from gateway.envelope import Envelope
from gateway.spool import Spool
from gateway.spool.layout import read_data
from gateway.spool.recent import RecentData

ENV = Envelope("alice@alpha.test", ("bob@beta.test",), client_address="127.0.0.1",
               helo="mta.alpha.test", received_at=1_700_000_000.0)


def test_bounded_in_bytes_oldest_dropped_first() -> None:
    recent = RecentData(limit=800)
    for i in range(5):
        recent.put(f"m{i}", bytes([i]) * 100)
    assert recent.bytes == 500
    recent.put("m5", b"x" * 100)
    recent.put("m6", b"x" * 100)
    recent.put("m7", b"x" * 100)
    recent.put("m8", b"x" * 100)  # over 800: m0 goes
    assert recent.bytes == 800
    assert recent.get("m0") is None
    assert recent.get("m1") == b"\x01" * 100
    recent.put("big", b"x" * 101)  # more than an eighth of the limit: not held
    assert recent.get("big") is None
    recent.drop("m1")
    recent.drop("m1")
    assert recent.bytes == 700
    assert len(recent) == 7


def test_spool_reads_new_mail_from_memory_and_the_rest_from_disk(tmp_path: Path) -> None:
    async def body() -> None:
        spool = await Spool.open(SpoolSection(directory=tmp_path / "spool"))
        datas = [b"Subject: %d\r\n\r\nbody\r\n" % i for i in range(3)]
        ids = [await spool.enqueue(ENV, data) for data in datas]
        held = spool._recent
        assert len(held) == 3
        for qid, data in zip(ids, datas, strict=True):
            entry = spool.get(qid)
            assert entry is not None
            assert await spool.read(entry) == data == read_data(spool.layout, entry)
        held.drop(ids[0])  # e.g. pushed out by newer mail: the file answers
        entry = spool.get(ids[0])
        assert entry is not None
        assert await spool.read(entry) == datas[0]
        await spool.remove(ids[1])
        assert held.get(ids[1]) is None
        assert len(held) == 1
        await spool.close()
    asyncio.run(body())
