"""A real SMTP server for tests (aiosmtpd), and the guard against SMTP connections nobody asked for."""

from __future__ import annotations

import email.policy
import re
import smtplib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from functools import cached_property
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from portal.dev.sink import free_port, stop_sink

#: Ports a test asked to talk to (its own SMTP server, or a port it knows is down).
ALLOWED_SMTP_PORTS: set[int] = set()
_violations: list[str] = []


@pytest.fixture(autouse=True)
def no_unexpected_smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any test that opens an SMTP connection it did not ask for (via ``smtp_server`` or
    ``allow_smtp``). Checked in the connecting thread and again at teardown, since a worker thread
    cannot fail the test by raising."""
    real_connect = smtplib.SMTP.connect

    def guarded(self: smtplib.SMTP, host: str = "localhost", port: int = 0, *a: Any) -> Any:
        if not port and ":" in host:
            host, _, p = host.rpartition(":")
            port = int(p)
        port = port or smtplib.SMTP_PORT
        if port not in ALLOWED_SMTP_PORTS:
            _violations.append(f"{host}:{port}")
            pytest.fail(f"unexpected SMTP connection to {host}:{port}", pytrace=False)
        return real_connect(self, host, port, *a)

    monkeypatch.setattr(smtplib.SMTP, "connect", guarded)
    ALLOWED_SMTP_PORTS.clear()
    _violations.clear()
    yield
    ALLOWED_SMTP_PORTS.clear()
    if _violations:
        found = ", ".join(_violations)
        _violations.clear()
        pytest.fail(f"the test opened SMTP connections it did not ask for: {found}", pytrace=False)


def allow_smtp(port: int) -> None:
    ALLOWED_SMTP_PORTS.add(port)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @cached_property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None
        return str(part.get_content())


class RecordingHandler:
    """Keeps every message; refuses recipients starting with ``bounce`` (550) or ``busy`` (451)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.lock = threading.Lock()
        #: Seconds to wait before accepting each message (to make racing workers overlap).
        self.delay = 0.0

    async def handle_RCPT(  # noqa: N802 - the name aiosmtpd calls
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.startswith("bounce"):
            return "550 5.1.1 No such user here"
        if address.startswith("busy"):
            return "451 4.3.0 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.delay:
            time.sleep(self.delay)
        raw = bytes(envelope.original_content)
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), raw))
        return "250 Message accepted"


class SmtpServer:
    """An aiosmtpd server on a loopback port; ``start()`` and ``stop()`` may be called later."""

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.handler = RecordingHandler()
        self._controller: Controller | None = None
        allow_smtp(self.port)

    def start(self) -> SmtpServer:
        self._controller = Controller(self.handler, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            stop_sink(self._controller)
            self._controller = None

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def message_ids(self) -> list[str]:
        """The Message-ID header of every message received, in arrival order."""
        out = []
        for r in self.received:
            m = re.search(rb"^Message-ID: *(<[^>\r\n]+>)", r.raw, re.MULTILINE | re.IGNORECASE)
            assert m, "every mail has a Message-ID"
            out.append(m.group(1).decode())
        return out
