"""The multiprocess worker pool: batches of jobs in, results out, dead workers replaced.

Between DATA and the 250 (DESIGN.md, process model) the front end hands each message to
`WorkerPool.run` and waits. Jobs wait in one bounded queue; each worker slot takes
everything waiting (up to `max_batch`) per IPC round trip, so batches grow with load. A
full queue is backpressure: `run` raises ReplyError(451 4.3.2) at once instead of
buffering without bound.

A worker that dies with a batch in flight (or hangs past `batch_timeout`) is replaced
and its jobs go back to the front of the queue. A job that was in a crash runs alone
next time, so one poison message cannot take its batch-mates down twice; after
`MAX_ATTEMPTS` crashes it is refused with 451 4.3.0 (the client retries later; nothing
accepted is lost because nothing was acknowledged).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import multiprocessing.context
import os
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from gateway import metrics
from gateway.config.schema import WorkersSection
from gateway.envelope import LOCAL_ERROR, SYSTEM_BUSY, ReplyError
from gateway.workers.child import worker_main
from gateway.workers.ipc import frame, read_frame
from gateway.workers.jobs import IDENTITY, Job, Result, WorkerStats, resolve

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # crashes a job may be part of before it is refused
# Message bytes per round trip: past this a batch closes early, so one IPC frame (and the
# copy pickling makes of it on the event loop) stays small whatever the message sizes.
BATCH_BYTES = 8 * 1024 * 1024


CountsHook = Callable[[tuple[tuple[str, tuple[str, ...], float], ...]], None]


@dataclass(slots=True, eq=False)
class _Pending:
    seq: int
    job: Job
    future: asyncio.Future[Result]
    attempts: int = 0


class _Worker:
    """One worker process and the parent's end of its socket."""

    def __init__(self, process: BaseProcess, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer

    async def close(self, timeout: float) -> None:
        """EOF on its socket makes the worker exit; wait for it, then make sure."""
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        await asyncio.to_thread(self.process.join, timeout)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join, timeout)


class WorkerPool:
    """N worker processes fed from one bounded queue of jobs."""

    def __init__(self, config: WorkersSection, *, job_function: str = IDENTITY,
                 start_method: str = "spawn", initializer: str | None = None,
                 init_arg: object = None, on_counts: CountsHook | None = None) -> None:
        resolve(job_function)  # fail here, with the name, rather than in every worker
        if initializer is not None:
            resolve(initializer)
        # Called once in each worker before its first job ("module:function", given
        # init_arg, a small frozen picklable record): loads keys and attaches caches.
        self.initializer = initializer
        self.init_arg = init_arg
        self.on_counts = on_counts  # applies Result.counts to the front end's metrics
        self.processes = config.processes or os.cpu_count() or 1
        self.max_batch = config.max_batch
        self.max_pending = config.max_pending
        self.batch_timeout = config.batch_timeout
        self.job_function = job_function
        self._context: multiprocessing.context.SpawnContext = \
            multiprocessing.get_context(start_method)  # type: ignore[assignment]
        self._pending: collections.deque[_Pending] = collections.deque()
        self._ready = asyncio.Event()
        self._slots: list[asyncio.Task[None]] = []
        self._workers: dict[int, _Worker] = {}
        self._busy = 0
        self._seq = 0
        self._running = False
        self.restarts = 0

    # -- the front end's side ------------------------------------------------------------

    def has_room(self) -> bool:
        return self._running and len(self._pending) < self.max_pending

    async def run(self, job: Job) -> Result:
        """Process one job in a worker; ReplyError(451 4.3.2) when the queue is full."""
        if not self.has_room():
            raise ReplyError(SYSTEM_BUSY)
        self._seq += 1
        item = _Pending(self._seq, job, asyncio.get_running_loop().create_future())
        self._pending.append(item)
        metrics.WORKER_PENDING.set(len(self._pending))
        self._ready.set()
        return await item.future

    def pids(self) -> list[int]:
        """Process IDs of the live workers."""
        return [w.process.pid for w in self._workers.values() if w.process.pid is not None]

    def stats(self) -> dict[str, int]:
        return {"processes": self.processes, "alive": len(self._workers), "busy": self._busy,
                "pending": len(self._pending), "restarts": self.restarts}

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers and wait until each is up."""
        self._running = True
        started = [asyncio.get_running_loop().create_future() for _ in range(self.processes)]
        self._slots = [asyncio.create_task(self._slot(i, started[i]), name=f"worker-slot-{i}")
                       for i in range(self.processes)]
        try:
            await asyncio.gather(*started)
        except RuntimeError:
            await self.stop(timeout=1.0)
            raise

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the jobs already queued, then stop every worker."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), timeout)
        self._running = False
        workers = list(self._workers.values())
        for task in self._slots:
            task.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        self._slots = []
        await asyncio.gather(*(w.close(timeout) for w in workers))
        self._workers.clear()
        metrics.WORKERS.set(0)
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(ReplyError(LOCAL_ERROR))

    async def _drained(self) -> None:
        while self._pending or self._busy:
            await asyncio.sleep(0.01)

    # -- one slot: a worker process and the batches it runs -------------------------------

    async def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        process = self._context.Process(target=worker_main, name="smimegate-worker",
                                        args=(child_sock, self.job_function,
                                              self.initializer, self.init_arg),
                                        daemon=True)
        try:
            process.start()
        finally:
            child_sock.close()
        reader, writer = await asyncio.open_connection(sock=parent_sock, limit=2**20)
        worker = _Worker(process, reader, writer)
        try:
            await read_frame(reader)  # the worker's "ready"
        except (asyncio.IncompleteReadError, ConnectionError):
            await worker.close(5.0)
            raise RuntimeError(f"worker process failed to start (exit code "
                               f"{process.exitcode}); see its error above") from None
        return worker

    async def _slot(self, index: int, started: asyncio.Future[None]) -> None:
        first = True
        while self._running:
            try:
                worker = await self._spawn()
            except RuntimeError as e:
                if first:
                    started.set_exception(e)
                    return
                log.error("%s; retrying in 1 s", e)
                await asyncio.sleep(1.0)
                continue
            self._workers[index] = worker
            metrics.WORKERS.set(len(self._workers))
            if first:
                started.set_result(None)
                first = False
            try:
                await self._serve(worker)
            except (asyncio.IncompleteReadError, ConnectionError):
                log.warning("worker %s died (exit code %s); restarting it",
                            worker.process.pid, worker.process.exitcode)
                self.restarts += 1
                metrics.WORKER_RESTARTS.inc()
            finally:
                del self._workers[index]
                metrics.WORKERS.set(len(self._workers))
                if self._running:
                    await worker.close(5.0)

    async def _next_batch(self) -> list[_Pending]:
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        head = self._pending.popleft()
        batch = [head]
        # A job that was in a crash runs alone: it may be the cause.
        if head.attempts == 0:
            size = len(head.job.data)
            while self._pending and len(batch) < self.max_batch \
                    and self._pending[0].attempts == 0 \
                    and size + len(self._pending[0].job.data) <= BATCH_BYTES:
                size += len(self._pending[0].job.data)
                batch.append(self._pending.popleft())
        metrics.WORKER_PENDING.set(len(self._pending))
        return batch

    async def _serve(self, worker: _Worker) -> None:
        while True:
            batch = await self._next_batch()
            self._busy += 1
            metrics.WORKERS_BUSY.set(self._busy)
            try:
                await self._round_trip(worker, batch)
            except BaseException:
                self._requeue(batch)
                raise
            finally:
                self._busy -= 1
                metrics.WORKERS_BUSY.set(self._busy)

    async def _round_trip(self, worker: _Worker, batch: list[_Pending]) -> None:
        metrics.WORKER_BATCH.observe(len(batch))
        payload = pickle.dumps([(p.seq, p.job) for p in batch], pickle.HIGHEST_PROTOCOL)
        worker.writer.writelines(frame(payload))
        del payload
        await worker.writer.drain()
        try:
            reply = await asyncio.wait_for(read_frame(worker.reader), self.batch_timeout)
        except TimeoutError:
            # A hung job function: treat it as a crash (the batch is re-run, a job that
            # keeps hanging is refused after MAX_ATTEMPTS).
            log.error("worker %s took longer than %.1f s on a batch; killing it",
                      worker.process.pid, self.batch_timeout)
            worker.process.kill()
            raise ConnectionAbortedError("batch timeout") from None
        results: list[tuple[int, Result]]
        stats: WorkerStats
        results, stats = pickle.loads(reply)  # noqa: S301 - our own worker
        metrics.WORKER_BUSY_SECONDS.inc(stats.busy_seconds)
        metrics.WORKER_CPU_SECONDS.inc(stats.cpu_seconds)
        # Metrics once per batch, not per job: the jobs of a batch mostly count the same
        # things, and each labels() lookup and hook pass costs the event loop.
        refused = sum(1 for _, result in results if result.refusal)
        if refused:
            metrics.WORKER_JOBS.labels("refused").inc(refused)
        if len(results) > refused:
            metrics.WORKER_JOBS.labels("ok").inc(len(results) - refused)
        if self.on_counts is not None:
            merged: dict[tuple[str, tuple[str, ...]], float] = {}
            for _, result in results:
                for name, labels, n in result.counts:
                    merged[name, labels] = merged.get((name, labels), 0.0) + n
            if merged:
                self.on_counts(tuple((name, labels, n) for (name, labels), n in merged.items()))
        by_seq = {p.seq: p for p in batch}
        for seq, result in results:
            item = by_seq.pop(seq)
            if not item.future.done():
                item.future.set_result(result)
        batch.clear()  # all answered: nothing to requeue if we are cancelled now

    def _requeue(self, batch: list[_Pending]) -> None:
        """Put a dead worker's jobs back at the front of the queue, in their order."""
        for item in reversed(batch):
            item.attempts += 1
            if item.future.done():
                continue
            if item.attempts >= MAX_ATTEMPTS or not self._running:
                log.error("job %d was in %d worker crashes; refusing it", item.seq,
                          item.attempts)
                metrics.WORKER_JOBS.labels("crashed").inc()
                item.future.set_exception(ReplyError(LOCAL_ERROR))
            else:
                self._pending.appendleft(item)
        metrics.WORKER_PENDING.set(len(self._pending))
        if self._pending:
            self._ready.set()
