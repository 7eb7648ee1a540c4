"""Fuzz the MIME scanners for as long as you like.

Each input is scanned by the native scanner and its twin: both must give the same result
or the same MimeError, and nothing else may escape, from the scan or from the lazy
helpers after it (decoding, RFC 2047, addresses). With atheris installed (optional:
`pip install atheris`) it runs coverage-guided, seeded with tests/vectors; otherwise it
runs the hypothesis generators and mutators of tests/test_mimescan_diff.py.

    python -m benchmarks.fuzz_mime [--seconds 60] [--engine auto|atheris|hypothesis]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from pathlib import Path
from typing import Any

from gateway import native
from gateway.mime import _scan_py
from gateway.mime.addresses import addresses
from gateway.mime.decode import decoded_text
from gateway.mime.scanned import MimeError, ScannedMessage

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"


def _outcome(scan: Any, data: bytes) -> tuple[Any, ...]:
    try:
        return ("ok", scan(data))
    except MimeError as exc:
        return ("error", exc.status, exc.reason, exc.offset)


def _exercise(msg: ScannedMessage) -> None:
    for part in msg.walk():
        try:
            part.decoded_header("subject")
            _ = part.filename, part.smime
            if not part.children and not part.is_multipart:
                decoded_text(part, 4096)
        except MimeError:
            pass
    with contextlib.suppress(MimeError):
        addresses(msg.root)


def check(data: bytes) -> None:
    """One fuzz input: raises AssertionError on a disagreement, or what escaped."""
    ext = native.load("mimescan")
    twin = _outcome(_scan_py.scan, data)
    if ext is not None:
        fast = _outcome(ext.scan, data)
        assert fast == twin, f"native {fast[:4]!r} != twin {twin[:4]!r}"
    if twin[0] == "ok":
        _exercise(twin[1])


def run_atheris(seconds: float) -> int:
    atheris = importlib.import_module("atheris")
    corpus = Path("build/fuzz-mime-corpus")
    corpus.mkdir(parents=True, exist_ok=True)
    for vector in VECTORS.glob("*.eml"):
        (corpus / vector.name).write_bytes(vector.read_bytes())
    # Coverage comes from the twin's Python bytecode (the Cython module is not built with
    # -fsanitize=fuzzer): the twin follows the same paths, so it guides both.
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds)}", "-max_len=65536",
                   str(corpus)], check)
    atheris.Fuzz()
    return 0


def run_hypothesis(seconds: float) -> int:
    from hypothesis import HealthCheck, given, settings

    from tests.test_mimescan_diff import message, mutated

    count = 0

    @settings(max_examples=500, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated())
    def fuzz_mutated(data: bytes) -> None:
        nonlocal count
        count += 1
        check(data)

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(message())
    def fuzz_generated(data: bytes) -> None:
        nonlocal count
        count += 1
        check(data)

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        fuzz_mutated()
        fuzz_generated()
    print(f"hypothesis: {count} inputs, no disagreement, nothing but MimeError escaped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fuzz the MIME scanners")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    args = parser.parse_args(argv)
    if native.load("mimescan") is None:
        print("note: native scanner not built or disabled; fuzzing the twin alone")
    engine = args.engine
    if engine == "auto":
        try:
            importlib.import_module("atheris")
            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    return run_atheris(args.seconds) if engine == "atheris" else run_hypothesis(args.seconds)


if __name__ == "__main__":
    raise SystemExit(main())
