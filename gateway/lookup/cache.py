"""The shared-memory certificate cache: native when built, else the pure-Python twin.

The front end creates it (`CertCache.create(name, entries, arena_bytes)`) and is its
only writer; crypto workers attach by name (`CertCache.attach(name)`) and read. Both
implementations share one file format, so either may write and either may read. See
`_cache_py` for the behaviour and `_cache_layout` for the layout and eviction policy.
"""

from __future__ import annotations

from gateway import native
from gateway.lookup import _cache_py
from gateway.lookup._cache_layout import (
    MAX_DERS,
    MAX_KEY,
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
    "IMPLEMENTATION",
    "MAX_DERS",
    "MAX_KEY",
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

_native = native.load("certcache")

# The native class has the twin's methods and signatures (gateway._ext is untyped for
# mypy, so the twin's class is what callers are checked against).
CertCache: type[_cache_py.CertCache]

if _native is not None:
    CertCache = _native.CertCache
    IMPLEMENTATION = "native"
else:
    CertCache = _cache_py.CertCache
    IMPLEMENTATION = "python"
