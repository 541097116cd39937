"""What browser journeys share: the portal served over HTTP on a committed SQLite database with a
real SMTP server behind its outbox, browser pages logged in as given people, and delivering mail."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal.extensions import db
from portal.notifications.delivery import deliver_pending
from tests.browser import serve
from tests.notifications.smtp import SmtpServer
from tests.support.live import live_app, logged_in_client


@contextmanager
def served_portal(folder: Path, smtp: SmtpServer) -> Iterator[tuple[Flask, str]]:
    """A portal (app, base URL) whose mail goes to ``smtp`` and whose links point at itself."""
    config = {
        "SERVER_NAME": None,
        "MAIL_SERVER": smtp.host,
        "MAIL_PORT": smtp.port,
        "ATTACHMENT_FOLDER": str(folder / "attachments"),
    }
    with live_app("sqlite", folder, config) as app, serve(app) as url:
        app.config["BASE_URL"] = url
        yield app, url


def page_as(browser: Any, app: Flask, url: str, user_id: int) -> Any:
    """A new browser page logged in as ``user_id``, accepting "are you sure?" confirmations."""
    cookie = logged_in_client(app, user_id).get_cookie("atom_session")
    assert cookie is not None
    context = browser.new_context()
    context.add_cookies([{"name": "atom_session", "value": cookie.value, "url": url}])
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    return page


def deliver(app: Flask) -> None:
    """One pass of the mail worker."""
    with app.app_context():
        deliver_pending(db.session)
        db.session.remove()


# --- the module fixtures every journey uses (registered in tests/conftest.py) -------------------


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server for the journey's mail."""
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def portal(
    tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer, request: pytest.FixtureRequest
) -> Iterator[tuple[Flask, str]]:
    """The portal served for the journey's module (app, base URL), its mail going to ``smtp``."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    with served_portal(tmp_path_factory.mktemp(name), smtp) as served:
        yield served


def mails(smtp: SmtpServer) -> set[tuple[str, str]]:
    """(recipient, subject) of every mail ``smtp`` received."""
    return {(m.rcpt_tos[0], str(m.message["Subject"])) for m in smtp.received}
