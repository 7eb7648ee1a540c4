"""`smimegate queue ...` on a spool nobody runs, and on one a running owner holds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.cli import main
from gateway.config.schema import SpoolSection
from gateway.envelope import Envelope
from gateway.spool import Spool

ENV = Envelope("alice@alpha.test", ("bob@beta.test",), received_at=1_700_000_000.0)
DATA = b"Subject: queued\r\nFrom: alice@alpha.test\r\n\r\nsecret body\r\n"


def make_spool(directory: Path, n: int) -> list[str]:
    async def body() -> list[str]:
        spool = await Spool.open(SpoolSection(directory=directory))
        ids = [await spool.enqueue(ENV, DATA) for _ in range(n)]
        await spool.close()
        return ids
    return asyncio.run(body())


def queue(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["queue", *args])
    out, err = capsys.readouterr()
    return status, out, err


def states(capsys: pytest.CaptureFixture[str], spool: Path) -> dict[str, str]:
    status, out, _ = queue(capsys, "list", "--json", "--spool", str(spool))
    assert status == 0
    return {obj["id"]: obj["state"] for obj in map(json.loads, out.splitlines())}


def test_list_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spool = tmp_path / "spool"
    ids = make_spool(spool, 2)
    status, out, _ = queue(capsys, "list", "--spool", str(spool))
    assert status == 0
    assert ids[0] in out
    assert ids[1] in out
    assert "<bob@beta.test>" in out
    assert "2 message(s): 2 active, 0 deferred, 0 on hold" in out
    status, out, _ = queue(capsys, "show", ids[0], "--spool", str(spool))
    assert status == 0
    assert "Subject: queued" in out
    assert "secret body" not in out
    status, out, _ = queue(capsys, "show", ids[0], "--body", "--spool", str(spool))
    assert "secret body" in out


def test_commands_without_a_running_gateway(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    spool = tmp_path / "spool"
    a, b = make_spool(spool, 2)
    assert queue(capsys, "hold", a, "--spool", str(spool))[1].strip() == "1 message(s) held"
    assert states(capsys, spool) == {a: "hold", b: "active"}
    assert queue(capsys, "release", a, "--spool", str(spool))[0] == 0
    assert states(capsys, spool) == {a: "active", b: "active"}
    assert queue(capsys, "retry", "--spool", str(spool))[1].strip() == \
        "2 message(s) scheduled for retry"
    assert queue(capsys, "delete", b, "--spool", str(spool))[0] == 0
    assert states(capsys, spool) == {a: "active"}


def test_config_file_names_the_spool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spool = tmp_path / "spool"
    (a,) = make_spool(spool, 1)
    conf = tmp_path / "gateway.toml"
    conf.write_text(f'[spool]\ndirectory = "{spool}"\n')
    status, out, _ = queue(capsys, "list", "-c", str(conf))
    assert status == 0
    assert a in out


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["show", "nonsense"], 2, "is not a queue ID"),
        (["delete", "0123456789ABCDEF01234"], 1, "no message 0123456789ABCDEF01234"),
        (["hold", "../../etc/passwd"], 2, "is not a queue ID"),
    ],
)
def test_bad_ids_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             args: list[str], status: int, words: str) -> None:
    spool = tmp_path / "spool"
    make_spool(spool, 1)
    got, _, err = queue(capsys, *args, "--spool", str(spool))
    assert got == status
    assert words in err
    assert "Traceback" not in err


def test_missing_spool_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = queue(capsys, "list", "--spool", str(tmp_path / "nowhere"))
    assert status == 2
    assert "no spool at" in err


def test_commands_reach_a_running_owner(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "spool"
    a, b = make_spool(directory, 2)

    async def body() -> None:
        spool = await Spool.open(SpoolSection(directory=directory, control_poll=0.02))
        try:
            status, out, _ = await asyncio.to_thread(
                queue, capsys, "hold", a, "--spool", str(directory))
            assert status == 0
            assert "applied by the running gateway" in out
            entry = spool.get(a)
            assert entry is not None
            assert entry.state.hold
            assert spool.stats()["hold"] == 1
            assert REGISTRY.get_sample_value("smimegate_queue_messages", {"state": "hold"}) == 1
            assert REGISTRY.get_sample_value("smimegate_queue_messages",
                                             {"state": "active"}) == 1
            await asyncio.to_thread(queue, capsys, "delete", b, "--spool", str(directory))
            assert spool.get(b) is None
            await asyncio.to_thread(queue, capsys, "release", a, "--spool", str(directory))
            assert spool.stats()["hold"] == 0
            assert spool.take_ready()[-1] == a  # released mail goes to delivery at once
        finally:
            await spool.close()
    asyncio.run(body())
    assert states(capsys, directory) == {a: "active"}
