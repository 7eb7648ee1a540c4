"""Pure-Python twin (and specification) of _native/certcache.pyx: the shared-memory
certificate cache.

One writer (the front end) creates the file and puts entries; any number of readers
(crypto workers) attach by name and get them, with no IPC: a hit is a read of shared
memory. The file layout, record format and eviction policy are in `_cache_layout`.

Consistency (a reader never sees a torn entry): every slot is a seqlock. The writer
first writes a new record into free arena space, then makes the slot's sequence odd,
changes the slot's fields, and makes it even again. A reader reads the sequence, the
fields and the record, then the sequence again, and keeps what it read only if the
sequence was even and unchanged; otherwise it tries again, MAX_RETRIES times at most,
and then reports a miss. Arena space is reused only after every slot pointing into it
was changed (sequence bumped), so a reader copying reused bytes always sees the bump.

Why this is safe in Python: each load and store here is one `struct` or slice call on
the mmap, a separate C call that the compiler cannot move past another; the 4-byte
sequence is aligned, so it is read and written whole; and x86-64 keeps stores in
program order and loads in program order (TSO), which is all a seqlock needs beyond
that. On a weakly ordered CPU (ARM) the twin would need barriers Python cannot give:
there, use the native module, which issues them explicitly.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from types import TracebackType

from gateway.lookup._cache_layout import (
    FLAG_NEGATIVE,
    H_DELETES,
    H_EVICTIONS_ARENA,
    H_EVICTIONS_SET,
    H_HEAD,
    H_LIVE,
    H_NEGATIVE_PUTS,
    H_PUTS,
    H_RETIRED,
    H_TAIL,
    HEADER_SIZE,
    MAX_RETRIES,
    PAD_SLOT,
    R_KEYLEN,
    R_LEN,
    R_SLOT,
    RECORD_HEAD,
    S_LEN,
    S_SEQ,
    SLOT_FIELDS,
    SLOT_SIZE,
    WAYS,
    CacheArgumentError,
    CacheEntry,
    CacheError,
    CacheFormatError,
    CacheKeyError,
    CacheNotFoundError,
    CacheStateError,
    CacheStats,
    EntryTooLargeError,
    Mapping,
    build_record,
    candidate_sets,
    check_ders,
    check_expiry,
    check_time,
    create_mapping,
    current_identity,
    encode_key,
    key_hash,
    open_mapping,
    parse_record,
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
    "CertCache",
    "EntryTooLargeError",
]

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SLOT = struct.Struct(SLOT_FIELDS)
_NOT_HERE = object()  # a slot that turned out to hold another key


class CertCache:
    """A handle on one cache file: the writer's (create) or a reader's (attach)."""

    def __init__(self, mapping: Mapping, name: str) -> None:
        self._map: Mapping | None = mapping
        self._name = name
        self._set_geometry(mapping)
        # This process's reader-side counters.
        self._hits = self._stale_hits = self._misses = 0
        self._expired_misses = self._torn_retries = self._torn_misses = 0

    @classmethod
    def create(cls, name: str, entries: int, arena_bytes: int,
               seed: int | None = None) -> CertCache:
        """The writer's handle on a new, empty cache `name` in /dev/shm."""
        return cls(create_mapping(name, entries, arena_bytes, seed), name)

    @classmethod
    def attach(cls, name: str) -> CertCache:
        """A reader's handle on the existing cache `name` (mapped read-only)."""
        return cls(open_mapping(name), name)

    def _set_geometry(self, mapping: Mapping) -> None:
        lay = mapping.layout
        self._mm = mapping.mm
        self._slot_count = lay.slot_count
        self._nsets = lay.nsets
        self._arena_off = lay.arena_offset
        self._arena_bytes = lay.arena_bytes
        self._seed = lay.seed

    # ------------------------------------------------------------------ readers

    def get(self, key: str, now: float | None = None,
            allow_stale: bool = False) -> CacheEntry | None:
        """The entry for `key`, or None. An expired entry is a miss unless allow_stale,
        for serving stale while revalidating."""
        mm = self._live_mm()
        kb = encode_key(key)
        # A reader follows a replaced file; the writer keeps answering from its own.
        if (not self._is_writer() and _U32.unpack_from(mm, H_RETIRED)[0]
                and not self._follow()):
            self._misses += 1
            return None
        mm = self._mm
        t = time.time() if now is None else check_time(now)
        h = key_hash(kb, self._seed)
        for first in candidate_sets(h, self._nsets):
            base = HEADER_SIZE + first * SLOT_SIZE
            # Candidates from one unsynchronised copy of the set; a candidate is read
            # properly below. A key being changed right now may be passed over: a miss.
            snapshot = mm[base:base + WAYS * SLOT_SIZE]
            for way in range(WAYS):
                if _U64.unpack_from(snapshot, way * SLOT_SIZE + 8)[0] != h:
                    continue
                got = self._read_slot(base + way * SLOT_SIZE, kb, h, t, allow_stale)
                if got is not _NOT_HERE:
                    return got  # type: ignore[return-value]
        self._misses += 1
        return None

    def _read_slot(self, so: int, kb: bytes, h: int, now: float,
                   allow_stale: bool) -> CacheEntry | object | None:
        mm = self._mm
        for _ in range(MAX_RETRIES):
            seq = _U32.unpack_from(mm, so + S_SEQ)[0]
            if seq & 1:
                self._torn_retries += 1
                continue
            rec_len, hh, off, exp = _SLOT.unpack_from(mm, so + S_LEN)
            if rec_len == 0 or hh != h:
                return _NOT_HERE
            rec: bytes | None = None  # stays None if the fields point outside the arena
            if rec_len >= RECORD_HEAD and off + rec_len <= self._arena_bytes:
                start = self._arena_off + off
                rec = mm[start:start + rec_len]
            if _U32.unpack_from(mm, so + S_SEQ)[0] != seq:
                self._torn_retries += 1  # the writer was here: what we read may be torn
                continue
            if rec is None:
                raise CacheFormatError(self._map_path(), f"slot {(so - HEADER_SIZE) // SLOT_SIZE}"
                                       " points outside the arena")
            parsed = parse_record(rec, kb, self._map_path())
            if parsed is None:
                return _NOT_HERE
            negative, ders = parsed
            if exp <= now:
                if not allow_stale:
                    self._expired_misses += 1
                    self._misses += 1
                    return None
                self._stale_hits += 1
            else:
                self._hits += 1
            return CacheEntry(ders, exp, negative)
        self._torn_misses += 1
        self._misses += 1
        return None

    def _follow(self) -> bool:
        """After the writer replaced the file: move to the new one. False if there is
        none yet (every get is then a miss)."""
        assert self._map is not None
        identity = current_identity(self._map.path)
        if identity is None or identity == self._map.identity:
            return False
        try:
            new = open_mapping(self._name)
        except (CacheNotFoundError, CacheFormatError):
            return False
        self._map.mm.close()
        self._map = new
        self._set_geometry(new)
        return True

    # ------------------------------------------------------------------- writer

    def put(self, key: str, ders: list[bytes] | tuple[bytes, ...], expires_at: float) -> None:
        """Store the certificates for `key` until `expires_at` (Unix time)."""
        self._writer_mm()
        kb = encode_key(key)
        rec = build_record(kb, check_ders(ders), 0, self._arena_bytes)
        self._store(kb, rec, check_expiry(expires_at))
        self._bump(H_PUTS)

    def put_negative(self, key: str, expires_at: float) -> None:
        """Remember that `key` has no certificate, until `expires_at`."""
        self._writer_mm()
        kb = encode_key(key)
        rec = build_record(kb, [], FLAG_NEGATIVE, self._arena_bytes)
        self._store(kb, rec, check_expiry(expires_at))
        self._bump(H_PUTS)
        self._bump(H_NEGATIVE_PUTS)

    def delete(self, key: str) -> bool:
        """Drop `key`; whether it was there."""
        self._writer_mm()
        kb = encode_key(key)
        h = key_hash(kb, self._seed)
        slot = self._find(kb, h)
        if slot < 0:
            return False
        self._write_slot(slot, 0, 0, 0, 0.0)
        self._add(H_LIVE, -1)
        self._bump(H_DELETES)
        return True

    def _store(self, kb: bytes, rec: bytearray, expires_at: float) -> None:
        h = key_hash(kb, self._seed)
        off = self._alloc(len(rec))  # may evict, even this key's own slot
        slot = self._find(kb, h)
        if slot < 0:
            slot = self._free_or_victim(h)
        struct.pack_into("<I", rec, R_SLOT, slot)
        start = self._arena_off + off
        self._mm[start:start + len(rec)] = rec  # into free space: nobody points here
        self._write_slot(slot, len(rec), h, off, expires_at)

    def _write_slot(self, slot: int, rec_len: int, h: int, off: int, exp: float) -> None:
        mm = self._mm
        so = HEADER_SIZE + slot * SLOT_SIZE
        seq = _U32.unpack_from(mm, so)[0]
        _U32.pack_into(mm, so, (seq + 1) & 0xFFFFFFFF)
        _SLOT.pack_into(mm, so + S_LEN, rec_len, h, off, exp)
        _U32.pack_into(mm, so, (seq + 2) & 0xFFFFFFFF)

    def _find(self, kb: bytes, h: int) -> int:
        """The slot holding `kb`, or -1. The writer reads its own writes: no seqlock."""
        mm = self._mm
        for first in candidate_sets(h, self._nsets):
            for slot in range(first, first + WAYS):
                rec_len, hh, off, _exp = _SLOT.unpack_from(
                    mm, HEADER_SIZE + slot * SLOT_SIZE + S_LEN)
                if rec_len and hh == h:
                    start = self._arena_off + off
                    klen = _U16.unpack_from(mm, start + R_KEYLEN)[0]
                    if klen == len(kb) and mm[start + RECORD_HEAD:start + RECORD_HEAD + klen] == kb:
                        return slot
        return -1

    def _free_or_victim(self, h: int) -> int:
        """The first empty slot of whichever of the key's two sets has more empty slots
        (the first set on a tie); if both are full, the slot of the two sets that
        expires first (the earliest in set order on a tie), which is evicted."""
        mm = self._mm
        best, best_free = -1, 0
        victim, victim_exp = -1, 0.0
        for first in candidate_sets(h, self._nsets):
            free, first_free = 0, -1
            for slot in range(first, first + WAYS):
                rec_len, _h, _off, exp = _SLOT.unpack_from(
                    mm, HEADER_SIZE + slot * SLOT_SIZE + S_LEN)
                if rec_len == 0:
                    free += 1
                    if first_free < 0:
                        first_free = slot
                elif victim < 0 or exp < victim_exp:
                    victim, victim_exp = slot, exp
            if free > best_free:
                best, best_free = first_free, free
        if best >= 0:
            self._add(H_LIVE, 1)
            return best
        self._bump(H_EVICTIONS_SET)
        return victim

    def _alloc(self, need: int) -> int:
        """Arena offset of `need` free bytes at the head of the ring, reclaiming the
        oldest records first. A record never wraps: the end is padded instead."""
        mm = self._mm
        size = self._arena_bytes
        head: int = _U64.unpack_from(mm, H_HEAD)[0]
        phys = head % size
        if phys + need > size:
            pad = size - phys
            self._reclaim(head + pad - size)
            struct.pack_into("<II", mm, self._arena_off + phys + R_LEN, pad, PAD_SLOT)
            head += pad
            phys = 0
        self._reclaim(head + need - size)
        _U64.pack_into(mm, H_HEAD, head + need)
        return phys

    def _reclaim(self, upto: int) -> None:
        """Drop records from the tail until the tail is at or past `upto`."""
        mm = self._mm
        tail = _U64.unpack_from(mm, H_TAIL)[0]
        size = self._arena_bytes
        while tail < upto:
            phys = tail % size
            rec_len, slot = struct.unpack_from("<II", mm, self._arena_off + phys)
            if rec_len < 8 or rec_len % 8 or phys + rec_len > size:
                raise CacheFormatError(self._map_path(), f"arena corrupt at {phys}")
            if slot != PAD_SLOT and slot < self._slot_count:
                so = HEADER_SIZE + slot * SLOT_SIZE
                s_len, _h, s_off, _exp = _SLOT.unpack_from(mm, so + S_LEN)
                if s_len and s_off == phys:  # still the slot's current record
                    self._write_slot(slot, 0, 0, 0, 0.0)
                    self._add(H_LIVE, -1)
                    self._bump(H_EVICTIONS_ARENA)
            tail += rec_len
        _U64.pack_into(mm, H_TAIL, tail)

    def _bump(self, field: int) -> None:
        self._add(field, 1)

    def _add(self, field: int, delta: int) -> None:
        _U64.pack_into(self._mm, field, _U64.unpack_from(self._mm, field)[0] + delta)

    # ------------------------------------------------------------------- common

    def stats(self) -> CacheStats:
        mm = self._live_mm()
        head, tail, live = struct.unpack_from("<QQQ", mm, H_HEAD)
        puts, neg, dels, ev_set, ev_arena = struct.unpack_from("<5Q", mm, H_PUTS)
        return CacheStats(
            implementation="python", writer=self._is_writer(), slots=self._slot_count,
            entries=live, arena_bytes=self._arena_bytes, arena_used=head - tail,
            puts=puts, negative_puts=neg, deletes=dels, evictions_set=ev_set,
            evictions_arena=ev_arena, hits=self._hits, stale_hits=self._stale_hits,
            misses=self._misses, expired_misses=self._expired_misses,
            torn_retries=self._torn_retries, torn_misses=self._torn_misses)

    def __len__(self) -> int:
        live: int = _U64.unpack_from(self._live_mm(), H_LIVE)[0]
        return live

    @property
    def name(self) -> str:
        return self._name

    def unlink(self) -> None:
        """Writer: remove the file; attached readers then miss until a new one exists."""
        mm = self._writer_mm()
        _U32.pack_into(mm, H_RETIRED, 1)
        os.unlink(self._map_path())

    def close(self) -> None:
        """Unmap; the file and its entries stay for other processes."""
        if self._map is not None:
            self._map.mm.close()
            self._map = None

    def __enter__(self) -> CertCache:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _is_writer(self) -> bool:
        return self._map is not None and self._map.writable

    def _map_path(self) -> str:
        return str(self._map.path) if self._map is not None else self._name

    def _live_mm(self) -> mmap.mmap:
        if self._map is None:
            raise CacheStateError(f"certificate cache {self._name!r} is closed")
        return self._mm

    def _writer_mm(self) -> mmap.mmap:
        self._live_mm()
        if not self._is_writer():
            raise CacheStateError(f"this handle on {self._name!r} was attached read-only; "
                                  "only the process that created the cache writes it")
        return self._mm
