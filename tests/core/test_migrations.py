"""Migrations build the schema from nothing, and the models and migrations agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade

from portal import create_app
from portal.extensions import db
from tests.databases import temporary_database
from tests.support.app import TEST_CONFIG


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_upgrade_head_on_an_empty_database_matches_the_models(kind: str, tmp_path: Path) -> None:
    with temporary_database(kind, tmp_path) as url:
        app = create_app({**TEST_CONFIG, "DATABASE_URL": url})
        with app.app_context():
            upgrade()
            with db.engine.connect() as conn:
                ctx = MigrationContext.configure(conn, opts={"compare_type": True})
                diff = compare_metadata(ctx, db.metadata)
                tables = sa.inspect(conn).get_table_names()
            db.engine.dispose()
        assert diff == []
        assert {"users", "identities", "institutions", "audit_events", "alembic_version"} <= set(
            tables
        )
