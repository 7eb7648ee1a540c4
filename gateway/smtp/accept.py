"""From the end of DATA to the reply: workers, then the spool, then `250 ... queued as`.

The front end's only path to the 250 (DESIGN.md, process model): the message gets its
queue ID, goes to the worker pool (batched there with others; the worker logs under that
ID), each recipient group the workers return is written to the spool (gateway/handoff.py),
and the reply names the queue IDs only after `Spool.enqueue` returned, i.e. after the
group commit's fsync. A full spool or pool is 451 4.3.2, a failure on the way 451 4.3.0:
the client keeps the message and retries.

It also writes the Received trace header (RFC 5321 §4.4) the relay must add.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway import metrics
from gateway.envelope import LOCAL_ERROR, SYSTEM_BUSY, Envelope, Reply, ReplyError
from gateway.handoff import Store, queue_outputs
from gateway.smtp.replies import queued, reason
from gateway.spool.format import new_queue_id
from gateway.workers.jobs import Job, Result

log = logging.getLogger(__name__)


_date_cache: tuple[int, str] = (-1, "")


def _date(at: float) -> str:
    """RFC 5322 date-time of at, local time: formatted once per second, not per message."""
    global _date_cache
    second = int(at)
    if _date_cache[0] != second:
        _date_cache = (second, email.utils.formatdate(second, localtime=True))
    return _date_cache[1]


class Processor(Protocol):
    """What the front end needs of the processing stage (gateway.workers.WorkerPool)."""

    def has_room(self) -> bool: ...

    async def run(self, job: Job) -> Result: ...


class Acceptor:
    """Turns an accepted DATA body into spool entries and the session's reply."""

    def __init__(self, processor: Processor, store: Store, *, hostname: str,
                 on_harvest: Callable[[str, Sequence[bytes]], object] | None = None,
                 on_capabilities: Callable[[str, Sequence[str], float], object] | None = None
                 ) -> None:
        self.processor = processor
        self.store = store
        self.hostname = hostname
        # [inbound] harvest: CertificateResolver.offer_harvested, the cache's writer
        self.on_harvest = on_harvest
        # [inbound] learn_capabilities: CertificateResolver.offer_capabilities
        self.on_capabilities = on_capabilities

    def has_room(self) -> bool:
        """False when new mail should get 451 4.3.2 (backpressure)."""
        return self.store.has_room() and self.processor.has_room()

    def received(self, envelope: Envelope, *, tls: bool) -> bytes:
        """The Received header this hop adds (RFC 5321 §4.4, RFC 5322 §3.6.7)."""
        helo = envelope.helo or "unknown"
        via = "ESMTPS" if tls else "ESMTP"
        date = _date(envelope.received_at or time.time())
        # One recipient is named, as most MTAs do; more would leak the envelope.
        rcpt = f"\r\n\tfor <{envelope.rcpt_tos[0]}>" if len(envelope.rcpt_tos) == 1 else ""
        return (f"Received: from {helo} ([{envelope.client_address}])\r\n"
                f"\tby {self.hostname} (smimegate) with {via}{rcpt};\r\n"
                f"\t{date}\r\n").encode("ascii", "replace")

    async def accept(self, envelope: Envelope, data: bytes) -> Reply:
        """The reply to the end of DATA; the message is on disk if it is a 250."""
        started = time.perf_counter()
        try:
            if not self.store.has_room():
                raise ReplyError(SYSTEM_BUSY)
            qid = new_queue_id()
            result = await self.processor.run(Job(envelope, data, qid))
            if result.refusal is not None:
                raise ReplyError(result.refusal)
            if self.on_harvest is not None:
                for address, der_chain in result.harvested:
                    self.on_harvest(address, der_chain)
            if self.on_capabilities is not None:
                for name, oids, signed_at in result.capabilities:
                    self.on_capabilities(name, oids, signed_at)
            ids = await queue_outputs(self.store, envelope, result.outputs, first_id=qid)
        except ReplyError as e:
            metrics.REFUSED.labels(reason(e.reply)).inc()
            return e.reply
        except Exception as e:
            # The client keeps the message and retries; the log says why (no traceback
            # for the expected kind: a full or failing disk).
            log.error("cannot accept a message from %s: %r", envelope.client_address, e,
                      exc_info=not isinstance(e, OSError))
            metrics.REFUSED.labels("local_error").inc()
            return LOCAL_ERROR
        metrics.ACCEPTED.inc()
        metrics.MESSAGE_BYTES.observe(len(data))
        metrics.ACCEPT_SECONDS.observe(time.perf_counter() - started)
        if result.quarantined:  # accepted and kept in quarantine, not queued
            ids += [f"{q} (quarantined)" for q in result.quarantined]
        return queued(ids)

