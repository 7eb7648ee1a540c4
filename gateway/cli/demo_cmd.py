"""`smimegate demo`: registers the command; the demo itself is `gateway/demo`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the loopback demo (directory + two gateways)")
    p.add_argument("--dir", type=Path, default=Path("demo-out"),
                   help="where the demo writes its PKI, configs, logs and messages "
                        "(emptied first; default ./demo-out)")
    p.add_argument("--engine-only", action="store_true",
                   help="only the S/MIME engine on one message, no servers")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run

    return run(args.dir, engine_only=args.engine_only)
