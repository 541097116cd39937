"""Every list of the portal: search, state filter, sort, paging and CSV, built the same way.

Views (and the API) describe a list with :class:`ListSpec` — which columns the search looks in,
which column holds the state, the sort orders offered — and call :func:`list_page`; the query they
start from is always the domain's ``visible_*`` filter, so a list never shows what a detail page
would refuse.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Response, current_app, request
from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import ColumnElement, Select, func, or_

from portal.core.forms import FilterForm

MAX_PER_PAGE = 100
#: Highest page number accepted; beyond it the last pages are as empty as any other.
MAX_PAGE = 100_000
LIKE_ESCAPE = "\\"


def like_pattern(text: str) -> str:
    """``%text%`` for a case-insensitive LIKE, with the user's ``%``, ``_`` and ``\\`` taken literally."""
    escaped = (
        text.strip()
        .lower()
        .replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    return f"%{escaped}%"


def contains(column: Any, text: str) -> ColumnElement[bool]:
    """``column`` contains ``text``: case-insensitive, the user's wildcards taken literally."""
    return func.lower(column).like(like_pattern(text), escape=LIKE_ESCAPE)


def matches(text: str, *columns: Any) -> ColumnElement[bool]:
    """Any of ``columns`` contains ``text``."""
    return or_(*(contains(c, text) for c in columns))


def paginate(stmt: Select[Any]) -> Pagination:
    """One page of ``stmt``, from the ``page`` and ``per_page`` query arguments: two bounded queries
    whatever the table size; bad or huge values fall back rather than fail."""
    from portal.extensions import db

    page = request.args.get("page", 1, type=int) or 1
    return db.paginate(
        stmt,
        page=min(max(page, 1), MAX_PAGE),
        per_page=current_app.config["PAGE_SIZE"],
        max_per_page=MAX_PER_PAGE,
        error_out=False,
    )


@dataclass(frozen=True)
class ListSpec:
    """What a list offers: where the search looks, which column holds the state, how it sorts."""

    #: The columns the search box looks in, or a function from the text to a condition.
    search: Sequence[Any] | Callable[[str], ColumnElement[bool]] = ()
    #: The column the state filter applies to, and the enum of its states.
    state_column: Any = None
    states: Iterable[Any] = ()
    #: Sort key → ORDER BY clauses; the first is the default.
    sorts: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    placeholder: str = "Search"


@dataclass
class ListPage:
    """What a list template gets: the filter form, the page, and whether the filter was valid."""

    form: FilterForm
    page: Pagination
    valid: bool
    sort: str


def _apply(stmt: Select[Any], spec: ListSpec) -> tuple[Select[Any], FilterForm, bool, str]:
    """``stmt`` with the request's filter (``q``, ``state``) and sort; the form, whether it was
    valid, and the sort chosen."""
    form = FilterForm.for_states(spec.states, data=request.args, placeholder=spec.placeholder)
    valid = form.validate()
    if valid:
        text = (form.q.data or "").strip()
        if text and spec.search:
            search = spec.search
            stmt = stmt.where(search(text) if callable(search) else matches(text, *search))
        if form.state.data and spec.state_column is not None:
            stmt = stmt.where(spec.state_column == form.state.data)
    sort = request.args.get("sort", "")
    if sort not in spec.sorts:
        sort = next(iter(spec.sorts), "")
    if sort:
        stmt = stmt.order_by(*spec.sorts[sort])
    return stmt, form, valid, sort


def list_page(stmt: Select[Any], spec: ListSpec) -> ListPage:
    """Apply the request's filter (``q``, ``state``), sort and page to ``stmt``."""
    stmt, form, valid, sort = _apply(stmt, spec)
    return ListPage(form=form, page=paginate(stmt), valid=valid, sort=sort)


def filtered(stmt: Select[Any], spec: ListSpec) -> Select[Any]:
    """``stmt`` with the request's filter and sort, unpaged: what a CSV download of the list
    holds."""
    return _apply(stmt, spec)[0]


def csv_response(
    filename: str,
    header: Sequence[str],
    rows: Iterable[Any],
    row: Callable[[Any], Sequence[object]],
) -> Response:
    """A CSV download of ``rows`` (each turned into cells by ``row``). Cells that a spreadsheet
    would run as a formula are prefixed with a quote (CSV injection)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for r in rows:
        writer.writerow([_cell(c) for c in row(r)])
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _cell(value: object) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value
