"""Fixtures: a real SMTP server, and an app on its own committed database for delivery tests.

The shared ``db`` fixture keeps a test inside one uncommitted transaction. Delivery tests need
what production has — commits, separate connections, racing workers — so they use ``live_app``:
its own database (SQLite file or a fresh PostgreSQL database) with real commits, emptied of
mail after each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete

from portal.extensions import db as _db
from portal.notifications.models import (
    DeliveryAttempt,
    NotificationPreference,
    OutboxMessage,
    SentReminder,
)
from tests.notifications.smtp import SmtpServer
from tests.support.live import LIVE_DATABASES
from tests.support.live import live_app as live_app_on

MAIL_CONFIG: dict[str, Any] = {
    "MAIL_SERVER": "127.0.0.1",
    "MAIL_DEFAULT_SENDER": "ATOM Partner Portal <noreply@atom-lab.org>",
    "BASE_URL": "http://127.0.0.1:5000",
}


@pytest.fixture
def smtp_server(app: Flask) -> Iterator[SmtpServer]:
    """A running SMTP server; the shared ``app`` sends to it during this test."""
    server = SmtpServer().start()
    saved = {k: app.config[k] for k in ("MAIL_SERVER", "MAIL_PORT")}
    app.config.update(MAIL_SERVER=server.host, MAIL_PORT=server.port)
    try:
        yield server
    finally:
        server.stop()
        app.config.update(saved)


@pytest.fixture(scope="session", params=LIVE_DATABASES)
def live_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """An app on its own database where commits are real (both SQLite and PostgreSQL)."""
    with live_app_on(request.param, tmp_path_factory.mktemp("live"), MAIL_CONFIG) as app:
        yield app


@pytest.fixture
def live(live_app: Flask) -> Iterator[Flask]:
    """``live_app`` inside an app context; mail, preferences and reminders are deleted afterwards
    (users and institutions stay: the append-only audit log refers to them)."""
    saved = dict(live_app.config)
    ctx = live_app.app_context()
    ctx.push()
    try:
        yield live_app
    finally:
        _db.session.rollback()
        for model in (DeliveryAttempt, SentReminder, NotificationPreference):
            _db.session.execute(delete(model))
        _db.session.execute(delete(OutboxMessage).where(OutboxMessage.digest_id.is_not(None)))
        _db.session.execute(delete(OutboxMessage))
        _db.session.commit()
        _db.session.remove()
        ctx.pop()
        live_app.config.clear()
        live_app.config.update(saved)


@pytest.fixture
def live_smtp(live: Flask) -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    live.config.update(MAIL_SERVER=server.host, MAIL_PORT=server.port)
    try:
        yield server
    finally:
        server.stop()
