"""Each kind of conflict of interest keeps a reviewer from a proposal: never suggested as
assignable, refused on assignment (403 with the rule's message), a 404 on the proposal, its
attachments, the assignment and the assignment's attachments — until a program officer waives
it with a written reason, which is audited and shown in the proposal's history to staff. Being
on the team is never waived."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.models import utcnow
from portal.institutions.models import AffiliationState
from portal.proposals import attachments
from portal.proposals.models import Proposal, ProposalState, TeamMember, TeamRole
from portal.reviews import services
from portal.reviews.models import Assignment, AssignmentState, ConflictWaiver, DeclaredConflict
from portal.reviews.permissions import can_be_assigned
from tests.factories import (
    make_affiliation,
    make_assignment,
    make_proposal,
    make_reviewer,
    make_user,
)
from tests.support.app import login

REFUSAL = "This reviewer has a conflict of interest with the proposal."


@pytest.fixture
def folder(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Attachments are kept in a folder of the test's own."""
    path = tmp_path / "attachments"
    path.mkdir()
    monkeypatch.setitem(app.config, "ATTACHMENT_FOLDER", str(path))
    return path


def _proposal(db: Session, folder: Path) -> Proposal:
    """A submitted proposal whose description PDF is on disk (so a download can succeed)."""
    proposal = make_proposal(db, state=ProposalState.SUBMITTED)
    for a in proposal.attachments:
        attachments.attachment_path(a, folder).write_bytes(b"%PDF-1.4 test")
    return proposal


def _ended_affiliation(db: Session, reviewer: User, proposal: Proposal, years_ago: float) -> None:
    aff = make_affiliation(
        db, user=reviewer, institution=proposal.institution, state=AffiliationState.ENDED
    )
    aff.updated_at = utcnow() - dt.timedelta(days=int(365 * years_ago))
    db.flush()


def _reviewer(db: Session, proposal: Proposal, kind: str) -> User:
    """A reviewer with the conflict ``kind`` with ``proposal`` (or, for the ``no_*`` kinds, facts
    that look like one but are not)."""
    if kind == "active_affiliation":
        return make_reviewer(db, institution=proposal.institution)
    reviewer = make_reviewer(db)
    if kind == "ended_affiliation_within_years":
        _ended_affiliation(db, reviewer, proposal, years_ago=2)
    elif kind == "no_ended_affiliation_beyond_years":
        _ended_affiliation(db, reviewer, proposal, years_ago=4)
    elif kind == "on_the_team":
        proposal.team.append(TeamMember(user=reviewer, role=TeamRole.MEMBER))
    elif kind == "declared_person":
        assert proposal.pi is not None
        db.add(DeclaredConflict(reviewer_id=reviewer.id, person_id=proposal.pi.id, reason="PhD"))
    elif kind == "declared_institution":
        db.add(DeclaredConflict(reviewer_id=reviewer.id, institution_id=proposal.institution_id))
    elif kind in ("own_proposal_in_call", "no_own_proposal_when_allowed"):
        make_proposal(db, call=proposal.call, pi=reviewer, state=ProposalState.SUBMITTED)
    else:
        raise AssertionError(kind)
    db.flush()
    return reviewer


WAIVABLE = [
    "active_affiliation",
    "ended_affiliation_within_years",
    "declared_person",
    "declared_institution",
    "own_proposal_in_call",
]
NOT_CONFLICTS = ["no_ended_affiliation_beyond_years", "no_own_proposal_when_allowed"]


@pytest.fixture
def configure(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def set_for(kind: str) -> None:
        monkeypatch.setitem(app.config, "CONFLICT_YEARS", 3)
        monkeypatch.setitem(
            app.config, "OWN_PROPOSAL_IS_CONFLICT", kind != "no_own_proposal_when_allowed"
        )

    return set_for


def _suggested(app: Flask, db: Session, proposal: Proposal, reviewer: User) -> tuple[bool, int]:
    """(whether ``reviewer`` is suggested with a conflict, their position in the list)."""
    with app.app_context():
        found = services.suggestions(db, proposal)
    (mine,) = [s for s in found if s.reviewer.id == reviewer.id]
    return bool(mine.conflicts), found.index(mine)


def _pages(proposal: Proposal, assignment: Assignment) -> list[str]:
    att = proposal.attachments[0].id
    return [
        f"/reviews/assignments/{assignment.id}",
        f"/reviews/assignments/{assignment.id}/attachments/{att}",
    ]


def _status(client: FlaskClient, path: str) -> int:
    """The status of a GET (its body read and the response closed: a download holds a file)."""
    with client.get(path) as resp:
        resp.get_data()
        return resp.status_code


def _proposal_pages(proposal: Proposal) -> list[str]:
    att = proposal.attachments[0].id
    return [f"/proposals/{proposal.id}", f"/proposals/{proposal.id}/attachments/{att}"]


def _open_assignments(db: Session, proposal: Proposal, reviewer: User) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(
                Assignment.proposal_id == proposal.id,
                Assignment.reviewer_id == reviewer.id,
                Assignment.state.in_([AssignmentState.INVITED, AssignmentState.ACCEPTED]),
            )
        )
        or 0
    )


@pytest.mark.parametrize("kind", [*WAIVABLE, "on_the_team"])
def test_a_conflicted_reviewer_is_never_assigned_and_sees_nothing(
    app: Flask,
    client: FlaskClient,
    db: Session,
    folder: Path,
    configure: Callable[[str], None],
    kind: str,
) -> None:
    configure(kind)
    proposal = _proposal(db, folder)
    free = make_reviewer(db)  # someone without a conflict, suggested first
    reviewer = _reviewer(db, proposal, kind)
    officer = make_user(db, Role.PROGRAM_OFFICER)

    conflicted, position = _suggested(app, db, proposal, reviewer)
    assert conflicted
    assert position > _suggested(app, db, proposal, free)[1], "conflicted ones come last"
    with app.app_context():
        assert not can_be_assigned(reviewer, proposal)

    login(client, officer)
    page = client.get(f"/reviews/proposals/{proposal.id}/assign").get_data(as_text=True)
    row = page.split(f'data-reviewer="{reviewer.id}"')[1].split("</tr>")[0]
    assert "Conflict of interest" in row and ">Assign<" not in row
    assert ("Waive the conflict" in row) == (kind != "on_the_team")

    resp = client.post(
        f"/reviews/proposals/{proposal.id}/assign", data={"reviewer_id": reviewer.id}
    )
    assert resp.status_code == 403 and REFUSAL in resp.get_data(as_text=True)
    assert _open_assignments(db, proposal, reviewer) == 0

    # An assignment made before the conflict came to light: the reviewer no longer sees it.
    assignment = make_assignment(db, proposal=proposal, reviewer=reviewer)
    login(client, reviewer)
    # (A team member sees the proposal as a team member, never as its reviewer.)
    proposal_pages = _proposal_pages(proposal) if kind != "on_the_team" else []
    for path in proposal_pages + _pages(proposal, assignment):
        assert _status(client, path) == 404, path
    resp = client.post(f"/reviews/assignments/{assignment.id}/answer", data={"action": "accept"})
    assert resp.status_code == 404
    db.refresh(assignment)
    assert assignment.state == AssignmentState.INVITED


@pytest.mark.parametrize("kind", WAIVABLE)
def test_a_waiver_with_a_reason_lifts_the_conflict_and_is_in_the_history(
    app: Flask,
    client: FlaskClient,
    db: Session,
    folder: Path,
    configure: Callable[[str], None],
    kind: str,
) -> None:
    configure(kind)
    proposal = _proposal(db, folder)
    reviewer = _reviewer(db, proposal, kind)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    assignment = make_assignment(db, proposal=proposal, reviewer=reviewer)
    login(client, officer)
    url = f"/reviews/proposals/{proposal.id}/waivers"

    resp = client.post(url, data={"reviewer_id": reviewer.id, "reason": "short"})
    assert resp.status_code == 422
    assert db.scalar(select(func.count()).select_from(ConflictWaiver)) == 0

    reason = "Different department; no joint work in ten years."
    resp = client.post(url, data={"reviewer_id": reviewer.id, "reason": reason})
    assert resp.status_code == 302
    (event,) = db.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "proposal.waive_conflict",
            AuditEvent.object_type == "proposals",
            AuditEvent.object_id == proposal.id,
        )
    ).all()
    assert event.actor_id == officer.id and event.details["reason"] == reason
    assert event.details["reviewer_id"] == reviewer.id
    history = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    assert "proposal.waive_conflict" in history and reason in history

    # A second waiver of the same pair is refused with a message, not a database error.
    resp = client.post(url, data={"reviewer_id": reviewer.id, "reason": reason + " again"})
    assert resp.status_code == 303

    with app.app_context():
        assert can_be_assigned(reviewer, proposal)
    login(client, reviewer)
    for path in _pages(proposal, assignment):
        assert _status(client, path) == 200, path
    with client.get(_pages(proposal, assignment)[1]) as download:
        assert download.get_data().startswith(b"%PDF")
    assert download.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert download.headers["Cache-Control"] == "private, no-store"
    assert download.headers["Content-Disposition"].startswith("attachment")

    # Staff withdraw the old assignment; the reviewer can be assigned afresh.
    login(client, officer)
    resp = client.post(f"/reviews/assignments/{assignment.id}/answer", data={"action": "remove"})
    assert resp.status_code == 302
    resp = client.post(
        f"/reviews/proposals/{proposal.id}/assign", data={"reviewer_id": reviewer.id}
    )
    assert resp.status_code == 302
    assert _open_assignments(db, proposal, reviewer) == 1


def test_a_team_members_conflict_is_never_waived(
    app: Flask, client: FlaskClient, db: Session, folder: Path
) -> None:
    proposal = _proposal(db, folder)
    reviewer = _reviewer(db, proposal, "on_the_team")
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.post(
        f"/reviews/proposals/{proposal.id}/waivers",
        data={"reviewer_id": reviewer.id, "reason": "They promise to be fair about it."},
        follow_redirects=True,
    )
    assert "never reviews their own proposal" in resp.get_data(as_text=True)
    assert db.scalar(select(func.count()).select_from(ConflictWaiver)) == 0
    assert not db.scalars(
        select(AuditEvent).where(AuditEvent.action == "proposal.waive_conflict")
    ).all()
    with app.app_context():
        assert not can_be_assigned(reviewer, proposal)


@pytest.mark.parametrize("kind", NOT_CONFLICTS)
def test_facts_that_are_not_a_conflict_leave_the_reviewer_assignable(
    app: Flask,
    client: FlaskClient,
    db: Session,
    folder: Path,
    configure: Callable[[str], None],
    kind: str,
) -> None:
    configure(kind)
    proposal = _proposal(db, folder)
    reviewer = _reviewer(db, proposal, kind)
    assert _suggested(app, db, proposal, reviewer) == (False, 0)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.post(
        f"/reviews/proposals/{proposal.id}/assign", data={"reviewer_id": reviewer.id}
    )
    assert resp.status_code == 302
    (assignment,) = db.scalars(select(Assignment).where(Assignment.reviewer_id == reviewer.id))
    db.refresh(proposal)
    assert proposal.state == ProposalState.IN_REVIEW
    login(client, reviewer)
    for path in _pages(proposal, assignment):
        assert _status(client, path) == 200, path


def test_a_conflict_declared_on_the_assignment_withdraws_it(
    client: FlaskClient, db: Session, folder: Path
) -> None:
    proposal = _proposal(db, folder)
    assignment = make_assignment(db, proposal=proposal)
    login(client, assignment.reviewer)
    resp = client.post(
        f"/reviews/assignments/{assignment.id}/answer",
        data={"action": "declare_conflict", "reason": "I co-authored with the PI last year."},
    )
    assert resp.status_code == 302
    db.refresh(assignment)
    assert assignment.state == AssignmentState.CONFLICT and assignment.decided_at is not None
    page = client.get(f"/reviews/assignments/{assignment.id}").get_data(as_text=True)
    assert "no longer shown" in page and proposal.abstract[:40] not in page
    att = proposal.attachments[0].id
    assert _status(client, f"/reviews/assignments/{assignment.id}/attachments/{att}") == 404
