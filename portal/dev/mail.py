"""Mail in ``make run``: the local SMTP sink plus a delivery thread, so demo mail really arrives."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from flask import Flask

from portal.dev.sink import sink_folder, start_sink, stop_sink
from portal.notifications.cli import run_worker


@dataclass
class DevMail:
    #: One or two lines for the start-up banner.
    banner: str
    controller: Controller | None = None
    thread: threading.Thread | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(30)
        if self.controller is not None:
            stop_sink(self.controller)


def start_dev_mail(app: Flask) -> DevMail:
    """Start the sink on ``MAIL_SERVER:MAIL_PORT`` and a thread that delivers the outbox every
    ``MAIL_WORKER_INTERVAL`` seconds. Both end with the process (or with ``stop()``)."""
    folder = sink_folder(app.instance_path, app.config["MAIL_SINK_DIR"])
    host, port = str(app.config["MAIL_SERVER"]), int(app.config["MAIL_PORT"])
    try:
        controller = start_sink(folder, host, port)
    except Exception as e:  # a second `make run`, or the port taken by something else
        return DevMail(
            f"Mail sink NOT started on {host}:{port} ({type(e).__name__}: {e}); mail stays queued."
        )
    dev = DevMail(
        f"Mail: delivered every {app.config['MAIL_WORKER_INTERVAL']}s to the local SMTP sink on "
        f"{host}:{port} (kept in {folder}).\n"
        "  Read it: log in as 'admin' and open Admin → 'Demo mailbox' (all mail) or 'Mail outbox'.",
        controller=controller,
    )

    def _deliver() -> None:
        with app.app_context():
            run_worker(dev.stopping, float(app.config["MAIL_WORKER_INTERVAL"]))

    dev.thread = threading.Thread(target=_deliver, name="mail-delivery", daemon=True)
    dev.thread.start()
    return dev
