"""The directory's HTTP client: batched, coalesced, bounded, with precise errors.

`await client.lookup(url, name)` answers what the directory at `url` lists for one
domain or address. Behind it:

- coalescing: every concurrent ask for the same (directory, name) shares one pending
  answer, so a thousand messages to a new domain cost one query;
- batching: asks for one directory go out together as one `POST /v1/lookup` (at
  most MAX_BATCH names, the directory's limit): to an idle directory, all asked in the
  same event-loop turn; while a request to it is in flight, all asked within
  `batch_window` (Nagle's idea: no added wait when idle, bigger batches when busy);
- a timeout per request and bounded retries with backoff for failures that may pass
  (no connection, timeout, 5xx, 429); a 4xx is final;
- an answer-size limit, and a DirectoryError with a code and a sentence for an answer
  that is not the documented shape (gateway/directory/openapi.py).

Nothing here judges a certificate: that is the resolver's job, through the trust gate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from gateway.config.schema import LookupSection
from gateway.lookup import metrics

log = logging.getLogger(__name__)

MAX_BATCH = 100  # names per POST /v1/lookup (gateway/directory/api_read.py MAX_LOOKUP)
BACKOFF = 0.05  # seconds before the first retry; doubled for each further one


@dataclass(frozen=True, slots=True)
class CertEntry:
    """One certificate as a directory listed it: not yet parsed, not yet trusted."""

    pem: str
    chain: tuple[str, ...]  # issuers, PEM, as the directory gave them
    state: str  # "active" or "revoked" (anything else is treated as unusable)
    fingerprint: str


class DirectoryError(Exception):
    """A directory could not give an answer. `code`: "unreachable", "timeout",
    "http-status", "too-large" or "malformed-answer"; `transient`: worth retrying."""

    def __init__(self, url: str, code: str, reason: str, transient: bool = False,
                 status: int = 0) -> None:
        super().__init__(f"{url}: {code}: {reason}")
        self.url = url
        self.code = code
        self.reason = reason
        self.transient = transient
        self.status = status


def _malformed(url: str, reason: str) -> DirectoryError:
    return DirectoryError(url, "malformed-answer", reason)


def _entry(url: str, where: str, raw: object) -> CertEntry:
    if not isinstance(raw, dict):
        raise _malformed(url, f"{where} is not an object")
    pem, chain, state = raw.get("pem"), raw.get("chain", []), raw.get("state")
    fp = raw.get("fingerprint", "")
    if not isinstance(pem, str):
        raise _malformed(url, f"{where}.pem is not a string")
    if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
        raise _malformed(url, f"{where}.chain is not a list of strings")
    if not isinstance(state, str):
        raise _malformed(url, f"{where}.state is not a string")
    if not isinstance(fp, str):
        raise _malformed(url, f"{where}.fingerprint is not a string")
    return CertEntry(pem, tuple(chain), state, fp)


def parse_answer(url: str, data: bytes,
                 names: Sequence[str]) -> dict[str, tuple[CertEntry, ...]]:
    """The POST /v1/lookup answer for names: each name's entries, () for a missing one."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise _malformed(url, f"not JSON: {e}") from None
    if not isinstance(body, dict):
        raise _malformed(url, "the answer is not a JSON object")
    results, missing = body.get("results"), body.get("missing")
    if not isinstance(results, dict):
        raise _malformed(url, "'results' is not an object")
    if not isinstance(missing, list):
        raise _malformed(url, "'missing' is not a list")
    absent = {m for m in missing if isinstance(m, str)}
    out: dict[str, tuple[CertEntry, ...]] = {}
    for name in names:
        if name in results:
            listed = results[name]
            if not isinstance(listed, list):
                raise _malformed(url, f"results[{name!r}] is not a list")
            out[name] = tuple(_entry(url, f"results[{name!r}][{i}]", c)
                              for i, c in enumerate(listed))
        elif name in absent:
            out[name] = ()
        else:
            raise _malformed(url, f"the answer says nothing of {name!r}")
    return out


class DirectoryClient:
    """One per process (it owns an aiohttp session); `await close()` when done."""

    def __init__(self, config: LookupSection) -> None:
        self.config = config
        self.requests = 0  # HTTP requests sent (tries included)
        self._session: aiohttp.ClientSession | None = None
        self._pending: dict[tuple[str, str], asyncio.Future[tuple[CertEntry, ...]]] = {}
        self._queues: dict[str, list[str]] = {}
        self._timers: dict[str, asyncio.Handle] = {}
        self._busy: dict[str, int] = {}  # requests in flight per directory
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def lookup(self, url: str, name: str) -> tuple[CertEntry, ...]:
        """What the directory at url lists for name (a lower-case domain or address);
        () when it lists nothing. Raises DirectoryError."""
        key = (url, name)
        fut = self._pending.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._pending[key] = loop.create_future()
            queue = self._queues.setdefault(url, [])
            queue.append(name)
            if len(queue) >= MAX_BATCH:
                self._flush(url)
            elif url not in self._timers:
                # Idle directory: send what this event-loop turn asked, at once. Busy one:
                # gather for batch_window, since a request is in flight anyway.
                if self._busy.get(url, 0) == 0:
                    self._timers[url] = loop.call_soon(self._flush, url)
                else:
                    self._timers[url] = loop.call_later(self.config.batch_window,
                                                        self._flush, url)
        # shield: one asker giving up must not cancel the answer the others wait for
        return await asyncio.shield(fut)

    def _flush(self, url: str) -> None:
        timer = self._timers.pop(url, None)
        if timer is not None:
            timer.cancel()
        names = self._queues.pop(url, [])
        for i in range(0, len(names), MAX_BATCH):
            task = asyncio.ensure_future(self._send(url, names[i:i + MAX_BATCH]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, url: str, names: list[str]) -> None:
        self._busy[url] = self._busy.get(url, 0) + 1
        try:
            answer = await self._post(url, names)
        except DirectoryError as e:
            if e.status == 400 and len(names) > 1:
                # One name the directory refuses must not sink the others: ask singly.
                await asyncio.gather(*(self._send(url, [n]) for n in names))
                return
            for n in names:
                fut = self._pending.pop((url, n), None)
                if fut is not None and not fut.done():
                    fut.set_exception(e)
                    fut.exception()  # retrieved: no "never retrieved" noise if all gave up
            return
        except BaseException:
            for n in names:
                fut = self._pending.pop((url, n), None)
                if fut is not None and not fut.done():
                    fut.cancel()
            raise
        finally:
            self._busy[url] -= 1
            if not self._busy[url]:
                del self._busy[url]
        for n in names:
            fut = self._pending.pop((url, n), None)
            if fut is not None and not fut.done():
                fut.set_result(answer[n])

    async def _post(self, url: str, names: list[str]) -> dict[str, tuple[CertEntry, ...]]:
        for attempt in range(self.config.retries + 1):
            try:
                return await self._once(url, names)
            except DirectoryError as e:
                if not e.transient or attempt == self.config.retries:
                    raise
                log.info("directory request failed, retrying: %s", e)
                await asyncio.sleep(BACKOFF * 2**attempt)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _once(self, url: str, names: list[str]) -> dict[str, tuple[CertEntry, ...]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={"Accept": "application/json"})
        body = {"domains": [n for n in names if "@" not in n],
                "addresses": [n for n in names if "@" in n]}
        self.requests += 1
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with self._session.post(url.rstrip("/") + "/v1/lookup", json=body) as resp:
                if resp.status != 200:
                    text = (await resp.content.read(300)).decode("utf-8", "replace")
                    raise DirectoryError(
                        url, "http-status", f"HTTP {resp.status}: {text.strip()[:200]}",
                        transient=resp.status >= 500 or resp.status == 429,
                        status=resp.status)
                data = await self._read_limited(url, resp)
            return parse_answer(url, data, names)
        except DirectoryError as e:
            outcome = e.code
            raise
        except TimeoutError:
            outcome = "timeout"
            raise DirectoryError(url, "timeout", f"no answer within {self.config.timeout} s",
                                 transient=True) from None
        except (aiohttp.ClientError, OSError) as e:
            outcome = "unreachable"
            raise DirectoryError(url, "unreachable", str(e) or type(e).__name__,
                                 transient=True) from None
        finally:
            metrics.DIRECTORY_SECONDS.labels(outcome).observe(time.perf_counter() - started)

    async def _read_limited(self, url: str, resp: aiohttp.ClientResponse) -> bytes:
        limit = self.config.max_answer
        if resp.content_length is not None and resp.content_length > limit:
            raise DirectoryError(url, "too-large", f"answer of {resp.content_length} bytes "
                                 f"exceeds lookup.max_answer ({limit})")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise DirectoryError(url, "too-large",
                                     f"answer exceeds lookup.max_answer ({limit} bytes)")
            chunks.append(chunk)
        return b"".join(chunks)
