"""The proposal's page sends the same number of SQL statements whatever the proposal holds — a
team of one or of six, a request on one resource or on each the call offers, one submitted version
or six, no reviews or five, outputs, attachments and invitations — for its team, for program staff
and for its institution's signing official, in each state that shows something else (a draft's
checklist, the review's status, an active project's awards): eager loading, never a statement per
item."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.institutions.models import Institution
from portal.proposals.checklist import snapshot
from portal.proposals.models import (
    Attachment,
    AttachmentKind,
    Award,
    Invitation,
    OutputKind,
    PlannedOutput,
    Proposal,
    ProposalState,
    ProposalVersion,
    ResourceRequest,
    TeamMember,
    TeamRole,
)
from portal.reviews.models import Assignment, AssignmentState, Review, ReviewState
from tests.factories import make_call, make_proposal, make_reviewer, make_user
from tests.support.app import login

#: Counting is the same on both databases: SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

Count = Callable[[Callable[[], object]], int]

#: How many of each kind of item the grown proposal holds (it starts with one or none).
MANY = 6


def _grow(db: Session, proposal: Proposal) -> None:
    """Give ``proposal`` many of everything its page lists."""
    call = proposal.call
    for role in (TeamRole.CO_PI, *[TeamRole.MEMBER] * (MANY - 2)):
        member = make_user(db, Role.RESEARCHER, institution=proposal.institution)
        proposal.team.append(TeamMember(user=member, role=role))
    requested = {r.call_resource_id for r in proposal.requests}
    for cr in call.resources:
        if cr.id not in requested:
            proposal.requests.append(
                ResourceRequest(call_resource=cr, hours=500, justification="x" * 60)
            )
            if proposal.state == ProposalState.ACTIVE:
                proposal.awards.append(Award(call_resource_id=cr.id, hours=400))
    for n in range(MANY - 1):
        proposal.outputs.append(
            PlannedOutput(kind=OutputKind.CODE, license="MIT", description=f"Code {n}")
        )
        proposal.attachments.append(
            Attachment(
                kind=AttachmentKind.SUPPORT_LETTER,
                stored_name=uuid.uuid4().hex,
                original_name=f"letter-{n}.pdf",
                size_bytes=2000,
                pages=1,
                sha256="1" * 64,
            )
        )
        proposal.invitations.append(
            Invitation(
                email=f"guest{n}-{proposal.id}@example.org",
                role=TeamRole.MEMBER,
                token_hash=uuid.uuid4().hex * 2,
                expires_at=utcnow() + dt.timedelta(days=7),
            )
        )
    db.flush()
    if proposal.version:
        for number in range(proposal.version + 1, proposal.version + MANY):
            db.add(ProposalVersion(proposal=proposal, number=number, snapshot=snapshot(proposal)))
        proposal.version += MANY - 1
    if proposal.state in (ProposalState.IN_REVIEW, ProposalState.ACTIVE):
        for _ in range(MANY - 1):
            a = Assignment(
                proposal_id=proposal.id,
                reviewer_id=make_reviewer(db).id,
                state=AssignmentState.ACCEPTED,
                due_at=utcnow() + dt.timedelta(days=7),
                decided_at=utcnow(),
            )
            db.add(a)
            db.flush()
            db.add(
                Review(
                    assignment_id=a.id,
                    version=proposal.version,
                    state=ReviewState.SUBMITTED,
                    scores={},
                    comments={},
                    to_applicant="Clear and well argued; more on baselines, please.",
                    submitted_at=utcnow(),
                )
            )
    db.flush()


def _viewer(db: Session, who: str, pi: User, institution: Institution) -> User:
    if who == "pi":
        return pi
    if who == "official":
        return make_user(db, Role.SIGNING_OFFICIAL, institution=institution)
    return make_user(db, Role.PROGRAM_OFFICER)


@pytest.mark.parametrize(
    ("who", "state"),
    [
        ("pi", ProposalState.DRAFT),
        ("pi", ProposalState.REVISE),
        ("pi", ProposalState.IN_REVIEW),
        ("pi", ProposalState.ACTIVE),
        ("officer", ProposalState.IN_REVIEW),
        ("officer", ProposalState.ACTIVE),
        ("official", ProposalState.AWAITING_ENDORSEMENT),
    ],
    ids=lambda v: v if isinstance(v, str) else v.value,
)
def test_the_proposal_page_sends_as_many_statements_for_a_big_proposal_as_for_a_small_one(
    client: FlaskClient, db: Session, count_queries: Count, who: str, state: ProposalState
) -> None:
    call = make_call(db, resources=MANY, committee_decides=True)
    pi = make_user(db, Role.RESEARCHER)
    proposal = make_proposal(db, call=call, pi=pi, state=state, complete=True)
    login(client, _viewer(db, who, pi, proposal.institution))
    path = f"/proposals/{proposal.id}"
    assert client.get(path).status_code == 200
    few = count_queries(lambda: client.get(path))
    _grow(db, proposal)
    page = client.get(path)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "letter-4.pdf" in html and f"guest4-{proposal.id}@example.org" in html
    assert html.count("x" * 60) == MANY - 1  # each request once (loaded with the awards)
    if state == ProposalState.ACTIVE:
        assert html.count(" GPU-hours awarded</li>") == MANY
    many = count_queries(lambda: client.get(path))
    print(f"{path} ({state.value}) as {who}: {few} statements small, {many} big")
    assert many == few


def test_the_list_and_the_card_say_what_to_do_next_with_each_drafts_checklist(
    client: FlaskClient, db: Session
) -> None:
    """Drafts listed together get their own checklists (loaded for all of them at once)."""
    call = make_call(db)
    pi = make_user(db, Role.RESEARCHER)
    ready = make_proposal(db, call=call, pi=pi, complete=True, title="A ready draft")
    bare = make_proposal(db, call=call, pi=pi, title="A bare draft")
    make_proposal(db, call=call, pi=pi, state=ProposalState.IN_REVIEW, title="One in review")
    co = make_proposal(db, call=call, complete=True, title="Someone else's ready draft")
    co.team.append(TeamMember(user=pi, role=TeamRole.CO_PI))
    db.flush()
    assert ready.id and bare.id
    login(client, pi)
    for path in ("/proposals/", "/dashboard"):
        html = client.get(path).get_data(as_text=True)
        assert "Complete: submit it." in html
        assert "Complete: the principal investigator can submit it." in html
        assert "Add an abstract of at least 200 characters and 6 more." in html
        assert "Nothing: reviewers are at work; the decision follows." in html
