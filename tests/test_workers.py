"""The worker pool (gateway.workers): batches, crash recovery, poison jobs, backpressure."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import uvloop
from prometheus_client import REGISTRY

from gateway.config.schema import WorkersSection
from gateway.envelope import LOCAL_ERROR, SYSTEM_BUSY, Envelope, ReplyError
from gateway.workers import IDENTITY, MAX_ATTEMPTS, Job, WorkerPool

BEHAVE = "tests.workers_jobs:behave"
ENV = Envelope("a@alpha.test", ("b@beta.test", "c@beta.test"), client_address="127.0.0.1")
T = TypeVar("T")


def with_pool(body: Callable[[WorkerPool], Awaitable[T]], *, processes: int = 1,
              max_batch: int = 32, max_pending: int = 512, job: str = BEHAVE,
              batch_timeout: float = 60.0) -> T:
    async def go() -> T:
        pool = WorkerPool(WorkersSection(processes=processes, max_batch=max_batch,
                                         max_pending=max_pending, batch_timeout=batch_timeout),
                          job_function=job)
        await pool.start()
        try:
            return await body(pool)
        finally:
            await pool.stop()
            assert pool.pids() == []

    return uvloop.run(go())


def output_of(result: object) -> tuple[int, bytes]:
    """(pid of the worker that ran it, data) of a `behave` job's single output."""
    (output,) = result.outputs  # type: ignore[attr-defined]
    pid, _, data = output.data.partition(b" ")
    return int(pid), data


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_identity_passes_the_message_unchanged() -> None:
    async def body(pool: WorkerPool) -> None:
        result = await pool.run(Job(ENV, b"Subject: x\r\n\r\nbody\r\n"))
        assert result.refusal is None
        assert [(o.rcpt_tos, o.data) for o in result.outputs] == [
            (ENV.rcpt_tos, b"Subject: x\r\n\r\nbody\r\n")]

    with_pool(body, job=IDENTITY)


def test_jobs_are_batched_and_spread_over_workers() -> None:
    count0 = sample("smimegate_worker_batch_size_count")
    sum0 = sample("smimegate_worker_batch_size_sum")
    le8 = sample("smimegate_worker_batch_size_bucket", le="8.0")

    async def body(pool: WorkerPool) -> set[int]:
        results = await asyncio.gather(*(pool.run(Job(ENV, b"m%d\r\n" % i)) for i in range(200)))
        assert [output_of(r)[1] for r in results] == [b"m%d\r\n" % i for i in range(200)]
        return {output_of(r)[0] for r in results}

    pids = with_pool(body, processes=2, max_batch=8)
    round_trips = sample("smimegate_worker_batch_size_count") - count0
    assert sample("smimegate_worker_batch_size_sum") - sum0 == 200
    assert 25 <= round_trips < 200  # batched, never past max_batch
    assert sample("smimegate_worker_batch_size_bucket", le="8.0") - le8 == round_trips
    assert len(pids) == 2


def test_batches_are_capped_in_bytes() -> None:
    count0 = sample("smimegate_worker_batch_size_count")

    async def body(pool: WorkerPool) -> None:
        blob = b"x" * (3 * 1024 * 1024)  # three fit under BATCH_BYTES (8 MiB), not four
        results = await asyncio.gather(*(pool.run(Job(ENV, blob)) for _ in range(6)))
        assert all(output_of(r)[1] == blob for r in results)

    with_pool(body, max_batch=32, job=BEHAVE)
    assert sample("smimegate_worker_batch_size_count") - count0 >= 3


def test_a_crashed_worker_is_replaced_and_its_batch_rerun(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"

    async def body(pool: WorkerPool) -> None:
        first_pid = pool.pids()[0]
        data = [b"job %d\r\n" % i for i in range(12)]
        data[5] = f"CRASH-ONCE:{marker}\r\n".encode()
        results = await asyncio.gather(*(pool.run(Job(ENV, d)) for d in data))
        assert marker.exists()
        assert [output_of(r)[1] for r in results] == data  # nothing lost, nothing refused
        assert output_of(results[5])[0] != first_pid  # re-run by the replacement
        assert pool.restarts == 1
        assert pool.stats()["alive"] == 1

    with_pool(body, max_batch=16)


def test_a_poison_job_is_refused_alone_after_max_attempts() -> None:
    async def body(pool: WorkerPool) -> None:
        data = [b"ok %d\r\n" % i for i in range(6)]
        data[2] = b"POISON\r\n"
        results = await asyncio.gather(*(pool.run(Job(ENV, d)) for d in data),
                                       return_exceptions=True)
        assert isinstance(results[2], ReplyError)
        assert results[2].reply == LOCAL_ERROR
        assert [output_of(r)[1] for i, r in enumerate(results) if i != 2] == \
            [d for i, d in enumerate(data) if i != 2]
        assert pool.restarts == MAX_ATTEMPTS

    with_pool(body)


def test_a_worker_killed_from_outside_loses_nothing() -> None:
    async def body(pool: WorkerPool) -> None:
        task = asyncio.create_task(pool.run(Job(ENV, b"SLEEP:1\r\nx\r\n")))
        while pool.stats()["busy"] == 0:
            await asyncio.sleep(0.01)
        victim = pool.pids()[0]
        os.kill(victim, signal.SIGKILL)  # with the job in flight
        pid, data = output_of(await task)
        assert data == b"SLEEP:1\r\nx\r\n"
        assert pid != victim
        assert pool.restarts == 1

    with_pool(body)


def test_a_hung_worker_is_killed_and_the_hanging_job_refused() -> None:
    async def body(pool: WorkerPool) -> None:
        hung = asyncio.create_task(pool.run(Job(ENV, b"SLEEP:30\r\n")))
        while pool.stats()["busy"] == 0:
            await asyncio.sleep(0.01)
        fine = await pool.run(Job(ENV, b"fine\r\n"))  # queued behind it, runs after
        assert output_of(fine)[1] == b"fine\r\n"
        with pytest.raises(ReplyError) as refused:
            await hung
        assert refused.value.reply == LOCAL_ERROR
        assert pool.restarts == MAX_ATTEMPTS

    with_pool(body, batch_timeout=0.3)


def test_a_job_function_that_raises_refuses_only_its_message() -> None:
    async def body(pool: WorkerPool) -> None:
        bad, good = await asyncio.gather(pool.run(Job(ENV, b"RAISE\r\n")),
                                         pool.run(Job(ENV, b"fine\r\n")))
        assert bad.refusal == LOCAL_ERROR
        assert bad.outputs == ()
        assert output_of(good)[1] == b"fine\r\n"
        assert pool.restarts == 0

    with_pool(body)


def test_full_queue_is_451_4_3_2_at_once() -> None:
    async def body(pool: WorkerPool) -> None:
        busy = asyncio.create_task(pool.run(Job(ENV, b"SLEEP:0.5\r\n")))
        while pool.stats()["busy"] == 0:
            await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(pool.run(Job(ENV, b"w%d\r\n" % i))) for i in range(3)]
        await asyncio.sleep(0)
        assert not pool.has_room()
        with pytest.raises(ReplyError) as refused:
            await pool.run(Job(ENV, b"one too many\r\n"))
        assert refused.value.reply == SYSTEM_BUSY
        assert [output_of(r)[1] for r in await asyncio.gather(*waiting)] == \
            [b"w%d\r\n" % i for i in range(3)]
        await busy
        assert pool.has_room()

    with_pool(body, max_pending=3, max_batch=1)


def test_stop_finishes_queued_jobs_then_refuses() -> None:
    async def go() -> None:
        pool = WorkerPool(WorkersSection(processes=1), job_function=BEHAVE)
        await pool.start()
        pids = pool.pids()
        jobs = [asyncio.create_task(pool.run(Job(ENV, b"j%d\r\n" % i))) for i in range(20)]
        await asyncio.sleep(0)
        await pool.stop()
        assert all(j.done() and j.exception() is None for j in jobs)
        with pytest.raises(ReplyError):
            await pool.run(Job(ENV, b"late\r\n"))
        await asyncio.sleep(0.2)
        for pid in pids:  # the worker process is gone (reaped)
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

    uvloop.run(go())


@pytest.mark.parametrize("name", ["nocolon", "tests.workers_jobs:missing", "no.such.module:f"])
def test_unknown_job_function_is_refused_by_name(name: str) -> None:
    with pytest.raises((ValueError, ImportError), match=r"missing|module|function"):
        WorkerPool(WorkersSection(processes=1), job_function=name)
