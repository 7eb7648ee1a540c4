"""The `smimegate` command: each part of the gateway registers its own subcommands.

Exit status: 0 success, 1 the operation ran and said no (verification or decryption
failed), 2 bad usage or bad input. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from gateway import __version__
from gateway.cli.errors import CliError

# Modules with a `register(subparsers)` function, in the order their commands are listed.
COMMAND_MODULES = (
    "gateway.run",
    "gateway.spool.cli",
    "gateway.inbound.cli",
    "gateway.policy.cli",
    "gateway.smime.cli",
    "gateway.directory.cli",
    "gateway.lookup.cli",
    "gateway.cli.pki_cmd",
    "gateway.cli.config_cmd",
    "gateway.cli.demo_cmd",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smimegate", description="S/MIME e-mail firewall and certificate directory")
    parser.add_argument("--version", action="version", version=f"smimegate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as e:
        print(f"smimegate: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
