"""`smimegate pki demo DIR`: write the demo PKI used by `make demo` and the tests."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.keys.demo import DEFAULT_OCSP_URL, write_demo_pki


def register(sub: Any) -> None:
    pki = sub.add_parser("pki", help="certificate helpers")
    pki_sub = pki.add_subparsers(dest="pki_command", metavar="PKI_COMMAND", required=True)
    p = pki_sub.add_parser("demo", help="write a demo PKI (CA, alpha.test, beta.test, users)")
    p.add_argument("dir", type=Path)
    p.add_argument("--ocsp-url", default=DEFAULT_OCSP_URL,
                   help=f"AIA OCSP URL in leaf certificates (default {DEFAULT_OCSP_URL})")
    p.set_defaults(handler=demo)


def demo(args: argparse.Namespace) -> int:
    files = write_demo_pki(args.dir, ocsp_url=args.ocsp_url)
    for f in files:
        print(f)
    return 0
