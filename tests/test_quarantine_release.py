"""`smimegate quarantine release` of inbound and of outbound entries (gateway/inbound/cli.py).

Inbound mail is queued as kept with our Authentication-Results; outbound mail (kept by
the crypto job for want of a certificate) is queued as a refused original that is due at
once, so delivery runs the job again for it and it is never sent unencrypted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.cli import main
from gateway.config.schema import SpoolSection
from gateway.envelope import Envelope
from gateway.inbound.quarantine import NO_CERTIFICATE, Quarantine
from gateway.outbound.replies import RELEASED
from gateway.spool import PENDING, Spool
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
