"""`smimegate queue list|show ID|retry [ID]|delete ID|hold ID|release ID`.

Works on a spool directory (`--spool DIR`, or `spool.directory` of `-c gateway.toml`)
whether a gateway runs on it or not. Reading (list, show) never needs the lock: files
are only ever replaced atomically. Changes go through whoever owns the spool: with no
gateway running the command takes the lock and applies the change itself; otherwise it
leaves a command file for the running gateway (gateway.spool.control) and waits until
the gateway has applied it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.cli.errors import REFUSED, CliError
from gateway.config import ConfigError, load_gateway_config
from gateway.config.schema import SpoolSection
from gateway.envelope import Envelope
from gateway.spool import control
from gateway.spool.format import encode_message, is_queue_id, new_queue_id
from gateway.spool.layout import HOLD, STATES, Layout, QueueEntry, read_data, read_entry, scan
from gateway.spool.store import Spool, SpoolLocked

APPLY_WAIT = 10.0  # seconds to wait for a running gateway to apply a command


def register(sub: Any) -> None:
    queue = sub.add_parser("queue", help="inspect and manage the mail queue (spool)")
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_mutually_exclusive_group()
    group.add_argument("--spool", type=Path, metavar="DIR", help="the spool directory")
    group.add_argument("-c", "--config", type=Path, metavar="FILE",
                       help="gateway.toml naming the spool directory (spool.directory)")
    qsub = queue.add_subparsers(dest="queue_command", metavar="QUEUE_COMMAND", required=True)
    p = qsub.add_parser("list", parents=[where], help="every queued message, oldest first")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=list_queue)
    p = qsub.add_parser("show", parents=[where], help="a message's envelope, state, headers")
    p.add_argument("queue_id", metavar="ID")
    p.add_argument("--body", action="store_true", help="print the whole message, not headers")
    p.set_defaults(handler=show)
    p = qsub.add_parser("retry", parents=[where],
                        help="deliver now: one message, or every message not held")
    p.add_argument("queue_id", metavar="ID", nargs="?")
    p.set_defaults(handler=change, op="retry")
    for op, text in (("delete", "remove a message without delivering or bouncing it"),
                     ("hold", "keep a message queued but do not deliver it"),
                     ("release", "deliver a held message again")):
        p = qsub.add_parser(op, parents=[where], help=text)
        p.add_argument("queue_id", metavar="ID")
        p.set_defaults(handler=change, op=op)


def _os_errors(handler: Callable[[argparse.Namespace], int]
               ) -> Callable[[argparse.Namespace], int]:
    """A failing disk or a permission problem is a one-line error, not a traceback."""
    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise CliError(f"{where}{e.strerror or e}", REFUSED) from None
    return wrapped


def _spool_section(args: argparse.Namespace) -> SpoolSection:
    if args.spool is not None:
        return SpoolSection(directory=args.spool)
    try:
        return load_gateway_config(args.config).spool
    except ConfigError as e:
        raise CliError(str(e)) from None


def _layout(section: SpoolSection) -> Layout:
    layout = Layout(Path(section.directory))
    if not layout.exists():
        raise CliError(f"no spool at {layout.root} (use --spool DIR or -c gateway.toml)")
    return layout


def _queue_id(layout: Layout, text: str) -> str:
    if not is_queue_id(text):
        raise CliError(f"{text!r} is not a queue ID (upper-case hex, as `queue list` shows)")
    if not layout.message_path(text).exists():
        raise CliError(f"no message {text} in the queue at {layout.root}", REFUSED)
    return text


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


def _as_json(entry: QueueEntry, now: float) -> dict[str, Any]:
    env = entry.envelope
    return {"id": entry.queue_id, "state": entry.status(now), "size": entry.size,
            "received_at": env.received_at, "sender": env.mail_from,
            "require_tls": env.require_tls, "refused": env.refused,
            "recipients": [dict(address=a, **r.to_json())
                           for a, r in zip(env.rcpt_tos, entry.state.rcpts, strict=True)]}


@_os_errors
def list_queue(args: argparse.Namespace) -> int:
    layout = _layout(_spool_section(args))
    now = time.time()
    counts = dict.fromkeys(STATES, 0)
    for item in scan(layout):
        if not isinstance(item, QueueEntry):
            name, error = item
            print(f"{name}  unreadable: {error}")
            continue
        state = item.status(now)
        counts[state] += 1
        if args.json:
            print(json.dumps(_as_json(item, now)))
            continue
        flags = (" [verified TLS only]" if item.envelope.require_tls else "") + (
            f" [original, refused by the crypto job: {item.envelope.refused}]"
            if item.envelope.refused else "")
        print(f"{item.queue_id}  {state:<8} {item.size:>9}  {_when(item.envelope.received_at)}"
              f"  <{item.envelope.mail_from}>{flags}")
        for addr, r in zip(item.envelope.rcpt_tos, item.state.rcpts, strict=True):
            extra = f" next {_when(r.next_attempt)}" if r.status == "pending" and \
                r.attempts else ""
            reply = f"  ({r.reply})" if r.reply else ""
            print(f"    {r.status:<9} <{addr}>{extra}{reply}")
    if not args.json:
        total = sum(counts.values())
        print(f"-- {total} message(s): {counts['active']} active, {counts['deferred']} "
              f"deferred, {counts[HOLD]} on hold")
    return 0


@_os_errors
def show(args: argparse.Namespace) -> int:
    layout = _layout(_spool_section(args))
    qid = _queue_id(layout, args.queue_id)
    try:
        entry = read_entry(layout, qid)
        data = read_data(layout, entry)
    except FileNotFoundError:
        raise CliError(f"message {qid} left the queue meanwhile", REFUSED) from None
    print(json.dumps(_as_json(entry, time.time()), indent=2))
    print()
    end = data.find(b"\r\n\r\n")
    shown = data if args.body or end < 0 else data[:end + 2]
    print(shown.decode("utf-8", "replace"), end="")
    return 0


@_os_errors
def change(args: argparse.Namespace) -> int:
    section = _spool_section(args)
    layout = _layout(section)
    qid = None if args.queue_id is None else _queue_id(layout, args.queue_id)
    command = control.Command(args.op, qid)
    try:
        print(asyncio.run(_apply_here(section, command)))
        return 0
    except SpoolLocked:
        pass
    except control.CommandError as e:
        raise CliError(str(e), REFUSED) from None
    path = control.submit(layout.control, command)
    deadline = time.monotonic() + APPLY_WAIT
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if path.exists():
        print(f"{args.op} {qid or '(all)'}: handed to the running gateway; it has not "
              f"applied it yet")
        return 0
    outcome = control.collect(path)
    if outcome is not None and not outcome.ok:
        raise CliError(f"{args.op} {qid or '(all)'}: the running gateway refused it: "
                       f"{outcome.text}", REFUSED)
    said = f": {outcome.text}" if outcome is not None else ""
    print(f"{args.op} {qid or '(all)'}: applied by the running gateway{said}")
    return 0


def adopt(section: SpoolSection, envelope: Envelope, data: bytes, *,
          first_attempt: str = "") -> tuple[str, bool]:
    """Queue a message from outside the queue (`smimegate quarantine release`), whether a
    gateway runs or not: (queue ID, whether it is queued now). False means a running
    gateway has not applied the command within APPLY_WAIT (it may still do so), or
    refused it (its log says why); the caller then keeps its own copy."""
    layout = Layout(Path(section.directory))  # Spool.open below creates a missing one
    qid = new_queue_id()

    async def here() -> str:
        spool = await Spool.open(section, lock_wait=0.0)  # creates the directories
        try:
            name = control.stage_message(layout.control, encode_message(envelope, data))
            return await spool.apply(control.Command("adopt", qid, name, first_attempt))
        finally:
            await spool.close()

    try:
        asyncio.run(here())
        return qid, True
    except SpoolLocked:
        pass
    name = control.stage_message(layout.control, encode_message(envelope, data))
    path = control.submit(layout.control, control.Command("adopt", qid, name, first_attempt))
    deadline = time.monotonic() + APPLY_WAIT
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if path.exists():
        return qid, False
    outcome = control.collect(path)
    if outcome is None or not outcome.ok:
        (layout.control / name).unlink(missing_ok=True)
        return qid, False
    return qid, True


async def _apply_here(section: SpoolSection, command: control.Command) -> str:
    spool = await Spool.open(section, lock_wait=0.0)
    try:
        return await spool.apply(command)
    finally:
        await spool.close()
