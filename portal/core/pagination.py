"""Paging for every list: two bounded queries (a count and one page), whatever the table size."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import Select

from portal.extensions import db

MAX_PER_PAGE = 100


def paginate(stmt: Select[Any]) -> Pagination:
    """One page of ``stmt``, from the ``page`` and ``per_page`` query arguments (bad values fall back
    to the first page and the configured size rather than failing)."""
    return db.paginate(
        stmt,
        per_page=current_app.config["PAGE_SIZE"],
        max_per_page=MAX_PER_PAGE,
        error_out=False,
    )
