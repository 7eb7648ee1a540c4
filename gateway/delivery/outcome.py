"""What a reply means for a recipient's state: delivered, failed (bounce), or deferred.

RFC 5321 §4.2.1: 2yz success, 4yz transient (retry after an exponential backoff,
retry_initial · 2^(attempts−1) capped at retry_max, but never past the message's
lifetime), 5yz permanent. A recipient still pending past delivery.max_queue_lifetime
fails with RFC 3463 status 4.4.7 ("delivery time expired"), keeping its last reply as
the diagnostic.
"""

from __future__ import annotations

from gateway.config.schema import DeliverySection
from gateway.delivery import metrics
from gateway.delivery.dsn import FailedRecipient
from gateway.envelope import Reply
from gateway.spool import DELIVERED, FAILED, PENDING, QueueEntry, RecipientState

EXPIRED = "4.4.7 message expired in the queue"


def backoff(config: DeliverySection, attempts: int) -> float:
    """Delay before attempt `attempts` + 1, after `attempts` failed ones (≥ 1)."""
    return float(min(config.retry_max, config.retry_initial * 2 ** min(attempts - 1, 40)))


def after_replies(entry: QueueEntry, indices: list[int], replies: list[Reply], remote: str,
                  config: DeliverySection, now: float) -> dict[int, RecipientState]:
    """New states of the recipients `indices` given the next hop's replies (counted)."""
    changes: dict[int, RecipientState] = {}
    for i, reply in zip(indices, replies, strict=True):
        attempts = entry.state.rcpts[i].attempts + 1
        text = str(reply)
        if 200 <= reply.code < 300:
            changes[i] = RecipientState(DELIVERED, attempts, 0.0, text, remote)
            metrics.DELIVERIES.labels("delivered").inc()
        elif reply.permanent:
            changes[i] = RecipientState(FAILED, attempts, 0.0, text, remote)
            metrics.DELIVERIES.labels("bounced").inc()
        else:
            due = min(now + backoff(config, attempts),
                      entry.envelope.received_at + config.max_queue_lifetime)
            changes[i] = RecipientState(PENDING, attempts, due, text, remote)
            metrics.DELIVERIES.labels("deferred").inc()
    return changes


def expired(entry: QueueEntry) -> dict[int, RecipientState]:
    """Every pending recipient failed for good: the message is too old (counted)."""
    changes: dict[int, RecipientState] = {}
    for i in entry.state.pending:
        old = entry.state.rcpts[i]
        changes[i] = RecipientState(FAILED, old.attempts, 0.0, old.reply or EXPIRED, old.remote)
        metrics.DELIVERIES.labels("expired").inc()
    return changes


def failed_recipients(entry: QueueEntry) -> list[FailedRecipient]:
    """The recipients a DSN must report, with status and diagnostic."""
    return [FailedRecipient(entry.envelope.rcpt_tos[i], _status(r.reply),
                            "" if r.reply == EXPIRED else r.reply, _remote_name(r.remote))
            for i, r in enumerate(entry.state.rcpts) if r.status == FAILED]


def _status(reply: str) -> str:
    """The RFC 3463 status of a failed recipient from its recorded reply text."""
    parts = reply.split(" ", 2)
    if len(parts) >= 2 and parts[0].isdigit() and parts[0].startswith("5"):
        return parts[1] if parts[1][:1] == "5" else "5.0.0"
    return "4.4.7"  # failed without a permanent reply: it expired


def _remote_name(remote: str) -> str:
    """'mx.beta.test[10.0.0.1]:25' → 'mx.beta.test'; '[127.0.0.1]:2526' → '127.0.0.1'."""
    name, _, rest = remote.partition("[")
    return name or rest.partition("]")[0]
