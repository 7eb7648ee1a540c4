"""The demo's SMTP endpoints, in-process on 127.0.0.1 (aiosmtpd, RFC 5321): the two
organisations' internal mail servers (sinks that keep what they receive) and the
"Internet" between the gateways, a relay that records each message as it crossed and
forwards it to the next gateway, answering with that gateway's own reply so a refusal
there is a refusal for the sender's gateway too.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port() -> int:
    """A port free on 127.0.0.1 now (aiosmtpd's Controller needs one before it starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    reply: str  # what this endpoint answered at DATA

    @property
    def head(self) -> bytes:
        return self.data.split(b"\r\n\r\n", 1)[0]

    def header(self, name: str) -> list[str]:
        """Unfolded values of a header field of the top-level head."""
        unfolded = self.head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
        prefix = name.lower().encode() + b":"
        return [line[len(prefix):].strip().decode("utf-8", "replace")
                for line in unfolded.split(b"\r\n") if line.lower().startswith(prefix)]


@dataclass
class Mailbox:
    """An SMTP server keeping every message; forward_to makes it a recording relay."""

    name: str
    forward_to: tuple[str, int] | None = None
    port: int = 0
    messages: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    def start(self) -> Mailbox:
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                      ready_timeout=10)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.content if isinstance(envelope.content, bytes) else b""
        rcpts = tuple(envelope.rcpt_tos)
        reply = "250 2.0.0 kept"
        if self.forward_to is not None:
            # Blocking smtplib in a thread: the relay's own loop keeps serving.
            reply = await asyncio.get_running_loop().run_in_executor(
                None, self._forward, envelope.mail_from or "", rcpts, data)
        with self._lock:
            self.messages.append(Received(envelope.mail_from or "", rcpts, data, reply))
        return reply

    def _forward(self, mail_from: str, rcpts: tuple[str, ...], data: bytes) -> str:
        assert self.forward_to is not None
        try:
            with smtplib.SMTP(*self.forward_to, timeout=60) as s:
                s.ehlo("internet.demo")
                s.mail(mail_from)
                for r in rcpts:
                    code, text = s.rcpt(r)
                    if code >= 400:
                        return f"{code} {text.decode(errors='replace')}"
                code, text = s.data(data)
                return f"{code} {text.decode(errors='replace')}"
        except smtplib.SMTPResponseException as e:
            err = e.smtp_error
            said = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
            return f"{e.smtp_code} {said}"
        except OSError as e:
            return f"451 4.4.1 next gateway unreachable: {e}"

    def find(self, needle: bytes) -> Received | None:
        """The first message whose head contains needle (e.g. a Message-ID)."""
        with self._lock:
            for m in self.messages:
                if needle in m.head:
                    return m
        return None

    def wait_for(self, needle: bytes, timeout: float) -> Received | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(needle)
            if found is not None:
                return found
            time.sleep(0.05)
        return None

    def __enter__(self) -> Mailbox:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
