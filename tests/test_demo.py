"""`smimegate demo` as a user runs it (issue 7, item 4): a real process that starts a
directory, two gateways and their mail servers on loopback, tells the story, exits 0 and
leaves no process of its own behind; interrupted, it stops everything too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_relay_e2e import REPO

pytestmark = pytest.mark.timeout(120)


def start(out: Path) -> subprocess.Popen[bytes]:
    # A session of its own: every process the demo starts is in it, so survivors show.
    return subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--dir", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def session_members(sid: int) -> list[str]:
    """Command lines of live processes in session sid."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


def cache_names(out: Path) -> list[str]:
    return [m.group(1) for toml in out.glob("gateway-*/gateway.toml")
            for m in re.finditer(r'^name = "([^"]+)"', toml.read_text(), re.M)]


def test_full_demo_tells_the_story_and_stops_everything(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = start(out)
    stdout, stderr = proc.communicate(timeout=100)
    text = stdout.decode()
    assert proc.returncode == 0, text[-3000:] + stderr.decode()[-2000:]
    assert session_members(proc.pid) == []
    assert "alpha.test published alice       alice@alpha.test" in text
    assert "beta.test published bob         bob@beta.test" in text
    assert "what crossed the Internet: signed and encrypted" in text
    assert re.search(r"Authentication-Results: mx\.beta\.test; smime=pass "
                     r"body\.smime-identifier=alice@alpha\.test", text)
    assert "revoked its signing certificate in the directory" in text
    assert re.search(r"quarantined it .*\n.*smime=fail: revoked", text), text[-2000:]
    assert re.search(r"beta  smimegate_inbound_verdicts_total\{verdict=\"fail\"\} 1", text)
    # The demo certificates list no SMIMECapabilities (RFC 4262): GCM narrows to CBC.
    assert re.search(r"alpha smimegate_outbound_encrypted_total\{cipher=\"aes128-cbc\"\} 2",
                     text)
    assert "All acts passed" in text
    wire = (out / "on-the-wire.eml").read_bytes()
    assert b"smime-type=enveloped-data" in wire
    assert b"authEnveloped-data" not in wire
    assert b"Hi Bob" not in wire
    assert b"Hi Bob" in (out / "bob-received-1.eml").read_bytes()
    assert not (out / "bob-received-2.eml").exists()
    names = cache_names(out)
    assert len(names) == 2
    assert not [n for n in names if Path("/dev/shm", n).exists()]


def test_interrupted_demo_stops_everything(tmp_path: Path) -> None:
    proc = start(tmp_path / "demo")
    assert proc.stdout is not None
    lines = []
    for raw in proc.stdout:  # wait until both gateways are running
        lines.append(raw.decode())
        if raw.startswith(b"[3]"):
            break
    else:
        proc.wait(30)
        pytest.fail("demo ended before its gateways ran:\n" + "".join(lines))
    assert len(session_members(proc.pid)) >= 4  # the demo, directory, two gateways
    os.kill(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest.decode()[-2000:]
    assert "demo interrupted" in rest.decode()
    deadline = time.monotonic() + 5  # orphans, if any, would still be there after this
    while session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_members(proc.pid) == []
    names = cache_names(tmp_path / "demo")
    assert len(names) == 2
    assert not [n for n in names if Path("/dev/shm", n).exists()]


def test_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    keep = tmp_path / "mine.txt"
    keep.write_text("precious")
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--dir", str(tmp_path)],
                       cwd=REPO, capture_output=True, timeout=60, check=False)
    assert r.returncode != 0
    assert b"not written by `smimegate demo`" in r.stderr
    assert b"Traceback" not in r.stderr
    assert keep.read_text() == "precious"
