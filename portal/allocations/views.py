"""Allocation pages: the list of allocations the viewer may see (CSV for program staff), one
allocation with why it cannot be used yet, its burn-down chart (server-side SVG, with a table of
usage per month as its text alternative) and its jobs; for program staff every resource's
capacity, awarded, used and left, and one resource per call and per institution (with charts and
CSV). Also the project page's allocations section, the navigation and a dashboard card."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from flask import Blueprint, Flask, Response, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import ColumnElement, Float, Select, case, cast, func, literal_column, select
from sqlalchemy.orm import contains_eager, joinedload

from portal.allocations import charts
from portal.allocations.forms import AllocationFilterForm
from portal.allocations.models import (
    HOLDING,
    SECONDS_PER_HOUR,
    Allocation,
    AllocationState,
    UsageRecord,
)
from portal.allocations.permissions import (
    can_view_allocation,
    can_view_resources,
    visible_allocations,
)
from portal.allocations.workflow import usable_blocker
from portal.auth.permissions import as_user, is_staff
from portal.core import hooks
from portal.core.listing import ListSpec, csv_response, filtered, list_page, matches, paginate
from portal.core.models import utcnow
from portal.core.permissions import check
from portal.core.roles import is_logged_in
from portal.core.web import load, login_required
from portal.extensions import db
from portal.institutions.models import Institution
from portal.proposals.models import Call, CallResource, Proposal, Resource, TeamMember, TeamRole
from portal.proposals.permissions import can_manage_calls, can_view_proposal, on_a_team

bp = Blueprint("allocations", __name__, url_prefix="/allocations")


@bp.app_template_filter("gpu_hours")
def gpu_hours(value: float) -> str:
    """GPU-hours as the allocation pages show them (``1,250``; ``2.5`` under ten)."""
    return charts.hours_text(value)


#: What an allocation's share used is sorted by (a fraction; its hours are never zero).
USED_FRACTION = cast(Allocation.used_gpu_seconds, Float) / (Allocation.hours * SECONDS_PER_HOUR)

#: Sort key → (label, ORDER BY).
SORTS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "newest": ("Newest", (Allocation.id.desc(),)),
    "project": ("Project", (Proposal.title, Allocation.id)),
    "ending": ("Ending soonest", (Allocation.ends_on, Allocation.id)),
    "used": ("Most used", (USED_FRACTION.desc(), Allocation.id)),
}

ALLOCATIONS = ListSpec(
    search=lambda text: matches(text, Proposal.title, Allocation.account),
    state_column=Allocation.state,
    states=AllocationState,
    sorts={key: order for key, (_, order) in SORTS.items()},
    placeholder="Project or account",
)

RESOURCES = ListSpec(
    search=(Resource.cluster, Resource.gpu_class),
    sorts={
        "name": (Resource.gpu_class, Resource.cluster, Resource.id),
        "cluster": (Resource.cluster, Resource.gpu_class, Resource.id),
        "capacity": (Resource.capacity_hours.desc(), Resource.id),
    },
    placeholder="Cluster or GPU class",
)

#: Loader options for one allocation shown with its project, resource, institution and call.
DETAIL = (
    joinedload(Allocation.proposal).selectinload(Proposal.team),
    joinedload(Allocation.resource),
    joinedload(Allocation.institution),
    joinedload(Allocation.call_resource).joinedload(CallResource.call),
)

#: The states whose page says why the hours cannot be used.
BLOCKED = (AllocationState.PENDING, AllocationState.SUSPENDED)
#: Institutions drawn in a resource page's chart (all of them are in its table).
CHART_ROWS = 15


def figure(hours: float) -> int | float:
    """GPU-hours in a CSV cell: two decimals at most, a whole number without them."""
    rounded = round(hours, 2)
    return int(rounded) if rounded == int(rounded) else rounded


# --- the list ----------------------------------------------------------------------------------


def _listed(user: Any) -> Select[Any]:
    """The allocations ``user`` may see, each with its project and resource in the same query."""
    return (
        visible_allocations(user)
        .join(Allocation.proposal)
        .options(contains_eager(Allocation.proposal), joinedload(Allocation.resource))
    )


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    """The allocations the current user may see: search (project title, account), state and
    resource, sort, paging; program staff download them as CSV."""
    resources = db.session.scalars(
        select(Resource).order_by(Resource.gpu_class, Resource.cluster, Resource.id)
    ).all()
    filters = AllocationFilterForm(
        request.args,
        resources=resources,
        sorts=[(key, label) for key, (label, _) in SORTS.items()],
    )
    stmt = _listed(current_user)
    resource_id = filters.chosen_resource()
    if resource_id is not None:
        stmt = stmt.where(Allocation.resource_id == resource_id)
    if request.args.get("format") == "csv":
        check(can_view_resources, current_user)
        rows = db.session.scalars(
            filtered(stmt.options(joinedload(Allocation.institution)), ALLOCATIONS)
        ).all()
        return csv_response(
            "allocations.csv",
            [
                "id",
                "project",
                "institution",
                "resource",
                "cluster",
                "account",
                "state",
                "hours",
                "used_hours",
                "left_hours",
                "percent_used",
                "starts_on",
                "ends_on",
            ],
            rows,
            lambda a: [
                a.id,
                a.proposal.title,
                a.institution.name,
                a.resource.name,
                a.cluster,
                a.account,
                a.state.value,
                a.hours,
                figure(a.used_hours),
                figure(a.left_hours),
                figure(100 * a.used_fraction),
                a.starts_on.isoformat(),
                a.ends_on.isoformat(),
            ],
        )
    listing = list_page(stmt, ALLOCATIONS)
    return render_template(
        "allocations/index.html",
        page=listing.page,
        form=listing.form,
        filters=filters,
        staff=can_view_resources(current_user),
    )


# --- one allocation ----------------------------------------------------------------------------


def shown_blocker(allocation: Allocation, user: Any) -> hooks.Blocker | None:
    """Why a pending or suspended allocation's hours cannot be used, for ``user`` (a link meant
    for program staff is left out for the others, who would be refused there)."""
    if allocation.state not in BLOCKED:
        return None
    blocker = usable_blocker(allocation)
    if blocker is not None and blocker.staff_only and not is_staff(user):
        blocker = replace(blocker, url=None)
    return blocker


def _day(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp column, in SQL (PostgreSQL keeps the zone: convert
    first; SQLite stores UTC already)."""
    if db.session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone(literal_column("'UTC'"), column))
    return func.date(column)


def daily_usage(allocation: Allocation) -> list[tuple[dt.date, float]]:
    """GPU-hours used per day by ``allocation``'s jobs, by the day each job ended (a job still
    running counts on the day it started, or was reported): one aggregate query."""
    when = func.coalesce(UsageRecord.ended_at, UsageRecord.started_at, UsageRecord.imported_at)
    day = _day(when).label("day")
    rows = db.session.execute(
        select(day, func.sum(UsageRecord.gpus * UsageRecord.elapsed_seconds))
        .where(UsageRecord.allocation_id == allocation.id)
        .group_by(day)
        .order_by(day)
    ).all()
    return [
        (dt.date.fromisoformat(str(d)[:10]), float(s or 0) / SECONDS_PER_HOUR)
        for d, s in rows
        if d is not None
    ]


def _summary(allocation: Allocation, daily: Sequence[tuple[dt.date, float]], today: dt.date) -> str:
    """One sentence that says what the burn-down chart shows (its description and alt text)."""
    used = sum(h for _, h in daily)
    on = min(max(today, allocation.starts_on), allocation.ends_on)
    plan = charts.planned_left(allocation.hours, allocation.starts_on, allocation.ends_on, on)
    return (
        f"{charts.hours_text(allocation.hours)} GPU-hours from "
        f"{allocation.starts_on:%d %B %Y} to {allocation.ends_on:%d %B %Y}: "
        f"{charts.hours_text(used)} used by the jobs reported, "
        f"{charts.hours_text(max(allocation.hours - used, 0))} left on {on:%d %B %Y}; "
        f"even use to the end date would leave {charts.hours_text(plan)} then."
    )


def _jobs(allocation: Allocation) -> Any:
    return paginate(
        select(UsageRecord)
        .where(UsageRecord.allocation_id == allocation.id)
        .order_by(UsageRecord.ended_at.desc().nulls_first(), UsageRecord.id.desc())
    )


@bp.get("/<int:allocation_id>")
@login_required
def detail(allocation_id: int) -> ResponseReturnValue:
    """An allocation: its project, resource, account, period, hours used and left, its state and
    why it cannot be used (pending or suspended), the burn-down chart with its table, the jobs."""
    allocation = load(Allocation, allocation_id, can_view_allocation, *DETAIL)
    today = utcnow().date()
    daily = daily_usage(allocation)
    return render_template(
        "allocations/detail.html",
        allocation=allocation,
        project_url=url_for("proposals.detail", proposal_id=allocation.proposal_id)
        if can_view_proposal(current_user, allocation.proposal)
        else None,
        blocker=shown_blocker(allocation, current_user),
        summary=_summary(allocation, daily, today),
        months=charts.monthly(
            allocation.hours, allocation.starts_on, allocation.ends_on, daily, today
        ),
        jobs=_jobs(allocation),
    )


@bp.get("/<int:allocation_id>/burndown.svg")
@login_required
def burndown(allocation_id: int) -> ResponseReturnValue:
    """The burn-down chart of an allocation, as SVG (to those who may see the allocation)."""
    allocation = load(Allocation, allocation_id, can_view_allocation, *DETAIL)
    today = utcnow().date()
    daily = daily_usage(allocation)
    svg = charts.burndown_svg(
        title=f"Burn-down of {allocation.resource.name} for “{allocation.proposal.title}”",
        desc=_summary(allocation, daily, today),
        hours=allocation.hours,
        starts_on=allocation.starts_on,
        ends_on=allocation.ends_on,
        daily=daily,
        today=today,
    )
    return Response(svg, mimetype="image/svg+xml")


# --- resources (program staff) -----------------------------------------------------------------


@bp.get("/resources")
@login_required
def resources() -> ResponseReturnValue:
    """Every resource with its capacity, the hours allocated from it (held by allocations that
    have not expired), what those allocations used, and what is left to allocate."""
    check(can_view_resources, current_user)
    listing = list_page(select(Resource), RESOURCES)
    ids = [r.id for r in listing.page.items]
    figures = {
        rid: (int(count or 0), int(active or 0), float(used or 0) / SECONDS_PER_HOUR)
        for rid, count, active, used in db.session.execute(
            select(
                Allocation.resource_id,
                func.count(Allocation.id),
                func.sum(case((Allocation.state == AllocationState.ACTIVE, 1), else_=0)),
                func.sum(Allocation.used_gpu_seconds),
            )
            .where(Allocation.resource_id.in_(ids), Allocation.state.in_(HOLDING))
            .group_by(Allocation.resource_id)
        ).all()
    }
    return render_template(
        "allocations/resources.html",
        page=listing.page,
        form=listing.form,
        figures=figures,
    )


@dataclass(frozen=True)
class BudgetRow:
    """One line of a resource page: a call's budget, or an institution's allocations."""

    name: str
    url: str | None
    allocations: int
    awarded: float
    used: float
    #: A call's budget (None for an institution: it has no budget of its own).
    budget: float | None = None

    @property
    def left(self) -> float:
        """A call: its budget not awarded; an institution: its hours awarded not used."""
        if self.budget is not None:
            return max(self.budget - self.awarded, 0.0)
        return max(self.awarded - self.used, 0.0)


def _per_call(resource: Resource) -> list[BudgetRow]:
    """Each call's budget on ``resource``: awarded (its counter), used by the allocations it
    made (in every state), left to award. One query."""
    rows = db.session.execute(
        select(
            Call.id,
            Call.title,
            CallResource.budget_hours,
            CallResource.allocated_hours,
            func.count(Allocation.id),
            func.coalesce(func.sum(Allocation.used_gpu_seconds), 0),
        )
        .select_from(CallResource)
        .join(Call, Call.id == CallResource.call_id)
        .outerjoin(Allocation, Allocation.call_resource_id == CallResource.id)
        .where(CallResource.resource_id == resource.id)
        .group_by(
            CallResource.id,
            Call.id,
            Call.title,
            CallResource.budget_hours,
            CallResource.allocated_hours,
        )
        .order_by(Call.title, CallResource.id)
    ).all()
    return [
        BudgetRow(
            name=title,
            url=url_for("proposals.call_detail", call_id=call_id),
            allocations=int(count),
            awarded=float(awarded),
            used=float(used) / SECONDS_PER_HOUR,
            budget=float(budget),
        )
        for call_id, title, budget, awarded, count, used in rows
    ]


def _per_institution(resource: Resource) -> list[BudgetRow]:
    """Each institution's allocations on ``resource`` that hold capacity (not expired): hours
    awarded, used, left; most awarded first. One query."""
    awarded = func.sum(Allocation.hours)
    rows = db.session.execute(
        select(
            Institution.id,
            Institution.name,
            func.count(Allocation.id),
            awarded,
            func.sum(Allocation.used_gpu_seconds),
        )
        .join(Allocation, Allocation.institution_id == Institution.id)
        .where(Allocation.resource_id == resource.id, Allocation.state.in_(HOLDING))
        .group_by(Institution.id, Institution.name)
        .order_by(awarded.desc(), Institution.name, Institution.id)
    ).all()
    return [
        BudgetRow(
            name=name,
            url=url_for("institutions.detail", institution_id=inst_id),
            allocations=int(count),
            awarded=float(hours or 0),
            used=float(used or 0) / SECONDS_PER_HOUR,
        )
        for inst_id, name, count, hours, used in rows
    ]


CALL_SERIES = (
    charts.Series("Used", charts.BAR_FILLS[0]),
    charts.Series("Awarded, not used", charts.BAR_FILLS[1]),
    charts.Series("Not awarded", charts.BAR_FILLS[2]),
)
INSTITUTION_SERIES = CALL_SERIES[:2]


@bp.get("/resources/<int:resource_id>")
@login_required
def resource(resource_id: int) -> ResponseReturnValue:
    """One resource: capacity, allocated, used and left; per call (budget, awarded, used, left)
    and per institution (awarded, used, left), each as a chart and a table; CSV of the figures
    (``?format=csv``)."""
    check(can_view_resources, current_user)
    res = load(Resource, resource_id)
    calls = _per_call(res)
    institutions = _per_institution(res)
    used = sum(r.used for r in institutions)
    total = BudgetRow(
        name=res.name,
        url=None,
        allocations=sum(r.allocations for r in institutions),
        awarded=float(res.allocated_hours),
        used=used,
        budget=float(res.capacity_hours),
    )
    if request.args.get("format") == "csv":
        lines = [("resource", total), *(("call", r) for r in calls)]
        lines += [("institution", r) for r in institutions]
        return csv_response(
            f"resource-{res.id}.csv",
            ["group", "name", "budget_hours", "awarded_hours", "used_hours", "left_hours"],
            lines,
            lambda line: [
                line[0],
                line[1].name,
                "" if line[1].budget is None else figure(line[1].budget),
                figure(line[1].awarded),
                figure(line[1].used),
                figure(line[1].left),
            ],
        )
    call_chart = charts.stacked_bars_svg(
        title=f"{res.name}: budget per call",
        desc="For each call, its budget on this resource: the GPU-hours used, awarded but not "
        "used, and not awarded. The table below has the same figures.",
        series=CALL_SERIES,
        rows=[(r.name, (r.used, max(r.awarded - r.used, 0), r.left)) for r in calls],
        id_prefix="calls-chart",
    )
    top = institutions[:CHART_ROWS]
    institution_chart = charts.stacked_bars_svg(
        title=f"{res.name}: GPU-hours per institution",
        desc="For each institution (the "
        + (f"{len(top)} with the most hours" if len(institutions) > len(top) else "all")
        + "), the GPU-hours of its allocations used, and awarded but not used. "
        "The table below has the same figures.",
        series=INSTITUTION_SERIES,
        rows=[(r.name, (r.used, r.left)) for r in top],
        id_prefix="institutions-chart",
    )
    return render_template(
        "allocations/resource.html",
        resource=res,
        total=total,
        calls=calls,
        institutions=institutions,
        chart_rows=CHART_ROWS,
        # Built from escaped text only (portal/allocations/charts.py).
        call_chart=Markup(call_chart),  # noqa: S704
        institution_chart=Markup(institution_chart),  # noqa: S704
    )


# --- the project page's section, navigation and dashboard --------------------------------------


def project_section(proposal: Proposal, user: Any) -> dict[str, Any] | None:
    """The project page's allocations: those of ``proposal`` that ``user`` may see, each with
    why it cannot be used when it is pending or suspended; None when there are none to show."""
    if not is_logged_in(user):
        return None
    allocations = db.session.scalars(
        select(Allocation)
        .where(Allocation.proposal_id == proposal.id)
        .options(joinedload(Allocation.resource))
        .order_by(Allocation.id)
    ).all()
    shown = [a for a in allocations if can_view_allocation(user, a)]
    if not shown:
        return None
    # Every allocation of a project waits on the same gate: ask it once.
    blocker: list[hooks.Blocker | None] = []
    rows = []
    for a in shown:
        why = None
        if a.state in BLOCKED:
            if not blocker:
                blocker.append(shown_blocker(a, user))
            why = blocker[0]
        rows.append((a, why))
    return {"rows": rows}


def _my_allocations(user: Any) -> dict[str, Any] | None:
    """The dashboard card: the active allocations of the projects ``user`` leads, soonest to
    end first, with the share used."""
    u = as_user(user)
    if u is None or not on_a_team(u):
        return None
    rows = db.session.scalars(
        select(Allocation)
        .join(TeamMember, TeamMember.proposal_id == Allocation.proposal_id)
        .where(
            TeamMember.user_id == u.id,
            TeamMember.role == TeamRole.PI,
            Allocation.state == AllocationState.ACTIVE,
        )
        .options(joinedload(Allocation.proposal), joinedload(Allocation.resource))
        .order_by(Allocation.ends_on, Allocation.id)
        .limit(10)
    ).all()
    return {"allocations": rows} if rows else None


def register_ui(app: Flask) -> None:
    """Navigation, dashboard cards, the project page's allocations section."""
    from portal.core import navigation
    from portal.core.navigation import NavItem, Panel

    # One drop-down, as agreements do. The navigation bar has no room for one more entry beside
    # the resource catalog's (program staff's bar overflowed, and axe-core failed its contrast), so
    # the catalog joins the drop-down: registering its endpoint again moves it (proposals, which
    # owns the page, registers first; portal.DOMAINS).
    for item in (
        NavItem("allocations.index", "Allocations", is_logged_in, order=52, group="Allocations"),
        NavItem(
            "allocations.resources",
            "Resource usage",
            can_view_resources,
            order=53,
            group="Allocations",
        ),
        NavItem(
            "proposals.resources",
            "Resource catalog",
            can_manage_calls,
            order=57,
            group="Allocations",
        ),
    ):
        navigation.register(item)
    navigation.register_panel(
        Panel("my_allocations", "allocations/panels/mine.html", _my_allocations, 25)
    )
    hooks.register_section(
        Proposal, hooks.Section("allocations", "allocations/_project_section.html", project_section)
    )
