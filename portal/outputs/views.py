"""The outputs' pages: a project's released outputs checked off against the planned ones, with
its openness score; recording, editing and removing a release; the final report (submitting it,
and program staff accepting or returning it); the list of final reports; the section of the
proposal page, the navigation entry and the dashboard card of a report that is due."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Flask, abort, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import and_, select
from sqlalchemy.orm import contains_eager, joinedload, selectinload

from portal.auth.permissions import as_user
from portal.core import hooks
from portal.core.forms import ConfirmForm
from portal.core.listing import ListSpec, list_page, matches
from portal.core.models import utcnow
from portal.core.permissions import check
from portal.core.web import form_page, load, login_required, post_action
from portal.extensions import db
from portal.institutions.models import Institution
from portal.outputs import permissions, services
from portal.outputs.forms import DecisionForm, OutputForm, ReportForm
from portal.outputs.models import FinalReport, ReleasedOutput, ReportState
from portal.outputs.permissions import (
    can_decide_report,
    can_edit_output,
    can_list_reports,
    can_record_output,
    can_submit_report,
    can_view_outputs,
    can_view_report,
    visible_reports,
)
from portal.outputs.score import Score, openness_for_projects
from portal.outputs.workflow import REPORT_WORKFLOW
from portal.proposals.models import EDITORS, PlannedOutput, Proposal, ProposalState, TeamMember
from portal.proposals.permissions import on_a_team

bp = Blueprint("outputs", __name__)

#: A project's releases: search, sort.
OUTPUTS = ListSpec(
    search=(ReleasedOutput.title, ReleasedOutput.url, ReleasedOutput.license, ReleasedOutput.doi),
    sorts={
        "newest": (ReleasedOutput.released_on.desc(), ReleasedOutput.id.desc()),
        "oldest": (ReleasedOutput.released_on, ReleasedOutput.id),
        "title": (ReleasedOutput.title, ReleasedOutput.id),
    },
    placeholder="Title, address, licence or DOI",
)

#: The final reports: search, state, sort (the earliest due first).
REPORTS = ListSpec(
    search=lambda text: matches(text, Proposal.title, Institution.name),
    state_column=FinalReport.state,
    states=ReportState,
    sorts={
        "due": (FinalReport.due_on, FinalReport.id),
        "submitted": (FinalReport.submitted_at.desc(), FinalReport.id.desc()),
        "project": (Proposal.title, FinalReport.id),
    },
    placeholder="Project or institution",
)

#: How many days before its due date a report appears on its team's dashboard.
PANEL_DAYS = 30


def _proposal(proposal_id: int) -> Proposal:
    """The project ``proposal_id``, which the current user may see (404, or an audited 403)."""
    return load(Proposal, proposal_id, can_view_outputs, selectinload(Proposal.team))


def _output(output_id: int) -> ReleasedOutput:
    """The release ``output_id``, whose project the current user may see."""
    output = load(
        ReleasedOutput,
        output_id,
        None,
        joinedload(ReleasedOutput.proposal).selectinload(Proposal.team),
    )
    check(can_view_outputs, current_user, output.proposal)
    return output


def checkoff(proposal_id: int) -> list[tuple[PlannedOutput, ReleasedOutput | None]]:
    """The project's planned outputs, each with the release that checks it off (or None): one
    query."""
    rows = db.session.execute(
        select(PlannedOutput, ReleasedOutput)
        .outerjoin(
            ReleasedOutput,
            and_(
                ReleasedOutput.planned_output_id == PlannedOutput.id,
                ReleasedOutput.proposal_id == PlannedOutput.proposal_id,
            ),
        )
        .where(PlannedOutput.proposal_id == proposal_id)
        .order_by(PlannedOutput.id)
    ).all()
    return [(planned, release) for planned, release in rows]


def _score(proposal_id: int) -> Score:
    return openness_for_projects(db.session, [proposal_id])[proposal_id]


# --- a project's outputs -----------------------------------------------------------------------


@bp.get("/proposals/<int:proposal_id>/outputs")
@login_required
def index(proposal_id: int) -> ResponseReturnValue:
    """A project's releases (search, sort, paging), its planned outputs checked off against them,
    its openness score and its final report."""
    proposal = _proposal(proposal_id)
    listing = list_page(
        select(ReleasedOutput)
        .where(ReleasedOutput.proposal_id == proposal.id)
        .options(joinedload(ReleasedOutput.planned_output)),
        OUTPUTS,
    )
    return render_template(
        "outputs/index.html",
        proposal=proposal,
        page=listing.page,
        form=listing.form,
        sort=listing.sort,
        sorts=list(OUTPUTS.sorts),
        checkoff=checkoff(proposal.id),
        score=_score(proposal.id),
        report=services.report_of(db.session, proposal.id),
        may_record=can_record_output(current_user, proposal),
        delete_form=ConfirmForm(),
    )


def _output_form(proposal: Proposal, output: ReleasedOutput | None = None) -> OutputForm:
    planned = db.session.scalars(
        select(PlannedOutput)
        .where(PlannedOutput.proposal_id == proposal.id)
        .order_by(PlannedOutput.id)
    ).all()
    taken = services.taken_planned_ids(
        db.session, proposal.id, except_output=output.id if output else None
    )
    return OutputForm(
        planned=planned,
        taken=taken,
        proposal_id=proposal.id,
        today=utcnow().date(),
        output=output,
    )


@bp.route("/proposals/<int:proposal_id>/outputs/new", methods=["GET", "POST"])
@login_required
def new(proposal_id: int) -> ResponseReturnValue:
    """The PI, co-investigators or program staff record a release of an active project."""
    proposal = _proposal(proposal_id)
    check(can_record_output, current_user, proposal)
    form = _output_form(proposal)
    return form_page(
        form,
        lambda: services.record_output(db.session, proposal, actor=current_user, **form.values()),
        template="outputs/form.html",
        done=lambda o: (f"“{o.title}” was recorded.", url_for(".index", proposal_id=proposal.id)),
        proposal=proposal,
        output=None,
    )


@bp.route("/outputs/<int:output_id>/edit", methods=["GET", "POST"])
@login_required
def edit(output_id: int) -> ResponseReturnValue:
    """Whoever may record the project's releases changes one."""
    output = _output(output_id)
    check(can_edit_output, current_user, output)
    form = _output_form(output.proposal, output)
    return form_page(
        form,
        lambda: services.update_output(db.session, output, actor=current_user, **form.values()),
        template="outputs/form.html",
        done=lambda o: (f"“{o.title}” was saved.", url_for(".index", proposal_id=o.proposal_id)),
        proposal=output.proposal,
        output=output,
    )


@bp.post("/outputs/<int:output_id>/delete")
@login_required
def delete(output_id: int) -> ResponseReturnValue:
    """Whoever may record the project's releases removes one (its planned output is open again)."""
    output = _output(output_id)
    check(can_edit_output, current_user, output)
    title, proposal_id = output.title, output.proposal_id
    return post_action(
        ConfirmForm(),
        lambda: services.delete_output(db.session, output, actor=current_user),
        back=url_for(".index", proposal_id=proposal_id),
        done=f"“{title}” was removed.",
    )


# --- the final report ------------------------------------------------------------------------------


def _report_context(proposal: Proposal, report: FinalReport | None) -> dict[str, Any]:
    return {
        "proposal": proposal,
        "report": report,
        "checkoff": checkoff(proposal.id),
        "score": _score(proposal.id),
        "may_submit": report is not None and REPORT_WORKFLOW.may(current_user, report, "submit"),
        "decisions": REPORT_WORKFLOW.available(current_user, report)
        if report is not None and can_decide_report(current_user, report)
        else [],
        "today": utcnow().date(),
    }


@bp.route("/proposals/<int:proposal_id>/report", methods=["GET", "POST"])
@login_required
def report(proposal_id: int) -> ResponseReturnValue:
    """The project's final report: when it is due, its state, what it says and the releases it
    covers; the PI, co-investigators and program staff submit it while it is due or returned;
    program staff not on the team accept or return it."""
    proposal = _proposal(proposal_id)
    found = services.report_of(db.session, proposal.id)
    if found is None:
        if request.method == "POST":
            abort(404, description="This project owes no final report (yet).")
        return render_template("outputs/report.html", form=None, **_report_context(proposal, None))
    final: FinalReport = found
    form = ReportForm(report=final)
    if form.is_submitted():
        check(can_submit_report, current_user, final)
    return form_page(
        form,
        lambda: services.submit_report(
            db.session,
            final,
            actor=current_user,
            summary=form.summary.data or "",
            outcomes=form.outcomes.data or "",
        ),
        template="outputs/report.html",
        done=lambda r: (
            "The final report was sent to program staff.",
            url_for(".report", proposal_id=r.proposal_id),
        ),
        **_report_context(proposal, final),
    )


@bp.post("/reports/<int:report_id>/decide")
@login_required
def decide(report_id: int) -> ResponseReturnValue:
    """Program staff not on the team accept a submitted report, or return it with the reasons."""
    final = load(
        FinalReport,
        report_id,
        None,
        joinedload(FinalReport.proposal).selectinload(Proposal.team),
    )
    check(can_view_report, current_user, final)
    check(can_decide_report, current_user, final)
    form = DecisionForm()
    return post_action(
        form,
        lambda: services.decide_report(
            db.session,
            final,
            actor=current_user,
            action=form.action.data or "",
            reason=form.reason.data,
        ),
        back=url_for(".report", proposal_id=final.proposal_id),
        done=lambda r: (
            "The report was accepted."
            if r.state == ReportState.ACCEPTED
            else "The report was returned to the team with your reasons."
        ),
    )


@bp.get("/reports/")
@login_required
def reports() -> ResponseReturnValue:
    """The final reports of the projects the current user may see (all of them, for program
    staff), with search, state filter and sort, and each project's openness score."""
    check(can_list_reports, current_user)
    stmt = (
        visible_reports(current_user)
        .join(Proposal, Proposal.id == FinalReport.proposal_id)
        .join(Institution, Institution.id == Proposal.institution_id)
        .options(contains_eager(FinalReport.proposal).contains_eager(Proposal.institution))
    )
    listing = list_page(stmt, REPORTS)
    items: Sequence[FinalReport] = listing.page.items
    return render_template(
        "outputs/reports.html",
        page=listing.page,
        form=listing.form,
        sort=listing.sort,
        sorts=list(REPORTS.sorts),
        scores=openness_for_projects(db.session, [r.proposal_id for r in items]),
        today=utcnow().date(),
    )


# --- the proposal page's section, the dashboard, the navigation ----------------------------------


def proposal_section(proposal: Proposal, user: Any) -> dict[str, Any] | None:
    """An active project's page: its planned outputs checked off, its openness score, and its
    final report with links; for whoever may see the project's outputs."""
    if proposal.state != ProposalState.ACTIVE or not can_view_outputs(user, proposal):
        return None
    return {
        "proposal": proposal,
        "checkoff": checkoff(proposal.id),
        "score": _score(proposal.id),
        "report": services.report_of(db.session, proposal.id),
        "may_record": can_record_output(user, proposal),
    }


def _report_panel(user: Any) -> dict[str, Any] | None:
    """A PI's or co-investigator's dashboard card: their projects' final reports still owed and
    due within 30 days (or overdue, or returned)."""
    u = as_user(user)
    if u is None or not on_a_team(u):
        return None
    today = utcnow().date()
    reports = db.session.scalars(
        select(FinalReport)
        .join(TeamMember, TeamMember.proposal_id == FinalReport.proposal_id)
        .where(
            TeamMember.user_id == u.id,
            TeamMember.role.in_(EDITORS),
            FinalReport.state.in_(services.OWED),
            (FinalReport.state == ReportState.RETURNED)
            | (FinalReport.due_on <= today + dt.timedelta(days=PANEL_DAYS)),
        )
        .options(joinedload(FinalReport.proposal))
        .order_by(FinalReport.due_on, FinalReport.id)
        .limit(10)
    ).all()
    if not reports:
        return None
    return {"reports": reports, "today": today}


def register_ui(app: Flask) -> None:
    """Navigation, the dashboard card, the proposal page's outputs section."""
    from portal.core import navigation
    from portal.core.navigation import NavItem, Panel

    # In the allocations drop-down: the navigation bar has no room for one more entry.
    navigation.register(
        NavItem(
            "outputs.reports",
            "Final reports",
            permissions.is_report_decider,
            order=56,
            group="Allocations",
        )
    )
    navigation.register_panel(
        Panel("final_reports_due", "outputs/_report_panel.html", _report_panel, 16)
    )
    hooks.register_section(
        Proposal, hooks.Section("outputs", "outputs/_proposal_section.html", proposal_section)
    )
