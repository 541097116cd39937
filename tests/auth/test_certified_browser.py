"""A person logs in through the certified provider's own login and consent pages in Chromium, finds
their name and address on the dashboard (from UserInfo only), and logs out there too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal.auth.models import ProviderInstitution
from portal.extensions import db
from tests.browser import chromium, serve
from tests.factories import make_domain, make_institution
from tests.support.live import live_app, live_session
from tests.support.node_idp import CLIENT_SECRET, NodeIdP, node_idp, standard_clients
from tests.support.oidc import add_provider

pytestmark = pytest.mark.browser

SLUG = "secret-basic"  # its client id at the provider is portal-secret-basic


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    config = {"SERVER_NAME": None, "OIDC_CLIENT_SECRETS": {SLUG: CLIENT_SECRET}}
    with live_app("sqlite", tmp_path_factory.mktemp("certified"), config) as app, serve(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def idp(portal: tuple[Flask, str]) -> Iterator[NodeIdP]:
    app, url = portal
    clients = standard_clients(
        [f"{url}/auth/callback/{SLUG}"], post_logout_redirect_uris=[f"{url}/"]
    )
    accounts = {
        "grace": {
            "email": "grace@browser-uni.edu",
            "email_verified": True,
            "name": "Grace Hopper",
        }
    }
    with node_idp(accounts, clients, consent="always") as provider:
        with live_session(app) as s:
            inst = make_institution(s, name="Browser University")
            inst.all_domains.append(make_domain("browser-uni.edu"))
            p = add_provider(s, SLUG, provider.issuer)
            p.name, p.logout_at_provider = "Certified Campus Login", True
            p.served.append(ProviderInstitution(institution=inst))
        yield provider


def test_login_through_the_providers_own_pages_and_logout_there_too(
    portal: tuple[Flask, str], idp: NodeIdP, tmp_path: Path
) -> None:
    app, url = portal
    with chromium() as browser:
        page: Any = browser.new_page()
        page.goto(f"{url}/auth/login")
        page.get_by_role("button", name="Log in").first.click()  # the only provider
        # node-oidc-provider's own login page, then its consent page.
        page.wait_for_url(f"{idp.issuer}/interaction/**")
        page.fill("input[name=login]", "grace")
        page.fill("input[name=password]", "any password")
        page.get_by_role("button", name="Sign-in").click()
        page.wait_for_url(f"{idp.issuer}/interaction/**")
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(f"{url}/dashboard")
        assert page.get_by_role("heading", name="Welcome, Grace Hopper").is_visible()
        assert "Browser University" in page.content()
        page.goto(f"{url}/auth/account")
        assert "grace@browser-uni.edu" in page.content()
        # Log out: the portal, then the provider (its own "sign me out" page), and back.
        page.get_by_role("button", name="Grace Hopper").click()
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(f"{idp.issuer}/**")
        page.get_by_role("button", name="Yes, sign me out").click()
        page.wait_for_url(f"{url}/")
        page.screenshot(path=str(tmp_path / "after-logout.png"))
    with app.app_context():
        assert (
            db.session.scalar(db.text("SELECT count(*) FROM login_sessions WHERE ended_at IS NULL"))
            == 0
        )
