"""From a job's outputs to spool entries: one entry per recipient group.

Used at the end of DATA (gateway/smtp/accept.py) and when delivery runs the crypto job
again for a copy it refused earlier (gateway/delivery/agent.py). Each output becomes an
envelope that differs from the message's only in its recipients and in what the job
asked of it: `require_tls` (the "tls-only" fallback) or `refused` (not sent: the
original, kept for a retry or a bounce; see Output). The first entry takes the ID the
job was logged under, so a one-group message has one ID from the worker's log lines to
`queue list`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Protocol

from gateway.envelope import Envelope
from gateway.workers.jobs import Output

log = logging.getLogger("smimegate.handoff")


class Store(Protocol):
    """What a handoff needs of the spool (gateway.spool.Spool provides it)."""

    def has_room(self) -> bool: ...

    async def enqueue(self, envelope: Envelope, data: bytes, *,
                      queue_id: str | None = None, fresh: bool = False) -> str: ...


def envelope_for(envelope: Envelope, output: Output) -> Envelope:
    """The spool envelope of one output."""
    return dataclasses.replace(
        envelope, rcpt_tos=output.rcpt_tos, require_tls=output.require_tls,
        refused=str(output.refused) if output.refused is not None else "")


async def queue_outputs(store: Store, envelope: Envelope, outputs: Sequence[Output], *,
                        first_id: str | None = None) -> list[str]:
    """Enqueue every output (each durable before the next); their queue IDs in order.
    first_id, when given, must come from new_queue_id() just now (it is not checked)."""
    ids: list[str] = []
    for output in outputs:
        qid = await store.enqueue(envelope_for(envelope, output), output.data,
                                  queue_id=first_id if not ids else None, fresh=True)
        if output.refused is not None:
            log.info("%s: original kept for %s: the crypto job refused them (%s); %s",
                     qid, ", ".join(output.rcpt_tos), output.refused,
                     "retried when due" if output.refused.transient else "they bounce")
        ids.append(qid)
    return ids
