"""`smimegate quarantine list|show ID|release ID|delete ID`: the quarantine.

The store is `[inbound] quarantine_dir` of `-c gateway.toml` (default "quarantine" next
to the spool), or `--dir DIR`. list, show and delete work whether a gateway runs or not
(entries are written once, atomically). release puts the message into the spool, then
deletes the entry:
- inbound mail is queued for delivery to its recipients as kept, with an
  Authentication-Results saying it was released (ours from the sender removed);
- outbound mail (kept by the crypto job for want of a certificate) is never sent as it
  is: it is queued as a refused original (Envelope.refused), due at once, so the
  gateway's delivery runs the crypto job for it again, with a fresh certificate lookup:
  it is encrypted if a certificate is found by then, else its rule's fallback applies
  again.
The message goes in through the spool's "adopt" command (gateway/spool/control.py):
applied directly when no gateway runs, else by the running gateway, which owns the
spool. The entry is deleted only once the message is in the queue; a crash between the
two steps leaves both: never lost, at worst released twice.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.cli.errors import REFUSED, CliError
from gateway.config import ConfigError, load_gateway_config
from gateway.config.schema import GatewayConfig
from gateway.envelope import Envelope
from gateway.inbound.job import strip_our_results
from gateway.inbound.quarantine import (
    NO_CERTIFICATE,
    Entry,
    Quarantine,
    QuarantineError,
    quarantine_dir,
)
from gateway.outbound.replies import RELEASED
from gateway.revocation import authentication_results
from gateway.revocation.authres import ResInfo
from gateway.revocation.policy import RESULTS
from gateway.spool.cli import adopt
from gateway.spool.store import SpoolLocked


def register(sub: Any) -> None:
    q = sub.add_parser("quarantine", help="inspect, release and delete quarantined mail")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("-c", "--config", type=Path, metavar="FILE",
                       help="gateway.toml ([inbound] quarantine_dir, spool.directory)")
    where.add_argument("--dir", type=Path, metavar="DIR",
                       help="the quarantine directory (instead of the configured one)")
    qsub = q.add_subparsers(dest="quarantine_command", metavar="QUARANTINE_COMMAND",
                            required=True)
    p = qsub.add_parser("list", parents=[where], help="every quarantined message")
    p.add_argument("--json", action="store_true", help="a JSON array")
    p.set_defaults(handler=list_entries)
    p = qsub.add_parser("show", parents=[where], help="envelope, reason and the message")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=show)
    p = qsub.add_parser("release", parents=[where],
                        help="queue the message again (outbound: encrypted first)")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=release)
    p = qsub.add_parser("delete", parents=[where], help="remove a message for good")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=delete)


def _config(args: argparse.Namespace) -> GatewayConfig:
    try:
        return load_gateway_config(args.config)
    except ConfigError as e:
        raise CliError(str(e)) from None


def _store(args: argparse.Namespace) -> Quarantine:
    if args.dir is not None:
        return Quarantine(args.dir)
    c = _config(args)
    return Quarantine(quarantine_dir(c.inbound.quarantine_dir, c.spool.directory))


def _summary(e: Entry) -> dict[str, object]:
    return {"id": e.id, "mail_from": e.envelope.mail_from, "rcpt_tos": list(e.envelope.rcpt_tos),
            "verdict": e.verdict, "reason": e.reason, "size": len(e.data),
            "quarantined_at": datetime.fromtimestamp(e.quarantined_at, UTC).isoformat()}


def list_entries(args: argparse.Namespace) -> int:
    entries = [_summary(e) for e in _store(args)]
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    for s in entries:
        print(f"{s['id']}  {s['quarantined_at']}  {s['verdict']:<13} {s['mail_from'] or '<>'} "
              f"-> {', '.join(s['rcpt_tos'])}  ({s['reason']})")  # type: ignore[arg-type]
    return 0


def _get(store: Quarantine, qid: str) -> Entry:
    try:
        return store.get(qid)
    except QuarantineError as e:
        raise CliError(str(e), REFUSED) from None


def show(args: argparse.Namespace) -> int:
    e = _get(_store(args), args.id)
    for key, value in _summary(e).items():
        print(f"{key}: {value}")
    print()
    print(e.data.decode("utf-8", "replace"), end="")
    return 0


def delete(args: argparse.Namespace) -> int:
    try:
        _store(args).delete(args.id)
    except QuarantineError as e:
        raise CliError(str(e), REFUSED) from None
    print(f"deleted {args.id}")
    return 0


def released_copy(e: Entry, authserv_id: str) -> bytes:
    """What release queues: our results from elsewhere removed, the release noted."""
    result = e.verdict if e.verdict in RESULTS else "neutral"
    info = ResInfo("smime", result, f"released from quarantine: {e.reason}")
    header = authentication_results(authserv_id, info).encode("ascii")
    return header + strip_our_results(e.data, authserv_id)


def release(args: argparse.Namespace) -> int:
    c = _config(args)
    store = Quarantine(args.dir) if args.dir is not None else \
        Quarantine(quarantine_dir(c.inbound.quarantine_dir, c.spool.directory))
    e = _get(store, args.id)
    env = e.envelope
    fresh = Envelope(env.mail_from, env.rcpt_tos, env.client_address, env.helo, time.time(),
                     env.esmtp)
    outbound = e.verdict == NO_CERTIFICATE
    try:
        if outbound:
            # Due now, as a refused copy whose first attempt was made (the job at DATA):
            # delivery runs the job again at once instead of waiting a retry interval.
            queue_id, queued = adopt(c.spool, replace(fresh, refused=str(RELEASED)), e.data,
                                     first_attempt=str(RELEASED))
        else:
            queue_id, queued = adopt(c.spool, fresh, released_copy(e, c.smtp.hostname))
        if not queued:
            raise CliError(f"handed {e.id} to the running gateway as {queue_id}, but it has "
                           "not queued it (yet): the quarantine entry is kept; see the "
                           "gateway's log before releasing again", REFUSED)
        store.delete(e.id)
    except (OSError, SpoolLocked) as err:
        raise CliError(f"{getattr(err, 'filename', '') or ''}: "
                       f"{getattr(err, 'strerror', '') or err}", REFUSED) from None
    how = " (outbound: the crypto job runs again for it before anything is sent)" \
        if outbound else ""
    print(f"released {e.id} as {queue_id}{how}")
    return 0
