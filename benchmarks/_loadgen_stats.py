"""Figures for the load generator and the relay benchmark: percentiles, CPU, machine facts.

Owns how latency lists become p50/p99 (nearest-rank), how CPU seconds are counted for
this process and for a whole process tree (a relay's master and its children, read from
/proc, so children that already exited count through their parent's cutime), and the
versions and machine description written next to every JSON result.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import subprocess
import sys
from typing import Any


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list; None when it is empty."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_summary_ms(values_ns: list[int]) -> dict[str, float | None]:
    """p50, p99 and max of nanosecond latencies, in milliseconds."""
    vals = sorted(v / 1e6 for v in values_ns)
    return {
        "p50_ms": _round(percentile(vals, 50)),
        "p99_ms": _round(percentile(vals, 99)),
        "max_ms": _round(vals[-1] if vals else None),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def process_cpu_s() -> float:
    """CPU seconds (user + system) of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def children_cpu_s() -> float:
    """CPU seconds of this process's waited-for children (e.g. smtp-source runs)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> dict[int, tuple[int, float, float]]:
    """pid → (ppid, own CPU s, reaped children's CPU s) for every readable process."""
    out: dict[int, tuple[int, float, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue  # exited between listdir and open
        # The command name is in parentheses and may contain spaces: split after it.
        fields = raw[raw.rfind(b")") + 2:].split()
        ppid = int(fields[1])
        own = (int(fields[11]) + int(fields[12])) / _TICK
        reaped = (int(fields[13]) + int(fields[14])) / _TICK
        out[int(name)] = (ppid, own, reaped)
    return out


def tree_cpu_s(root_pid: int) -> float:
    """CPU seconds of a process and all its descendants, live or already reaped."""
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total = 0.0
    todo = [root_pid]
    seen: set[int] = set()
    while todo and len(seen) < 100_000:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        _, own, reaped = stats[pid]
        total += own + reaped
        todo.extend(children.get(pid, ()))
    return total


def system_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all processes, all cores)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    vals = [int(x) for x in fields]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / _TICK


def machine_facts() -> dict[str, Any]:
    """Versions and machine description written into every result file."""
    facts: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    facts["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for mod in ("uvloop", "aiosmtpd"):
        try:
            facts[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            facts[mod] = None
    try:
        from gateway import __version__ as gateway_version

        facts["smimegate"] = gateway_version
    except ImportError:
        facts["smimegate"] = None
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        facts["git_commit"] = rev.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        facts["git_commit"] = None
    try:
        out = subprocess.run(["postconf", "-h", "mail_version"], capture_output=True,
                             text=True, timeout=10, check=False)
        facts["postfix"] = out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        facts["postfix"] = None
    return facts
