"""Helpers for the directory's tests and benchmark: a throwaway PostgreSQL cluster, the
demo PKI, and a directory app on 127.0.0.1:0.

The cluster lives in a temp folder, listens only on a unix socket there, and is stopped
by stop(). PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
Missing binaries are an error (tests FAIL with the reason) unless
SMIMEGATE_SKIP_POSTGRES=1 says to skip.
"""

from __future__ import annotations

import asyncio
import glob
import http.client as httpclient
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from gateway.config.schema import DirectoryConfig
from gateway.directory.app import Directory, build_app
from gateway.directory.tokens import new_token

T = TypeVar("T")

SKIP_ENV = "SMIMEGATE_SKIP_POSTGRES"


class PostgresUnavailable(RuntimeError):
    pass


def find_pg_bin() -> Path:
    """The folder of initdb and postgres (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found:  # often a symlink into /usr/lib/postgresql/N/bin, where pg_isready also is
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not candidates:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, postgres) not found: run "
            "scripts/ensure-debian-tools (apt-get install postgresql), or set "
            f"{SKIP_ENV}=1 to skip the PostgreSQL tests")
    return Path(candidates[-1]).parent


class PostgresCluster:
    """initdb + postgres in a temp folder, on a unix socket; stop() removes it all."""

    def __init__(self) -> None:
        self.bin = find_pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="smimegate-pg-"))
        self.port = 5432
        self.as_root = os.geteuid() == 0
        self.proc: subprocess.Popen[bytes] | None = None

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self.as_root else list(args)

    def start(self) -> PostgresCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> PostgresCluster:
        data = self.root / "data"
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        out = subprocess.run(
            self._cmd(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--no-sync", "--no-instructions"),
            capture_output=True, text=True, check=False, timeout=120)
        if out.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {out.stderr.strip()[-500:]}")
        log = (self.root / "postgres.log").open("wb")
        self.proc = subprocess.Popen(
            self._cmd(str(self.bin / "postgres"), "-D", str(data), "-k", str(self.root),
                      "-p", str(self.port), "-c", "listen_addresses=", "-c", "fsync=off",
                      "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                      "-c", "max_connections=200"),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = (self.root / "postgres.log").read_text(errors="replace")
                raise PostgresUnavailable(f"postgres exited: {text[-800:]}")
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", str(self.root), "-p", str(self.port)],
                capture_output=True, check=False)
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        raise PostgresUnavailable("postgres did not become ready within 30 s")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.root}&port={self.port}"

    def create_database(self, name: str) -> str:
        out = subprocess.run(
            [str(self.bin / "createdb"), "-h", str(self.root), "-p", str(self.port),
             "-U", "postgres", name], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise PostgresUnavailable(f"createdb {name}: {out.stderr.strip()}")
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT is PostgreSQL's "fast shutdown": disconnect clients, stop cleanly.
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class DirectoryServer:
    """A directory app on 127.0.0.1:0, served from its own thread and event loop so that
    blocking clients (openssl, http.client) can talk to it from the test."""

    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.directory: Directory | None = None
        self.port = 0

    def start(self) -> DirectoryServer:
        self.thread.start()
        try:
            self.call(self._start())
        except BaseException:
            self.stop()
            raise
        return self

    async def _start(self) -> None:
        self.directory = await Directory.open(self.config)
        self.runner = web.AppRunner(build_app(self.directory), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run coro on the server's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.runner is not None:
            self.call(self.runner.cleanup())
        elif self.directory is not None:
            self.call(self.directory.close())
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
        self.loop.close()

    def token(self, domain: str) -> str:
        token, record = new_token(domain)
        assert self.directory is not None
        self.call(self.directory.storage.add_token(record))
        return token


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | str | dict[str, Any] | list[Any] | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    """One blocking HTTP request on loopback; JSON-encodes dict/list bodies."""
    parts = urllib.parse.urlsplit(url)
    hdrs = dict(headers or {})
    data: bytes | None
    if isinstance(body, dict | list):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    else:
        data = body.encode() if isinstance(body, str) else body
    conn = httpclient.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()
