"""Prometheus metrics of the gateway: one registry, every part records into it.

The front end and the worker pool record here; the spool (gateway.spool.metrics: queue
by state, fsync latency and group size) and delivery (gateway.delivery.metrics:
deliveries by result, latency) define theirs next to their code. All live in
prometheus_client's default registry (with its process and GC collectors), which the
admin server (gateway.metrics.server) serves. Names follow Prometheus conventions.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
                 16777216.0, 67108864.0)

# Front end (gateway.smtp)
SESSIONS = Counter("smimegate_smtp_sessions", "SMTP sessions opened", registry=REGISTRY)
SESSIONS_ACTIVE = Gauge("smimegate_smtp_sessions_active", "SMTP sessions open now",
                        registry=REGISTRY)
ACCEPTED = Counter("smimegate_smtp_messages_accepted", "messages answered 250 after DATA",
                   registry=REGISTRY)
REFUSED = Counter("smimegate_smtp_refused", "refusals by reason (an SMTP 4xx/5xx reply)",
                  ["reason"], registry=REGISTRY)
MESSAGE_BYTES = Histogram("smimegate_smtp_message_bytes", "size of accepted messages",
                          buckets=_SIZE_BUCKETS, registry=REGISTRY)
DATA_MEMORY = Gauge("smimegate_smtp_data_memory_bytes",
                    "message data held between DATA and the spool (smtp.max_data_memory)",
                    registry=REGISTRY)
ACCEPT_SECONDS = Histogram("smimegate_smtp_accept_seconds",
                           "end of DATA to the 250 (workers and spool fsync)",
                           buckets=_LATENCY_BUCKETS, registry=REGISTRY)

# Worker pool (gateway.workers)
WORKERS = Gauge("smimegate_workers", "worker processes alive", registry=REGISTRY)
WORKERS_BUSY = Gauge("smimegate_workers_busy", "workers with a batch in flight",
                     registry=REGISTRY)
WORKER_PENDING = Gauge("smimegate_worker_pending_jobs", "jobs waiting for a worker",
                       registry=REGISTRY)
WORKER_BATCH = Histogram("smimegate_worker_batch_size", "jobs per IPC round trip",
                         buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY)
WORKER_BUSY_SECONDS = Counter("smimegate_worker_busy_seconds",
                              "wall time workers spent running jobs (utilisation = rate / "
                              "smimegate_workers)", registry=REGISTRY)
WORKER_CPU_SECONDS = Counter("smimegate_worker_cpu_seconds", "CPU time workers spent on jobs",
                             registry=REGISTRY)
WORKER_JOBS = Counter("smimegate_worker_jobs", "jobs finished by result", ["result"],
                      registry=REGISTRY)
WORKER_RESTARTS = Counter("smimegate_worker_restarts",
                          "workers that died and were replaced", registry=REGISTRY)
