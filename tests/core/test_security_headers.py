"""CSP ``form-action``, ``__Host-`` cookies in production and no server version banner (security
report, item 14)."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import requests
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from portal import create_app
from portal.auth.models import Role
from portal.dev.server import PortalRequestHandler
from tests.factories import make_institution, make_user
from tests.support.app import TEST_CONFIG, login
from tests.support.oidc import add_provider


def _form_action(client: FlaskClient, path: str) -> str:
    csp = client.get(path).headers["Content-Security-Policy"]
    (directive,) = [d.strip() for d in csp.split(";") if d.strip().startswith("form-action")]
    return directive


def test_forms_post_to_the_portal_only_except_logins_to_the_listed_providers(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db)
    add_provider(db, "campus", "https://login.campus.example/oidc", served=[(inst, None)])
    add_provider(db, "other", "https://idp.other.example:8443")
    assert _form_action(client, "/") == "form-action 'self'"
    assert _form_action(client, "/auth/login") == (
        "form-action 'self' https://login.campus.example https://idp.other.example:8443"
    )
    login(client, make_user(db, Role.RESEARCHER))
    assert _form_action(client, "/dashboard") == "form-action 'self'"
    assert "https://login.campus.example" in _form_action(client, "/auth/account")


def test_production_cookies_carry_the_host_prefix(tmp_path: Path) -> None:
    app = create_app(
        {
            **TEST_CONFIG,
            "ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite3'}",
        }
    )
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-atom_session"
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_the_demo_server_names_no_version(tmp_path: Path) -> None:
    app = create_app({**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 's.sqlite3'}"})
    server = make_server("127.0.0.1", 0, app, request_handler=PortalRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        resp = requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
    finally:
        server.shutdown()
        thread.join()
    assert resp.headers["Server"] == "ATOM Partner Portal"
