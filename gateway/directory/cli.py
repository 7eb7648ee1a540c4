"""`smimegate directory ...`: run the directory, manage write tokens, publish and revoke
certificates, print the RFC 4386 DNS record.

  smimegate directory run [-c directory.toml] [--listen H:P] [--data DIR] [--trust CA.pem]...
                          [--ocsp-signer CERT --ocsp-key KEY]...
  smimegate directory token create|revoke|list [-c FILE] [--data DIR] ...
  smimegate directory publish --url URL --token T CERT.pem
  smimegate directory revoke --url URL --token T FINGERPRINT --reason R
  smimegate directory dns-record --domain D --url URL
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.cli.errors import REFUSED, USAGE, CliError
from gateway.config import ConfigError, load_directory_config
from gateway.config.schema import DirectoryConfig
from gateway.directory import client
from gateway.directory.errors import ApiError, StorageError
from gateway.directory.records import REASONS
from gateway.directory.storage import Storage, open_storage
from gateway.directory.tokens import new_token
from gateway.keys import KeyMaterialError, load_certificates

T = TypeVar("T")


def register(sub: Any) -> None:
    d = sub.add_parser("directory", help="the certificate directory (lookup server, OCSP)")
    dsub = d.add_subparsers(dest="directory_command", metavar="DIRECTORY_COMMAND",
                            required=True)

    p = dsub.add_parser("run", help="run the directory's HTTP service")
    _config_flags(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="override server.listen")
    p.add_argument("--database-url", metavar="URL",
                   help="override server.database_url (postgresql://...)")
    p.add_argument("--trust", action="append", type=Path, metavar="CA.pem",
                   help="trust anchor a published certificate must chain to (repeatable; "
                        "replaces trust.anchors)")
    p.add_argument("--ocsp-signer", action="append", type=Path, metavar="CERT",
                   help="delegated OCSP responder certificate (repeatable, with --ocsp-key)")
    p.add_argument("--ocsp-key", action="append", type=Path, metavar="KEY",
                   help="the private key of the --ocsp-signer of the same position")
    p.set_defaults(handler=run)

    token = dsub.add_parser("token", help="write tokens (stored hashed)")
    tsub = token.add_subparsers(dest="token_command", metavar="TOKEN_COMMAND", required=True)
    p = tsub.add_parser("create", help="create a token for a domain; it is printed once")
    _config_flags(p)
    p.add_argument("--domain", required=True)
    p.set_defaults(handler=token_create)
    p = tsub.add_parser("revoke", help="revoke a token by id, or every token of a domain")
    _config_flags(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="token_id")
    which.add_argument("--domain")
    p.set_defaults(handler=token_revoke)
    p = tsub.add_parser("list", help="list tokens (ids and domains, never the tokens)")
    _config_flags(p)
    p.add_argument("--domain")
    p.set_defaults(handler=token_list)

    p = dsub.add_parser("publish", help="publish a certificate (PEM; chain may follow)")
    _client_flags(p)
    p.add_argument("certificate", type=Path, metavar="CERT.pem")
    p.set_defaults(handler=publish)

    p = dsub.add_parser("revoke", help="withdraw a published certificate")
    _client_flags(p)
    p.add_argument("fingerprint", help="SHA-256 fingerprint (64 hex digits)")
    p.add_argument("--reason", default="unspecified", choices=REASONS)
    p.set_defaults(handler=revoke)

    p = dsub.add_parser("dns-record", help="print the RFC 4386 SRV record for a domain")
    p.add_argument("--domain", required=True)
    p.add_argument("--url", required=True, help="the directory's base URL")
    p.add_argument("--ttl", type=int, default=3600)
    p.set_defaults(handler=dns_record)


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, metavar="FILE", help="directory.toml")
    p.add_argument("--data", type=Path, metavar="DIR", help="override server.data")


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="the directory's base URL")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--token", help="the domain's write token")
    who.add_argument("--token-file", type=Path, help="a file holding the token")


def _load_config(args: argparse.Namespace) -> DirectoryConfig:
    overrides: dict[str, object] = {}
    if args.data is not None:
        overrides["server.data"] = str(args.data)
    for flag, key in (("listen", "server.listen"), ("database_url", "server.database_url")):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    for flag, key in (("trust", "trust.anchors"), ("ocsp_signer", "ocsp.signers"),
                      ("ocsp_key", "ocsp.keys")):
        if getattr(args, flag, None):
            overrides[key] = [str(p) for p in getattr(args, flag)]
    try:
        return load_directory_config(args.config, overrides=overrides)
    except ConfigError as e:
        raise CliError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    from gateway.directory.app import SetupError, serve

    if len(args.ocsp_signer or ()) != len(args.ocsp_key or ()):
        raise CliError("give --ocsp-signer and --ocsp-key in pairs")
    config = _load_config(args)
    logging.basicConfig(level=config.log.level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not config.trust.anchors:
        logging.getLogger("smimegate.directory").warning(
            "no trust anchors (--trust or trust.anchors): every publication will be refused")
    try:
        import uvloop

        uvloop.run(serve(config))
    except (SetupError, StorageError) as e:
        raise CliError(str(e)) from None
    return 0


def _with_storage(args: argparse.Namespace, work: Callable[[Storage], Awaitable[T]]) -> T:
    config = _load_config(args)

    async def main() -> T:
        storage = await open_storage(config.server.data, config.server.database_url)
        try:
            return await work(storage)
        finally:
            await storage.close()

    try:
        return asyncio.run(main())
    except StorageError as e:
        raise CliError(str(e)) from None


def _domain(text: str) -> str:
    from gateway.directory.api_read import check_domain

    try:
        return check_domain(text)
    except ApiError as e:
        raise CliError(e.reason) from None


def token_create(args: argparse.Namespace) -> int:
    domain = _domain(args.domain)
    token, record = new_token(domain)
    _with_storage(args, lambda s: s.add_token(record))
    print(token)
    print(f"token {record.id} for {domain}: shown once, store it now", file=sys.stderr)
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    domain = _domain(args.domain) if args.domain else None
    n = _with_storage(args, lambda s: s.revoke_tokens(int(time.time()), token_id=args.token_id,
                                                      domain=domain))
    if n == 0:
        raise CliError("no such active token", REFUSED)
    print(f"revoked {n} token{'s' if n != 1 else ''}")
    return 0


def token_list(args: argparse.Namespace) -> int:
    domain = _domain(args.domain) if args.domain else None
    for t in _with_storage(args, lambda s: s.list_tokens(domain)):
        created = dt.datetime.fromtimestamp(t.created_at, dt.UTC).isoformat()
        state = "active" if t.revoked_at is None else "revoked"
        print(f"{t.id}\t{t.domain}\t{created}\t{state}")
    return 0


def _token(args: argparse.Namespace) -> str:
    if args.token is not None:
        return str(args.token)
    try:
        return str(args.token_file.read_text().strip())
    except OSError as e:
        raise CliError(f"{args.token_file}: {e.strerror}") from None


def publish(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        certs = load_certificates(args.certificate)
    except KeyMaterialError as e:
        raise CliError(str(e)) from None
    pems = [c.public_bytes(Encoding.PEM).decode() for c in certs]
    try:
        answer = client.publish(args.url, _token(args), pems[0], pems[1:])
    except client.ClientError as e:
        raise CliError(str(e), REFUSED if e.status else USAGE) from None
    cert = answer.get("certificate")
    fp = cert.get("fingerprint") if isinstance(cert, dict) else "?"
    names = cert.get("names") if isinstance(cert, dict) else []
    verb = "published" if answer.get("created") else "already published"
    print(f"{verb} {fp} for {', '.join(names) if isinstance(names, list) else names}")
    return 0


def revoke(args: argparse.Namespace) -> int:
    try:
        answer = client.revoke(args.url, _token(args), args.fingerprint, args.reason)
    except client.ClientError as e:
        raise CliError(str(e), REFUSED if e.status else USAGE) from None
    cert = answer.get("certificate")
    if isinstance(cert, dict):
        print(f"revoked {cert.get('fingerprint')} at {cert.get('revoked_at')} "
              f"({cert.get('revocation_reason')})")
    return 0


def dns_record(args: argparse.Namespace) -> int:
    domain = _domain(args.domain)
    try:
        record, warnings = client.dns_record(domain, args.url, ttl=args.ttl)
    except client.ClientError as e:
        raise CliError(str(e)) from None
    print(f"; RFC 4386: gateways find the directory serving {domain} here")
    for w in warnings:
        print(f"; warning: {w}")
    print(record.zone_line())
    return 0
