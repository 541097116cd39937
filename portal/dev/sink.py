"""The local mail sink for ``make run``: a real SMTP server (aiosmtpd) that keeps every message.

Messages are stored as a Maildir in ``instance/mail-sink/`` (one file per message, written
atomically), with the envelope in ``X-MailFrom`` / ``X-RcptTo`` headers the handler adds. The
demo "Mailbox" page reads them back. Nothing is ever relayed anywhere.
"""

from __future__ import annotations

import email.policy
import mailbox
import socket
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiosmtpd.controller import Controller


def sink_folder(instance_path: str, configured: str | None) -> Path:
    return Path(configured) if configured else Path(instance_path) / "mail-sink"


def start_sink(folder: Path, host: str = "127.0.0.1", port: int = 8025) -> Controller:
    """Start the SMTP sink in a background thread; call ``.stop()`` on the result to end it."""
    for sub in ("tmp", "new", "cur"):  # a Maildir; aiosmtpd makes these only for a new folder
        (folder / sub).mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:  # fail at once (aiosmtpd would wait 5 s) if the port is taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    from aiosmtpd.controller import Controller  # the demo extra; only `make run` starts a sink
    from aiosmtpd.handlers import Mailbox

    controller = Controller(Mailbox(folder), hostname=host, port=port)
    try:
        controller.start()
    except BaseException:
        stop_sink(controller)
        raise
    return controller


def stop_sink(controller: Controller) -> None:
    """Stop the server and close its event loop (aiosmtpd leaves the loop, and its sockets, open)."""
    try:
        controller.stop(no_assert=True)  # also when start() failed half-way
    finally:
        if not controller.loop.is_closed():
            controller.loop.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (aiosmtpd's controller cannot use port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class SinkMessage:
    key: str
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def to(self) -> str:
        return str(self.message.get("To", ""))

    @property
    def date(self) -> str:
        return str(self.message.get("Date", ""))

    def part(self, subtype: str) -> str | None:
        body = self.message.get_body(preferencelist=(subtype,))
        if body is None:
            return None
        content: Any = body.get_content()
        return str(content)

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(k, str(v)) for k, v in self.message.items()]


def _parse(raw: bytes) -> EmailMessage:
    from email import message_from_bytes

    msg = message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def read_sink(folder: Path) -> list[SinkMessage]:
    """Every message in the sink, newest first."""
    if not (folder / "cur").exists() and not (folder / "new").exists():
        return []
    box = mailbox.Maildir(str(folder), create=False)
    out = []
    for key in box.iterkeys():
        path = folder / ("new" if (folder / "new" / key).exists() else "cur") / key
        try:
            out.append((path.stat().st_mtime, SinkMessage(key, _parse(path.read_bytes()))))
        except FileNotFoundError:
            continue
    out.sort(key=lambda t: (t[0], t[1].key), reverse=True)
    return [m for _, m in out]


def get_sink_message(folder: Path, key: str) -> SinkMessage | None:
    for sub in ("new", "cur"):
        path = folder / sub / key
        if key and "/" not in key and not key.startswith(".") and path.is_file():
            return SinkMessage(key, _parse(path.read_bytes()))
    return None
