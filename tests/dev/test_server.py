"""``make run``'s three local services follow the settings (security report, item 15): the
portal's port (``PORTAL_PORT``), the demo identity provider's (from ``PORTAL_DEMO_OIDC_ISSUER``)
and the mail sink's (``PORTAL_MAIL_PORT``)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import requests

from portal import create_app
from portal.dev.idp import start_demo_idp
from portal.dev.server import demo_idp_address
from tests.support.app import TEST_CONFIG
from tests.support.oidc import free_port

#: oidc-provider-mock imports parts of Authlib that announce their deprecation.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_the_demo_identity_provider_listens_where_its_issuer_says(tmp_path: Path) -> None:
    port = free_port()
    app = create_app(
        {
            **TEST_CONFIG,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'd.sqlite3'}",
            "DEMO_OIDC_ISSUER": f"http://127.0.0.1:{port}",
        }
    )
    host, got = demo_idp_address(app)
    assert (host, got) == ("127.0.0.1", port)
    server = start_demo_idp(host, got)
    try:
        discovery = requests.get(
            f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=10
        ).json()
    finally:
        server.shutdown()
    assert discovery["issuer"] == f"http://127.0.0.1:{port}"


def test_the_default_and_a_bad_issuer(tmp_path: Path) -> None:
    app = create_app({**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 'd.sqlite3'}"})
    assert demo_idp_address(app) == ("127.0.0.1", 9400)
    app.config["DEMO_OIDC_ISSUER"] = "https://idp.example.org"
    with pytest.raises(click.UsageError, match="http:// URL"):
        demo_idp_address(app)
