"""``make run``'s demo identity provider: the demo people log in through it with the demo data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.dev.demo import load
from portal.dev.idp import start_demo_idp
from tests.support.oidc import free_port, oidc_login

# oidc-provider-mock runs in this process here (as in `make run`) and uses deprecated Authlib APIs.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def demo_idp() -> Iterator[str]:
    server = start_demo_idp("127.0.0.1", free_port())
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def test_demo_people_log_in_through_the_demo_identity_provider(
    app: Flask, client: FlaskClient, db: Session, demo_idp: str
) -> None:
    before = app.config.get("DEMO_OIDC_ISSUER")
    app.config["DEMO_OIDC_ISSUER"] = demo_idp
    app.config["OIDC_CLIENT_SECRETS"] = {"demo": "demo-secret"}
    try:
        with app.app_context():
            load(db)
        db.commit()
        resp = oidc_login(client, "demo", demo_idp, "professor")
        assert resp.headers["Location"] == "/dashboard"
        page = client.get("/dashboard").get_data(as_text=True)
        assert (
            "Welcome, Ada Lovelace" in page and "University of North Carolina at Charlotte" in page
        )
    finally:
        if before is None:
            app.config.pop("DEMO_OIDC_ISSUER", None)
        else:
            app.config["DEMO_OIDC_ISSUER"] = before
