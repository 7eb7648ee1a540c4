"""`smimegate demo`: the README's first command, the whole gateway on loopback.

The full story (`story.py`): one directory, two gateways, two internal mail servers and
the "Internet" between them, all started and stopped by the demo. `--engine-only`
(`engine.py`) is the S/MIME engine alone on one message.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path
from types import FrameType

from gateway.cli.errors import CliError

MARKER = ".smimegate-demo"  # a folder holding this was written by the demo: safe to empty
EARLIER = {"pki", "on-the-wire.eml"}  # what the demo wrote before it left the marker


def prepare(out: Path) -> None:
    """Empty out for a new run, refusing a folder the demo did not write."""
    if out.exists():
        if not out.is_dir():
            raise CliError(f"{out}: exists and is not a folder")
        names = {p.name for p in out.iterdir()}
        if names and MARKER not in names and not names <= EARLIER:
            raise CliError(f"{out}: not empty and not written by `smimegate demo`; "
                           "give another --dir")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by `smimegate demo`; emptied by its next run\n")


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: through its finally


def run(out: Path, *, engine_only: bool = False) -> int:
    """Run the demo writing into out; the exit status."""
    prepare(out)
    if hasattr(sys.stdout, "reconfigure"):  # each act shows as it happens, also in a pipe
        sys.stdout.reconfigure(line_buffering=True)
    if engine_only:
        from gateway.demo.engine import run_engine
        from gateway.keys.demo import write_demo_pki

        pki = out / "pki"
        return run_engine(out, pki, write_demo_pki(pki))
    from gateway.demo.story import run_story

    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return run_story(out)
    finally:
        signal.signal(signal.SIGTERM, previous)
