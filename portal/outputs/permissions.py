"""Who may see and record a project's released outputs, and submit and decide its final report.

Each ``can_*`` rule says who in its docstring; ``visible_reports`` is the same rule as a list
filter, ``report_recipients`` and ``report_deciders`` the same rules as the recipients of the
domain's mail. A project's outputs are seen by whoever may see its proposal; they are recorded by
its principal investigator and co-investigators (the team's editing roles) and by program staff,
while the project is active. Program staff decide on final reports, never on one of a project
they are on the team of.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from portal.auth.models import RoleGrant, User
from portal.auth.permissions import as_user, is_staff
from portal.core.permissions import rule
from portal.core.roles import STAFF_ROLES, is_logged_in
from portal.outputs.models import FinalReport, ReleasedOutput
from portal.proposals.models import EDITORS, Proposal, ProposalState, TeamMember
from portal.proposals.permissions import can_view_proposal, visible_proposals


def _editor_of(user: Any, proposal: Proposal) -> bool:
    u = as_user(user)
    return u is not None and any(m.user_id == u.id and m.role in EDITORS for m in proposal.team)


def _on_team(user: Any, proposal: Proposal) -> bool:
    u = as_user(user)
    return u is not None and any(m.user_id == u.id for m in proposal.team)


# --- outputs -----------------------------------------------------------------------------------


@rule("You cannot see this project's outputs.")
def can_view_outputs(user: Any, proposal: Proposal) -> bool:
    """Whoever may see the proposal (its team, program staff, …)."""
    return can_view_proposal(user, proposal)


@rule(
    "Only the principal investigator, co-investigators and program staff record the outputs of "
    "an active project."
)
def can_record_output(user: Any, proposal: Proposal) -> bool:
    """The PI and co-PIs, and program staff, while the project is active."""
    return proposal.state == ProposalState.ACTIVE and (is_staff(user) or _editor_of(user, proposal))


@rule(
    "Only the principal investigator, co-investigators and program staff change the outputs of "
    "an active project."
)
def can_edit_output(user: Any, output: ReleasedOutput) -> bool:
    """Whoever may record the project's outputs."""
    return can_record_output(user, output.proposal)


# --- final reports -----------------------------------------------------------------------------


@rule("You cannot see this final report.")
def can_view_report(user: Any, report: FinalReport) -> bool:
    """Whoever may see the project's proposal."""
    return can_view_proposal(user, report.proposal)


@rule("Only the principal investigator, co-investigators and program staff submit the report.")
def can_submit_report(user: Any, report: FinalReport) -> bool:
    """The project's PI and co-PIs, and program staff (on the team's behalf)."""
    return is_staff(user) or _editor_of(user, report.proposal)


@rule("Only program staff who are not on the project's team accept or return its final report.")
def can_decide_report(user: Any, report: FinalReport) -> bool:
    """Program staff, except the project's own team members."""
    return is_staff(user) and not _on_team(user, report.proposal)


@rule("Only logged-in people see final reports.")
def can_list_reports(user: Any) -> bool:
    """Anyone logged in (the list shows the reports of the projects they may see)."""
    return is_logged_in(user)


def is_report_decider(user: Any) -> bool:
    """Program staff: they decide on final reports (the navigation's "Final reports")."""
    return is_staff(user)


def visible_reports(user: Any) -> Select[FinalReport]:
    """``can_view_report`` as a list filter."""
    q = select(FinalReport)
    if is_staff(user):
        return q
    return q.where(
        FinalReport.proposal_id.in_(visible_proposals(user).with_only_columns(Proposal.id))
    )


def report_recipients(report: FinalReport) -> Select[User]:
    """The team's PI and co-PIs (who ``can_submit_report`` lets submit it): whom its reminders and
    its decision tell."""
    return (
        select(User)
        .join(TeamMember, TeamMember.user_id == User.id)
        .where(
            TeamMember.proposal_id == report.proposal_id,
            TeamMember.role.in_(EDITORS),
            User.is_disabled.is_(False),
        )
        .order_by(User.id)
    )


def report_deciders(report: FinalReport) -> Select[User]:
    """Program staff not on the project's team (``can_decide_report``): whom a submitted report
    asks to decide."""
    team = select(TeamMember.user_id).where(TeamMember.proposal_id == report.proposal_id)
    return (
        select(User)
        .where(
            User.is_disabled.is_(False),
            User.id.in_(select(RoleGrant.user_id).where(RoleGrant.role.in_(STAFF_ROLES))),
            User.id.not_in(team),
        )
        .order_by(User.id)
    )
