# cython: language_level=3
"""Native shared-memory certificate cache.

The specification is gateway/lookup/_cache_py.py (behaviour) and
gateway/lookup/_cache_layout.py (the file's bytes): same file, same answers, same
errors, only faster. Mapping, header checks and argument checks are the twin's Python
code; the table walk, the seqlock and the arena are here.

Memory ordering is explicit (C11 atomics via GCC builtins), not left to x86-64's TSO:
a writer makes a slot's sequence odd, issues a release fence, writes the fields, and
publishes with a release store of the even sequence; a reader loads the sequence with
acquire, reads fields and record, issues an acquire fence, and reloads the sequence
(the seqlock of Boehm, "Can seqlocks get along with programming language memory
models?", 2012). The record bytes are copied with plain loads, as the Linux kernel's
seqlocks do; the sequence check discards any copy that raced the writer.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM

import os

from gateway.lookup import _cache_layout as L
from gateway.lookup._cache_py import (
    CacheEntry,
    CacheFormatError,
    CacheNotFoundError,
    CacheStateError,
    CacheStats,
)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <time.h>
    #if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    #error "the certificate cache file is little-endian; this build is not"
    #endif
    static inline uint32_t cc_load_acquire_u32(const unsigned char *p) {
        return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE);
    }
    static inline uint32_t cc_load_relaxed_u32(const unsigned char *p) {
        return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
    }
    static inline uint64_t cc_load_relaxed_u64(const unsigned char *p) {
        return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
    }
    static inline uint16_t cc_load_relaxed_u16(const unsigned char *p) {
        return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
    }
    static inline double cc_load_relaxed_f64(const unsigned char *p) {
        uint64_t bits = __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
        double v;
        memcpy(&v, &bits, 8);
        return v;
    }
    static inline void cc_store_relaxed_u32(unsigned char *p, uint32_t v) {
        __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED);
    }
    static inline void cc_store_release_u32(unsigned char *p, uint32_t v) {
        __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE);
    }
    static inline void cc_store_relaxed_u64(unsigned char *p, uint64_t v) {
        __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
    }
    static inline void cc_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline void cc_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
    static inline uint16_t cc_u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
    static inline uint32_t cc_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline uint64_t cc_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    static inline double cc_f64(const unsigned char *p) { double v; memcpy(&v, p, 8); return v; }
    static inline void cc_put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
    static inline void cc_put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
    static inline void cc_put_f64(unsigned char *p, double v) { memcpy(p, &v, 8); }
    static inline double cc_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);  /* what time.time() reads */
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    static inline uint64_t cc_rot32(uint64_t h) { return (h >> 32) | (h << 32); }
    static inline uint64_t cc_key_hash(const unsigned char *p, size_t n, uint64_t seed) {
        uint64_t h = 0xCBF29CE484222325ULL ^ seed;
        for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001B3ULL; }
        h ^= h >> 33;  /* fmix64, as the twin's key_hash */
        h *= 0xFF51AFD7ED558CCDULL;
        h ^= h >> 33;
        h *= 0xC4CEB9FE1A85EC53ULL;
        return h ^ (h >> 33);
    }
    """
    uint32_t cc_load_acquire_u32(const unsigned char *p)
    uint32_t cc_load_relaxed_u32(const unsigned char *p)
    uint64_t cc_load_relaxed_u64(const unsigned char *p)
    uint16_t cc_load_relaxed_u16(const unsigned char *p)
    double cc_load_relaxed_f64(const unsigned char *p)
    void cc_store_relaxed_u32(unsigned char *p, uint32_t v)
    void cc_store_release_u32(unsigned char *p, uint32_t v)
    void cc_store_relaxed_u64(unsigned char *p, uint64_t v)
    void cc_fence_acquire()
    void cc_fence_release()
    uint16_t cc_u16(const unsigned char *p)
    uint32_t cc_u32(const unsigned char *p)
    uint64_t cc_u64(const unsigned char *p)
    double cc_f64(const unsigned char *p)
    void cc_put_u32(unsigned char *p, uint32_t v)
    void cc_put_u64(unsigned char *p, uint64_t v)
    void cc_put_f64(unsigned char *p, double v)
    double cc_now()
    uint64_t cc_key_hash(const unsigned char *p, size_t n, uint64_t seed)
    uint64_t cc_rot32(uint64_t h)

# The layout's numbers, checked against the twin's at import (below).
cdef enum:
    HEADER_SIZE = 4096
    SLOT_SIZE = 32
    WAYS = 8
    MAX_KEY = 255
    MAX_DERS = 256
    MAX_RETRIES = 64
    RECORD_HEAD = 16
    FLAG_NEGATIVE = 1
    H_RETIRED = 80
    H_HEAD = 128
    H_TAIL = 136
    H_LIVE = 144
    H_PUTS = 192
    H_NEGATIVE_PUTS = 200
    H_DELETES = 208
    H_EVICTIONS_SET = 216
    H_EVICTIONS_ARENA = 224
    S_SEQ = 0
    S_LEN = 4
    S_HASH = 8
    S_OFF = 16
    S_EXP = 24
    R_LEN = 0
    R_SLOT = 4
    R_KEYLEN = 8
    R_FLAGS = 10
    R_NDERS = 12

cdef uint32_t PAD_SLOT = 0xFFFFFFFF

_MINE = dict(HEADER_SIZE=HEADER_SIZE, SLOT_SIZE=SLOT_SIZE, WAYS=WAYS, MAX_KEY=MAX_KEY,
             MAX_DERS=MAX_DERS, MAX_RETRIES=MAX_RETRIES, PAD_SLOT=PAD_SLOT,
             RECORD_HEAD=RECORD_HEAD, FLAG_NEGATIVE=FLAG_NEGATIVE, H_RETIRED=H_RETIRED,
             H_HEAD=H_HEAD, H_TAIL=H_TAIL, H_LIVE=H_LIVE, H_PUTS=H_PUTS,
             H_NEGATIVE_PUTS=H_NEGATIVE_PUTS, H_DELETES=H_DELETES,
             H_EVICTIONS_SET=H_EVICTIONS_SET, H_EVICTIONS_ARENA=H_EVICTIONS_ARENA,
             S_SEQ=S_SEQ, S_LEN=S_LEN, S_HASH=S_HASH, S_OFF=S_OFF, S_EXP=S_EXP, R_LEN=R_LEN,
             R_SLOT=R_SLOT, R_KEYLEN=R_KEYLEN, R_FLAGS=R_FLAGS, R_NDERS=R_NDERS)
for _k, _v in _MINE.items():
    if getattr(L, _k) != _v:
        raise ImportError(f"certcache: {_k} is {_v} here but {getattr(L, _k)} in the twin")

# What a slot read found, besides an entry.
cdef enum:
    FOUND = 0
    OTHER_KEY = 1
    EXPIRED = 2
    BAD = 3

cdef object _NOT_HERE = object()


cdef class CertCache:
    """A handle on one cache file: the writer's (create) or a reader's (attach)."""

    cdef object _map
    cdef str _name
    cdef Py_buffer _buf
    cdef bint _has_buf
    cdef bint _writable
    cdef unsigned char *_base
    cdef unsigned char *_arena
    cdef uint64_t _slot_count, _nsets, _arena_bytes, _seed
    cdef uint64_t _hits, _stale_hits, _misses, _expired_misses, _torn_retries, _torn_misses

    def __cinit__(self):
        self._has_buf = False
        self._base = NULL

    def __init__(self, mapping, str name):
        self._name = name
        self._adopt(mapping)

    def __dealloc__(self):
        if self._has_buf:
            PyBuffer_Release(&self._buf)

    @classmethod
    def create(cls, name, entries, arena_bytes, seed=None):
        """The writer's handle on a new, empty cache `name` in /dev/shm."""
        return cls(L.create_mapping(name, entries, arena_bytes, seed), name)

    @classmethod
    def attach(cls, name):
        """A reader's handle on the existing cache `name` (mapped read-only)."""
        return cls(L.open_mapping(name), name)

    cdef _adopt(self, mapping):
        PyObject_GetBuffer(mapping.mm, &self._buf,
                           PyBUF_WRITABLE if mapping.writable else PyBUF_SIMPLE)
        self._has_buf = True
        self._map = mapping
        self._writable = mapping.writable
        lay = mapping.layout
        self._slot_count = lay.slot_count
        self._nsets = lay.nsets
        self._arena_bytes = lay.arena_bytes
        self._seed = lay.seed
        self._base = <unsigned char *> self._buf.buf
        self._arena = self._base + <uint64_t> lay.arena_offset

    cdef _release(self):
        self._base = NULL
        self._arena = NULL
        if self._has_buf:
            PyBuffer_Release(&self._buf)
            self._has_buf = False
        if self._map is not None:
            self._map.mm.close()
            self._map = None

    cdef int _check_open(self) except -1:
        if self._base == NULL:
            raise CacheStateError(f"certificate cache {self._name!r} is closed")
        return 0

    cdef int _check_writer(self) except -1:
        self._check_open()
        if not self._writable:
            raise CacheStateError(f"this handle on {self._name!r} was attached read-only; "
                                  "only the process that created the cache writes it")
        return 0

    # ------------------------------------------------------------------ readers

    def get(self, key, now=None, bint allow_stale=False):
        """The entry for `key`, or None. An expired entry is a miss unless allow_stale."""
        cdef bytes kb
        cdef double t
        cdef uint64_t h
        cdef unsigned char *base
        cdef int way, which
        cdef uint64_t sets[2]
        self._check_open()
        if type(key) is str:
            kb = (<str> key).lower().encode("utf-8", "surrogatepass")
            if PyBytes_GET_SIZE(kb) == 0 or PyBytes_GET_SIZE(kb) > MAX_KEY:
                L.encode_key(key)  # raises the precise error
        else:
            kb = L.encode_key(key)  # raises the precise error
        # A reader follows a replaced file; the writer keeps answering from its own.
        if (not self._writable and cc_load_acquire_u32(self._base + H_RETIRED)
                and not self._follow()):
            self._misses += 1
            return None
        t = cc_now() if now is None else L.check_time(now)
        h = cc_key_hash(<const unsigned char *> PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb),
                       self._seed)
        sets[0] = (h % self._nsets) * WAYS
        sets[1] = (cc_rot32(h) % self._nsets) * WAYS
        for which in range(1 if sets[0] == sets[1] else 2):
            base = self._base + HEADER_SIZE + sets[which] * SLOT_SIZE
            for way in range(WAYS):
                # An unsynchronised look at the hash picks candidates; see the twin.
                if cc_load_relaxed_u64(base + way * SLOT_SIZE + S_HASH) != h:
                    continue
                got = self._read_slot(base + way * SLOT_SIZE, kb, h, t, allow_stale)
                if got is not _NOT_HERE:
                    return got
        self._misses += 1
        return None

    cdef object _read_slot(self, const unsigned char *so, bytes kb, uint64_t h, double now,
                           bint allow_stale):
        cdef const unsigned char *kp = <const unsigned char *> PyBytes_AS_STRING(kb)
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(kb)
        cdef uint32_t seq, rec_len, n, i, length
        cdef uint64_t off, pos, total
        cdef double exp
        cdef const unsigned char *rec
        cdef int status, attempt
        cdef bint negative
        cdef object ders, der
        cdef uint32_t lengths[MAX_DERS]
        for attempt in range(MAX_RETRIES):
            seq = cc_load_acquire_u32(so + S_SEQ)
            if seq & 1:
                self._torn_retries += 1
                continue
            # Atomic (relaxed) loads of what the bounds checks use: the compiler may
            # not read these twice, so what was checked is what is used.
            rec_len = cc_load_relaxed_u32(so + S_LEN)
            off = cc_load_relaxed_u64(so + S_OFF)
            exp = cc_load_relaxed_f64(so + S_EXP)
            if rec_len == 0 or cc_load_relaxed_u64(so + S_HASH) != h:
                return _NOT_HERE
            ders = None
            negative = False
            if rec_len < RECORD_HEAD or off > self._arena_bytes or rec_len > self._arena_bytes - off:
                status = BAD
            else:
                rec = self._arena + off
                n = cc_load_relaxed_u32(rec + R_NDERS)
                negative = (rec[R_FLAGS] & FLAG_NEGATIVE) != 0
                if (cc_load_relaxed_u16(rec + R_KEYLEN) != klen or RECORD_HEAD + klen > rec_len
                        or memcmp(rec + RECORD_HEAD, kp, klen) != 0):
                    status = OTHER_KEY
                elif (cc_load_relaxed_u32(rec + R_LEN) != rec_len or n > MAX_DERS
                        or RECORD_HEAD + klen + 4 * <uint64_t> n > rec_len):
                    status = BAD
                else:
                    # Each length is read once, into our own memory: shared bytes may
                    # change under us, and a second read could exceed what was checked.
                    pos = RECORD_HEAD + klen + 4 * <uint64_t> n
                    memcpy(lengths, rec + RECORD_HEAD + klen, 4 * n)
                    total = 0
                    for i in range(n):
                        total += lengths[i]
                    if pos + total > rec_len:
                        status = BAD
                    elif exp <= now and not allow_stale:
                        status = EXPIRED
                    else:
                        status = FOUND
                        ders = PyTuple_New(n)
                        for i in range(n):
                            length = lengths[i]
                            der = PyBytes_FromStringAndSize(<const char *> rec + pos, length)
                            Py_INCREF(der)
                            PyTuple_SET_ITEM(ders, i, der)
                            pos += length
            cc_fence_acquire()
            if cc_load_relaxed_u32(so + S_SEQ) != seq:
                self._torn_retries += 1  # the writer was here: what we read may be torn
                continue
            if status == OTHER_KEY:
                return _NOT_HERE
            if status == BAD:
                raise CacheFormatError(self._path(), f"malformed record for {kb[:40]!r}")
            if status == EXPIRED:
                self._expired_misses += 1
                self._misses += 1
                return None
            if exp <= now:
                self._stale_hits += 1
            else:
                self._hits += 1
            return CacheEntry(ders, exp, negative)
        self._torn_misses += 1
        self._misses += 1
        return None

    def _follow(self):
        """After the writer replaced the file: move to the new one (see the twin)."""
        identity = L.current_identity(self._map.path)
        if identity is None or identity == self._map.identity:
            return False
        try:
            new = L.open_mapping(self._name)
        except (CacheNotFoundError, CacheFormatError):
            return False
        self._release()
        self._adopt(new)
        return True

    # ------------------------------------------------------------------- writer

    def put(self, key, ders, expires_at):
        """Store the certificates for `key` until `expires_at` (Unix time)."""
        self._check_writer()
        kb = L.encode_key(key)
        rec = L.build_record(kb, L.check_ders(ders), 0, self._arena_bytes)
        self._store(kb, rec, L.check_expiry(expires_at))
        self._add(H_PUTS, 1)

    def put_negative(self, key, expires_at):
        """Remember that `key` has no certificate, until `expires_at`."""
        self._check_writer()
        kb = L.encode_key(key)
        rec = L.build_record(kb, [], FLAG_NEGATIVE, self._arena_bytes)
        self._store(kb, rec, L.check_expiry(expires_at))
        self._add(H_PUTS, 1)
        self._add(H_NEGATIVE_PUTS, 1)

    def delete(self, key):
        """Drop `key`; whether it was there."""
        self._check_writer()
        kb = L.encode_key(key)
        cdef uint64_t h = cc_key_hash(<const unsigned char *> PyBytes_AS_STRING(kb),
                                     PyBytes_GET_SIZE(kb), self._seed)
        cdef long long slot = self._find(kb, h)
        if slot < 0:
            return False
        self._write_slot(slot, 0, 0, 0, 0.0)
        self._add(H_LIVE, -1)
        self._add(H_DELETES, 1)
        return True

    cdef int _store(self, bytes kb, bytearray rec, double exp) except -1:
        cdef uint64_t h = cc_key_hash(<const unsigned char *> PyBytes_AS_STRING(kb),
                                     PyBytes_GET_SIZE(kb), self._seed)
        cdef uint64_t need = len(rec)
        cdef uint64_t off = self._alloc(need)  # may evict, even this key's own slot
        cdef long long slot = self._find(kb, h)
        cdef unsigned char *dst
        cdef char *src = rec
        if slot < 0:
            slot = self._free_or_victim(h)
        dst = self._arena + off
        memcpy(dst, src, need)  # into free space: no slot points here
        cc_put_u32(dst + R_SLOT, <uint32_t> slot)
        self._write_slot(slot, <uint32_t> need, h, off, exp)
        return 0

    cdef void _write_slot(self, uint64_t slot, uint32_t rec_len, uint64_t h, uint64_t off,
                          double exp) noexcept:
        cdef unsigned char *so = self._base + HEADER_SIZE + slot * SLOT_SIZE
        cdef uint32_t seq = cc_u32(so + S_SEQ)  # only this process writes it
        cc_store_relaxed_u32(so + S_SEQ, seq + 1)
        cc_fence_release()  # the odd sequence is visible before any field changes
        cc_put_u32(so + S_LEN, rec_len)
        cc_store_relaxed_u64(so + S_HASH, h)
        cc_put_u64(so + S_OFF, off)
        cc_put_f64(so + S_EXP, exp)
        cc_store_release_u32(so + S_SEQ, seq + 2)  # fields (and record) before the even one

    cdef int _sets(self, uint64_t h, uint64_t *sets) noexcept:
        """The first slot of each set the key may live in (see the twin); how many."""
        sets[0] = (h % self._nsets) * WAYS
        sets[1] = (cc_rot32(h) % self._nsets) * WAYS
        return 1 if sets[0] == sets[1] else 2

    cdef long long _find(self, bytes kb, uint64_t h) noexcept:
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(kb)
        cdef uint64_t sets[2]
        cdef int count = self._sets(h, sets), which
        cdef uint64_t slot
        cdef unsigned char *so
        cdef unsigned char *rec
        for which in range(count):
            for slot in range(sets[which], sets[which] + WAYS):
                so = self._base + HEADER_SIZE + slot * SLOT_SIZE
                if cc_u32(so + S_LEN) and cc_u64(so + S_HASH) == h:
                    rec = self._arena + cc_u64(so + S_OFF)
                    if (cc_u16(rec + R_KEYLEN) == klen
                            and memcmp(rec + RECORD_HEAD, PyBytes_AS_STRING(kb), klen) == 0):
                        return <long long> slot
        return -1

    cdef uint64_t _free_or_victim(self, uint64_t h) noexcept:
        """The first empty slot of whichever of the key's sets has more empty slots,
        else the slot of both sets that expires first, which is evicted (see the twin)."""
        cdef uint64_t sets[2]
        cdef int count = self._sets(h, sets), which, free, best_free = 0
        cdef uint64_t slot, victim = 0, best = 0, first_free
        cdef double exp, victim_exp = 0.0
        cdef bint have_victim = False
        cdef unsigned char *so
        for which in range(count):
            free = 0
            first_free = 0
            for slot in range(sets[which], sets[which] + WAYS):
                so = self._base + HEADER_SIZE + slot * SLOT_SIZE
                if cc_u32(so + S_LEN) == 0:
                    if free == 0:
                        first_free = slot
                    free += 1
                else:
                    exp = cc_f64(so + S_EXP)
                    if not have_victim or exp < victim_exp:
                        victim, victim_exp, have_victim = slot, exp, True
            if free > best_free:
                best, best_free = first_free, free
        if best_free > 0:
            self._add(H_LIVE, 1)
            return best
        self._add(H_EVICTIONS_SET, 1)
        return victim

    cdef uint64_t _alloc(self, uint64_t need) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t size = self._arena_bytes
        cdef uint64_t head = cc_u64(self._base + H_HEAD)
        cdef uint64_t phys = head % size
        cdef uint64_t pad
        if phys + need > size:
            pad = size - phys
            self._reclaim(head, pad)
            cc_put_u32(self._arena + phys + R_LEN, <uint32_t> pad)
            cc_put_u32(self._arena + phys + R_SLOT, PAD_SLOT)
            head += pad
            phys = 0
        self._reclaim(head, need)
        cc_put_u64(self._base + H_HEAD, head + need)
        return phys

    cdef int _reclaim(self, uint64_t head, uint64_t need) except -1:
        """Drop records from the tail until `need` bytes after `head` are free."""
        cdef uint64_t size = self._arena_bytes
        cdef uint64_t tail = cc_u64(self._base + H_TAIL)
        cdef uint64_t phys, slot
        cdef uint32_t rec_len
        cdef unsigned char *so
        while head - tail + need > size:
            phys = tail % size
            rec_len = cc_u32(self._arena + phys + R_LEN)
            slot = cc_u32(self._arena + phys + R_SLOT)
            if rec_len < 8 or rec_len % 8 or phys + rec_len > size:
                raise CacheFormatError(self._path(), f"arena corrupt at {phys}")
            if slot != PAD_SLOT and slot < self._slot_count:
                so = self._base + HEADER_SIZE + slot * SLOT_SIZE
                if cc_u32(so + S_LEN) and cc_u64(so + S_OFF) == phys:
                    self._write_slot(slot, 0, 0, 0, 0.0)
                    self._add(H_LIVE, -1)
                    self._add(H_EVICTIONS_ARENA, 1)
            tail += rec_len
        cc_put_u64(self._base + H_TAIL, tail)
        return 0

    cdef void _add(self, uint64_t field, long long delta) noexcept:
        cc_put_u64(self._base + field, cc_u64(self._base + field) + <uint64_t> delta)

    # ------------------------------------------------------------------- common

    def stats(self):
        self._check_open()
        cdef unsigned char *b = self._base
        return CacheStats(
            implementation="native", writer=bool(self._writable), slots=self._slot_count,
            entries=cc_u64(b + H_LIVE), arena_bytes=self._arena_bytes,
            arena_used=cc_u64(b + H_HEAD) - cc_u64(b + H_TAIL),
            puts=cc_u64(b + H_PUTS), negative_puts=cc_u64(b + H_NEGATIVE_PUTS),
            deletes=cc_u64(b + H_DELETES), evictions_set=cc_u64(b + H_EVICTIONS_SET),
            evictions_arena=cc_u64(b + H_EVICTIONS_ARENA), hits=self._hits,
            stale_hits=self._stale_hits, misses=self._misses,
            expired_misses=self._expired_misses, torn_retries=self._torn_retries,
            torn_misses=self._torn_misses)

    def __len__(self):
        self._check_open()
        return cc_u64(self._base + H_LIVE)

    @property
    def name(self):
        return self._name

    def unlink(self):
        """Writer: remove the file; attached readers then miss until a new one exists."""
        self._check_writer()
        cc_store_release_u32(self._base + H_RETIRED, 1)
        os.unlink(self._map.path)

    def close(self):
        """Unmap; the file and its entries stay for other processes."""
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        self.close()

    cdef str _path(self):
        return str(self._map.path) if self._map is not None else self._name
