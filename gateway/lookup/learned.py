"""Capabilities learnt from verified signed mail, as the certificate cache holds them.

RFC 8551 §2.7.1: a sending agent should choose the content cipher from the capabilities
announced in the most recent signed message it received from the recipient (the
smimeCapabilities signed attribute, RFC 8551 §2.5.2); a newer signingTime replaces the
list, and a signing time far in the future, or a message whose signature did not verify,
is never taken. gateway/inbound/learn.py finds them in mail that passed; the front end's
CertificateResolver (`offer_capabilities`, the cache's one writer) stores them through
`store` here; the crypto workers read them with `read` (gateway/outbound/cipher.py).

Entry: key "caps:" + the name: the sender's address when its own certificate signed, its
domain when the domain's gateway certificate did (see learn.py). Addresses (atext or a
quoted string before "@") and domains never contain ":" unquoted at that place, so the
key cannot collide with a certificate entry. Value: the cache's list of blobs, the first
b"signed-at <Unix time>", then one ASCII dotted OID per capability in the signer's order.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.lookup import metrics
from gateway.lookup._cache_py import CertCache
from gateway.lookup._cache_types import CacheError

log = logging.getLogger(__name__)

PREFIX = "caps:"
MAX_NAME = 250  # octets: the cache's 255-octet key less the prefix
MAX_OIDS = 64  # capabilities kept per name (cms_signed_read reads no more)
MAX_OID_TEXT = 128
# RFC 8551 §2.7.1: "signing time ... far in the future (a greater discrepancy than any
# reasonable clock skew) MUST NOT be accepted".
MAX_CLOCK_SKEW = 3600.0
_HEAD = b"signed-at "
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")


class LearnedError(ValueError):
    """What was offered is not a name, a list of algorithm OIDs or a signing time."""


@dataclass(frozen=True, slots=True)
class Learned:
    """One name's capabilities: algorithm OIDs, most preferred first, and the signing
    time (Unix) of the message that announced them."""

    oids: tuple[str, ...]
    signed_at: float


def key(name: str) -> str:
    """The cache key for name (an address or a domain, lower-cased); LearnedError if it is
    empty or too long to be a key."""
    name = name.strip().lower()
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        raise LearnedError(f"not a name capabilities can be kept for: {name[:60]!r}")
    return PREFIX + name


def checked(oids: object, signed_at: object) -> Learned:
    """A Learned from untrusted values; LearnedError saying what is wrong."""
    if isinstance(signed_at, bool) or not isinstance(signed_at, int | float) or \
            not math.isfinite(signed_at) or signed_at < 0:
        raise LearnedError(f"signing time is not a Unix time: {signed_at!r}")
    if not isinstance(oids, tuple | list) or not oids:
        raise LearnedError("no capabilities")
    if len(oids) > MAX_OIDS:
        raise LearnedError(f"{len(oids)} capabilities, at most {MAX_OIDS}")
    for oid in oids:
        if not isinstance(oid, str) or len(oid) > MAX_OID_TEXT or not _OID.fullmatch(oid):
            raise LearnedError(f"not an algorithm OID: {str(oid)[:60]!r}")
    return Learned(tuple(oids), float(signed_at))


def encode(learned: Learned) -> list[bytes]:
    return [_HEAD + repr(learned.signed_at).encode("ascii"),
            *(o.encode("ascii") for o in learned.oids)]


def decode(blobs: tuple[bytes, ...]) -> Learned | None:
    """The entry's value; None when it is not one this module wrote."""
    if len(blobs) < 2 or not blobs[0].startswith(_HEAD):
        return None
    try:
        return checked([b.decode("ascii") for b in blobs[1:]],
                       float(blobs[0][len(_HEAD):].decode("ascii")))
    except (LearnedError, ValueError):
        return None


def read(cache: CertCache | None, name: str, now: float | None = None) -> Learned | None:
    """The capabilities learnt for name and not expired; None if none (a worker's read:
    never raises, a bad key or entry is simply nothing learnt)."""
    if cache is None:
        return None
    try:
        entry = cache.get(key(name), now=now)
    except (LearnedError, CacheError):
        return None
    if entry is None or entry.negative:
        return None
    return decode(entry.ders)


def store(cache: CertCache, name: str, learned: Learned, *, now: float,
          ttl: float) -> str:
    """The writer's rule: keep learned for name until now + ttl if it is newer than what
    is held (an expired entry counts as nothing held). "stored" | "older" (what is held
    was signed at the same time or later) | "future" (signed too far ahead of now)."""
    if learned.signed_at > now + MAX_CLOCK_SKEW:
        return "future"
    k = key(name)
    held = cache.get(k, now=now)
    if held is not None and not held.negative:
        old = decode(held.ders)
        if old is not None and old.signed_at >= learned.signed_at:
            return "older"
    cache.put(k, encode(learned), now + ttl)
    return "stored"


def offer(cache: CertCache, name: str, oids: Sequence[str], signed_at: float, *,
          now: float, ttl: float) -> str:
    """The front end's half: validate what a worker returned and `store` it. Never
    raises (a bad offer must not cost the message its 250); the result is counted in
    smimegate_lookup_capabilities_learned{result}: stored | older | future | rejected."""
    try:
        result = store(cache, name, checked(tuple(oids), signed_at), now=now, ttl=ttl)
    except (LearnedError, CacheError, TypeError) as e:
        log.warning("capabilities for %s not kept: %s", str(name)[:100], e)
        result = "rejected"
    else:
        if result == "stored":
            log.info("capabilities of verified mail from %s kept: %s", name,
                     " ".join(oids))
        elif result == "future":
            log.warning("capabilities for %s not kept: signing time %.0f is more than %.0f s "
                        "ahead", name, signed_at, MAX_CLOCK_SKEW)
    metrics.CAPABILITIES.labels(result).inc()
    return result
