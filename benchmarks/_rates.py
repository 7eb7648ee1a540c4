"""How the micro-benchmarks count calls per second, in one place.

per_cpu_second counts against this process's CPU time, so other work on a shared
machine does not count against the code measured; use it for pure computation.
per_wall_second counts against the clock; use it where the work waits (network, another
thread or process doing part of it).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def per_cpu_second(op: Callable[[], object], seconds: float) -> float:
    """Calls per CPU-second of this process (= per core for single-threaded work), over at
    least `seconds` of CPU after one warm-up call."""
    op()
    n, batch = 0, 1
    start = time.process_time()
    while True:
        for _ in range(batch):
            op()
        n += batch
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return n / elapsed
        batch = min(batch * 2, 256)


def per_wall_second(op: Callable[[], object], seconds: float) -> float:
    """Calls per second of wall time over about `seconds`."""
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        op()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)
