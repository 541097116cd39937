"""What a suspended (or withdrawn) institution stops (``portal/proposals/gates.py``): its
proposals are not handed to the program — neither submitted, nor sent for or given its official's
endorsement — while returning one to its team still works; its researchers start no new ones; its
projects' GPU-hours are not usable (the ``proposal.use_compute`` gate the allocations domain
reads): active allocations stop, none resumes or starts, and the operator API lists them as
suspended — jobs that ran anyway are still charged and reported as not active. Reinstatement
opens everything again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementKind, AgreementState
from portal.allocations.models import Allocation, AllocationState
from portal.allocations.workflow import ALLOCATION_WORKFLOW
from portal.auth.models import Role, User
from portal.core import hooks
from portal.core.audit import AuditEvent
from portal.core.errors import PermissionDeniedError
from portal.core.hooks import GateClosedError
from portal.institutions import services as institutions
from portal.institutions.models import Institution, InstitutionState
from portal.proposals import gates
from portal.proposals import services as proposals
from portal.proposals.models import Proposal, ProposalState, ProposalVersion
from tests.api.conftest import bearer, make_token
from tests.factories import (
    make_agreement,
    make_call,
    make_institution,
    make_project_allocation,
    make_proposal,
    make_user,
)
from tests.support.mail import outbox

SUSPENDED = "is suspended until program staff reinstate it"


@pytest.fixture
def ctx(app: Flask) -> Iterator[None]:
    """Steps write e-mails with links (an app context); popped before any request is made."""
    with app.app_context():
        yield


def _stop(db: Session, institution: Institution, how: str) -> User:
    """Program staff suspend or withdraw ``institution``; the officer who did."""
    officer = make_user(db, Role.PROGRAM_OFFICER)
    institutions.transition(db, institution, how, actor=officer, reason="Audit pending.")
    return officer


def _reinstate(db: Session, institution: Institution, officer: User) -> None:
    """Reinstating needs the partnership agreement in force (the agreements gate)."""
    make_agreement(db, institution=institution, state=AgreementState.ACTIVE)
    institutions.transition(db, institution, "reinstate", actor=officer)


def _events(db: Session, proposal: Proposal, action: str) -> list[AuditEvent]:
    return list(
        db.scalars(
            select(AuditEvent).where(
                AuditEvent.action == f"proposal.{action}", AuditEvent.object_id == proposal.id
            )
        )
    )


def _why(institution: Institution, how: str) -> str:
    tail = SUSPENDED if how == "suspend" else "has withdrawn from the program"
    return f"Proposals are taken from partner institutions only: {institution.name} {tail}."


# --- proposals -------------------------------------------------------------------------------


@pytest.mark.usefixtures("ctx")
@pytest.mark.parametrize("how", ["suspend", "withdraw"])
@pytest.mark.parametrize("endorsement", [False, True], ids=["direct", "for endorsement"])
def test_a_stopped_institutions_draft_is_not_submitted(
    db: Session, how: str, endorsement: bool
) -> None:
    draft = make_proposal(db, call=make_call(db, endorsement_required=endorsement), complete=True)
    pi = draft.pi
    assert pi is not None
    _stop(db, draft.institution, how)

    with pytest.raises(GateClosedError) as refused:
        proposals.submit_proposal(db, draft, actor=pi)

    assert str(refused.value) == _why(draft.institution, how)
    db.expire(draft, ["state"])
    assert draft.state == ProposalState.DRAFT and draft.submitted_at is None
    action = "submit_for_endorsement" if endorsement else "submit"
    assert _events(db, draft, action) == []
    assert (
        db.scalars(select(ProposalVersion).where(ProposalVersion.proposal_id == draft.id)).all()
        == []
    )
    assert outbox(db, "proposals/submitted") == outbox(db, "proposals/endorsement_needed") == []


@pytest.mark.usefixtures("ctx")
def test_an_official_cannot_endorse_while_suspended_but_may_return_it(db: Session) -> None:
    proposal = make_proposal(db, call=make_call(db, endorsement_required=True), complete=True)
    pi = proposal.pi
    assert pi is not None
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)
    proposals.submit_proposal(db, proposal, actor=pi)
    assert proposal.state == ProposalState.AWAITING_ENDORSEMENT
    _stop(db, proposal.institution, "suspend")

    with pytest.raises(GateClosedError, match=SUSPENDED):
        proposals.decide_endorsement(db, proposal, "endorse", actor=official)
    db.expire(proposal, ["state"])
    assert proposal.state == ProposalState.AWAITING_ENDORSEMENT
    assert _events(db, proposal, "endorse") == []

    # Handing it back to the team is not handing it to the program.
    proposals.decide_endorsement(
        db, proposal, "return", actor=official, reason="We are suspended; wait for reinstatement."
    )
    assert proposal.state == ProposalState.RETURNED
    with pytest.raises(GateClosedError, match=SUSPENDED):
        proposals.submit_proposal(db, proposal, actor=pi)


@pytest.mark.usefixtures("ctx")
def test_reinstatement_lets_the_proposal_in_again(db: Session) -> None:
    draft = make_proposal(db, call=make_call(db, endorsement_required=False), complete=True)
    pi = draft.pi
    assert pi is not None
    officer = _stop(db, draft.institution, "suspend")
    with pytest.raises(GateClosedError):
        proposals.submit_proposal(db, draft, actor=pi)

    _reinstate(db, draft.institution, officer)
    proposals.submit_proposal(db, draft, actor=pi)
    assert draft.state == ProposalState.SUBMITTED
    (event,) = _events(db, draft, "submit")
    assert event.actor_id == pi.id


@pytest.mark.usefixtures("ctx")
def test_the_proposal_page_says_why_it_cannot_be_handed_in(db: Session) -> None:
    draft = make_proposal(db, complete=True)
    submitted = make_proposal(
        db, state=ProposalState.IN_REVIEW, pi=draft.pi, institution=draft.institution
    )
    assert hooks.notices_for(draft) == []
    _stop(db, draft.institution, "suspend")

    (notice,) = hooks.notices_for(draft)
    assert notice.message == _why(draft.institution, "suspend")
    # A proposal already with the program is not the team's to hand in.
    assert hooks.notices_for(submitted) == []


@pytest.mark.usefixtures("ctx")
def test_a_stopped_institutions_researchers_start_no_new_proposal(db: Session) -> None:
    """Not a workflow step: ``start_proposal`` asks ``can_propose`` (members of partners only)."""
    inst = make_institution(db)
    researcher = make_user(db, Role.RESEARCHER, institution=inst)
    call = make_call(db)
    proposals.start_proposal(db, call, actor=researcher, title="Before the suspension")
    _stop(db, inst, "suspend")

    with pytest.raises(PermissionDeniedError, match="Only members of a partner institution"):
        proposals.start_proposal(db, call, actor=researcher, title="During the suspension")
    assert db.scalars(select(Proposal.title).where(Proposal.institution_id == inst.id)).all() == [
        "Before the suspension"
    ]


@pytest.mark.parametrize(
    "state",
    [s for s in InstitutionState if s != InstitutionState.PARTNER],
    ids=lambda s: s.value,
)
def test_only_a_partner_is_in_good_standing(db: Session, state: InstitutionState) -> None:
    inst = make_institution(db, state=state, name="Westbrook College")
    why = gates.standing(inst)
    assert why is not None and why.startswith("Westbrook College ")
    assert gates.standing(make_institution(db)) is None


# --- compute ---------------------------------------------------------------------------------


def _allocation(app: Flask, db: Session) -> Allocation:
    """An active allocation of a project whose contribution agreement is signed."""
    with app.app_context():
        allocation = make_project_allocation(db, title="Sparse attention at scale")
    assert allocation.state == AllocationState.ACTIVE
    return allocation


def test_a_suspended_institutions_projects_cannot_use_their_gpu_hours(
    app: Flask, db: Session
) -> None:
    allocation = _allocation(app, db)
    project, inst = allocation.proposal, allocation.institution
    assert hooks.blockers(db, hooks.USE_COMPUTE, project) == []
    with app.app_context():
        officer = _stop(db, inst, "suspend")

    (blocker,) = hooks.blockers(db, hooks.USE_COMPUTE, project)
    assert blocker.message == (
        "The GPU-hours awarded to “Sparse attention at scale” are usable only while its "
        f"institution is a partner: {inst.name} {SUSPENDED}."
    )
    # The allocations domain stopped the allocation with the institution, and honours the gate:
    # program staff cannot resume it while the institution is suspended.
    assert allocation.state == AllocationState.SUSPENDED
    with app.app_context(), pytest.raises(GateClosedError, match="not a partner in good standing"):
        ALLOCATION_WORKFLOW.run(db, allocation, "resume", actor=officer)
    db.expire(allocation, ["state"])
    assert allocation.state == AllocationState.SUSPENDED

    with app.app_context():
        _reinstate(db, inst, officer)
    assert hooks.blockers(db, hooks.USE_COMPUTE, project) == []
    assert allocation.state == AllocationState.ACTIVE


def test_a_pending_allocation_of_a_suspended_institution_does_not_start_when_signed(
    app: Flask, db: Session
) -> None:
    with app.app_context():
        allocation = make_project_allocation(db, usable=False)
        assert allocation.state == AllocationState.PENDING
        officer = _stop(db, allocation.institution, "suspend")
        # The contribution agreement is signed meanwhile: the institution still keeps it closed.
        make_agreement(
            db,
            kind=AgreementKind.CONTRIBUTION,
            proposal=allocation.proposal,
            state=AgreementState.ACTIVE,
        )
        with pytest.raises(GateClosedError, match="not a partner in good standing"):
            ALLOCATION_WORKFLOW.run(db, allocation, "activate", actor=officer)
        assert allocation.state == AllocationState.PENDING
        _reinstate(db, allocation.institution, officer)
    assert allocation.state == AllocationState.ACTIVE


def _job(allocation: Allocation, job_id: str) -> dict[str, Any]:
    return {
        "cluster": allocation.cluster,
        "job_id": job_id,
        "account": allocation.account,
        "gpus": 4,
        "elapsed_seconds": 3600,
        "state": "COMPLETED",
    }


def test_the_operator_api_tells_the_scheduler_to_stop_a_suspended_institutions_jobs(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    allocation = _allocation(app, db)
    _, secret = make_token(db, allocation.resource)
    active = client.get("/api/v1/allocations?state=active", headers=bearer(secret)).get_json()
    assert [a["id"] for a in active["items"]] == [allocation.id]

    with app.app_context():
        _stop(db, allocation.institution, "suspend")
    db.commit()  # (a savepoint: the test's transaction is rolled back at the end)

    active = client.get("/api/v1/allocations?state=active", headers=bearer(secret)).get_json()
    assert active["items"] == []
    (listed,) = client.get("/api/v1/allocations", headers=bearer(secret)).get_json()["items"]
    assert (listed["id"], listed["state"]) == (allocation.id, "suspended")

    # A job that ran anyway is charged (it used the GPUs) and reported as not active.
    resp = client.post("/api/v1/usage", json=[_job(allocation, "42")], headers=bearer(secret))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    answer = resp.get_json()
    assert answer["gpu_seconds"] == 4 * 3600 and answer["refused"] == []
    assert answer["not_active"] == [
        {"cluster": allocation.cluster, "account": allocation.account, "jobs": 1}
    ]
    db.expire_all()
    assert allocation.used_gpu_seconds == 4 * 3600 and allocation.state == AllocationState.SUSPENDED
