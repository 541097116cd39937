"""The program's public pages, for anyone, logged in or not: the overview with its charts, the
partner directory and each partner's page, the awarded projects and each project's page, and the
open calls.

Every page is a :class:`Page` (its title and the HTML of its content) made by a view from the
rules of ``portal.public.permissions`` and the queries of ``portal.public.queries``, then wrapped
in the site's layout by :func:`public_page`, which also caches it:

- on the server, the page's content is kept for ``PUBLIC_CACHE_SECONDS`` (default 300; 0 turns the
  cache off) per path and query string, so a page asked for again in that time costs no query;
  the layout (navigation, the logged-in person's menu, flashed messages) is drawn for each request;
- in browsers and shared caches: an ``ETag`` (a repeated request with ``If-None-Match`` gets a
  304) and, for anonymous visitors, ``Cache-Control: public, max-age=<the same seconds>``. A
  logged-in person sees the same content, but in a page that names them: that answer stays
  ``no-store`` (``portal.core.web``).

A visitor who is not logged in gets no cookie from these pages: their forms are GET forms
without a CSRF token, and nothing is stored in the session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachelib import SimpleCache
from flask import Blueprint, abort, current_app, make_response, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import func
from sqlalchemy.orm import contains_eager, joinedload, selectinload

from portal.core.dates import add_months
from portal.core.listing import contains, matches, paginate
from portal.core.models import utcnow
from portal.core.roles import is_logged_in
from portal.extensions import db
from portal.institutions.models import Institution
from portal.proposals.models import Call, CallResource, OutputKind, Proposal
from portal.public import charts, queries
from portal.public.forms import PartnerFilterForm, ProjectFilterForm
from portal.public.permissions import (
    public_calls,
    public_institutions,
    public_projects,
)

bp = Blueprint("public", __name__, url_prefix="/program")

#: Where the app keeps the cache of rendered public pages (``init_app``).
CACHE_KEY = "portal.public.cache"
#: The most pages kept (different paths and query strings); the oldest go first.
CACHE_PAGES = 500
DEFAULT_CACHE_SECONDS = 300


@dataclass(frozen=True)
class Page:
    """A public page: its title and its content (HTML, from a template: escaped)."""

    title: str
    body: Markup


def make_cache() -> SimpleCache:
    return SimpleCache(threshold=CACHE_PAGES, default_timeout=DEFAULT_CACHE_SECONDS)


def cache_seconds() -> int:
    """``PUBLIC_CACHE_SECONDS``: how long a page is kept and may be reused (0: not at all)."""
    try:
        return max(int(current_app.config.get("PUBLIC_CACHE_SECONDS", DEFAULT_CACHE_SECONDS)), 0)
    except (TypeError, ValueError):
        return DEFAULT_CACHE_SECONDS


def page_cache() -> SimpleCache:
    cache: SimpleCache = current_app.extensions[CACHE_KEY]
    return cache


def public_page(view: Callable[..., Page]) -> Callable[..., ResponseReturnValue]:
    """Serve ``view``'s page in the site's layout, cached (see the module's docstring)."""

    @functools.wraps(view)
    def wrapper(**kwargs: Any) -> ResponseReturnValue:
        seconds = cache_seconds()
        key = request.full_path
        page = page_cache().get(key) if seconds else None
        if not isinstance(page, Page):
            page = view(**kwargs)
            if seconds:
                page_cache().set(key, page, timeout=seconds)
        response = make_response(render_template("public/page.html", page=page))
        if not is_logged_in(current_user):
            response.cache_control.public = True
            response.cache_control.max_age = seconds
        response.vary.add("Cookie")
        response.add_etag()
        return response.make_conditional(request)

    return wrapper


def _page(template: str, title: str, **context: Any) -> Page:
    # Rendered by Jinja with autoescaping: the HTML is safe to put in the layout as it is.
    return Page(title, Markup(render_template(template, **context)))  # noqa: S704


# --- the overview --------------------------------------------------------------------------------


@bp.get("/")
@public_page
def overview() -> Page:
    """The program in figures, with three charts (each with its table)."""
    ov = queries.overview(db.session)
    months = charts.monthly_totals(ov.by_month, until=utcnow().date())
    month_rows = [(m.strftime("%b %Y"), hours) for m, hours in months]
    kind_rows = [(kind.label, float(n)) for kind, n in ov.by_kind]
    country_rows = [(name, float(n)) for name, n in ov.by_country]
    country_chart = charts.bar_chart_svg(
        title="Partner institutions by country",
        desc=_describe(country_rows, "partners", "No partner institutions yet."),
        rows=country_rows,
        unit="partner institutions",
        id_prefix="chart-countries",
    )
    month_chart = charts.column_chart_svg(
        title="GPU-hours awarded per month",
        desc=_describe(month_rows, "GPU-hours", "No GPU-hours awarded yet."),
        rows=month_rows,
        unit="GPU-hours",
        id_prefix="chart-months",
    )
    kind_chart = charts.bar_chart_svg(
        title="Open outputs released, by kind",
        desc=_describe(kind_rows, "outputs", "No outputs released yet."),
        rows=kind_rows,
        unit="outputs released",
        id_prefix="chart-kinds",
    )
    return _page(
        "public/overview.html",
        "The program",
        ov=ov,
        months=months,
        # Built from escaped text only (portal/public/charts.py).
        country_chart=Markup(country_chart),  # noqa: S704
        month_chart=Markup(month_chart),  # noqa: S704
        kind_chart=Markup(kind_chart),  # noqa: S704
    )


def _describe(rows: list[tuple[str, float]], unit: str, empty: str) -> str:
    """A chart's description: its figures in words (the table beside it has them too)."""
    shown = [(label, value) for label, value in rows if value]
    if not shown:
        return empty
    parts = [f"{label}: {charts.number_text(value)}" for label, value in shown[:12]]
    more = f"; and {len(shown) - 12} more" if len(shown) > 12 else ""
    return f"{unit.capitalize()} — " + "; ".join(parts) + more + "."


# --- partners ------------------------------------------------------------------------------------

#: Sort key → (label, ORDER BY).
PARTNER_SORTS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "name": ("Name", (func.lower(Institution.name), Institution.id)),
    "since": ("Newest partners", (Institution.partner_since.desc(), Institution.id.desc())),
}


@bp.get("/partners")
@public_page
def partners() -> Page:
    """The partner directory: partners only, by name; search by name, filter by country."""
    countries = queries.partner_countries(db.session)
    form = PartnerFilterForm.for_countries(countries, request.args)
    stmt = public_institutions()
    valid = form.validate()
    if valid:
        if text := (form.q.data or "").strip():
            stmt = stmt.where(contains(Institution.name, text))
        if form.country.data:
            stmt = stmt.where(Institution.country == form.country.data)
    sort = request.args.get("sort", "")
    sort = sort if sort in PARTNER_SORTS else "name"
    page = paginate(stmt.order_by(*PARTNER_SORTS[sort][1]))
    rows = queries.partner_rows(db.session, page.items)
    return _page(
        "public/partners.html",
        "Partner institutions",
        form=form,
        valid=valid,
        page=page,
        rows=rows,
        sort=sort,
        sorts={k: label for k, (label, _) in PARTNER_SORTS.items()},
        filtered=bool(request.args.get("q") or request.args.get("country")),
    )


@bp.get("/institutions/<int:institution_id>")
@public_page
def institution(institution_id: int) -> Page:
    """One partner: its figures, its awarded projects, its latest released outputs (404 for an
    institution that is not a partner)."""
    inst = db.session.scalar(public_institutions().where(Institution.id == institution_id))
    if inst is None:
        abort(404)
    partner = queries.partner_rows(db.session, [inst])[0]
    totals = queries.totals(db.session, inst.id)
    page = paginate(
        public_projects()
        .where(Proposal.institution_id == inst.id)
        .options(joinedload(Proposal.institution))
        .order_by(Proposal.decided_at.desc(), Proposal.id.desc())
    )
    return _page(
        "public/institution.html",
        inst.name,
        partner=partner,
        totals=totals,
        page=page,
        projects=queries.project_rows(db.session, page.items),
        outputs=queries.outputs_of(db.session, institution_id=inst.id, limit=LATEST_OUTPUTS),
    )


#: How many of a partner's latest outputs its page lists (each project's page has all of its).
LATEST_OUTPUTS = 10


# --- projects ------------------------------------------------------------------------------------


@bp.get("/projects")
@public_page
def projects() -> Page:
    """The awarded projects of partners, newest award first; search by title or institution,
    filter by field of research."""
    form = ProjectFilterForm.from_args(request.args)
    stmt = (
        public_projects()
        .join(Institution, Institution.id == Proposal.institution_id)
        .options(contains_eager(Proposal.institution))
    )
    valid = form.validate()
    if valid:
        if text := (form.q.data or "").strip():
            stmt = stmt.where(matches(text, Proposal.title, Institution.name))
        if form.field.data:
            stmt = stmt.where(Proposal.field == form.field.data)
    page = paginate(stmt.order_by(Proposal.decided_at.desc(), Proposal.id.desc()))
    return _page(
        "public/projects.html",
        "Awarded projects",
        form=form,
        valid=valid,
        page=page,
        rows=queries.project_rows(db.session, page.items),
        filtered=bool(request.args.get("q") or request.args.get("field")),
    )


@bp.get("/projects/<int:proposal_id>")
@public_page
def project(proposal_id: int) -> Page:
    """One awarded project: what it is about, its GPU-hours, its released outputs and its
    openness (404 for any proposal that is not an awarded project of a partner)."""
    proposal = db.session.scalar(
        public_projects()
        .where(Proposal.id == proposal_id)
        .options(joinedload(Proposal.institution))
    )
    if proposal is None:
        abort(404)
    row = queries.project_rows(db.session, [proposal])[0]
    ends_on = (
        add_months(proposal.start_date, proposal.duration_months)
        if proposal.start_date and proposal.duration_months
        else None
    )
    return _page(
        "public/project.html",
        proposal.title,
        row=row,
        abstract=proposal.abstract,
        start_date=proposal.start_date,
        duration_months=proposal.duration_months,
        ends_on=ends_on,
        resources=queries.resource_hours(db.session, proposal.id),
        outputs=queries.outputs_of(db.session, proposal_id=proposal.id),
        kinds=list(OutputKind),
    )


# --- calls ---------------------------------------------------------------------------------------


@bp.get("/calls")
@public_page
def calls() -> Page:
    """The open calls: deadlines first (soonest first), then rolling calls; each with the
    resources it offers, linking to the call's own page (where a logged-in researcher
    proposes)."""
    page = paginate(
        public_calls()
        .options(selectinload(Call.resources).selectinload(CallResource.resource))
        .order_by(Call.closes_at.is_(None), Call.closes_at, Call.id)
    )
    return _page(
        "public/calls.html",
        "Open calls",
        page=page,
        now=utcnow(),
        call_url=lambda call: url_for("proposals.call_detail", call_id=call.id),
    )
