"""`smimegate check-config FILE` and `smimegate config --defaults`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.cli.errors import CliError
from gateway.config import ConfigError, load_directory_config, load_gateway_config
from gateway.config.render import render_defaults
from gateway.config.schema import DirectoryConfig, GatewayConfig


def register(sub: Any) -> None:
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file", type=Path)
    p.add_argument("--directory", action="store_true",
                   help="the file is a directory.toml, not a gateway.toml")
    p.set_defaults(handler=check_config)

    p = sub.add_parser("config", help="print configuration defaults")
    p.add_argument("--defaults", action="store_true", required=True,
                   help="print every setting with its default, unit and meaning as TOML")
    p.add_argument("--directory", action="store_true",
                   help="the directory's settings instead of the gateway's")
    p.set_defaults(handler=print_defaults)


def check_config(args: argparse.Namespace) -> int:
    try:
        if args.directory:
            load_directory_config(args.file)
        else:
            load_gateway_config(args.file)
    except ConfigError as e:
        raise CliError(str(e)) from None
    print(f"{args.file}: OK")
    return 0


def print_defaults(args: argparse.Namespace) -> int:
    print(render_defaults(DirectoryConfig if args.directory else GatewayConfig), end="")
    return 0
