"""Every main list page sends the same number of SQL statements whether its lists hold 10 rows or
200 (pagination, eager loading, aggregates in SQL: never a statement per row), and no main page
sends more than ``MOST``.

Two databases are filled by the benchmark generator (portal/dev/datagen.py), one with about 10
rows of each kind and one with about 200, and each page of the catalogue (tests/support/pages.py)
is opened by its persona in both, counting statements with the ``X-SQL-Statements`` header the
benchmark reads over HTTP. The page about one thing is the first one its list links to, so the
two sizes open different things (with different numbers of related rows, and maybe of different
kinds): those pages are held to the bound, and their own tests in each domain fix their counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from portal.dev.datagen import Scale, generate
from tests.support.live import live_app, live_session, logged_in_client
from tests.support.pages import MAIN_PAGES, Page, persona_ids

#: Statements are counted the same way on both databases: SQLite only.
pytestmark = pytest.mark.once

#: The most statements a main page may send (DESIGN's scale target; the benchmark reports it too).
MOST = 12

SIZES = {
    "10 rows": Scale(
        institutions=10,
        users=120,
        calls=2,
        proposals=10,
        reviews=60,
        allocations=10,
        usage_records=100,
        datasets=10,
        grants=10,
        agreements=20,
        audit_events=10,
        outbox=10,
    ),
    "200 rows": Scale(
        institutions=200,
        users=1200,
        calls=4,
        proposals=200,
        reviews=600,
        allocations=200,
        usage_records=2000,
        datasets=200,
        grants=200,
        agreements=800,
        audit_events=200,
        outbox=200,
    ),
}

Counts = dict[str, int | str]  # page name -> statements, or why it could not be opened


def _open(client: FlaskClient, path: str, follow: bool = False) -> tuple[int, str, int]:
    response = client.get(path, follow_redirects=follow)
    return (
        response.status_code,
        response.get_data(as_text=True),
        int(response.headers.get("X-SQL-Statements", -1)),
    )


def _count(app: Flask, page: Page, clients: dict[str | None, FlaskClient]) -> int | str:
    client = clients[page.persona]

    def html(path: str) -> str:
        status, body, _ = _open(client, path, follow=True)
        if status != 200:
            raise LookupError(f"{path} answered {status}")
        return body

    try:
        path = page.resolve(html)
    except LookupError as e:
        return str(e)
    _open(client, path)  # the first request warms caches that later ones reuse
    status, _, statements = _open(client, path)
    return statements if status == 200 else f"{path} answered {status}"


def _measure(folder: Path, scale: Scale) -> Counts:
    with live_app("sqlite", folder, {"SQL_COUNT_HEADER": True}) as app:
        with live_session(app) as session:
            generate(session, scale)
        with live_session(app) as session:
            people = persona_ids(session)
        clients: dict[str | None, FlaskClient] = {
            name: logged_in_client(app, uid) for name, uid in people.items()
        }
        clients[None] = app.test_client()
        return {page.name: _count(app, page, clients) for page in MAIN_PAGES}


@pytest.fixture(scope="module")
def statements(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Counts]]:
    yield {
        size: _measure(tmp_path_factory.mktemp("statements"), scale)
        for size, scale in SIZES.items()
    }


@pytest.mark.parametrize("page", MAIN_PAGES, ids=lambda p: p.name)
def test_a_main_page_sends_a_bounded_number_of_statements_the_same_for_10_and_200_rows(
    statements: dict[str, Counts], page: Page
) -> None:
    few, many = statements["10 rows"][page.name], statements["200 rows"][page.name]
    if page.via is None:
        assert isinstance(few, int), few
        assert isinstance(many, int), many
        assert many == few <= MOST, (few, many)
    else:
        # A page about one thing: the two sizes open different things, whose kinds may differ
        # (a controlled dataset's request has an agreement to show, an open one's has none), and
        # the small program may have none for this persona (no review open at 10 proposals).
        opened = [n for n in (few, many) if isinstance(n, int)]
        assert isinstance(many, int), many
        assert max(opened) <= MOST, (few, many)
