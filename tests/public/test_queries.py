"""Every public page runs the same number of SQL queries with 10 rows as with 200 (aggregate
queries and eager loading; never a query per row)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests.public import factories

#: Counting is the same on both databases: SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

#: The most statements any public page sends (with the test transaction's SAVEPOINT and RELEASE).
MOST = 16

Count = Callable[[Callable[[], object]], int]


def _count(client: FlaskClient, count_queries: Count, path: str) -> int:
    def get() -> None:
        resp = client.get(path)
        assert resp.status_code == 200, resp.get_data(as_text=True)[-2000:]

    return count_queries(get)


def _partners(db: Session, n: int) -> None:
    call = factories.a_call(db)
    factories.projects(db, call, factories.partners(db, n))


@pytest.mark.parametrize(
    "path", ["/program/", "/program/partners", "/program/projects", "/program/partners?q=Partner"]
)
def test_lists_and_overview_run_a_fixed_number_of_queries(
    client: FlaskClient, db: Session, count_queries: Count, path: str
) -> None:
    _partners(db, 10)
    few = _count(client, count_queries, path)
    _partners(db, 190)
    assert _count(client, count_queries, path) == few <= MOST
    # The later pages cost the same.
    assert _count(client, count_queries, path + ("&" if "?" in path else "?") + "page=3") == few


def test_a_partners_page_runs_a_fixed_number_of_queries(
    client: FlaskClient, db: Session, count_queries: Count
) -> None:
    call = factories.a_call(db)
    [inst] = factories.partners(db, 1)
    factories.projects(db, call, [inst] * 10, outputs=2)
    path = f"/program/institutions/{inst.id}"
    few = _count(client, count_queries, path)
    factories.projects(db, call, [inst] * 190, outputs=2)
    assert _count(client, count_queries, path) == few <= MOST


def test_a_projects_page_runs_a_fixed_number_of_queries(
    client: FlaskClient, db: Session, count_queries: Count
) -> None:
    call = factories.a_call(db)
    [inst] = factories.partners(db, 1)
    [few_outputs] = factories.projects(db, call, [inst], outputs=10)
    [many_outputs] = factories.projects(db, call, [inst], outputs=200)
    few = _count(client, count_queries, f"/program/projects/{few_outputs.id}")
    assert _count(client, count_queries, f"/program/projects/{many_outputs.id}") == few <= MOST


def test_the_calls_page_runs_a_fixed_number_of_queries(
    client: FlaskClient, db: Session, count_queries: Count
) -> None:
    factories.open_calls(db, 10)
    few = _count(client, count_queries, "/program/calls")
    factories.open_calls(db, 190)
    assert _count(client, count_queries, "/program/calls") == few <= MOST
