"""The cron commands: ``mail reminders`` and ``mail digest``, on a database with real commits."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from portal import create_app
from portal.auth.models import Role
from portal.core.models import utcnow
from portal.extensions import db
from portal.institutions.emails import affiliation_requested
from portal.notifications.delivery import deliver_pending
from portal.notifications.models import Delivery, OutboxMessage, OutboxState, SentReminder
from portal.notifications.services import enqueue_email, set_preferences
from tests.factories import make_affiliation, make_institution, make_user
from tests.notifications.smtp import SmtpServer
from tests.support.app import TEST_CONFIG


@pytest.fixture
def smtp_process_server() -> Iterator[SmtpServer]:
    """A server for another process to send to (the guard only watches this process)."""
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_reminders_command_reminds_once_per_period(live: Flask, live_smtp: SmtpServer) -> None:
    inst = make_institution(db.session)
    make_user(db.session, Role.SIGNING_OFFICIAL, institution=inst, email="so.cli@example.org")
    make_affiliation(
        db.session,
        user=make_user(db.session, email="waiting.cli@example.org"),
        institution=inst,
        requested_at=utcnow() - dt.timedelta(days=5),
    )
    db.session.commit()
    runner = live.test_cli_runner()
    first = runner.invoke(args=["mail", "reminders"])
    assert (
        first.exit_code == 0 and "institutions.affiliation_pending: 1 reminder(s)" in first.output
    )
    again = runner.invoke(args=["mail", "reminders"])
    assert "institutions.affiliation_pending: 0 reminder(s)" in again.output
    assert db.session.scalar(select(func.count()).select_from(SentReminder)) == 1
    assert deliver_pending(db.session).sent == 1
    (got,) = live_smtp.received
    assert got.rcpt_tos == ["so.cli@example.org"]
    assert str(got.message["Subject"]).startswith("Reminder: ")


def test_digest_command_sends_one_mail_with_the_held_notifications(
    live: Flask, live_smtp: SmtpServer
) -> None:
    inst = make_institution(db.session, name="Digest University")
    official = make_user(
        db.session, Role.SIGNING_OFFICIAL, institution=inst, email="digest.so@example.org"
    )
    set_preferences(db.session, official, {"institutions/affiliation_requested": Delivery.DIGEST})
    for i in range(3):
        aff = make_affiliation(
            db.session, user=make_user(db.session, display_name=f"Applicant {i}"), institution=inst
        )
        affiliation_requested(db.session, aff)
    db.session.commit()
    assert deliver_pending(db.session).total == 0, "held for the digest"

    result = live.test_cli_runner().invoke(args=["mail", "digest"])
    assert result.exit_code == 0 and "1 digest(s) queued" in result.output
    assert deliver_pending(db.session).sent == 1
    (got,) = live_smtp.received
    assert got.rcpt_tos == ["digest.so@example.org"]
    assert got.message["Subject"] == "Your daily digest: 3 notifications"
    for i in range(3):
        assert f"Applicant {i} asks to join Digest University" in got.text
    states = db.session.scalars(select(OutboxMessage.state)).all()
    assert sorted(states) == sorted([OutboxState.DIGESTED] * 3 + [OutboxState.SENT])
    again = live.test_cli_runner().invoke(args=["mail", "digest"])
    assert "0 digest(s) queued" in again.output


def test_worker_command_delivers_in_its_own_process_and_stops_on_sigterm(
    tmp_path: Path, smtp_process_server: SmtpServer
) -> None:
    """``flask --app portal mail worker`` as cron/systemd would run it: a separate process."""
    url = f"sqlite:///{tmp_path / 'worker.sqlite3'}"
    app = create_app({**TEST_CONFIG, "DATABASE_URL": url})
    with app.app_context():
        db.create_all()
        enqueue_email(
            db.session,
            "auth/welcome",
            to="process@example.org",
            context={"name": "P", "has_affiliation": False},
        )
        db.session.commit()
        db.engine.dispose()
    env = {
        **os.environ,
        "PORTAL_ENV": "development",
        "DATABASE_URL": url,
        "PORTAL_MAIL_SERVER": "127.0.0.1",
        "PORTAL_MAIL_PORT": str(smtp_process_server.port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "portal", "mail", "worker", "--interval", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not smtp_process_server.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert [r.rcpt_tos for r in smtp_process_server.received] == [["process@example.org"]]
    with app.app_context():
        assert db.session.scalars(select(OutboxMessage.state)).all() == [OutboxState.SENT]
        db.session.remove()
        db.engine.dispose()
