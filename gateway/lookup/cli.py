"""`smimegate lookup ADDRESS...`: what the gateway would find for recipients, and why.

Runs the same resolver as the front end (discovery, directory, DANE, trust gate) with a
private, throwaway certificate cache, so it never writes the running gateway's cache.
Rejected certificates are logged on stderr with their reason.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.cli.errors import REFUSED, CliError
from gateway.config import ConfigError, load_gateway_config
from gateway.config.schema import LookupSection
from gateway.keys import load_certificates
from gateway.lookup import cache as certcache
from gateway.lookup._cache_py import CertCache
from gateway.lookup.resolver import CertificateResolver, LookupInputError, NameResult


def register(sub: Any) -> None:
    p = sub.add_parser("lookup", help="find and validate recipients' encryption "
                                      "certificates as the gateway would")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("-c", "--config", type=Path, help="gateway.toml (default: built-in defaults)")
    p.add_argument("--directory", action="append", default=[], metavar="URL",
                   help="ask this directory (instead of lookup.default_directories); repeatable")
    p.add_argument("--trust", action="append", type=Path, default=[], metavar="PEM",
                   help="trust anchors (instead of keys.trust_anchors); repeatable")
    p.set_defaults(handler=lookup)


def _describe(r: NameResult) -> list[str]:
    head = f"  {r.name}: {r.status} (source {r.source})"
    lines = [head + (f": {r.reason}" if r.reason else "")]
    for c in r.certificates:
        lines.append(f"    {c.subject.rfc4514_string()}  sha256 "
                     f"{c.fingerprint(hashes.SHA256()).hex()}  until "
                     f"{c.not_valid_after_utc:%Y-%m-%d}")
    return lines


def lookup(args: argparse.Namespace) -> int:
    try:
        config = load_gateway_config(args.config)
    except ConfigError as e:
        raise CliError(str(e)) from None
    section = config.lookup
    if args.directory:
        section = dataclasses.replace(section, default_directories=tuple(args.directory))
    anchors: list[x509.Certificate] = []
    for path in args.trust or config.keys.trust_anchors:
        try:
            anchors += load_certificates(path)
        except (OSError, ValueError) as e:
            raise CliError(f"{path}: {e}") from None
    if not anchors:
        raise CliError("no trust anchors: give --trust PEM or set keys.trust_anchors")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    cache = certcache.CertCache.create(f"smimegate-cli-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                             1024, 16 * 1024 * 1024)
    try:
        return asyncio.run(_run(section, anchors, cache, args.addresses))
    finally:
        cache.unlink()
        cache.close()


async def _run(section: LookupSection, anchors: list[x509.Certificate], cache: CertCache,
               addresses: list[str]) -> int:
    resolver = CertificateResolver(section, anchors=anchors, cache=cache)
    worst = 0
    try:
        for address in addresses:
            try:
                r = await resolver.certificates_for(address)
            except LookupInputError as e:
                raise CliError(str(e)) from None
            print(f"{r.address}: {r.status}")
            for line in _describe(r.user) + _describe(r.domain):
                print(line)
            if r.status != "found":
                worst = REFUSED
    finally:
        await resolver.close()
    return worst
