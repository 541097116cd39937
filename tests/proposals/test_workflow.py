"""Every (state, action) pair of calls, proposals and team invitations, allowed and refused,
through the shared runner; and the declarations of the three workflows."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.models import utcnow
from portal.core.workflow import Workflow
from portal.proposals import services
from portal.proposals.models import CallState as C
from portal.proposals.models import Invitation, TeamRole
from portal.proposals.models import InvitationState as I
from portal.proposals.models import ProposalState as P
from portal.proposals.workflow import CALL_WORKFLOW, INVITATION_WORKFLOW, PROPOSAL_WORKFLOW
from tests.factories import make_call, make_proposal, make_user
from tests.support.workflows import assert_declared, assert_step, every_pair

CALLS = {
    (C.DRAFT, "open"): C.OPEN,
    (C.CLOSED, "open"): C.OPEN,
    (C.OPEN, "close"): C.CLOSED,
    (C.CLOSED, "archive"): C.ARCHIVED,
}

PROPOSALS = {
    (P.DRAFT, "submit"): P.SUBMITTED,
    (P.RETURNED, "submit"): P.SUBMITTED,
    (P.DRAFT, "submit_for_endorsement"): P.AWAITING_ENDORSEMENT,
    (P.RETURNED, "submit_for_endorsement"): P.AWAITING_ENDORSEMENT,
    (P.AWAITING_ENDORSEMENT, "endorse"): P.SUBMITTED,
    (P.AWAITING_ENDORSEMENT, "return"): P.RETURNED,
    (P.DRAFT, "withdraw"): P.WITHDRAWN,
    (P.AWAITING_ENDORSEMENT, "withdraw"): P.WITHDRAWN,
    (P.RETURNED, "withdraw"): P.WITHDRAWN,
    (P.SUBMITTED, "withdraw"): P.WITHDRAWN,
    (P.IN_REVIEW, "withdraw"): P.WITHDRAWN,
    (P.REVISE, "withdraw"): P.WITHDRAWN,
    (P.REVISE, "submit"): P.SUBMITTED,
    (P.REVISE, "submit_for_endorsement"): P.AWAITING_ENDORSEMENT,
    (P.SUBMITTED, "start_review"): P.IN_REVIEW,
    (P.IN_REVIEW, "approve"): P.ACTIVE,
    (P.IN_REVIEW, "revise"): P.REVISE,
    (P.IN_REVIEW, "decline"): P.DECLINED,
}

#: Actions program staff take (the rest: the PI, or for endorsement the institution's official).
STAFF_ACTIONS = frozenset({"start_review", "approve", "revise", "decline"})

INVITATIONS = {
    (I.PENDING, "accept"): I.ACCEPTED,
    (I.PENDING, "revoke"): I.REVOKED,
}


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Steps write e-mails to the outbox, which reads the app's configuration."""
    with app.app_context():
        yield


@pytest.mark.parametrize(
    "workflow",
    [CALL_WORKFLOW, PROPOSAL_WORKFLOW, INVITATION_WORKFLOW],
    ids=lambda w: w.name,
)
def test_workflow_names_the_same_actions_everywhere(workflow: Workflow[Any, Any]) -> None:
    assert_declared(workflow)


@pytest.mark.parametrize(("state", "action"), every_pair(C, CALL_WORKFLOW))
def test_call_transition_table(db: Session, state: C, action: str) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    call = make_call(db, state=state)
    assert_step(
        db,
        CALL_WORKFLOW,
        call,
        action,
        CALLS,
        lambda: services.run_call(db, call, action, actor=officer),
    )


@pytest.mark.parametrize(("state", "action"), every_pair(P, PROPOSAL_WORKFLOW))
def test_proposal_transition_table(db: Session, state: P, action: str) -> None:
    proposal = make_proposal(db, state=state, complete=True)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    actor = (
        official
        if action in ("endorse", "return")
        else officer
        if action in STAFF_ACTIONS
        else proposal.pi
    )
    assert_step(
        db,
        PROPOSAL_WORKFLOW,
        proposal,
        action,
        PROPOSALS,
        lambda: PROPOSAL_WORKFLOW.run(db, proposal, action, actor=actor, reason="because"),
    )
    if (state, action) in PROPOSALS and action.startswith("submit"):
        assert proposal.submitted_at is not None
        assert [v.number for v in proposal.versions] == list(range(1, proposal.version + 1))


def _invitation(db: Session, state: I) -> tuple[Invitation, Any, Any]:
    proposal = make_proposal(db)
    invitee = make_user(db, Role.RESEARCHER)
    decided = state != I.PENDING
    invitation = Invitation(
        proposal=proposal,
        email=invitee.email or "",
        role=TeamRole.MEMBER,
        token_hash=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        expires_at=utcnow() + dt.timedelta(days=7),
        state=state,
        invited_by_id=proposal.pi.id if proposal.pi else None,
        accepted_by_id=invitee.id if state == I.ACCEPTED else None,
        decided_at=utcnow() if decided else None,
    )
    db.add(invitation)
    db.flush()
    return invitation, invitee, proposal.pi


@pytest.mark.parametrize(("state", "action"), every_pair(I, INVITATION_WORKFLOW))
def test_invitation_transition_table(db: Session, state: I, action: str) -> None:
    invitation, invitee, pi = _invitation(db, state)
    actor = invitee if action == "accept" else pi
    assert_step(
        db,
        INVITATION_WORKFLOW,
        invitation,
        action,
        INVITATIONS,
        lambda: INVITATION_WORKFLOW.run(db, invitation, action, actor=actor),
    )
