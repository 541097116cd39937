"""Errors are logged after the migrations ran in the same process, as in ``make run`` (security
report, item 11: Alembic's ``fileConfig`` used to disable every existing logger)."""

from __future__ import annotations

import logging
from pathlib import Path

from flask_migrate import upgrade

from portal import create_app
from tests.support.app import TEST_CONFIG


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_unhandled_error_is_logged_after_in_process_migrations(tmp_path: Path) -> None:
    app = create_app({**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.sqlite3'}"})

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("kaboom")

    with app.app_context():
        upgrade()
    logger = logging.getLogger("portal.core.web")
    keep = _Keep()
    logger.addHandler(keep)
    try:
        assert app.test_client().get("/boom").status_code == 500
    finally:
        logger.removeHandler(keep)
    assert not logger.disabled
    assert [r.getMessage() for r in keep.records] == ["unhandled error on GET /boom"]
    assert keep.records[0].exc_info and "kaboom" in str(keep.records[0].exc_info[1])
