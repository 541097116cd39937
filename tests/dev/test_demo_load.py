"""``make run`` loads the demo on first start only. In a module of its own: ``test_demo.py`` holds
the demo loaded in an open transaction for all its tests, which a second load would wait on."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.agreements.models import Agreement
from portal.allocations.models import Allocation
from portal.dev.demo import load_if_empty
from portal.extensions import db as flask_db


@pytest.fixture
def attachments_in_tmp(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's proposal PDFs go to the test's own folder."""
    monkeypatch.setitem(app.config, "ATTACHMENT_FOLDER", str(tmp_path / "attachments"))


def test_loading_twice_loads_once(app: Flask, db: Session, attachments_in_tmp: None) -> None:
    """``make run`` loads the demo on first start only (its database already has institutions)."""
    with app.app_context():
        first = load_if_empty()
        again = load_if_empty()
        assert first is not None and first["agreements"] == 31 and first["allocations"] == 13
        assert (first["datasets"], first["access requests"], first["grants"]) == (10, 13, 12)
        assert (first["institutions"], first["outputs"], first["final reports"]) == (10, 16, 13)
        assert again is None
        assert flask_db.session.scalar(select(func.count()).select_from(Agreement)) == 31
        assert flask_db.session.scalar(select(func.count()).select_from(Allocation)) == 13
