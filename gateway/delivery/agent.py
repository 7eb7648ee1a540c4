"""The delivery agent: takes due mail from the spool, sends it, records the outcome.

Scheduling: the spool hands over IDs that became ready (new, recovered, retried,
released); deferred messages wait in a heap keyed by their earliest next attempt. A due
message is split into jobs, one per destination (gateway.delivery.route), each carrying
the recipients that go there. A destination has a queue of jobs and up to
`delivery.concurrency_per_destination` connections, each sending job after job on one
SMTP session (RSET only after a transaction that did not end normally: RFC 5321
§4.1.1.5 allows MAIL right after a completed one) and lingering `connection_idle` for
more.

A queued copy the crypto job refused (Envelope.refused: its data is the original
message) is never sent as it is: gateway.delivery.refused says what its due recipients
become (bounced, waiting, or handed to copies the job makes when run again).

Outcome per recipient, recorded durably (spool.set_rcpts) before the connection moves
on, so a recipient once delivered is never sent again after a restart: 2xx → delivered;
5xx → failed; 4xx, connection or DNS trouble → deferred with exponential backoff
(retry_initial · 2^(attempts−1), at most retry_max). Past max_queue_lifetime a pending
recipient fails with 4.4.7. When no recipient is pending, the failed ones get one DSN
(RFC 3464, gateway.delivery.dsn) queued to the sender (never for a null sender), then the
message is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver

from gateway.config.schema import DeliverySection
from gateway.delivery import metrics, outcome, refused
from gateway.delivery.client import SmtpConnection, SmtpError
from gateway.delivery.connect import Connector
from gateway.delivery.dsn import build_dsn
from gateway.delivery.route import Destination, RouteError, Router
from gateway.envelope import Reply
from gateway.spool import DELIVERED, QueueEntry, RecipientState, Spool, dsn_queue_id

log = logging.getLogger("smimegate.delivery")


@dataclass(slots=True)
class Job:
    queue_id: str
    rcpts: list[int]  # indices into the envelope's recipients


@dataclass(slots=True)
class _Destination:
    dest: Destination
    jobs: deque[Job] = field(default_factory=deque)
    connections: int = 0
    idle: int = 0
    has_work: asyncio.Event = field(default_factory=asyncio.Event)


class DeliveryAgent:
    """Delivers what the spool holds. See the package docstring for the API."""

    def __init__(self, spool: Spool, config: DeliverySection, *, hostname: str,
                 resolver: dns.asyncresolver.Resolver | None = None,
                 reprocess: refused.Reprocess | None = None) -> None:
        self._spool = spool
        self._reprocess = reprocess
        self._config = config
        self._hostname = hostname
        self._router = Router(config, resolver)
        self._heap: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._busy: dict[str, int] = {}  # queue ID → jobs (or a finish) in flight
        self._dests: dict[str, _Destination] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._scheduler: asyncio.Task[None] | None = None
        self._connector = Connector(config, hostname)

    async def start(self) -> None:
        self._spool.add_listener(self.wake)
        self._scheduler = asyncio.get_running_loop().create_task(
            self._schedule(), name="delivery-scheduler")

    def wake(self) -> None:
        self._wakeup.set()

    async def stop(self) -> None:
        """Stop taking work; let transactions in flight finish and record (for up to
        `shutdown_grace`); everything else stays queued for the next start."""
        self._stopping = True
        self._wakeup.set()
        if self._scheduler is not None:
            # Not cancel(): Python 3.11's wait_for can swallow a cancellation that races
            # with the event it waits for; a flag and the event cannot be lost.
            await self._scheduler
        for d in self._dests.values():
            d.jobs.clear()
            d.has_work.set()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=self._config.shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    # -- scheduling -----------------------------------------------------------------

    async def _schedule(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                self._run_due()
            except Exception:  # a bug must not stop delivery of everything else
                log.exception("delivery: scheduling failed")
                await asyncio.sleep(1.0)
            now = time.time()
            timeout = min(self._heap[0][0] - now, 60.0) if self._heap else 60.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._wakeup.wait()

    def _run_due(self) -> None:
        for qid in self._spool.take_ready():
            self._consider(qid)
        now = time.time()
        while self._heap and self._heap[0][0] <= now:
            due, qid = heapq.heappop(self._heap)
            if self._scheduled.get(qid) == due:
                del self._scheduled[qid]
                self._consider(qid)

    def _later(self, qid: str, due: float) -> None:
        if qid in self._scheduled and self._scheduled[qid] <= due:
            return
        self._scheduled[qid] = due
        heapq.heappush(self._heap, (due, qid))
        self._wakeup.set()

    def _consider(self, qid: str) -> None:
        """Decide what a message needs now: a finish, jobs, or a later look."""
        entry = self._spool.get(qid)
        if entry is None or entry.state.hold or self._stopping or qid in self._busy:
            return  # a busy message is looked at again when its last job ends
        pending = entry.state.pending
        now = time.time()
        if pending and now >= entry.envelope.received_at + self._config.max_queue_lifetime:
            self._spawn(self._expire(entry), qid, 1)
            return
        if not pending:
            self._spawn(self._finish(entry), qid, 1)
            return
        due = [i for i in pending if entry.state.rcpts[i].next_attempt <= now]
        if not due:
            self._later(qid, min(entry.state.rcpts[i].next_attempt for i in pending))
            return
        if entry.envelope.refused:  # the original of a refused copy: never sent as it is
            self._spawn(self._rerun(entry, due), qid, 1)
            return
        jobs: dict[str, Job] = {}
        dests: dict[str, Destination] = {}
        for i in due:
            dest = self._router.destination(entry.envelope.rcpt_tos[i],
                                            require_tls=entry.envelope.require_tls)
            jobs.setdefault(dest.key, Job(qid, [])).rcpts.append(i)
            dests[dest.key] = dest
        self._busy[qid] = len(jobs)
        for key, job in jobs.items():
            self._dispatch(dests[key], job)

    def _spawn(self, coro: Coroutine[Any, Any, None], qid: str | None, busy: int) -> None:
        if qid is not None:
            self._busy[qid] = busy
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery: task failed", exc_info=task.exception())

    def _job_done(self, qid: str) -> None:
        left = self._busy.get(qid, 1) - 1
        if left > 0:
            self._busy[qid] = left
            return
        self._busy.pop(qid, None)
        self._consider(qid)

    # -- destinations and connections -----------------------------------------------

    def _dispatch(self, dest: Destination, job: Job) -> None:
        d = self._dests.get(dest.key)
        if d is None:
            d = self._dests[dest.key] = _Destination(dest)
        d.jobs.append(job)
        d.has_work.set()
        if len(d.jobs) > d.idle and d.connections < self._config.concurrency_per_destination:
            d.connections += 1
            self._spawn(self._connection(d), None, 0)

    async def _connection(self, d: _Destination) -> None:
        """One SMTP session with a destination, carrying jobs until none is left."""
        try:
            if d.jobs:
                await self._session(d, d.jobs.popleft())
        finally:
            d.connections -= 1
            if d.jobs and d.connections == 0 and not self._stopping:
                d.connections += 1  # jobs came in while this one was closing
                self._spawn(self._connection(d), None, 0)
            elif not d.jobs and d.connections == 0:
                self._dests.pop(d.dest.key, None)

    async def _session(self, d: _Destination, job: Job) -> None:
        try:
            hosts = await self._router.hosts(d.dest)
        except RouteError as e:
            await self._fail_all(d, job, e.reply, "")
            return
        conn: SmtpConnection | None = None
        error = Reply(421, "4.4.1", f"no address for {d.dest.key}")
        for host in hosts:
            tls = d.dest.tls
            try:
                # RFC 7672: the host's TLSA records may make TLS mandatory or DANE-only.
                tls, expected = await self._router.host_tls(d.dest, host)
                conn = await self._connector.connect_sts(host, tls, expected)
                break
            except RouteError as e:  # its TLSA records could not be had: skip the host
                error = e.reply
                log.info("delivery: %s", e)
            except SmtpError as e:
                if tls == "opportunistic" and e.reply.status == "4.7.5":
                    # RFC 7435: opportunistic TLS that fails falls back to cleartext
                    # rather than failing delivery.
                    log.info("delivery: %s; trying without TLS", e)
                    try:
                        conn = await self._connector.connect(host, "none")
                        break
                    except SmtpError as e2:
                        e = e2
                error = e.reply
                log.info("delivery: %s", e)
        if conn is None:
            await self._fail_all(d, job, error, "")
            return
        metrics.CONNECTIONS.inc()
        try:
            needs_rset = False
            current: Job | None = job
            while current is not None:
                needs_rset = await self._transaction(conn, current, needs_rset)
                current = None if self._stopping else await self._next_job(d)
            await conn.quit()
        except SmtpError as e:
            log.info("delivery: %s", e)
            conn.close()
        except BaseException:  # cancelled past the shutdown grace: drop the session
            conn.close()
            raise
        finally:
            metrics.CONNECTIONS.dec()


    async def _next_job(self, d: _Destination) -> Job | None:
        if d.jobs:
            return d.jobs.popleft()
        d.idle += 1
        try:
            deadline = time.monotonic() + self._config.connection_idle
            while not d.jobs and not self._stopping:
                d.has_work.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        await d.has_work.wait()
                except TimeoutError:
                    return None
        finally:
            d.idle -= 1
        return d.jobs.popleft() if d.jobs and not self._stopping else None

    async def _fail_all(self, d: _Destination, job: Job, reply: Reply, remote: str) -> None:
        """The destination is unreachable: this job and every one waiting share the fate."""
        jobs = [job, *d.jobs]
        d.jobs.clear()
        records = []
        for j in jobs:
            entry = self._spool.get(j.queue_id)
            if entry is None:
                self._job_done(j.queue_id)
            else:
                records.append(self._record_job(entry, j, [reply] * len(j.rcpts), remote))
        await asyncio.gather(*records)  # together, so they share commit rounds

    async def _transaction(self, conn: SmtpConnection, job: Job, needs_rset: bool) -> bool:
        """Send one job on an open session; returns whether the next needs an RSET.
        Raises SmtpError when the session broke (the job is then recorded as deferred).

        The outcome is recorded by a task of its own: the connection goes on with the
        next message while the record is committed (so commits of all connections share
        rounds), and the message's own next step waits for its durable record."""
        entry = self._spool.get(job.queue_id)
        try:
            if entry is None:
                self._job_done(job.queue_id)  # deleted by an operator meanwhile
                return needs_rset
            data = await self._spool.read(entry)
        except FileNotFoundError:
            self._job_done(job.queue_id)
            return needs_rset
        except BaseException:
            self._job_done(job.queue_id)
            raise
        rcpts = [entry.envelope.rcpt_tos[i] for i in job.rcpts]
        started = time.perf_counter()
        try:
            if needs_rset:
                await conn.rset()
            result = await conn.send(entry.envelope.mail_from, rcpts, data)
        except SmtpError as e:
            self._spawn(self._record_job(entry, job, [e.reply] * len(rcpts), conn.peer),
                        None, 0)
            raise
        except BaseException:  # cancelled: nothing is known, nothing is recorded
            self._job_done(job.queue_id)
            raise
        metrics.TRANSACTION_SECONDS.observe(time.perf_counter() - started)
        self._spawn(self._record_job(entry, job, list(result.replies), conn.peer), None, 0)
        return not result.completed

    async def _record_job(self, entry: QueueEntry, job: Job, replies: list[Reply],
                          remote: str) -> None:
        try:
            await self._record(entry, job.rcpts, replies, remote)
        finally:
            self._job_done(job.queue_id)

    # -- outcomes -------------------------------------------------------------------

    async def _record(self, entry: QueueEntry, indices: list[int], replies: list[Reply],
                      remote: str) -> None:
        now = time.time()
        changes = outcome.after_replies(entry, indices, replies, remote, self._config, now)
        if any(changes[i].status == DELIVERED for i in indices):
            metrics.DELIVERY_LATENCY.observe(max(now - entry.envelope.received_at, 0.0))
        await self._write(entry, changes)

    async def _write(self, entry: QueueEntry, changes: dict[int, RecipientState]) -> None:
        done = all(changes.get(i, r).status == DELIVERED for i, r in enumerate(entry.state.rcpts))
        try:
            if done:  # the common case: the message's removal is its durable record
                await self._spool.remove(entry.queue_id)
            else:
                await self._spool.set_rcpts(entry.queue_id, changes)
        except OSError as e:  # memory holds it; the next write of this state repeats it
            log.error("delivery: cannot record state of %s: %s", entry.queue_id, e)

    async def _rerun(self, entry: QueueEntry, due: list[int]) -> None:
        """A refused copy's recipients are due: bounce, wait, or run the job again."""
        qid = entry.queue_id
        try:
            await self._write(entry, await refused.next_states(
                entry, due, spool=self._spool, config=self._config,
                reprocess=self._reprocess))
        except FileNotFoundError:
            pass  # deleted by an operator meanwhile
        except Exception as e:  # the pool stopping, a full disk: try again later
            log.error("delivery: cannot process %s again: %r", qid, e)
            self._later(qid, time.time() + self._config.retry_initial)
        finally:
            self._job_done(qid)

    async def _expire(self, entry: QueueEntry) -> None:
        try:
            await self._spool.set_rcpts(entry.queue_id, outcome.expired(entry))
        except OSError as e:  # memory holds it; the finish rewrites nothing but removes
            log.error("delivery: cannot record expiry of %s: %s", entry.queue_id, e)
        finally:
            self._job_done(entry.queue_id)

    async def _finish(self, entry: QueueEntry) -> None:
        """No recipient pending: bounce the failed ones, then forget the message."""
        try:
            failed = outcome.failed_recipients(entry)
            if failed and entry.envelope.mail_from:
                data = await self._spool.read(entry)
                envelope, body = build_dsn(queue_id=entry.queue_id, envelope=entry.envelope,
                                           data=data, failed=failed, hostname=self._hostname)
                await self._spool.enqueue(envelope, body, queue_id=dsn_queue_id(entry.queue_id))
                metrics.DSNS.inc()
            elif failed:
                log.warning("delivery: %s from the null sender failed for %d recipient(s); "
                            "no bounce for a bounce", entry.queue_id, len(failed))
            await self._spool.remove(entry.queue_id)
        except OSError as e:
            log.error("delivery: cannot finish %s: %s (retrying later)", entry.queue_id, e)
            self._later(entry.queue_id, time.time() + self._config.retry_initial)
        finally:
            self._busy.pop(entry.queue_id, None)  # removed, or looked at again later
