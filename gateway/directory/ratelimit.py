"""Per-client limit on failed authentications: a sliding window of failure times.

A client (by address) that fails more than `limit` times within `window` seconds gets
429 with Retry-After on every write until the oldest failure leaves the window, so
guessing tokens is slow. Memory is bounded: past max_clients the oldest entries go.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class FailureLimiter:
    def __init__(self, limit: int, window: float, *, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after(self, client: str) -> float | None:
        """Seconds until client may try again, or None if it may try now."""
        now = self.clock()
        times = self._recent(client, now)
        if times is None or len(times) < self.limit:
            return None
        return max(0.0, times[0] + self.window - now)

    def fail(self, client: str) -> None:
        now = self.clock()
        times = self._recent(client, now)
        if times is None:
            times = self._failures[client] = deque()
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
        times.append(now)
        self._failures.move_to_end(client)
