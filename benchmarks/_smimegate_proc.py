"""`smimegate run` as a subprocess for the relay benchmark, on loopback with a temp spool.

Owns finding out whether this tree's gateway can run yet (`smimegate run --help` with
the flags the benchmark needs) and running it: 127.0.0.1 only, a temporary spool and
config, every recipient domain routed to the sink with `--transport`, stopped with
SIGTERM (then SIGKILL), its CPU counted over its whole process tree (workers included).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks._loadgen_stats import tree_cpu_s

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def smimegate_command() -> tuple[list[str] | None, str]:
    """The command that runs the gateway, or None and why it is not available."""
    cmd = [sys.executable, "-m", "gateway", "run"]
    try:
        r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60,
                           check=False, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"`smimegate run --help` failed: {e}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return None, f"`smimegate run` does not exist yet ({tail[0][:200]})"
    missing = [f for f in ("--listen", "--spool", "--transport") if f not in r.stdout]
    if missing:
        return None, f"`smimegate run` lacks {', '.join(missing)}"
    return cmd, "ok"


class Smimegate:
    """`smimegate run` on 127.0.0.1 with a temp spool, every domain routed to the sink."""

    def __init__(self, cmd: list[str], port: int, sink_port: int,
                 domains: tuple[str, ...], *, extra_config: str = "",
                 workers: int = 0, tree: Path = REPO) -> None:
        self.cmd = cmd
        self.tree = tree  # the checkout whose gateway runs (`python -m gateway` from it)
        self.extra_config = extra_config  # more gateway.toml (e.g. [keys], [lookup])
        self.workers = workers  # 0: the gateway's default
        self.domains = domains
        self.port = port
        self.sink_port = sink_port
        self.root = Path(tempfile.mkdtemp(prefix="bench-smimegate-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_port = free_port()

    def start(self, timeout: float = 60.0) -> Smimegate:
        sink = f"127.0.0.1:{self.sink_port}"
        # Every session of the benchmark comes from 127.0.0.1; Postfix exempts its
        # mynetworks from its per-client limits, so the gateway gets the same room.
        config = self.root / "gateway.toml"
        config.write_text("[smtp]\nmax_connections_per_client = 10000\n"
                          + self.extra_config)
        args = [*self.cmd, "-c", str(config), "--listen", f"127.0.0.1:{self.port}",
                "--admin", f"127.0.0.1:{self.admin_port}", "--spool", str(self.root / "spool"),
                "--trusted-network", "127.0.0.0/8",
                *(["--workers", str(self.workers)] if self.workers else []),
                *(arg for d in self.domains for arg in ("--transport", f"{d}={sink}"))]
        self.log = (self.root / "smimegate.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.tree)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"smimegate run exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if port_open(self.port):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"smimegate run did not listen in {timeout} s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.root / "smimegate.log").read_text(errors="replace")[-600:].strip()
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> dict[str, float]:
        """The gateway's own Prometheus figures (cumulative since start; no buckets)."""
        out: dict[str, float] = {}
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return out
        for line in text.splitlines()[:20_000]:
            if not line.startswith("smimegate") or "_bucket{" in line or "_created" in line:
                continue
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
        return out

    def cpu_s(self) -> float:
        return tree_cpu_s(self.proc.pid) if self.proc is not None else 0.0

    def write_syscalls(self) -> int:
        """write(2)/writev(2)/pwrite(2) calls of the gateway's main process (its event
        loop and threads; not the workers) so far: /proc/PID/io's syscw."""
        if self.proc is None:
            return 0
        try:
            with open(f"/proc/{self.proc.pid}/io", encoding="ascii") as f:
                for line in f:
                    if line.startswith("syscw:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout)
            self.proc = None
            self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
