"""Readers in other processes never see a torn entry while the writer hammers the cache.

A writer process keeps replacing, deleting and evicting (a cramped arena and table)
the entries of a few keys; reader processes of both implementations read them for the
same time and check every answer: each entry carries its key and version, its
certificates are a function of both and end with their SHA-256, and the version is also
in the slot's expiry, so a mix of two versions, a record of another key, or fields of
one write with the record of another all fail the check.
"""

from __future__ import annotations

import hashlib
import importlib
import multiprocessing as mp
import os
import random
import time
import uuid
from typing import Any

import pytest

from gateway.lookup import _cache_layout as L
from tests.impls import implementations

pytestmark = [pytest.mark.native, pytest.mark.slow]
MODULE_NAMES = [p.values[0].__name__ for p in implementations(
    "certcache", "gateway.lookup._cache_py")]
KEYS = [f"k{i}.test" for i in range(12)]
BASE = 2_000_000_000.0  # expires_at = BASE + version: far future, and carries the version
SECONDS = 1.2


def ders_for(key: str, version: int, rnd: random.Random) -> list[bytes]:
    body = [f"{key}|{version}".encode()]
    body += [rnd.randbytes(rnd.randint(1, 1500)) for _ in range(rnd.randint(0, 3))]
    return [*body, hashlib.sha256(b"".join(body)).digest()]


def check(key: str, entry: Any) -> str | None:
    """What is wrong with an entry read for key, or None."""
    version = int(entry.expires_at - BASE)
    if entry.negative:
        return None if entry.ders == () and version % 7 == 0 else f"bad negative {entry}"
    ders = entry.ders
    if ders[0] != f"{key}|{version}".encode() or ders[-1] != hashlib.sha256(
            b"".join(ders[:-1])).digest():
        return f"{key}: version {version} in the slot, ders {[d[:40] for d in ders]!r}"
    return None


def writer(module: str, name: str, ready: Any, stop: Any, out: Any) -> None:
    impl = importlib.import_module(module)
    w = impl.CertCache.create(name, 8, 16 * 1024, seed=11)
    rnd = random.Random(1)
    version = 0
    ready.set()
    while not stop.is_set():
        for _ in range(50):
            key = rnd.choice(KEYS)
            version += 1
            if rnd.random() < 0.05:
                w.delete(key)
            elif version % 7 == 0:
                w.put_negative(key, BASE + version)
            else:
                w.put(key, ders_for(key, version, rnd), BASE + version)
    s = w.stats()
    out.put(("writer", version, s.evictions_set + s.evictions_arena))
    w.close()


def reader(module: str, name: str, seconds: float, out: Any) -> None:
    impl = importlib.import_module(module)
    r = impl.CertCache.attach(name)
    rnd = random.Random()
    reads = hits = 0
    problems: list[str] = []
    stop_at = time.monotonic() + seconds  # from when this process is ready
    while time.monotonic() < stop_at:
        key = rnd.choice(KEYS)
        try:
            entry = r.get(key, now=BASE)
        except Exception as e:  # a torn record may look malformed: report, not hang
            problems.append(f"{key}: {e!r}")
            break
        reads += 1
        if entry is not None:
            hits += 1
            problem = check(key, entry)
            if problem and len(problems) < 5:
                problems.append(problem)
    s = r.stats()
    out.put(("reader", module, reads, hits, s.torn_retries, problems))
    r.close()


@pytest.mark.parametrize("writer_module", MODULE_NAMES)
def test_readers_never_see_a_torn_entry(writer_module: str) -> None:
    ctx = mp.get_context("spawn")
    name = f"smimegate-procs-{os.getpid()}-{uuid.uuid4().hex[:10]}"
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    w = ctx.Process(target=writer, args=(writer_module, name, ready, stop, out))
    w.start()
    readers: list[Any] = []
    try:
        assert ready.wait(60), "writer did not start"
        readers = [ctx.Process(target=reader, args=(m, name, SECONDS, out))
                   for m in MODULE_NAMES]
        for p in readers:
            p.start()
        results = [out.get(timeout=60) for _ in readers]
        stop.set()
        results.append(out.get(timeout=60))
    finally:
        stop.set()
        for p in [w, *readers]:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
        (L.SHM_DIR / name).unlink(missing_ok=True)
    assert all(p.exitcode == 0 for p in [w, *readers])
    writes = next(r for r in results if r[0] == "writer")
    assert writes[1] > 100
    assert writes[2] > 0
    for _, module, reads, hits, _torn, problems in (r for r in results if r[0] == "reader"):
        assert problems == [], (module, problems)
        assert hits > 0, (module, reads, hits)
        assert reads > hits, (module, reads, hits)
