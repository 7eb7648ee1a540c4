"""The spool's Prometheus metrics (module-level: one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

QUEUE_MESSAGES = Gauge("smimegate_queue_messages",
                       "Messages in the spool by state (active, deferred, hold)", ["state"])
ENQUEUED = Counter("smimegate_spool_enqueued_total", "Messages made durable in the spool")
FSYNC_SECONDS = Histogram(
    "smimegate_spool_fsync_seconds", "Duration of one group-commit round (writes, fsyncs)",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
GROUP_SIZE = Histogram("smimegate_spool_group_size", "Changes made durable by one commit round",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
QUARANTINED = Counter("smimegate_spool_quarantined_total",
                      "Unreadable spool files moved to corrupt/ at recovery")
