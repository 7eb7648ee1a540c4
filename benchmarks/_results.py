"""Where a benchmark's figures go: one JSON file per run under benchmarks/results/
(git-ignored), named by benchmark and UTC time, with the machine's facts and the
versions that bear on the figures, so runs on different days and machines compare."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks._loadgen_stats import machine_facts

RESULTS = Path(__file__).parent / "results"


def write_results(name: str, body: Mapping[str, Any], path: str | Path | None = None, *,
                  facts: Mapping[str, Any] | None = None) -> Path:
    """Write {"benchmark": name, "machine": ..., **body} to path (default: a new file in
    RESULTS); `facts` are added to the machine's (library versions, the cache kind)."""
    out = Path(path) if path else \
        RESULTS / f"bench_{name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine: dict[str, Any] = {**machine_facts(), **(facts or {})}
    out.write_text(json.dumps({"benchmark": name, "machine": machine, **body}, indent=2,
                              default=str))
    print(f"wrote {out}")
    return out
