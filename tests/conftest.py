"""Fixtures: the app against SQLite and PostgreSQL, per-test rollback, clients, logged-in users."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from portal import create_app
from portal.extensions import db as _db
from tests.databases import IN_CI, temporary_database
from tests.notifications.smtp import no_unexpected_smtp  # noqa: F401 - autouse: no stray SMTP
from tests.support.app import TEST_CONFIG, create_schema, sessions_on
from tests.support.journey import portal, smtp  # noqa: F401 - module fixtures of the journeys
from tests.support.live import LIVE_DATABASES, live_app


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Every test that touches the database runs once on SQLite and once on PostgreSQL."""
    with temporary_database(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="session")
def app(database_url: str) -> Iterator[Flask]:
    app = create_app({**TEST_CONFIG, "DATABASE_URL": database_url})
    with app.app_context():
        create_schema()
    yield app
    with app.app_context():
        _db.engine.dispose()


@pytest.fixture
def db(app: Flask) -> Iterator[Session]:
    """The test's own session; all its work, and the app's, is rolled back after the test.

    The test runs inside one outer transaction on one connection. The test's session and the app's
    request sessions join it through SAVEPOINTs (``join_transaction_mode="create_savepoint"``), so a
    ``commit()`` in a view only releases a savepoint and a rollback there undoes only the request.
    The two sessions are separate, as a test and a browser would be: after a request, expire or
    refresh what the test holds before asserting on it.
    """
    with app.app_context():
        engine = _db.engine
    connection = engine.connect()
    outer = connection.begin()
    try:
        with sessions_on(connection) as session:
            yield session
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture(scope="session", params=LIVE_DATABASES)
def race_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """An app on its own committed database (each database once per test run), for the tests of
    decisions two people take at the same moment (tests/support/race.py). Each test makes its own
    rows; the database is dropped at the end."""
    with live_app(request.param, tmp_path_factory.mktemp("races")) as app:
        yield app


@pytest.fixture
def client(app: Flask, db: Session) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def csrf_enabled(app: Flask) -> Iterator[None]:
    app.config["WTF_CSRF_ENABLED"] = True
    yield
    app.config["WTF_CSRF_ENABLED"] = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``once`` (route-by-role matrices, rendering) run on SQLite only: what depends
    on the database's semantics (transactions, locks, constraints, races, migrations) is tested
    on both databases elsewhere, and running the matrices twice would double the suite's time."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("database_url") == "postgresql"
        (drop if on_postgres and item.get_closest_marker("once") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    # Whole deployments (``slow``: a wheel installed in a fresh venv, gunicorn instances) first, so
    # that with ``-n auto`` they overlap the many short tests instead of running alone at the end.
    items[:] = sorted(keep, key=lambda item: item.get_closest_marker("slow") is None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skipped test is a failure: every component must be there."""
    if not IN_CI:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and reporter is not None:
        reporter.write_line(f"CI=true: {len(skipped)} test(s) skipped; failing the run.", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def count_queries(app: Flask) -> Callable[[Callable[[], object]], int]:
    """``count_queries(fn)``: how many SQL statements ``fn`` sent to the database."""

    def run(fn: Callable[[], object]) -> int:
        seen = 0

        def _count(*args: object) -> None:
            nonlocal seen
            seen += 1

        with app.app_context():
            engine = _db.engine
        event.listen(engine, "before_cursor_execute", _count)
        try:
            fn()
        finally:
            event.remove(engine, "before_cursor_execute", _count)
        return seen

    return run
