"""MTA-STS for MX delivery: a recipient domain's policy, fetched, parsed and cached.

RFC 8461 (SMTP MTA Strict Transport Security). With `delivery.mta_sts` on, a domain
routed by MX has a policy when its TXT record `_mta-sts.<domain>` says "v=STSv1;
id=..." (§3.1) and `https://mta-sts.<domain>/.well-known/mta-sts.txt` serves one (§3.3):
over HTTPS with a certificate valid for that host (delivery.tls_ca_file or the system's
CAs), no redirects, at most 64 KB, within a timeout, the host's addresses coming from the
gateway's resolver (delivery.dns_servers). The policy is parsed strictly (§3.2) and
cached for its max_age; a new TXT id fetches it again, and a failed fetch or DNS lookup
while a cached policy is unexpired keeps using it (§5.1).

What the policy means (gateway.delivery.route applies it, §4-5): under "enforce" only
MX hosts matching one of its patterns are used, each over TLS with a PKIX-valid
certificate naming the MX host (TLS policy "verify"); under "testing" delivery is as
before and what "enforce" would have refused is logged and counted; "none" is no policy.
DANE, where it applies to a host, takes precedence (§2).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiohttp.abc
import dns.asyncresolver
import dns.exception
import dns.resolver

from gateway.delivery import metrics

log = logging.getLogger("smimegate.delivery")

ENFORCE, TESTING, NONE = "enforce", "testing", "none"
MAX_AGE_LIMIT = 31557600  # RFC 8461 §3.2: about one year
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3 suggests this cap
FETCH_TIMEOUT = 60.0  # RFC 8461 §3.3: "a timeout ... of one minute" is suggested
RETRY_FAILED_FETCH = 300.0  # a failed fetch is not repeated for every session

_TXT_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_TXT_EXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}=[\x21-\x3a\x3c\x3e-\x7e]+")
_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.\-]{0,31}):[ \t]*(.*?)[ \t]*")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class PolicyError(Exception):
    """A TXT record or a policy that does not parse, or a fetch that failed."""


@dataclass(frozen=True, slots=True)
class Policy:
    mode: str  # ENFORCE | TESTING | NONE
    mx: tuple[str, ...]  # lower case, "*." allowed as the whole left-most label
    max_age: int  # seconds

    def allows(self, host: str) -> bool:
        """RFC 8461 §4.1: host matches a pattern; "*." stands for exactly one label."""
        name = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                head, dot, rest = name.partition(".")
                if head and dot and rest == pattern[2:]:
                    return True
            elif name == pattern:
                return True
        return False


def parse_txt(texts: list[str]) -> str | None:
    """The policy id of a domain's `_mta-sts` TXT records, or None when it has no
    usable one (RFC 8461 §3.1: records not starting "v=STSv1" are ignored; other than
    exactly one left, or one that does not parse, means no policy)."""
    candidates = [t for t in texts if t.startswith("v=STSv1") and
                  (len(t) == 7 or t[7] in "; \t")]
    if len(candidates) != 1:
        return None
    ident: str | None = None
    for part in candidates[0][7:].split(";"):
        field = part.strip(" \t")
        if not field:
            continue  # a trailing ";" or the empty text before the first
        if field.startswith("id="):
            if ident is not None or not _TXT_ID.fullmatch(field[3:]):
                return None
            ident = field[3:]
        elif not _TXT_EXT.fullmatch(field):
            return None
    return ident


def parse_policy(text: str) -> Policy:
    """RFC 8461 §3.2, strictly: version STSv1, mode, max_age (≤ MAX_AGE_LIMIT) and, but
    for mode none, at least one mx; unknown fields are ignored, a repeated one (mx
    aside) is an error. Raises PolicyError."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the optional terminator after the last field
    for number, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        m = _FIELD.fullmatch(line)
        if m is None or not m.group(2):
            raise PolicyError(f"line {number} is not a \"key: value\" field")
        key, value = m.group(1), m.group(2)
        if key == "mx":
            mx.append(_mx_pattern(value, number))
        elif key in ("version", "mode", "max_age"):
            if key in fields:
                raise PolicyError(f"line {number}: {key} given twice")
            fields[key] = value
    if fields.get("version") != "STSv1":
        raise PolicyError(f"version is {fields.get('version')!r}, not 'STSv1'")
    mode = fields.get("mode")
    if mode not in (ENFORCE, TESTING, NONE):
        raise PolicyError(f"mode is {mode!r}, not enforce, testing or none")
    age = fields.get("max_age", "")
    if not (age.isascii() and age.isdigit() and len(age) <= 10):
        raise PolicyError(f"max_age is {age!r}, not a number of seconds")
    if int(age) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age {age} is above {MAX_AGE_LIMIT}")
    if not mx and mode != NONE:
        raise PolicyError(f"mode {mode} names no mx")
    return Policy(mode, tuple(mx), int(age))


def _mx_pattern(value: str, number: int) -> str:
    pattern = value.lower().rstrip(".")
    name = pattern[2:] if pattern.startswith("*.") else pattern
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise PolicyError(f"line {number}: mx {value!r} is not a host name or *.domain")
    return pattern


@dataclass(slots=True)
class _Cached:
    policy: Policy
    ident: str
    expires: float


class _DnsResolver(aiohttp.abc.AbstractResolver):
    """The policy host's addresses from the gateway's resolver, not the system's."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self._resolver = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET
                      ) -> list[aiohttp.abc.ResolveResult]:
        out: list[aiohttp.abc.ResolveResult] = []
        for rdtype, fam in (("A", socket.AF_INET), ("AAAA", socket.AF_INET6)):
            try:
                answer = await self._resolver.resolve(host, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as e:
                raise OSError(f"address lookup for {host} failed: "
                              f"{e.__class__.__name__}") from None
            out += [{"hostname": host, "host": rr.address, "port": port, "family": fam,
                     "proto": 0, "flags": socket.AI_NUMERICHOST} for rr in answer]
        if not out:
            raise OSError(f"{host} has no address")
        return out

    async def close(self) -> None:
        return None


class MtaSts:
    """Policies of recipient domains, cached in memory per process."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, *, ca_file: Path | None,
                 port: int = 443, timeout: float = FETCH_TIMEOUT) -> None:
        self._resolver = resolver
        self._ca_file = ca_file
        self._port = port
        self._timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        self._cache: dict[str, _Cached] = {}
        self._failed: dict[tuple[str, str], float] = {}  # (domain, id) → when
        self._locks: dict[str, asyncio.Lock] = {}

    async def policy(self, domain: str) -> Policy | None:
        """The domain's policy in force now, or None (no policy, or none to be had)."""
        domain = domain.lower().rstrip(".")
        now = time.time()
        cached = self._cache.get(domain)
        if cached is not None and cached.expires <= now:
            del self._cache[domain]
            cached = None
        try:
            ident = await self._txt(domain)
        except PolicyError as e:  # RFC 8461 §5.1: DNS trouble keeps a cached policy
            log.info("delivery: MTA-STS: %s", e)
            ident = None
        if ident is None or (cached is not None and cached.ident == ident):
            if cached is None:
                metrics.MTA_STS.labels("none").inc()
                return None
            metrics.MTA_STS.labels("cached").inc()
            return cached.policy
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:  # one fetch per domain, however many sessions wait for it
            fresh = self._cache.get(domain)
            if fresh is not None and fresh.ident == ident and fresh.expires > time.time():
                metrics.MTA_STS.labels("cached").inc()
                return fresh.policy
            failed_at = self._failed.get((domain, ident))
            if failed_at is not None and time.time() - failed_at < RETRY_FAILED_FETCH:
                metrics.MTA_STS.labels("cached" if cached else "failed").inc()
                return cached.policy if cached else None
            try:
                policy = await self.fetch(domain)
            except PolicyError as e:
                # RFC 8461 §5.1: no policy to be had → as if the domain had none, unless
                # an unexpired cached one says otherwise.
                now = time.time()
                self._failed = {k: t for k, t in self._failed.items()
                                if now - t < RETRY_FAILED_FETCH}
                self._failed[(domain, ident)] = now
                metrics.MTA_STS.labels("failed").inc()
                log.warning("delivery: MTA-STS policy of %s: %s%s", domain, e,
                            "; keeping the cached one" if cached else "; ignored")
                return cached.policy if cached else None
            self._failed.pop((domain, ident), None)
            self._cache[domain] = _Cached(policy, ident, time.time() + policy.max_age)
            metrics.MTA_STS.labels("fetched").inc()
            log.info("delivery: MTA-STS policy of %s (id %s): mode %s, mx %s, max_age %d",
                     domain, ident, policy.mode, " ".join(policy.mx) or "-", policy.max_age)
            return policy

    async def _txt(self, domain: str) -> str | None:
        name = f"_mta-sts.{domain}."
        try:
            answer = await self._resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as e:
            raise PolicyError(f"TXT lookup of {name} failed: {e.__class__.__name__}") \
                from None
        # A TXT record of several strings is their concatenation (RFC 7208 §3.3 style).
        texts = [b"".join(rr.strings).decode("ascii", "replace") for rr in answer]
        return parse_txt(texts)

    async def fetch(self, domain: str) -> Policy:
        """GET the policy (RFC 8461 §3.3). Raises PolicyError."""
        host = f"mta-sts.{domain}"
        port = "" if self._port == 443 else f":{self._port}"
        url = f"https://{host}{port}/.well-known/mta-sts.txt"
        try:
            if self._ssl is None:  # an unreadable CA file is an OSError too
                self._ssl = ssl.create_default_context(
                    cafile=str(self._ca_file) if self._ca_file else None)
            connector = aiohttp.TCPConnector(resolver=_DnsResolver(self._resolver),
                                             ssl=self._ssl, use_dns_cache=False)
            async with aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=self._timeout),
                    headers={"User-Agent": "smimegate"}) as session:
                body = await _get(session, url)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise PolicyError(f"fetching {url} failed: {e.__class__.__name__}: {e}") \
                from None
        try:
            text = body.decode("utf-8")  # §3.2: extension values may be UTF-8
        except UnicodeDecodeError:
            raise PolicyError(f"{url} is not UTF-8 text") from None
        return parse_policy(text)


async def _get(session: aiohttp.ClientSession, url: str) -> bytes:
    """The body of a 200 text/plain answer of at most MAX_POLICY_BYTES."""
    async with session.get(url, allow_redirects=False) as response:
        if response.status != 200:  # RFC 8461 §3.3: redirects are not followed
            raise PolicyError(f"{url} answered HTTP {response.status}")
        if response.content_type != "text/plain":
            raise PolicyError(f"{url} is {response.content_type}, not text/plain")
        if (response.content_length or 0) > MAX_POLICY_BYTES:
            raise PolicyError(f"{url} is larger than {MAX_POLICY_BYTES} bytes")
        body = b""
        while len(body) <= MAX_POLICY_BYTES:  # read() may return less than asked
            chunk = await response.content.read(MAX_POLICY_BYTES + 1 - len(body))
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_POLICY_BYTES:
            raise PolicyError(f"{url} is larger than {MAX_POLICY_BYTES} bytes")
        return body
