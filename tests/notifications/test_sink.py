"""The ``make run`` mail path: the delivery thread sends to the local sink, the demo page reads it."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Flask

from portal.auth.models import Role
from portal.dev.mail import start_dev_mail
from portal.dev.sink import free_port, read_sink
from portal.extensions import db
from tests.factories import make_user
from tests.notifications.smtp import allow_smtp
from tests.support.app import login


def test_demo_mail_arrives_in_the_sink_and_admins_read_it(live: Flask, tmp_path: Path) -> None:
    port = free_port()
    allow_smtp(port)
    folder = tmp_path / "sink"
    live.config.update(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=port,
        MAIL_SINK_DIR=str(folder),
        MAIL_WORKER_INTERVAL=0.1,
        DEMO_MODE=True,
    )
    dev = start_dev_mail(live)
    try:
        assert dev.controller is not None, dev.banner
        ada = make_user(db.session, display_name="Ada Lovelace", email="ada.sink@example.org")
        from portal.auth.emails import welcome

        welcome(db.session, ada)
        db.session.commit()
        deadline = time.monotonic() + 10
        while not read_sink(folder) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dev.stop()
    (got,) = read_sink(folder)
    assert got.subject == "Welcome to the ATOM Partner Portal"
    assert got.message["X-RcptTo"] == "ada.sink@example.org"
    assert "Hello Ada Lovelace," in (got.part("plain") or "")

    admin = make_user(db.session, Role.ADMIN, email="admin.sink@example.org")
    db.session.commit()
    client = login(live.test_client(), admin)
    page = client.get("/admin/mail/mailbox/")
    assert page.status_code == 200 and b"Welcome to the ATOM Partner Portal" in page.data
    assert client.get(f"/admin/mail/mailbox/{got.key}").status_code == 200


def test_second_sink_on_a_taken_port_is_reported_not_fatal(live: Flask, tmp_path: Path) -> None:
    port = free_port()
    allow_smtp(port)
    live.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_SINK_DIR=str(tmp_path))
    first = start_dev_mail(live)
    try:
        second = start_dev_mail(live)
        assert second.controller is None and "NOT started" in second.banner
    finally:
        first.stop()
