"""``in_app``: services run inside the app (their mails build links to its pages)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask


@pytest.fixture
def in_app(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield
