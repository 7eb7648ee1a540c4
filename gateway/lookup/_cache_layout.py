"""The shared-memory certificate cache's file layout, record format, errors and types.

Shared by the pure-Python twin (`_cache_py`, the specification) and the native module
(`_native/certcache.pyx`), so that both read and write the very same bytes: a file made
by one is read by the other. No RFC governs it; it is this project's own format.

The file is `/dev/shm/<name>`, a plain tmpfs file opened with mmap by name (not
`multiprocessing.shared_memory`, whose resource tracker unlinks segments that other
processes still use). All integers are little-endian.

    offset 0            header, 4096 bytes (layout below, H_* constants)
    offset 4096         slot table: slot_count slots of 32 bytes, in sets of WAYS = 8
    arena_offset        data arena: arena_bytes bytes, a ring of 8-aligned records

A slot (S_* constants): u32 seq | u32 rec_len (0 = empty) | u64 key hash |
u64 record offset in the arena | f64 expiry (Unix time). A record (R_* constants):
u32 rec_len | u32 owning slot (PAD_SLOT for padding) | u16 key length | u8 flags |
u8 0 | u32 certificate count | key (UTF-8) | u32 length of each DER | the DERs | zeros
to the next multiple of 8.

A key lives in one of two sets of 8 slots (`candidate_sets`): set h % nsets and set
rot32(h) % nsets, where h = key_hash(key, seed) and nsets = slot_count / WAYS; a new key
goes to the one with more empty slots. Eviction, the documented policy: when both of a
key's sets are full, the slot among those 16 that expires first is reused (expired ones
first of all); when the arena is full, the oldest records are dropped (the arena is a
log written in a ring, so space is reclaimed in the order it was written, FIFO).
Readers never write to the file; they map it read-only.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.lookup._cache_types import (
    CacheArgumentError,
    CacheEntry,
    CacheError,
    CacheFormatError,
    CacheKeyError,
    CacheNotFoundError,
    CacheStateError,
    CacheStats,
    EntryTooLargeError,
)

__all__ = [
    "CacheArgumentError",
    "CacheEntry",
    "CacheError",
    "CacheFormatError",
    "CacheKeyError",
    "CacheNotFoundError",
    "CacheStateError",
    "CacheStats",
    "EntryTooLargeError",
]
MAGIC = b"SMGCERT\x00"
VERSION = 1
HEADER_SIZE = 4096
SLOT_SIZE = 32
WAYS = 8
MAX_KEY = 255  # octets of UTF-8; an address is at most 254 (RFC 5321 §4.5.3.1.3)
MAX_DERS = 256  # certificates in one entry
ENDIAN_MARK = 0x01020304
PAD_SLOT = 0xFFFFFFFF
MAX_SLOTS = 1 << 31
MIN_ARENA = 4096
MAX_RECORD = 1 << 31
MAX_RETRIES = 64  # a reader's tries at one slot before it reports a miss
FLAG_NEGATIVE = 1
SHM_DIR = Path("/dev/shm")  # noqa: S108  (POSIX shared memory's home, on purpose)

# Header. Fixed at creation:
H_MAGIC = 0  # 8s
H_VERSION = 8  # u32
H_HEADER_SIZE = 12  # u32
H_SLOT_SIZE = 16  # u32
H_WAYS = 20  # u32
H_SLOT_COUNT = 24  # u64
H_ARENA_OFFSET = 32  # u64
H_ARENA_BYTES = 40  # u64
H_FILE_SIZE = 48  # u64
H_HASH_SEED = 56  # u64
H_MAX_KEY = 64  # u32
H_ENDIAN = 68  # u32
H_CREATED_NS = 72  # u64
H_RETIRED = 80  # u32: 1 once a newer file replaced this one or it was unlinked
H_WRITER_PID = 84  # u32
FIXED_FORMAT = "<8sIIIIQQQQQIIQII"
# Writer state (its own cache line; only the writer writes it):
H_HEAD = 128  # u64: virtual position of the next record
H_TAIL = 136  # u64: virtual position of the oldest record
H_LIVE = 144  # u64: occupied slots
# Writer-side counters, read by everyone for metrics:
H_PUTS = 192
H_NEGATIVE_PUTS = 200
H_DELETES = 208
H_EVICTIONS_SET = 216  # a full set made room
H_EVICTIONS_ARENA = 224  # a full arena made room

# Slot fields.
S_SEQ = 0  # u32, odd while the writer changes the slot (a seqlock)
S_LEN = 4  # u32
S_HASH = 8  # u64
S_OFF = 16  # u64
S_EXP = 24  # f64
SLOT_FIELDS = "<IQQd"  # rec_len, hash, offset, expiry: read at S_LEN

# Record fields.
R_LEN = 0  # u32
R_SLOT = 4  # u32
R_KEYLEN = 8  # u16
R_FLAGS = 10  # u8
R_NDERS = 12  # u32
RECORD_HEAD = 16
RECORD_HEAD_FORMAT = "<IIHBxI"

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


@dataclass(frozen=True, slots=True)
class Layout:
    """The geometry of one cache file, read from (or written to) its header."""

    slot_count: int
    arena_offset: int
    arena_bytes: int
    file_size: int
    seed: int

    @property
    def nsets(self) -> int:
        return self.slot_count // WAYS


def round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def plan_layout(entries: int, arena_bytes: int, seed: int) -> Layout:
    """The layout for at least `entries` slots and `arena_bytes` of certificates."""
    if isinstance(entries, bool) or not isinstance(entries, int) or entries < 1:
        raise CacheArgumentError(f"entries must be a positive int, got {entries!r}")
    if isinstance(arena_bytes, bool) or not isinstance(arena_bytes, int):
        raise CacheArgumentError(f"arena_bytes must be an int, got {arena_bytes!r}")
    if arena_bytes < MIN_ARENA:
        raise CacheArgumentError(f"arena_bytes must be at least {MIN_ARENA}, got {arena_bytes}")
    slot_count = round_up(entries, WAYS)
    if slot_count > MAX_SLOTS:
        raise CacheArgumentError(f"entries must be at most {MAX_SLOTS}, got {entries}")
    arena_offset = round_up(HEADER_SIZE + slot_count * SLOT_SIZE, mmap.PAGESIZE)
    arena = round_up(arena_bytes, mmap.PAGESIZE)
    return Layout(slot_count, arena_offset, arena, arena_offset + arena, seed & MASK64)


def key_hash(data: bytes, seed: int) -> int:
    """FNV-1a, 64 bits, then MurmurHash3's fmix64 finaliser: FNV alone spreads similar
    keys (user1@..., user2@...) so unevenly over sets that a table 80 % full evicted
    100 times more than with a random hash. The file's seed is folded into the offset
    basis, so which keys share a set differs from one cache file to the next."""
    h = FNV_OFFSET ^ seed
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK64
    return h ^ (h >> 33)


def candidate_sets(h: int, nsets: int) -> tuple[int, ...]:
    """First slot of each set a key with hash h may live in: two choices (one when both
    are the same set), which lets a table fill to about 85 % before sets start to evict."""
    one = h % nsets
    two = (((h >> 32) | (h << 32)) & MASK64) % nsets
    return (one * WAYS,) if one == two else (one * WAYS, two * WAYS)


def encode_key(key: object) -> bytes:
    """The stored form of a key: lower-cased, UTF-8."""
    if not isinstance(key, str):
        raise CacheKeyError(
            f"a cache key is a domain or an address (str), got {type(key).__name__}")
    kb = key.lower().encode("utf-8", "surrogatepass")
    if not kb:
        raise CacheKeyError("a cache key cannot be empty")
    if len(kb) > MAX_KEY:
        raise CacheKeyError(f"cache key of {len(kb)} octets is longer than {MAX_KEY}: "
                            f"{key[:40]!r}...")
    return kb


def check_expiry(expires_at: object) -> float:
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        raise CacheArgumentError(f"expires_at must be a Unix time (float), got {expires_at!r}")
    value = float(expires_at)
    if not math.isfinite(value):
        raise CacheArgumentError(f"expires_at must be finite, got {value!r}")
    return value


def check_time(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float):
        raise CacheArgumentError(f"now must be a Unix time (float) or None, got {now!r}")
    return float(now)


def check_ders(ders: object) -> list[bytes]:
    if isinstance(ders, bytes | bytearray | memoryview | str):
        raise CacheArgumentError(
            f"ders must be a sequence of DER certificates, not one {type(ders).__name__}: "
            "wrap a single certificate in a list")
    if not isinstance(ders, Sequence):
        raise CacheArgumentError(f"ders must be a sequence of bytes, got {type(ders).__name__}")
    if not ders:
        raise CacheArgumentError("ders is empty: cache 'no certificate' with put_negative()")
    if len(ders) > MAX_DERS:
        raise CacheArgumentError(f"{len(ders)} certificates in one entry; at most {MAX_DERS}")
    out = []
    for i, der in enumerate(ders):
        if not isinstance(der, bytes | bytearray | memoryview):
            raise CacheArgumentError(f"ders[{i}] must be bytes, got {type(der).__name__}")
        b = bytes(der)
        if not b:
            raise CacheArgumentError(f"ders[{i}] is empty")
        out.append(b)
    return out


def build_record(kb: bytes, ders: list[bytes], flags: int, arena_bytes: int) -> bytearray:
    """The arena record for an entry, owner slot still 0 (set when it is placed)."""
    body = len(kb) + 4 * len(ders) + sum(len(d) for d in ders)
    rec_len = round_up(RECORD_HEAD + body, 8)
    if rec_len > arena_bytes or rec_len > MAX_RECORD:
        raise EntryTooLargeError(
            f"entry for {kb[:40]!r} needs {rec_len} bytes; the arena holds {arena_bytes}")
    rec = bytearray(rec_len)
    struct.pack_into(RECORD_HEAD_FORMAT, rec, 0, rec_len, 0, len(kb), flags, len(ders))
    pos = RECORD_HEAD
    rec[pos:pos + len(kb)] = kb
    pos += len(kb)
    struct.pack_into(f"<{len(ders)}I", rec, pos, *(len(d) for d in ders))
    pos += 4 * len(ders)
    for d in ders:
        rec[pos:pos + len(d)] = d
        pos += len(d)
    return rec


def parse_record(rec: bytes, kb: bytes, path: str) -> tuple[bool, tuple[bytes, ...]] | None:
    """(negative, ders) of a record copied out of the arena, or None if it is another
    key's. The caller has checked the slot's sequence, so a malformed record here is a
    corrupt file, not a race."""
    rec_len, _slot, klen, flags, n = struct.unpack_from(RECORD_HEAD_FORMAT, rec, 0)
    if klen != len(kb) or rec[RECORD_HEAD:RECORD_HEAD + klen] != kb:
        return None
    pos = RECORD_HEAD + klen
    if rec_len != len(rec) or n > MAX_DERS or pos + 4 * n > rec_len:
        raise CacheFormatError(path, f"malformed record for {kb[:40]!r}")
    lengths = struct.unpack_from(f"<{n}I", rec, pos)
    pos += 4 * n
    if pos + sum(lengths) > rec_len:
        raise CacheFormatError(path, f"malformed record for {kb[:40]!r}")
    ders = []
    for length in lengths:
        ders.append(rec[pos:pos + length])
        pos += length
    return bool(flags & FLAG_NEGATIVE), tuple(ders)


def shm_path(name: object) -> Path:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise CacheArgumentError(
            f"cache name must be 1-200 of A-Z a-z 0-9 _ . - (not starting with . or -), "
            f"got {name!r}")
    return SHM_DIR / name


def check_header(buf: bytes, size: int, path: str) -> Layout:
    """The layout a file's header describes, after checking that it is ours, of this
    version, and that its geometry adds up to the file's size."""
    if size < HEADER_SIZE:
        raise CacheFormatError(path, f"{size} bytes is too short for a certificate cache")
    (magic, version, header_size, slot_size, ways, slot_count, arena_offset, arena_bytes,
     file_size, seed, max_key, endian, _created, _retired, _pid) = struct.unpack_from(
        FIXED_FORMAT, buf, 0)
    if magic != MAGIC:
        raise CacheFormatError(path, "not a certificate cache (bad magic)")
    if version != VERSION:
        raise CacheFormatError(path, f"cache format version {version}; this code reads {VERSION}")
    if endian != ENDIAN_MARK:
        raise CacheFormatError(path, "written with another byte order")
    if (header_size, slot_size, ways, max_key) != (HEADER_SIZE, SLOT_SIZE, WAYS, MAX_KEY):
        raise CacheFormatError(path, "header, slot, set or key size differs from this code's")
    if slot_count == 0 or slot_count % WAYS or slot_count > MAX_SLOTS:
        raise CacheFormatError(path, f"impossible slot count {slot_count}")
    if arena_offset != round_up(HEADER_SIZE + slot_count * SLOT_SIZE, mmap.PAGESIZE):
        raise CacheFormatError(path, "arena offset does not follow from the slot count")
    if arena_bytes < MIN_ARENA or arena_bytes % 8:
        raise CacheFormatError(path, f"impossible arena size {arena_bytes}")
    if file_size != arena_offset + arena_bytes or file_size != size:
        raise CacheFormatError(path, f"file is {size} bytes; its header says {file_size}")
    return Layout(slot_count, arena_offset, arena_bytes, file_size, seed)


@dataclass(slots=True)
class Mapping:
    """One cache file mapped into this process."""

    path: Path
    mm: mmap.mmap
    layout: Layout
    identity: tuple[int, int]  # (st_dev, st_ino): tells a replaced file from this one
    writable: bool


def _header_bytes(layout: Layout) -> bytes:
    fixed = struct.pack(FIXED_FORMAT, MAGIC, VERSION, HEADER_SIZE, SLOT_SIZE, WAYS,
                        layout.slot_count, layout.arena_offset, layout.arena_bytes,
                        layout.file_size, layout.seed, MAX_KEY, ENDIAN_MARK,
                        time.time_ns(), 0, os.getpid() & 0xFFFFFFFF)
    return fixed


def create_mapping(name: str, entries: int, arena_bytes: int, seed: int | None) -> Mapping:
    """A new, empty cache file under `name`, made beside it and renamed into place so
    that no reader ever maps a half-made file. A cache file already there is marked
    retired, and readers attached to it move to the new one; any other file there is
    left alone and refused."""
    path = shm_path(name)
    layout = plan_layout(entries, arena_bytes,
                         int.from_bytes(os.urandom(8), "little") if seed is None else seed)
    old = _open_existing_for_retire(path)
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, layout.file_size)
        mm = mmap.mmap(fd, layout.file_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    mm[0:HEADER_SIZE] = _header_bytes(layout).ljust(HEADER_SIZE, b"\0")
    os.rename(tmp, path)
    if old is not None:
        # After the rename, so that a reader who sees the flag finds the new file.
        struct.pack_into("<I", old, H_RETIRED, 1)
        old.close()
    return Mapping(path, mm, layout, (st.st_dev, st.st_ino), True)


def _open_existing_for_retire(path: Path) -> mmap.mmap | None:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, len(MAGIC), 0)
        if head != MAGIC:
            raise CacheFormatError(path, "exists and is not a certificate cache; not replacing it")
        if size < HEADER_SIZE:
            return None  # ours but truncated: nobody can be reading it
        return mmap.mmap(fd, HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def open_mapping(name: str) -> Mapping:
    """The cache file `name`, mapped read-only and checked."""
    path = shm_path(name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise CacheNotFoundError(f"no certificate cache named {name!r} ({path})") from None
    except PermissionError:
        raise CacheNotFoundError(f"{path}: permission denied") from None
    try:
        st = os.fstat(fd)
        head = os.pread(fd, HEADER_SIZE, 0)
        layout = check_header(head, st.st_size, str(path))
        mm = mmap.mmap(fd, layout.file_size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    return Mapping(path, mm, layout, (st.st_dev, st.st_ino), False)


def current_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
