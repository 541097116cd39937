"""Headless Chromium logs in through the demo identity provider's real pages (oidc-provider-mock in
its own process, with the demo people), exactly as a newcomer would after ``make run``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal import create_app
from portal.dev.demo import PENDING_REQUESTS, PEOPLE, load_if_empty
from portal.dev.idp import demo_claims
from portal.extensions import db
from tests.browser import chromium, serve
from tests.support.app import TEST_CONFIG
from tests.support.oidc import mock_idp_process

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def demo_idp() -> Iterator[str]:
    args: list[str] = []
    for p in (*PEOPLE, *PENDING_REQUESTS):
        args += ["--user-claims", json.dumps({"sub": p.sub, **demo_claims(p)})]
    with mock_idp_process(*args) as url:
        yield url


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, demo_idp: str) -> Iterator[str]:
    path = tmp_path_factory.mktemp("live-login") / "live.sqlite3"
    app: Flask = create_app(
        {
            **TEST_CONFIG,
            "DATABASE_URL": f"sqlite:///{path}",
            "SERVER_NAME": None,
            "WTF_CSRF_ENABLED": True,
            "DEMO_OIDC_ISSUER": demo_idp,
            "OIDC_CLIENT_SECRETS": {"demo": "demo-secret"},
        }
    )
    with app.app_context():
        db.create_all()
        load_if_empty()
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (
            "professor",
            ["Welcome, Ada Lovelace", "Researcher", "University of North Carolina at Charlotte"],
        ),
        (
            "official",
            ["Welcome, Olivia Official", "Affiliation requests awaiting you", "Nia Newcomer"],
        ),
        ("admin", ["Welcome, Alex Admin", "Administrator", "Recent activity"]),
    ],
)
def test_log_in_through_the_demo_identity_provider(
    browser: Any, live: str, who: str, expected: list[str]
) -> None:
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(live + "/")
    page.click("text=Log in with your institution")
    page.wait_for_url("**/auth/login*")
    page.click("li:has-text('Demo identity provider') button:has-text('Log in')")
    # The demo IdP's own page: one click on a demo person.
    page.wait_for_selector(f"button[name='sub'][value='{who}']")
    page.click(f"button[name='sub'][value='{who}']")
    page.wait_for_url(live + "/dashboard")
    text = page.inner_text("main")
    for item in expected:
        assert item in text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"login-{who}.png"), full_page=True)
    # The login page remembers the choice; logging out ends the session.
    page.click("#user-menu")
    page.click("button:has-text('Log out')")
    page.wait_for_url(live + "/")
    page.goto(live + "/dashboard")
    assert "/auth/login" in page.url
    assert page.is_visible("text=Continue with Demo identity provider")
    assert problems == []
    context.close()


def test_newcomer_asks_to_join_and_the_official_approves_in_the_browser(
    browser: Any, live: str
) -> None:
    """Nia's request (demo data) waits on the official's affiliations page; approving it there
    makes her a researcher at UNC Charlotte, which she sees after logging in."""

    def log_in(context: Any, who: str) -> Any:
        page = context.new_page()
        page.goto(live + "/auth/login?q=charlotte")
        page.screenshot(path=str(ARTIFACTS / "login-page.png"), full_page=True)
        page.click(
            "li:has-text('University of North Carolina at Charlotte') button:has-text('Log in')"
        )
        page.click(f"button[name='sub'][value='{who}']")
        page.wait_for_url(live + "/dashboard")
        return page

    ARTIFACTS.mkdir(exist_ok=True)
    official = log_in(browser.new_context(), "official")
    official.goto(live + "/affiliations/")
    item = official.locator("li.list-group-item", has_text="Nia Newcomer")
    item.locator("select[name='decision']").select_option("approve")
    item.locator("button:has-text('Decide')").click()
    official.wait_for_selector("text=Nia Newcomer: active")
    official.screenshot(path=str(ARTIFACTS / "official-affiliations.png"), full_page=True)

    nia = log_in(browser.new_context(), "newcomer")
    text = nia.inner_text("main")
    assert (
        "Welcome, Nia Newcomer" in text
        and "Researcher" in text
        and "University of North Carolina at Charlotte" in text
    )
