"""Refused copies: what delivery does with an original the crypto job refused.

A queued entry whose envelope says `refused` (gateway/workers/jobs.py Output.refused,
queued by gateway/handoff.py) holds the ORIGINAL message, never to be sent as it is. Its
due recipients' next states come from here, for the agent to record:
- a 5yz refusal fails them (the agent's finish sends the DSN);
- a 4yz counts as their first attempt (the job at DATA made it), so the first look only
  records it and waits retry_initial; later looks run the job again through `reprocess`
  (the worker pool, after the front end refreshed the certificates as RCPT would): the
  copies it makes now are queued as new entries and these recipients are done here
  ("delivered" to them, with the new queue IDs as the reply), a group it refuses again
  stays on this entry with its next attempt; without `reprocess` (a gateway that runs no
  crypto job) they wait and expire with a DSN.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.config.schema import DeliverySection
from gateway.delivery import outcome
from gateway.envelope import Envelope, Reply
from gateway.handoff import queue_outputs
from gateway.spool import DELIVERED, QueueEntry, RecipientState, Spool
from gateway.workers.jobs import Job, Result

log = logging.getLogger("smimegate.delivery")

# Runs the crypto job for a refused copy again (Gateway._reprocess in `smimegate run`).
Reprocess = Callable[[Job], Awaitable[Result]]
REPROCESSED = "smimegate"  # the "remote" recorded for recipients handed to new copies
_UNREADABLE = Reply(451, "4.3.0", "refused by the crypto job")


def refusal_of(envelope: Envelope) -> Reply:
    """The reply the job refused the copy with (a transient one if it cannot be read)."""
    try:
        return Reply.parse(envelope.refused)
    except ValueError:
        return _UNREADABLE


async def next_states(entry: QueueEntry, due: list[int], *, spool: Spool,
                      config: DeliverySection, reprocess: Reprocess | None
                      ) -> dict[int, RecipientState]:
    """The due recipients' new states (FileNotFoundError: the entry was deleted)."""
    reply = refusal_of(entry.envelope)
    first = all(entry.state.rcpts[i].attempts == 0 for i in due)
    if reply.permanent or first or reprocess is None:
        if reprocess is None and not reply.permanent and not first:
            log.warning("delivery: %s waits for the crypto job, which this gateway does "
                        "not run", entry.queue_id)
        return outcome.after_replies(entry, due, [reply] * len(due), "", config, time.time())
    data = await spool.read(entry)
    rcpts = tuple(entry.envelope.rcpt_tos[i] for i in due)
    envelope = dataclasses.replace(entry.envelope, rcpt_tos=rcpts, refused="")
    result = await reprocess(Job(envelope, data, entry.queue_id))
    if result.refusal is not None:
        log.info("delivery: %s: the crypto job refused again for %s: %s", entry.queue_id,
                 ", ".join(rcpts), result.refusal)
        return outcome.after_replies(entry, due, [result.refusal] * len(due), "", config,
                                     time.time())
    return await _handed_on(entry, due, envelope, result, spool, config)


async def _handed_on(entry: QueueEntry, due: list[int], envelope: Envelope, result: Result,
                     spool: Spool, config: DeliverySection) -> dict[int, RecipientState]:
    """Queue what the job made now; its recipients are done in this entry, except the
    ones it refused again (their next attempt, on this entry)."""
    index = {entry.envelope.rcpt_tos[i]: i for i in due}
    again = [o for o in result.outputs if o.refused is not None
             and all(r in index for r in o.rcpt_tos)]
    made = [o for o in result.outputs if o not in again]
    ids = await queue_outputs(spool, envelope, made)
    now = time.time()
    changes: dict[int, RecipientState] = {}
    for o in again:
        assert o.refused is not None
        indices = [index[r] for r in o.rcpt_tos]
        changes.update(outcome.after_replies(entry, indices, [o.refused] * len(indices),
                                             "", config, now))
    note = " ".join(ids + [f"{q} (quarantined)" for q in result.quarantined])
    for i in due:
        if i not in changes:
            changes[i] = RecipientState(DELIVERED, entry.state.rcpts[i].attempts + 1, 0.0,
                                        f"250 2.0.0 processed again: {note}", REPROCESSED)
    log.info("delivery: %s processed again: %s", entry.queue_id, note or "nothing new")
    return changes
