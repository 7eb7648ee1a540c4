"""The worker process: receives batches of jobs, runs the job function, sends results.

Wire format: multiprocessing.connection's length-prefixed frames (a signed 32-bit size,
or -1 then an unsigned 64-bit size), each carrying one pickle. The parent speaks the
same framing over asyncio (gateway.workers.ipc). A batch is a list of (sequence number,
Job); the reply is (list of (sequence number, Result), WorkerStats).

The worker exits when its socket reaches EOF, which is also what happens if the parent
dies, so no worker outlives the gateway.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import time
from multiprocessing.connection import Connection

from gateway.envelope import LOCAL_ERROR
from gateway.workers.jobs import Job, Result, WorkerStats, resolve

log = logging.getLogger(__name__)


def worker_main(sock: socket.socket, job_function: str, initializer: str | None = None,
                init_arg: object = None) -> None:
    """Entry point of a worker process (started by multiprocessing with spawn)."""
    # The parent decides when workers stop (it closes the socket); a Ctrl-C sent to the
    # whole process group must not kill a worker in the middle of a batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    function = resolve(job_function)
    if initializer is not None:
        # Before "ready": a worker that cannot load its keys never takes a job, and the
        # pool's start() reports that it failed to start.
        resolve(initializer)(init_arg)  # type: ignore[arg-type]
    conn = Connection(sock.detach())
    pid = os.getpid()
    conn.send_bytes(pickle.dumps(pid))  # "ready": the parent's start() waits for this
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        batch: list[tuple[int, Job]] = pickle.loads(payload)  # noqa: S301 - our parent
        wall0, cpu0 = time.perf_counter(), time.process_time()
        results: list[tuple[int, Result]] = []
        failed = 0
        for seq, job in batch:
            try:
                result = function(job)
            except Exception:
                # A job that raises is refused in its own session; the batch goes on.
                log.exception("job function %s failed", job_function)
                failed += 1
                result = Result(refusal=LOCAL_ERROR)
            results.append((seq, result))
        stats = WorkerStats(pid, time.perf_counter() - wall0, time.process_time() - cpu0,
                            failed)
        try:
            conn.send_bytes(pickle.dumps((results, stats), pickle.HIGHEST_PROTOCOL))
        except OSError:
            return
