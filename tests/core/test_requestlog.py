"""Every request has an id (``X-Request-ID``), logged on its one log line with its user, route,
status, duration and SQL statement count, and stored on the audit events it records."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import redirect_stderr
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import create_app
from portal.auth.models import Role
from portal.config import ConfigError
from portal.core.audit import AuditEvent
from portal.core.requestlog import configure_logging
from portal.extensions import db as _db
from tests.factories import make_user
from tests.support.app import TEST_CONFIG, create_schema, login
from tests.support.live import logged_in_client


def test_every_response_carries_a_new_request_id(client: FlaskClient) -> None:
    first = client.get("/").headers["X-Request-ID"]
    second = client.get("/no-such-page").headers["X-Request-ID"]
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != second


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("lb-7f3a9c2e-0001", True),
        ("short", False),
        ("has space in it", False),
        ("x" * 65, False),
        ("<script>alert(1)</script>", False),
    ],
)
@pytest.mark.once
def test_a_plain_incoming_request_id_is_kept_anything_else_replaced(
    client: FlaskClient, sent: str, kept: bool
) -> None:
    got = client.get("/healthz", headers={"X-Request-ID": sent}).headers["X-Request-ID"]
    assert (got == sent) is kept
    assert len(got) >= 8


def test_audit_events_carry_the_request_id(client: FlaskClient, db: Session) -> None:
    user = make_user(db, Role.REVIEWER)
    login(client, user)
    resp = client.get("/admin/audit", headers={"X-Request-ID": "trace-0123456789"})
    assert resp.status_code == 403
    event = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "permission.denied")
        .order_by(AuditEvent.id.desc())
    ).first()
    assert event is not None and event.actor_id == user.id
    assert event.request_id == "trace-0123456789" == resp.headers["X-Request-ID"]


@pytest.fixture
def reset_logging() -> Iterator[None]:
    yield
    configure_logging("none")


def _app_logging(tmp_path: Path, fmt: str):  # type: ignore[no-untyped-def]
    app = create_app(
        {**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 'l.sqlite3'}", "LOG_FORMAT": fmt}
    )
    with app.app_context():
        create_schema()
    return app


@pytest.mark.once
def test_production_logs_one_json_object_per_request(tmp_path: Path, reset_logging: None) -> None:
    err = io.StringIO()
    with redirect_stderr(err):
        app = _app_logging(tmp_path, "json")
        with app.app_context():
            user = make_user(_db.session, Role.PROGRAM_OFFICER)
            _db.session.commit()
            user_id = user.id
        client = logged_in_client(app, user_id)
        resp = client.get("/institutions/", headers={"X-Request-ID": "req-abcdef012345"})
        client.get("/no-such-page")
    lines = [json.loads(line) for line in err.getvalue().splitlines() if line.startswith("{")]
    page = next(r for r in lines if r.get("request_id") == "req-abcdef012345")
    assert resp.status_code == 200
    assert page["logger"] == "portal.request" and page["level"] == "INFO"
    assert page["method"] == "GET" and page["status"] == 200
    assert page["route"] == "/institutions/" and page["endpoint"] == "institutions.index"
    assert page["user_id"] == user_id
    assert page["sql"] >= 1 and isinstance(page["duration_ms"], float)
    missing = next(r for r in lines if r.get("status") == 404)
    assert missing["route"] is None and missing["user_id"] == user_id


@pytest.mark.once
def test_development_logs_readable_text(tmp_path: Path, reset_logging: None) -> None:
    err = io.StringIO()
    with redirect_stderr(err):
        app = _app_logging(tmp_path, "text")
        app.test_client().get("/healthz", headers={"X-Request-ID": "dev-request-0001"})
    line = next(x for x in err.getvalue().splitlines() if "dev-request-0001" in x)
    assert "portal.request: GET /healthz 200" in line
    assert "request_id=dev-request-0001" in line and "status=200" in line
    assert not line.lstrip().startswith("{")
    assert logging.getLogger("portal").propagate is False


@pytest.mark.once
def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        create_app({**TEST_CONFIG, "DATABASE_URL": "sqlite://", "LOG_FORMAT": "xml"})


def test_the_audit_log_finds_a_request_by_its_id(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db, Role.REVIEWER))
    client.get("/admin/audit", headers={"X-Request-ID": "find-me-0123456789"})
    login(client, make_user(db, Role.ADMIN))

    html = client.get("/admin/audit?q=find-me-0123").get_data(as_text=True)

    assert html.count("find-me-0123456789") == 1
    assert "permission.denied" in html
    other = client.get("/admin/audit?q=no-such-request-id").get_data(as_text=True)
    assert "find-me-0123456789" not in other and "No events match." in other
