"""Accessibility: axe-core (``tests/vendor/axe-core``) in headless Chromium over every page of every
demo role — each demo person logs in through the demo identity provider, then their pages are
crawled breadth-first from the dashboard along the same-origin links of the navigation and of each
page. Any violation of impact "serious" or "critical" fails, with its rule, targets and page.

Pages are checked as ``make run`` shows them: demo data (institutions in every state), demo mode
(its banner, the demo mailbox), and the welcome mail of each login delivered to a real SMTP sink.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urldefrag, urlsplit

import pytest
from flask import Flask
from sqlalchemy import select

from portal import create_app
from portal.auth.models import Identity
from portal.dev.demo import PENDING_REQUESTS, PEOPLE, load_if_empty
from portal.dev.idp import demo_claims
from portal.dev.sink import free_port, start_sink, stop_sink
from portal.extensions import db
from portal.notifications.delivery import deliver_pending
from tests.browser import chromium, serve
from tests.notifications.smtp import allow_smtp
from tests.support.app import TEST_CONFIG
from tests.support.oidc import mock_idp_process

pytestmark = pytest.mark.browser

AXE_JS = Path(__file__).resolve().parent.parent / "vendor" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"
#: The impacts that fail the test (axe's scale: minor, moderate, serious, critical).
FAILING_IMPACTS = ("serious", "critical")
#: At most this many pages per role (breadth-first, so the navigation's pages come first).
MAX_PAGES = 40
#: Every demo login, and the public pages nobody needs to log in for.
ROLES = [p.sub for p in (*PEOPLE, *PENDING_REQUESTS)]
PUBLIC_PAGES = [
    "/",
    "/auth/login",
    "/auth/login?q=charlotte",
    "/datasets/",
    "/program/",
    "/program/partners",
    "/program/projects",
    "/program/calls",
    "/no-such-page",
]


@dataclass
class Violation:
    page: str
    rule: str
    impact: str
    help: str
    targets: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.page}: {self.rule} ({self.impact}) {self.help} — {', '.join(self.targets)}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def demo_idp(browser: Any) -> Iterator[str]:
    args: list[str] = []
    for p in (*PEOPLE, *PENDING_REQUESTS):
        args += ["--user-claims", json.dumps({"sub": p.sub, **demo_claims(p)})]
    with mock_idp_process(*args) as url:
        yield url


@pytest.fixture(scope="module")
def sink_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    folder = tmp_path_factory.mktemp("a11y-sink")
    port = free_port()
    controller = start_sink(folder, port=port)
    try:
        yield folder, port
    finally:
        stop_sink(controller)


@pytest.fixture(scope="module")
def demo_app(
    tmp_path_factory: pytest.TempPathFactory, demo_idp: str, sink_port: tuple[Path, int]
) -> Flask:
    folder, port = sink_port
    path = tmp_path_factory.mktemp("a11y") / "live.sqlite3"
    app = create_app(
        {
            **TEST_CONFIG,
            "DATABASE_URL": f"sqlite:///{path}",
            "SERVER_NAME": None,
            "WTF_CSRF_ENABLED": True,
            "DEMO_MODE": True,
            "DEMO_OIDC_ISSUER": demo_idp,
            "OIDC_CLIENT_SECRETS": {"demo": "demo-secret"},
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": port,
            "MAIL_SINK_DIR": str(folder),
        }
    )
    with app.app_context():
        db.create_all()
        load_if_empty()
    return app


@pytest.fixture(scope="module")
def live(demo_app: Flask) -> Iterator[str]:
    with serve(demo_app) as url:
        yield url


@pytest.fixture(scope="module")
def logged_in(
    browser: Any, live: str, demo_app: Flask, sink_port: tuple[Path, int]
) -> Iterator[dict[str, Any]]:
    """One browser context per demo person, logged in through the demo identity provider; then
    the mail those logins caused is delivered to the sink (for the outbox and mailbox pages)."""
    contexts: dict[str, Any] = {}
    try:
        for who in ROLES:
            context = browser.new_context()
            contexts[who] = context
            page = context.new_page()
            page.goto(live + "/auth/login")
            page.click("li:has-text('Demo identity provider') button:has-text('Log in')")
            page.click(f"button[name='sub'][value='{who}']")
            page.wait_for_url(live + "/dashboard")
            page.close()
        allow_smtp(sink_port[1])
        with demo_app.app_context():
            report = deliver_pending(db.session)
        assert report.sent > 0 and report.failed == 0 and not report.dead, report
        yield contexts
    finally:
        for context in contexts.values():
            context.close()


def page_key(url: str) -> str:
    """A page's identity for the crawl: its path with ids as ``{id}``, and the names (not values)
    of its query: one proposal's page, one page of a list, or one value of a filter, stands for
    the others (the demo puts objects of every state on the lists, which are checked)."""
    parts = urlsplit(url)
    names = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)})
    path = re.sub(r"/\d+(?=/|$)", "/{id}", parts.path)
    return path + ("?" + "&".join(names) if names else "")


def crawlable(live: str, href: str) -> str | None:
    """The same-origin page ``href`` leads to, or None if it is not a page to check."""
    url, _ = urldefrag(href)
    if not url.startswith(live + "/"):
        return None  # another site (ROR, an institution's website, the identity provider)
    path = urlsplit(url).path
    if path.startswith("/static/") or path == "/auth/logout":
        return None
    if path.startswith("/admin/mail/mailbox/") and path.endswith("/html"):
        return None  # a mail's HTML part as sent, in a CSP sandbox: the mail, not a portal page
    if (
        re.fullmatch(r"/(proposals|reviews/assignments)/\d+/attachments/\d+", path)
        or re.fullmatch(r"/agreements/\d+\.pdf", path)
        or "format=csv" in url
    ):
        return None  # downloads (a PDF, a CSV file), not pages
    return url


def axe_violations(page: Any, where: str) -> list[Violation]:
    """Run axe-core on the loaded page; its serious and critical violations.

    ``page.add_script_tag`` would be refused by the portal's CSP (``script-src 'self'``, no inline
    script); ``page.evaluate`` runs through the DevTools protocol, which the CSP does not govern,
    so axe runs in the page under the page's real policy (no ``bypass_csp``)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        Violation(
            page=where,
            rule=v["id"],
            impact=v["impact"],
            help=v["help"],
            targets=[" ".join(map(str, n["target"])) for n in v["nodes"]],
        )
        for v in result["violations"]
        if v["impact"] in FAILING_IMPACTS
    ]


def crawl(
    page: Any, live: str, start: list[str], seen: set[str] | None = None
) -> tuple[list[str], list[Violation]]:
    """Breadth-first from ``start``: the pages checked, and their violations. ``seen`` holds the
    page kinds already checked (by a login with the same roles), and gains the new ones."""
    queue = deque(live + s for s in start)
    seen = set() if seen is None else seen
    start_keys = {page_key(live + s) for s in start}
    seen -= start_keys  # the start pages are loaded again: they prove the login still holds
    checked: list[str] = []
    found: list[Violation] = []
    while queue and len(checked) < MAX_PAGES:
        url = queue.popleft()
        if page_key(url) in seen:
            continue
        seen.add(page_key(url))
        response = page.goto(url)
        final = page.url
        if final != url:  # a redirect: check where it ended, once
            if page_key(final) in seen or crawlable(live, final) is None:
                continue
            seen.add(page_key(final))
        where = final.removeprefix(live)
        if response is not None and response.status >= 400:
            where += f" [{response.status}]"
        checked.append(where)
        found += axe_violations(page, where)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            target = crawlable(live, href)
            if target is not None and page_key(target) not in seen:
                queue.append(target)
    return checked, found


def report(who: str, checked: list[str], found: list[Violation], seconds: float) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"a11y-{who}.json").write_text(
        json.dumps(
            {
                "role": who,
                "seconds": round(seconds, 1),
                "pages": checked,
                "violations": [v.__dict__ for v in found],
            },
            indent=2,
        )
    )
    return (
        f"axe-core: {len(found)} serious/critical violations for {who} "
        f"on {len(checked)} pages:\n" + "\n".join(map(str, found))
    )


def test_public_pages_have_no_serious_accessibility_violations(browser: Any, live: str) -> None:
    context = browser.new_context()
    try:
        started = time.monotonic()
        checked, found = crawl(context.new_page(), live, PUBLIC_PAGES)
        message = report("anonymous", checked, found, time.monotonic() - started)
    finally:
        context.close()
    assert "/auth/login" in checked and "/no-such-page [404]" in checked
    assert found == [], message


@dataclass
class Checked:
    """Page kinds checked so far, per set of roles: logins holding the same roles (researchers of
    two universities, say) see the same kinds of page, which are checked once."""

    roles_of: dict[str, str]
    kinds: dict[str, set[str]]

    def seen_by(self, who: str) -> set[str]:
        return self.kinds.setdefault(self.roles_of[who], set())


@pytest.fixture(scope="module")
def checked(demo_app: Flask) -> Checked:
    with demo_app.app_context():
        roles_of = {
            i.subject: ",".join(sorted(str(g.role.value) for g in i.user.role_grants))
            for i in db.session.scalars(select(Identity))
        }
        db.session.remove()
    return Checked(roles_of, {})


@pytest.mark.parametrize("who", ROLES)
def test_every_page_of_every_role_has_no_serious_accessibility_violations(
    logged_in: dict[str, Any], live: str, who: str, checked: Checked
) -> None:
    page = logged_in[who].new_page()
    started = time.monotonic()
    pages, found = crawl(page, live, ["/dashboard"], checked.seen_by(who))
    message = report(who, pages, found, time.monotonic() - started)
    page.close()
    assert pages[0] == "/dashboard", pages  # still logged in: nothing sent us to the login page
    assert len(checked.seen_by(who)) > 3, pages
    assert found == [], message
