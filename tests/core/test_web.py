"""Security headers on every response, and error pages that leak nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask, abort
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal import create_app
from portal.auth.models import Role
from portal.extensions import db as _db
from tests.factories import make_user
from tests.support.app import TEST_CONFIG, login

REQUIRED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
}


def assert_security_headers(resp: object) -> None:
    headers = resp.headers  # type: ignore[attr-defined]
    csp = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    for name, value in REQUIRED_HEADERS.items():
        assert headers.get(name) == value, name


@pytest.mark.parametrize(
    "path",
    ["/", "/healthz", "/no-such-page", "/static/css/portal.css", "/dashboard", "/institutions/"],
)
def test_every_response_carries_the_security_headers(client: FlaskClient, path: str) -> None:
    with client.get(path) as resp:
        assert_security_headers(resp)


def test_logged_in_pages_carry_headers_and_are_not_cached(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db, Role.ADMIN))
    for path in ("/dashboard", "/institutions/", "/admin/audit", "/institutions/999999"):
        resp = client.get(path)
        assert_security_headers(resp)
        assert resp.headers["Cache-Control"] == "no-store"


def test_pages_have_no_inline_script_or_style(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db, Role.ADMIN, Role.PROGRAM_OFFICER))
    for path in ("/", "/dashboard", "/institutions/", "/institutions/new", "/admin/audit"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>" not in html and "style=" not in html and "onclick" not in html, path


@pytest.fixture
def error_app(tmp_path: Path) -> Flask:
    """An app with routes that fail in each way, to look at the error pages."""
    app = create_app(
        {**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 'e.sqlite3'}", "TESTING": False}
    )
    for code in (400, 403, 404, 405, 413, 429):
        app.add_url_rule(f"/fail/{code}", f"fail{code}", lambda code=code: abort(code))

    def boom() -> str:
        raise RuntimeError("secret internal detail: password=hunter2")

    app.add_url_rule("/fail/500", "fail500", boom)
    with app.app_context():
        _db.create_all()
    return app


@pytest.mark.parametrize("code", [400, 403, 404, 405, 413, 429, 500])
def test_error_pages_name_the_problem_and_leak_nothing(error_app: Flask, code: int) -> None:
    resp = error_app.test_client().get(f"/fail/{code}")
    assert resp.status_code == code
    html = resp.get_data(as_text=True)
    assert f">{code}<" in html
    assert "Traceback" not in html and "hunter2" not in html and "RuntimeError" not in html
    assert_security_headers(resp)


def test_wrong_method_gets_a_405_page(client: FlaskClient) -> None:
    resp = client.post("/healthz")
    assert resp.status_code == 405
    assert "Method not allowed" in resp.get_data(as_text=True)


def test_api_clients_get_json_errors(client: FlaskClient) -> None:
    resp = client.get("/no-such-page", headers={"Accept": "application/json"})
    assert resp.status_code == 404
    assert resp.json is not None and resp.json["error"] == "Not found"


def test_anonymous_visitor_is_sent_to_the_login_page(client: FlaskClient) -> None:
    resp = client.get("/dashboard")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/auth/login?next=")


def test_client_ip_comes_from_the_trusted_proxy_only_when_configured(tmp_path: Path) -> None:
    from portal.core.audit import AuditEvent

    for proxies, expected in ((0, "127.0.0.1"), (1, "198.51.100.7")):
        app = create_app(
            {
                **TEST_CONFIG,
                "DATABASE_URL": f"sqlite:///{tmp_path / f'proxy{proxies}.sqlite3'}",
                "TRUSTED_PROXIES": proxies,
            }
        )
        with app.app_context():
            _db.create_all()
        resp = app.test_client().get(
            "/admin/audit",
            headers={"X-Forwarded-For": "198.51.100.7"},
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )
        assert resp.status_code == 302  # anonymous: sent to log in, nothing else happens
        # A refused request by a logged-in user is audited with the client's address.
        client = app.test_client()
        with app.app_context():
            user = make_user(_db.session, Role.RESEARCHER)
            _db.session.commit()
            login(client, user)
        client.get(
            "/admin/audit",
            headers={"X-Forwarded-For": "198.51.100.7"},
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )
        with app.app_context():
            ev = _db.session.scalars(_db.select(AuditEvent).order_by(AuditEvent.id.desc())).first()
            assert ev is not None and ev.action == "permission.denied" and ev.ip == expected


@pytest.mark.once
def test_the_statement_count_header_is_sent_only_when_configured(
    app: Flask,
    client: FlaskClient,
    db: Session,
    count_queries: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    assert "X-SQL-Statements" not in client.get("/dashboard").headers
    monkeypatch.setitem(app.config, "SQL_COUNT_HEADER", True)
    sent: list[str] = []
    counted = count_queries(
        lambda: sent.append(client.get("/dashboard").headers["X-SQL-Statements"])
    )
    # All but the end of the request's transaction, which comes after its response is made.
    assert int(sent[0]) == counted - 1
