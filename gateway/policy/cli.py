"""`smimegate policy explain`: the decision for each recipient and the rules that made it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.cli.errors import CliError
from gateway.config import ConfigError, load_gateway_config
from gateway.config.schema import PolicySection
from gateway.mime.canon import canonicalize
from gateway.mime.scanned import MimeError
from gateway.policy.engine import Decision, Defaults, decide_all, needs_text
from gateway.policy.extract import facts_from_message

MAX_INPUT = 256 * 1024 * 1024


def register(sub: Any) -> None:
    policy = sub.add_parser("policy", help="inspect outbound policy")
    psub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    p = psub.add_parser("explain", help="print the decision per recipient for a message on "
                                         "stdin, and the rule behind each part of it")
    p.add_argument("-c", "--config", type=Path, help="gateway.toml (default: built-in defaults)")
    p.add_argument("--from", dest="sender", required=True, help="envelope sender")
    p.add_argument("--to", dest="recipients", action="append", required=True,
                   help="envelope recipient; repeatable")
    p.add_argument("--client", default="127.0.0.1", help="client IP address (default 127.0.0.1)")
    p.set_defaults(handler=explain)


def defaults_of(section: PolicySection) -> Defaults:
    return Defaults(encrypt=section.default_encrypt, certificate=section.default_certificate,
                    cipher=section.default_cipher, sign=section.default_sign,
                    signing_certificate=section.default_signing_certificate,
                    protect_headers=section.default_protect_headers)


def format_decision(recipient: str, d: Decision) -> str:
    why = dict(d.why)
    lines = [f"{recipient}:"]
    for attr in ("encrypt", "certificate", "cipher", "fallback", "sign",
                 "signing_certificate", "protect_headers"):
        lines.append(f"  {attr:<20} {getattr(d, attr)!s:<18} ({why.get(attr, 'default')})")
    if d.strip_subject_keywords:
        lines.append(f"  strip from Subject   {', '.join(d.strip_subject_keywords)}")
    lines.append(f"  matched rules        {', '.join(d.matched) or '(none)'}")
    return "\n".join(lines)


def explain(args: argparse.Namespace) -> int:
    try:
        config = load_gateway_config(args.config)
    except ConfigError as e:
        raise CliError(str(e)) from None
    data = sys.stdin.buffer.read(MAX_INPUT + 1)
    if len(data) > MAX_INPUT:
        raise CliError(f"input larger than {MAX_INPUT} bytes")
    rules = config.policy.rules
    try:
        facts = facts_from_message(canonicalize(data), want_text=needs_text(rules),
                                   budget=config.policy.text_budget)
    except MimeError as e:
        raise CliError(f"message cannot be scanned: {e}") from None
    decisions = decide_all(rules, defaults_of(config.policy), sender=args.sender,
                           recipients=args.recipients, facts=facts,
                           client_address=args.client)
    print(f"message: {facts.size} bytes, S/MIME already present: {facts.protected}, "
          f"{len(facts.attachments)} attachment(s)")
    for note in facts.notes:
        print(f"note: {note}")
    for rcpt, decision in decisions.items():
        print(format_decision(rcpt, decision))
    groups = len({d.group_key() for d in decisions.values()})
    print(f"copies to send: {groups}")
    return 0
