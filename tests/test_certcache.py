"""The shared-memory certificate cache: behaviour, errors, eviction, file checks, and a
native writer read by the twin and back (one file format)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

from gateway import native
from gateway.lookup import _cache_layout as L
from gateway.lookup import cache
from tests.impls import implementations

pytestmark = pytest.mark.native
IMPLS = implementations("certcache", "gateway.lookup._cache_py")
PAIRS = [pytest.param(w.values[0], r.values[0], id=f"{w.id}-writes-{r.id}-reads")
         for w in IMPLS for r in IMPLS]
NOW = 1_000_000.0
LATER = NOW + 3600


@pytest.fixture
def shm_name() -> Iterator[Callable[[], str]]:
    names: list[str] = []

    def make() -> str:
        names.append(f"smimegate-test-{os.getpid()}-{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield make
    for name in names:
        (L.SHM_DIR / name).unlink(missing_ok=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_put_get_roundtrip(impl: ModuleType, shm_name: Callable[[], str]) -> None:
    name = shm_name()
    with impl.CertCache.create(name, 64, 65536) as w:
        w.put("Beta.TEST", [b"\x30\x82cert-one", bytearray(b"cert-two")], LATER)
        w.put_negative("nobody@beta.test", LATER)
        got = w.get("beta.test", now=NOW)
        assert got == L.CacheEntry((b"\x30\x82cert-one", b"cert-two"), LATER, False)
        assert type(got.ders[1]) is bytes
        assert w.get("NOBODY@beta.test", now=NOW) == L.CacheEntry((), LATER, True)
        assert w.get("gamma.test", now=NOW) is None
        assert len(w) == 2
        s = w.stats()
        assert (s.puts, s.negative_puts, s.hits, s.misses) == (2, 1, 2, 1)
        assert s.writer
        assert s.slots == 64
        assert s.entries == 2


@pytest.mark.parametrize("impl", IMPLS)
def test_update_delete_and_expiry(impl: ModuleType, shm_name: Callable[[], str]) -> None:
    with impl.CertCache.create(shm_name(), 64, 65536) as w:
        w.put("beta.test", [b"v1"], LATER)
        w.put("beta.test", [b"v2", b"chain"], NOW + 10)
        assert w.get("beta.test", now=NOW).ders == (b"v2", b"chain")
        assert len(w) == 1
        # Expired: a miss, unless the caller serves stale while it revalidates.
        assert w.get("beta.test", now=NOW + 10) is None
        stale = w.get("beta.test", now=NOW + 11, allow_stale=True)
        assert stale is not None
        assert stale.ders == (b"v2", b"chain")
        s = w.stats()
        assert (s.hits, s.stale_hits, s.expired_misses, s.misses) == (1, 1, 1, 1)
        assert w.delete("BETA.test") is True
        assert w.delete("beta.test") is False
        assert w.get("beta.test", now=NOW, allow_stale=True) is None
        assert len(w) == 0
        assert w.stats().deletes == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_default_now_is_the_clock(impl: ModuleType, shm_name: Callable[[], str]) -> None:
    import time
    with impl.CertCache.create(shm_name(), 64, 65536) as w:
        w.put("past.test", [b"c"], time.time() - 1)
        w.put("future.test", [b"c"], time.time() + 60)
        assert w.get("past.test") is None
        assert w.get("future.test") is not None


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda c: c.put("", [b"x"], LATER), L.CacheKeyError, "empty"),
        (lambda c: c.put("a" * 256, [b"x"], LATER), L.CacheKeyError, "256 octets"),
        (lambda c: c.get("é" * 128), L.CacheKeyError, "256 octets"),
        (lambda c: c.get(b"beta.test"), L.CacheKeyError, "got bytes"),
        (lambda c: c.put("b.test", b"one-der", LATER), L.CacheArgumentError, "wrap a single"),
        (lambda c: c.put("b.test", [], LATER), L.CacheArgumentError, "put_negative"),
        (lambda c: c.put("b.test", [b""], LATER), L.CacheArgumentError, "ders[0] is empty"),
        (lambda c: c.put("b.test", ["pem"], LATER), L.CacheArgumentError, "ders[0] must be"),
        (lambda c: c.put("b.test", [b"x"] * 257, LATER), L.CacheArgumentError, "at most 256"),
        (lambda c: c.put("b.test", [b"x"], float("nan")), L.CacheArgumentError, "finite"),
        (lambda c: c.put("b.test", [b"x"], "soon"), L.CacheArgumentError, "Unix time"),
        (lambda c: c.get("b.test", now="now"), L.CacheArgumentError, "now must be"),
        (lambda c: c.put("b.test", [b"x" * 70000], LATER), L.EntryTooLargeError, "arena holds"),
    ],
)
def test_bad_input_is_a_precise_error(impl: ModuleType, shm_name: Callable[[], str],
                                      call: Callable[[object], object], error: type,
                                      words: str) -> None:
    with impl.CertCache.create(shm_name(), 64, 65536) as w:
        with pytest.raises(error, match=re.escape(words)):
            call(w)
        assert len(w) == 0
        assert w.stats().puts == 0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("../etc", 64, 65536), "cache name"),
        (("", 64, 65536), "cache name"),
        (("ok", 0, 65536), "entries must be"),
        (("ok", 64, 100), "arena_bytes must be at least"),
        (("ok", 1 << 32, 65536), "entries must be at most"),
    ],
)
def test_bad_geometry(impl: ModuleType, args: tuple[str, int, int], words: str) -> None:
    with pytest.raises(L.CacheArgumentError, match=words):
        impl.CertCache.create(*args)


@pytest.mark.parametrize("impl", IMPLS)
def test_readers_cannot_write_and_closed_handles_refuse(
        impl: ModuleType, shm_name: Callable[[], str]) -> None:
    name = shm_name()
    with impl.CertCache.create(name, 64, 65536) as w:
        w.put("beta.test", [b"c"], LATER)
        r = impl.CertCache.attach(name)
        for call in (lambda: r.put("x.test", [b"c"], LATER),
                     lambda: r.put_negative("x.test", LATER),
                     lambda: r.delete("beta.test"), r.unlink):
            with pytest.raises(L.CacheStateError, match="read-only"):
                call()
        assert not r.stats().writer
        r.close()
        r.close()
        with pytest.raises(L.CacheStateError, match="closed"):
            r.get("beta.test")
    with pytest.raises(L.CacheStateError, match="closed"):
        w.put("beta.test", [b"c"], LATER)


@pytest.mark.parametrize("impl", IMPLS)
def test_attach_checks_the_file(impl: ModuleType, shm_name: Callable[[], str]) -> None:
    with pytest.raises(L.CacheNotFoundError, match="no certificate cache named"):
        impl.CertCache.attach(shm_name())
    path = L.SHM_DIR / shm_name()
    path.write_bytes(b"not a cache at all" * 300)
    with pytest.raises(L.CacheFormatError, match="bad magic"):
        impl.CertCache.attach(path.name)
    # create() will not replace a file that is not a cache.
    with pytest.raises(L.CacheFormatError, match="not replacing"):
        impl.CertCache.create(path.name, 64, 65536)
    path.write_bytes(L.MAGIC)
    with pytest.raises(L.CacheFormatError, match="too short"):
        impl.CertCache.attach(path.name)

    good = shm_name()
    impl.CertCache.create(good, 64, 65536).close()
    raw = (L.SHM_DIR / good).read_bytes()

    def corrupt(offset: int, fmt: str, value: int) -> bytes:
        b = bytearray(raw)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    cases = [
        (corrupt(L.H_VERSION, "<I", 99), "version 99"),
        (corrupt(L.H_ENDIAN, "<I", 0x04030201), "byte order"),
        (corrupt(L.H_SLOT_SIZE, "<I", 64), "slot, set or key size"),
        (corrupt(L.H_SLOT_COUNT, "<Q", 63), "impossible slot count"),
        (corrupt(L.H_SLOT_COUNT, "<Q", 1 << 20), "arena offset"),
        (corrupt(L.H_ARENA_BYTES, "<Q", 12), "impossible arena size"),
        (raw[:-4096], "header says"),
    ]
    for data, words in cases:
        (L.SHM_DIR / good).write_bytes(data)
        with pytest.raises(L.CacheFormatError, match=words):
            impl.CertCache.attach(good)


@pytest.mark.parametrize(("writer", "reader"), PAIRS)
def test_one_file_format(writer: ModuleType, reader: ModuleType,
                         shm_name: Callable[[], str]) -> None:
    """A native writer read by the twin, and the other way round."""
    name = shm_name()
    with writer.CertCache.create(name, 256, 1 << 20, seed=7) as w:
        for i in range(100):
            if i % 10 == 0:
                w.put_negative(f"user{i}@Beta.test", NOW + i)
            else:
                w.put(f"user{i}@Beta.test", [bytes([i]) * (i * 37 + 1), b"ca"], NOW + i)
        w.delete("user5@beta.test")
        with reader.CertCache.attach(name) as r:
            for i in range(100):
                got = r.get(f"USER{i}@beta.test", now=NOW)
                if i == 5 or i == 0:
                    assert got is None  # deleted; expired (expires_at == now)
                elif i % 10 == 0:
                    assert got == L.CacheEntry((), NOW + i, True)
                else:
                    assert got == L.CacheEntry((bytes([i]) * (i * 37 + 1), b"ca"), NOW + i, False)
            assert r.stats().entries == w.stats().entries == 99


@pytest.mark.parametrize("impl", IMPLS)
def test_full_set_evicts_what_expires_first(impl: ModuleType,
                                            shm_name: Callable[[], str]) -> None:
    with impl.CertCache.create(shm_name(), 8, 1 << 20, seed=3) as w:  # one set
        keys = [f"host{i}.example" for i in range(10)]
        expiries = [LATER + 50, LATER + 10, LATER + 70, LATER + 5,
                    LATER + 90, LATER + 60, LATER + 80, LATER + 20]
        for k, e in zip(keys, expiries, strict=False):
            w.put(k, [k.encode()], e)
        w.put(keys[8], [b"ninth"], LATER + 100)  # the set is full: keys[3] goes
        assert w.get(keys[3], now=NOW) is None
        w.put(keys[9], [b"tenth"], LATER + 100)  # then keys[1]
        assert w.get(keys[1], now=NOW) is None
        present = [k for k in keys if w.get(k, now=NOW) is not None]
        assert present == [k for i, k in enumerate(keys) if i not in (1, 3)]
        s = w.stats()
        assert (s.entries, s.evictions_set, s.evictions_arena) == (8, 2, 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_full_arena_evicts_the_oldest(impl: ModuleType, shm_name: Callable[[], str]) -> None:
    with impl.CertCache.create(shm_name(), 1024, 8192, seed=5) as w:
        # Each record: 16 head + 9 key + 4 + 1000 = 1029 -> 1032 bytes; 7 fit in 8192.
        for i in range(20):
            w.put(f"k{i:02d}.test", [bytes([i]) * 1000], LATER)
            alive = [j for j in range(i + 1) if w.get(f"k{j:02d}.test", now=NOW) is not None]
            assert alive == list(range(max(0, i - 6), i + 1))
            assert w.get(f"k{i:02d}.test", now=NOW).ders == (bytes([i]) * 1000,)
        s = w.stats()
        assert s.entries == 7
        assert s.evictions_arena == 13
        assert s.arena_used <= 8192
        # An entry as large as the whole arena fits, alone.
        w.put("big.test", [b"x" * (8192 - 16 - 8 - 4)], LATER)
        assert len(w) == 1
        assert w.get("big.test", now=NOW) is not None


@pytest.mark.parametrize("impl", IMPLS)
def test_a_writer_stuck_mid_update_costs_a_miss_not_a_hang(
        impl: ModuleType, shm_name: Callable[[], str]) -> None:
    name = shm_name()
    with impl.CertCache.create(name, 8, 65536, seed=1) as w:
        w.put("beta.test", [b"c"], LATER)
        with impl.CertCache.attach(name) as r:
            slot = next(i for i in range(8) if struct.unpack_from(
                "<I", w_bytes(name), L.HEADER_SIZE + i * L.SLOT_SIZE + L.S_LEN)[0])
            seq_at = L.HEADER_SIZE + slot * L.SLOT_SIZE
            poke(name, seq_at, struct.pack("<I", 5))  # odd: as if the writer died in there
            assert r.get("beta.test", now=NOW) is None
            s = r.stats()
            assert (s.torn_retries, s.torn_misses, s.misses) == (L.MAX_RETRIES, 1, 1)
            poke(name, seq_at, struct.pack("<I", 6))
            assert r.get("beta.test", now=NOW) is not None


@pytest.mark.parametrize("impl", IMPLS)
def test_a_corrupt_record_is_reported(impl: ModuleType, shm_name: Callable[[], str]) -> None:
    name = shm_name()
    with impl.CertCache.create(name, 8, 65536, seed=1) as w:
        w.put("beta.test", [b"cert"], LATER)
        arena = L.plan_layout(8, 65536, 1).arena_offset
        poke(name, arena + L.R_NDERS, struct.pack("<I", 1000))
        with pytest.raises(L.CacheFormatError, match="malformed record"):
            w.get("beta.test", now=NOW)


@pytest.mark.parametrize("impl", IMPLS)
def test_recreate_moves_readers_and_unlink_empties(impl: ModuleType,
                                                   shm_name: Callable[[], str]) -> None:
    name = shm_name()
    w1 = impl.CertCache.create(name, 64, 65536)
    w1.put("beta.test", [b"old"], LATER)
    r = impl.CertCache.attach(name)
    assert r.get("beta.test", now=NOW).ders == (b"old",)
    # The front end restarts: a new file replaces the old; the reader follows it.
    w2 = impl.CertCache.create(name, 128, 65536)
    w2.put("beta.test", [b"new"], LATER)
    assert r.get("beta.test", now=NOW).ders == (b"new",)
    assert w1.get("beta.test", now=NOW).ders == (b"old",)  # a writer stays on its file
    assert r.stats().slots == 128
    w1.close()
    w2.unlink()
    assert r.get("beta.test", now=NOW) is None
    assert not (L.SHM_DIR / name).exists()
    w2.close()
    r.close()


READ_IN_A_NEW_PROCESS = """
import importlib, sys
impl = importlib.import_module(sys.argv[1])
with impl.CertCache.attach(sys.argv[2]) as r:
    e = r.get("beta.test", now=1000000.0)
    print(e.ders[0].decode() if e else "miss", r.stats().entries)
"""


@pytest.mark.parametrize("impl", IMPLS)
def test_workers_restart_and_reattach(impl: ModuleType, shm_name: Callable[[], str]) -> None:
    name = shm_name()
    with impl.CertCache.create(name, 64, 65536) as w:
        outputs = []
        for version in ("one", "two"):
            w.put("beta.test", [version.encode()], LATER)
            w.put(f"{version}.test", [b"x"], LATER)
            for reader in IMPLS:
                run = subprocess.run(
                    [sys.executable, "-c", READ_IN_A_NEW_PROCESS, reader.values[0].__name__,
                     name], capture_output=True, text=True, timeout=60, check=True)
                outputs.append(run.stdout.split())
    n = len(IMPLS)
    assert outputs == [["one", "2"]] * n + [["two", "3"]] * n


def test_the_facade_picks_the_build() -> None:
    assert native.active("certcache") == cache.IMPLEMENTATION
    assert cache.CertCache.__module__ == (
        "gateway.lookup._cache_py" if cache.IMPLEMENTATION == "python"
        else "gateway._ext.certcache")


def w_bytes(name: str) -> bytes:
    return (L.SHM_DIR / name).read_bytes()


def poke(name: str, offset: int, data: bytes) -> None:
    fd = os.open(L.SHM_DIR / name, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_table_fills_before_sets_evict(impl: ModuleType, shm_name: Callable[[], str]) -> None:
    """Two choices of set and a well-mixed hash: 78 % full costs (almost) no eviction."""
    with impl.CertCache.create(shm_name(), 4096, 1 << 20, seed=5) as w:
        for i in range(3200):
            w.put(f"user{i}@org{i % 50}.test", [b"c"], LATER)
        s = w.stats()
        assert s.evictions_set <= 32
        assert s.entries == 3200 - s.evictions_set
