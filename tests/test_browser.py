"""The real pages in headless Chromium: styles and scripts load under the CSP, nothing is blocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal import create_app
from portal.auth.models import User
from portal.dev.demo import load_if_empty
from portal.extensions import db
from tests.browser import chromium, serve
from tests.support.app import TEST_CONFIG, create_schema

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    path = tmp_path_factory.mktemp("live") / "live.sqlite3"
    app = create_app({**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{path}", "SERVER_NAME": None})
    with app.app_context():
        create_schema()
        load_if_empty()
    return app


@pytest.fixture(scope="module")
def live(demo_app: Flask) -> Iterator[str]:
    with serve(demo_app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def session_cookie(app: Flask, user: User) -> str:
    """A signed session cookie as the login view would set it, with its server-side session record
    (this test is about rendering; tests/auth/test_browser_login.py logs in for real)."""
    from portal.auth.services import start_session

    _, token = start_session(db.session, user, identity=None)
    db.session.commit()
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    return str(serializer.dumps({"_user_id": str(user.id), "_fresh": True, "_sid": token}))


def open_page(
    browser: Any, live: str, app: Flask, who: str | None, path: str
) -> tuple[Any, list[str]]:
    context = browser.new_context()
    if who is not None:
        with app.app_context():
            user = db.session.scalars(
                db.select(User)
                .join(User.identities)
                .where(db.text("identities.subject = :s"))
                .params(s=who)
            ).one()
            cookie = session_cookie(app, user)
        context.add_cookies([{"name": "atom_session", "value": cookie, "url": live}])
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(live + path)
    page.wait_for_load_state("networkidle")
    return page, problems


def test_start_page_renders_with_its_styles_and_no_csp_violations(
    browser: Any, live: str, demo_app: Flask
) -> None:
    page, problems = open_page(browser, live, demo_app, None, "/")
    assert page.title() == "ATOM Partner Portal"
    nav_bg = page.eval_on_selector("nav.portal-nav", "e => getComputedStyle(e).backgroundColor")
    assert nav_bg == "rgb(20, 33, 61)"  # portal.css loaded
    assert problems == []


@pytest.mark.parametrize(
    ("who", "path", "expected"),
    [
        ("admin", "/dashboard", ["Full audit log", "Recent activity"]),
        (
            "officer",
            "/dashboard",
            ["Institutions awaiting a decision", "Delft University of Technology"],
        ),
        ("official", "/dashboard", ["Affiliation requests awaiting you", "Nia Newcomer"]),
        (
            "professor",
            "/institutions/",
            ["University of North Carolina at Charlotte", "Keio University"],
        ),
    ],
)
def test_role_pages_render_in_chromium(
    browser: Any, live: str, demo_app: Flask, who: str, path: str, expected: list[str]
) -> None:
    page, problems = open_page(browser, live, demo_app, who, path)
    text = page.inner_text("main")
    for item in expected:
        assert item in text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{who}{path.replace('/', '_')}.png"), full_page=True)
    assert problems == []


def test_menu_collapses_on_a_phone_and_opens_with_bootstrap_js(
    browser: Any, live: str, demo_app: Flask
) -> None:
    page, problems = open_page(browser, live, demo_app, "admin", "/dashboard")
    page.set_viewport_size({"width": 390, "height": 800})
    menu = "#nav-main a.dropdown-toggle:has-text('Institutions')"
    assert not page.is_visible(menu)
    page.click("button.navbar-toggler")
    page.wait_for_selector(menu, state="visible")
    page.click(menu)  # the drop-down opens with Bootstrap's JavaScript as well
    page.wait_for_selector("#nav-main a[href='/institutions/']", state="visible")
    assert problems == []
