"""`smimegate demo`: the README's first command (grows with each part of the gateway)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from gateway.keys.demo import write_demo_pki


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the loopback demo")
    p.add_argument("--dir", type=Path, default=Path("demo-out"),
                   help="where the demo writes its PKI and data (default ./demo-out)")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    out: Path = args.dir
    if out.exists():
        shutil.rmtree(out)
    pki = out / "pki"
    files = write_demo_pki(pki)
    print(f"[1] demo PKI: {len(files)} files in {pki}")
    for f in files:
        print(f"      {f.relative_to(pki)}")
    return 0
