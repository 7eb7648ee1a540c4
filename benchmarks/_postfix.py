"""A throw-away Postfix instance for the relay benchmark: plain relay to a loopback sink.

Owns installing Postfix from Debian when it is missing (without leaving the system-wide
instance running) and running a private instance from a temporary directory: its own
config_directory, queue_directory and data_directory, smtpd on 127.0.0.1 only, every
recipient relayed through a transport map to the sink, queue files fsync'd as Postfix
always does before its 250 (the durability smimegate promises too). Started with
`postfix -c DIR start`, stopped with `postfix -c DIR stop` (then `abort` if need be).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks._loadgen_stats import tree_cpu_s

# The services a relay needs, none chrooted (the chroot would need /etc copied into the
# temporary queue directory). Column layout as in Debian's master.cf.
_MASTER_CF = """\
{listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_MAIN_CF = """\
# Written by benchmarks/_postfix.py: a plain relay to a loopback sink.
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = relay.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
transport_maps = texthash:{config}/transport
disable_dns_lookups = yes
smtp_host_lookup = native
smtputf8_enable = no
biff = no
# Big enough for 100 sessions and the 100 KB messages; everything else is Postfix's own
# default, including fsync of every queue file before the 250.
default_process_limit = 200
message_size_limit = 52428800
"""


class PostfixError(RuntimeError):
    """Postfix could not be installed, configured, started or stopped."""


def _run(cmd: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def system_instance_running() -> bool:
    """Is the default (system-wide) Postfix instance running?"""
    if shutil.which("postfix") is None:
        return False
    return _run(["postfix", "status"], 30).returncode == 0


def ensure_installed(log: list[str]) -> None:
    """Install Postfix from Debian if `postfix` or `smtp-source` is missing.

    Installing may start the system-wide instance (it does when services may start);
    one that was not running before is stopped again, so only our private instance runs.
    """
    if shutil.which("postfix") and shutil.which("smtp-source"):
        return
    if os.geteuid() != 0:
        raise PostfixError("Postfix is not installed and installing it needs root")
    was_running = system_instance_running()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log.append("installing Postfix from Debian (apt-get update; apt-get install -y postfix)")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postfix"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env,
                           check=False)
        if r.returncode != 0:
            raise PostfixError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    if shutil.which("smtp-source") is None:
        raise PostfixError("Postfix installed but smtp-source is missing")
    if not was_running and system_instance_running():
        _run(["postfix", "stop"], 60)
        log.append("stopped the system-wide Postfix instance the install started")


class PostfixRelay:
    """A private Postfix instance on 127.0.0.1:`port` relaying everything to `sink`."""

    def __init__(self, port: int, sink_host: str, sink_port: int) -> None:
        self.port = port
        self.sink = f"[{sink_host}]:{sink_port}"
        self.root = Path(tempfile.mkdtemp(prefix="bench-postfix-"))
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"

    def start(self, timeout: float = 30.0) -> PostfixRelay:
        # The postfix user must reach the queue directory through our temp dir.
        self.root.chmod(0o755)
        self.config.mkdir()
        self.queue.mkdir()
        self.data.mkdir()
        shutil.chown(self.data, "postfix", "postfix")
        (self.config / "main.cf").write_text(_MAIN_CF.format(
            queue=self.queue, data=self.data, root=self.root, config=self.config))
        (self.config / "master.cf").write_text(
            _MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        (self.config / "transport").write_text(f"*\tsmtp:{self.sink}\n")
        # Creates the queue's subdirectories with Postfix's own owners and modes.
        r = _run(["postfix", "-c", str(self.config), "post-install", "create-missing"])
        if r.returncode != 0:
            self.stop()
            raise PostfixError(f"postfix post-install failed: {self._why(r)}")
        r = _run(["postfix", "-c", str(self.config), "start"])
        if r.returncode != 0:
            why = self._why(r)
            self.stop()
            raise PostfixError(f"postfix start failed: {why}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master_pid() is not None and _port_open("127.0.0.1", self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise PostfixError(f"postfix did not listen on 127.0.0.1:{self.port} in {timeout} s")

    def _why(self, r: subprocess.CompletedProcess[str]) -> str:
        """Postfix logs its errors to maillog_file, not stderr: show both."""
        text = (r.stderr or r.stdout).strip()
        with contextlib.suppress(OSError):
            text += " " + (self.root / "maillog").read_text(errors="replace")[-600:].strip()
        return text.strip()[-800:] or f"exit status {r.returncode}"

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cpu_s(self) -> float:
        """CPU seconds of the master and every Postfix daemon it started."""
        pid = self.master_pid()
        return tree_cpu_s(pid) if pid is not None else 0.0

    def queue_size(self) -> int:
        """Messages still in the queue (incoming, active, deferred)."""
        n = 0
        for sub in ("incoming", "active", "deferred", "maildrop"):
            for _dirpath, _dirs, files in os.walk(self.queue / sub):
                n += len(files)
        return n

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the instance, wait for its master to exit, and remove the temp dir."""
        pid = self.master_pid()
        if pid is not None:
            _run(["postfix", "-c", str(self.config), "stop"], timeout)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                _run(["postfix", "-c", str(self.config), "abort"], timeout)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
