"""Main pages at DESIGN.md's scale on SQLite, one worker: median latency and SQL statements per page.

Run with ``make bench``. Prints a table; the targets (median well under 50 ms, a number of queries
that does not grow with the rows shown) are read from it, not asserted as timings in the test suite.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import event, select

from portal import create_app
from portal.auth.models import Identity, User
from portal.dev.datagen import Scale, generate
from portal.dev.demo import load_if_empty
from portal.extensions import db
from portal.institutions.models import Institution
from tests.support.app import TEST_CONFIG
from tests.support.live import logged_in_client

ROUNDS = 40


@pytest.fixture(scope="module")
def big_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    path = tmp_path_factory.mktemp("bench") / "bench.sqlite3"
    app = create_app({**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{path}"})
    with app.app_context():
        db.create_all()
        load_if_empty()
        t = time.perf_counter()
        counts = generate(db.session, Scale())
        db.session.commit()
        print(f"\ngenerated {counts} in {time.perf_counter() - t:.1f} s")
    yield app


def _user(app: Flask, subject: str) -> User:
    with app.app_context():
        user = db.session.scalars(
            select(User).join(Identity).where(Identity.subject == subject)
        ).one()
        db.session.expunge(user)
        return user


def test_main_pages_median_latency_and_queries(big_app: Flask) -> None:
    with big_app.app_context():
        some_inst = db.session.scalars(
            select(Institution.id).order_by(Institution.id.desc())
        ).first()
        engine = db.engine
    pages = [
        ("admin", "/dashboard"),
        ("officer", "/dashboard"),
        ("official", "/dashboard"),
        ("professor", "/dashboard"),
        ("officer", "/institutions/"),
        ("officer", "/institutions/?page=7"),
        ("officer", "/institutions/?q=university"),
        ("professor", "/institutions/"),
        ("officer", f"/institutions/{some_inst}"),
        ("admin", "/admin/audit"),
        ("admin", "/admin/audit?page=500"),
    ]
    rows = []
    for who, path in pages:
        client = logged_in_client(big_app, _user(big_app, who).id)
        assert client.get(path).status_code == 200  # warm-up
        statements = 0

        def count(*args: object) -> None:
            nonlocal statements
            statements += 1

        event.listen(engine, "before_cursor_execute", count)
        assert client.get(path).status_code == 200
        event.remove(engine, "before_cursor_execute", count)
        times = []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            client.get(path)
            times.append((time.perf_counter() - t) * 1000)
        rows.append((who, path, statistics.median(times), max(times), statements))
    print(f"\n{'who':<10} {'page':<28} {'median ms':>10} {'max ms':>8} {'SQL':>5}")
    for who, path, med, worst, n in rows:
        print(f"{who:<10} {path:<28} {med:>10.1f} {worst:>8.1f} {n:>5}")
