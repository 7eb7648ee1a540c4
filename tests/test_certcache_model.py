"""The certificate cache against a dict model, under random put/get/delete sequences.

Every implementation runs the same steps on its own file, with the same seed: they must
answer alike (and so must readers of either implementation attached to either file) and
end with byte-identical files (the twin is the specification of the
native module down to the layout and eviction order). A roomy cache must behave exactly
like a dict; a cramped one may drop entries, but only by counted eviction, and never
return a value that was not the last one put.
"""

from __future__ import annotations

import os
import uuid
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.lookup import _cache_layout as L
from tests.impls import implementations

pytestmark = pytest.mark.native
MODULES: list[ModuleType] = [p.values[0] for p in implementations(
    "certcache", "gateway.lookup._cache_py")]
NOW = 1000.0
KEYS = [f"host{i}.test" for i in range(24)] + ["Host0.TEST", "a@b.test", "é.test"]

keys = st.sampled_from(KEYS)
ders = st.lists(st.binary(min_size=1, max_size=700), min_size=1, max_size=4)
expiries = st.sampled_from([NOW - 5, NOW, NOW + 1, NOW + 50, NOW + 3600])


class CacheModel(RuleBasedStateMachine):
    ENTRIES = 4096
    ARENA = 1 << 20
    EXACT = True

    def __init__(self) -> None:
        super().__init__()
        self.names = [f"smimegate-model-{os.getpid()}-{uuid.uuid4().hex[:10]}"
                      for _ in MODULES]
        self.caches: list[Any] = [m.CertCache.create(n, self.ENTRIES, self.ARENA, seed=99)
                                  for m, n in zip(MODULES, self.names, strict=True)]
        # A reader of every implementation on every file: gets must agree across all.
        self.readers: list[Any] = [m.CertCache.attach(n) for m in MODULES for n in self.names]
        self.model: dict[str, L.CacheEntry] = {}

    def all(self, method: str, *args: Any, **kw: Any) -> Any:
        results = [getattr(c, method)(*args, **kw) for c in self.caches]
        assert all(r == results[0] for r in results), (method, args, results)
        return results[0]

    @rule(key=keys, value=ders, exp=expiries)
    def put(self, key: str, value: list[bytes], exp: float) -> None:
        self.all("put", key, value, exp)
        self.model[key.lower()] = L.CacheEntry(tuple(value), exp, False)

    @rule(key=keys, exp=expiries)
    def put_negative(self, key: str, exp: float) -> None:
        self.all("put_negative", key, exp)
        self.model[key.lower()] = L.CacheEntry((), exp, True)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        was = self.all("delete", key)
        assert was == (key.lower() in self.model) or not self.EXACT
        if not self.EXACT and was:
            assert key.lower() in self.model  # never "deletes" what was never there
        self.model.pop(key.lower(), None)

    @rule(key=keys, stale=st.booleans())
    def get(self, key: str, stale: bool) -> None:
        got = self.all("get", key, now=NOW, allow_stale=stale)
        for r in self.readers:
            assert r.get(key, now=NOW, allow_stale=stale) == got
        want = self.model.get(key.lower())
        if want is not None and want.expires_at <= NOW and not stale:
            want = None
        if self.EXACT or got is not None:
            assert got == want
        elif want is not None:
            self.model.pop(key.lower())  # evicted: legitimate only if counted
            s = self.caches[0].stats()
            assert s.evictions_set + s.evictions_arena > 0

    @invariant()
    def counts_agree(self) -> None:
        stats = [c.stats() for c in self.caches]
        writer_side = {(s.entries, s.arena_used, s.puts, s.deletes, s.evictions_set,
                        s.evictions_arena) for s in stats}
        assert len(writer_side) == 1
        s = stats[0]
        assert s.arena_used <= s.arena_bytes
        assert s.entries <= s.slots
        if self.EXACT:
            assert s.entries == len(self.model)
            assert s.evictions_set == s.evictions_arena == 0

    @precondition(lambda self: not self.EXACT)
    @rule()
    def everything_retrievable_is_counted(self) -> None:
        present = sum(self.caches[0].get(k, now=NOW, allow_stale=True) is not None
                      for k in {k.lower() for k in KEYS})
        assert present == len(self.caches[0])

    def teardown(self) -> None:
        for r in self.readers:
            r.close()
        images = []
        for cache, name in zip(self.caches, self.names, strict=True):
            cache.close()
            path = L.SHM_DIR / name
            images.append(path.read_bytes()[L.H_HEAD:])  # past creation time and pid
            path.unlink()
        assert all(img == images[0] for img in images), "implementations' files differ"


class CrampedCacheModel(CacheModel):
    ENTRIES = 16  # two sets of 8: collisions and set evictions
    ARENA = 4096  # a few entries: arena evictions and wrap-around padding
    EXACT = False


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
TestCrampedCacheModel = CrampedCacheModel.TestCase
TestCrampedCacheModel.settings = settings(max_examples=120, stateful_step_count=60,
                                          deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
