"""`smimegate quarantine release` of inbound and of outbound entries (gateway/inbound/cli.py).

Inbound mail is queued as kept with our Authentication-Results; outbound mail (kept by
the crypto job for want of a certificate) is queued as a refused original that is due at
once, so delivery runs the job again for it and it is never sent unencrypted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config.schema import SpoolSection
from gateway.envelope import Envelope
from gateway.inbound.quarantine import NO_CERTIFICATE, Quarantine
from gateway.outbound.replies import RELEASED
from gateway.spool import PENDING, Spool, control
from gateway.spool.cli import adopt
from gateway.spool.format import new_queue_id
from gateway.spool.layout import QueueEntry

MESSAGE = (b"From: alice@alpha.test\r\nTo: dave@gamma.test\r\nSubject: Payroll\r\n"
           b"Message-ID: <r1@alpha.test>\r\n\r\nConfidential.\r\n")


def setup(tmp_path: Path) -> tuple[Path, Quarantine]:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[spool]\ndirectory = "{tmp_path / "spool"}"\n'
                      f'[inbound]\nquarantine_dir = "{tmp_path / "q"}"\n'
                      '[smtp]\nhostname = "gw.alpha.test"\n')
    return config, Quarantine(tmp_path / "q")


def queued(tmp_path: Path) -> list[tuple[QueueEntry, bytes]]:
    async def read() -> list[tuple[QueueEntry, bytes]]:
        spool = await Spool.open(SpoolSection(directory=tmp_path / "spool"))
        try:
            return [(e, await spool.read(e)) for e in spool.entries()]
        finally:
            await spool.close()
    return asyncio.run(read())


def test_outbound_entry_is_queued_to_be_encrypted_again_not_sent(tmp_path: Path) -> None:
    config, store = setup(tmp_path)
    qid = store.put(Envelope("alice@alpha.test", ("dave@gamma.test", "erin@gamma.test"),
                             "127.0.0.1"), MESSAGE,
                    reason="outbound: no certificate", verdict=NO_CERTIFICATE)
    assert main(["quarantine", "release", "-c", str(config), qid]) == 0
    assert store.ids() == []
    ((entry, data),) = queued(tmp_path)
    assert data == MESSAGE  # the original: no Authentication-Results, nothing added
    assert entry.envelope.refused == str(RELEASED)
    assert not entry.envelope.require_tls
    assert [(r.status, r.attempts, r.next_attempt) for r in entry.state.rcpts] == [
        (PENDING, 1, 0.0), (PENDING, 1, 0.0)]  # due now, with the job run again


def test_inbound_entry_is_queued_as_kept_with_authentication_results(tmp_path: Path) -> None:
    config, store = setup(tmp_path)
    qid = store.put(Envelope("mallory@evil.test", ("bob@alpha.test",), "127.0.0.1"),
                    MESSAGE, reason="no-recipient", verdict="undecryptable")
    assert main(["quarantine", "release", "-c", str(config), qid]) == 0
    ((entry, data),) = queued(tmp_path)
    assert entry.envelope.refused == ""
    assert data.startswith(b"Authentication-Results: gw.alpha.test; smime=neutral")
    assert data.endswith(MESSAGE)


def test_a_running_owner_adopts_the_message_and_a_bad_file_is_refused(tmp_path: Path) -> None:
    section = SpoolSection(directory=tmp_path / "spool", control_poll=0.02)
    env = Envelope("alice@alpha.test", ("dave@gamma.test",), "127.0.0.1", "h", 1.0,
                   refused=str(RELEASED))

    async def body() -> None:
        spool = await Spool.open(section)  # the running gateway's side: holds the lock
        try:
            qid, queued = await asyncio.to_thread(adopt, section, env, MESSAGE,
                                                  first_attempt=str(RELEASED))
            assert queued
            entry = spool.get(qid)
            assert entry is not None
            assert entry.envelope.refused == str(RELEASED)
            assert await spool.read(entry) == MESSAGE
            assert [(r.attempts, r.next_attempt) for r in entry.state.rcpts] == [(1, 0.0)]
            # A command naming a message file that is not one: refused, nothing queued,
            # and the caller is told so (it keeps its copy).
            layout = spool.layout
            name = control.stage_message(layout.control, b"not a spool file")
            before = len(spool.entries())
            cmd = await asyncio.to_thread(control.submit, layout.control,
                                          control.Command("adopt", new_queue_id(), name))
            for _ in range(500):
                if not cmd.exists():
                    break
                await asyncio.sleep(0.02)
            outcome = control.collect(cmd)
            assert outcome is not None
            assert not outcome.ok
            assert "not a spool message file" in outcome.text
            assert len(spool.entries()) == before
        finally:
            await spool.close()
    asyncio.run(body())


def test_adopt_commands_are_checked() -> None:
    with pytest.raises(control.CommandError, match="message file goes with adopt"):
        control.Command("adopt", new_queue_id())
    with pytest.raises(control.CommandError, match="not a message file name"):
        control.Command("adopt", new_queue_id(), "../../etc/passwd")
    with pytest.raises(control.CommandError, match="unreadable command file"):
        control.Command.decode(b"[1, 2]")
