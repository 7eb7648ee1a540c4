"""The demo's child processes: `smimegate directory run` and two `smimegate run`, each
with its log file in the demo folder, started and waited for until they answer, and
stopped (SIGTERM, then SIGKILL after a grace period) whatever happens to the demo.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


class Child:
    """One child process writing to log; stop() is safe to call any number of times."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name, self.args, self.log = name, args, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool], timeout: float = 40.0) -> None:
        self.spawn()
        self.wait_ready(ready, timeout)

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL)

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 40.0) -> None:
        """Poll ready() until true; the child exiting first is an error with its log."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"{self.name} exited with {self.proc.returncode}:\n"
                                + self.tail())
            if ready():
                return
            time.sleep(0.1)
        raise DemoError(f"{self.name} did not answer within {timeout:.0f} s:\n" + self.tail())

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def smimegate(*args: str) -> list[str]:
    """The command line of `smimegate ARGS` with this interpreter."""
    return [sys.executable, "-m", "gateway", *args]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - our own http URL
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def smtp_ok(port: int) -> bool:
    try:  # not `with`: its QUIT could turn a Ctrl-C into an SMTPException (story.send)
        s = smtplib.SMTP("127.0.0.1", port, timeout=5)
    except (OSError, smtplib.SMTPException):
        return False
    try:
        s.noop()
        return True
    except (OSError, smtplib.SMTPException):
        return False
    finally:
        s.close()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - our own http URL
        return str(r.read().decode())
