"""The benchmark generator's calls, proposals and reviews (``portal/dev/gen_proposals.py``): rows
written in bulk keep what the workflow and the services keep — each state has the fields its
history leaves, every submission froze the version the checklist would freeze, awards stay within
what was asked for and within the budgets, no reviewer has a conflict with what they review — the
states spread as in a live program, the personas are busy, and the same seed gives the same data."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Identity, Role, RoleGrant, User
from portal.core.audit import AuditEvent
from portal.dev import datagen, gen_proposals
from portal.dev.datagen import PERSONAS, Scale, generate
from portal.proposals.checklist import missing_items, snapshot
from portal.proposals.models import (
    Award,
    Call,
    CallResource,
    CallState,
    CommitteeMember,
    Proposal,
    ProposalState,
    Resource,
    ResourceRequest,
    TeamMember,
    TeamRole,
)
from portal.proposals.permissions import awaiting_endorsement
from portal.reviews.conflicts import conflicts_of
from portal.reviews.models import Assignment, AssignmentState, Review, ReviewState
from portal.reviews.permissions import conflict_settings

P = ProposalState
#: Small, but with every kind of call (two open, one upcoming) and enough reviewers to choose from.
SCALE = Scale(
    institutions=8,
    users=400,
    calls=20,
    proposals=200,
    reviews=500,
    allocations=1,
    usage_records=1,
    datasets=1,
    grants=1,
    agreements=1,
    audit_events=1,
    outbox=1,
)
DECIDED = (P.ACTIVE, P.DECLINED, P.REVISE)


@pytest.fixture
def only_proposals(monkeypatch: pytest.MonkeyPatch) -> None:
    """``datagen.generate`` runs the people and this generator only (the others are tested on
    their own)."""
    monkeypatch.setattr(datagen, "_steps", lambda: [gen_proposals.generate])


@pytest.fixture
def generated(app: Flask, db: Session, only_proposals: None) -> Iterator[dict[str, int]]:
    with app.app_context():
        yield generate(db, SCALE)


def _persona(db: Session, name: str) -> User:
    return db.scalars(select(User).join(Identity).where(Identity.subject == PERSONAS[name])).one()


def test_counts_and_states_spread_as_in_a_live_program(
    db: Session, generated: dict[str, int]
) -> None:
    assert generated["calls"] == SCALE.calls
    assert generated["proposals"] == SCALE.proposals
    # About three reviews a reviewed version: the target, less where conflicts leave too few.
    assert 0.8 * SCALE.reviews <= generated["reviews"] <= SCALE.reviews
    assert generated["awards"] == db.scalar(select(func.count()).select_from(Award))
    assert {c.state for c in db.scalars(select(Call))} == set(CallState)
    states = Counter(db.scalars(select(Proposal.state)))
    assert set(states) == set(ProposalState)
    # Most are finished or running.
    assert states[P.ACTIVE] + states[P.DECLINED] > sum(states.values()) / 2
    assert set(db.scalars(select(Assignment.state))) == set(AssignmentState)
    assert set(db.scalars(select(Review.state))) == set(ReviewState)


def test_each_state_has_the_fields_its_history_leaves(
    db: Session, generated: dict[str, int]
) -> None:
    officer = _persona(db, "officer")
    for p in db.scalars(select(Proposal)):
        call = p.call
        assert [v.number for v in p.versions] == list(range(1, p.version + 1))
        assert (p.submitted_at is not None) == (p.version > 0)
        if p.version:
            assert p.created_at <= p.versions[0].submitted_at
            assert p.submitted_at == p.versions[-1].submitted_at
            assert all(v.submitted_by_id == p.pi.id for v in p.versions if p.pi)
            # Submitted while the call took submissions.
            assert call.opens_at is not None and call.opens_at <= p.versions[0].submitted_at
            assert call.closes_at is None or p.submitted_at <= call.closes_at
            # Complete, and frozen exactly as the checklist freezes it.
            assert missing_items(p) == []
            assert p.versions[-1].snapshot == snapshot(p)
        if p.state == P.DRAFT:
            assert p.version == 0
        elif p.state != P.WITHDRAWN:
            assert p.version >= 1
        if p.state in NEEDS_ENDORSEMENT_OR_RETURNED:
            assert call.endorsement_required
        if call.endorsement_required and p.state in (P.SUBMITTED, P.IN_REVIEW, *DECIDED):
            assert p.endorsed_by_id is not None and p.endorsed_at is not None
        if p.endorsed_by_id is not None:
            official = db.get(User, p.endorsed_by_id)
            assert official is not None
            assert official.has_role(Role.SIGNING_OFFICIAL, p.institution)
            assert official.id not in {m.user_id for m in p.team}
        if p.state in DECIDED:
            assert p.decided_at is not None and p.submitted_at is not None
            assert p.decided_by_id is not None
            # Either the call's committee (never a member of the team) or program staff.
            if call.committee_decides:
                assert p.decided_by_id in {m.user_id for m in call.committee}
                assert p.decided_by_id not in {m.user_id for m in p.team}
            else:
                assert p.decided_by_id == officer.id
        if p.state in (P.DECLINED, P.REVISE, P.RETURNED):
            assert p.decision_reason or p.decision_note
        assert sum(1 for m in p.team if m.role == TeamRole.PI) == 1
        assert 2 <= len(p.team) <= 5 or p.state == P.DRAFT


NEEDS_ENDORSEMENT_OR_RETURNED = (P.AWAITING_ENDORSEMENT, P.RETURNED)


def test_the_pi_is_a_member_of_the_proposals_partner_institution(
    db: Session, generated: dict[str, int]
) -> None:
    for p in db.scalars(select(Proposal)):
        pi = p.pi
        assert pi is not None
        assert any(a.institution_id == p.institution_id for a in pi.affiliations)


def test_awards_are_within_the_request_and_the_budgets(
    db: Session, generated: dict[str, int]
) -> None:
    for p in db.scalars(select(Proposal)):
        requested = {r.call_resource_id: r.hours for r in p.requests}
        assert bool(p.awards) == (p.state == P.ACTIVE)
        for a in p.awards:
            assert 0 < a.hours <= requested[a.call_resource_id]
        for r in p.requests:
            assert 0 < r.hours <= r.call_resource.max_request_hours
    awarded: dict[int, int] = defaultdict(int)
    on_resource: dict[int, int] = defaultdict(int)
    for a in db.scalars(select(Award)):
        awarded[a.call_resource_id] += a.hours
        on_resource[a.call_resource.resource_id] += a.hours
    for cr in db.scalars(select(CallResource)):
        assert awarded[cr.id] <= cr.budget_hours
        assert cr.allocated_hours == 0  # moved by the allocations made from the awards
    for resource in db.scalars(select(Resource)):
        assert on_resource[resource.id] <= resource.capacity_hours - resource.allocated_hours


def test_no_reviewer_has_a_conflict_with_what_they_review(
    app: Flask, db: Session, generated: dict[str, int]
) -> None:
    reviewers = set(db.scalars(select(RoleGrant.user_id).where(RoleGrant.role == Role.REVIEWER)))
    seen: set[tuple[int, int]] = set()
    with app.app_context():
        settings = conflict_settings()
        for a in db.scalars(select(Assignment)):
            assert a.reviewer_id in reviewers
            assert (a.proposal_id, a.reviewer_id) not in seen  # one assignment each
            seen.add((a.proposal_id, a.reviewer_id))
            assert conflicts_of(a.reviewer, a.proposal, **settings) == []
            assert (a.decided_at is None) == (a.state == AssignmentState.INVITED)
            assert a.proposal.version >= 1


def test_reviews_score_every_criterion_on_its_scale(db: Session, generated: dict[str, int]) -> None:
    for review in db.scalars(select(Review)):
        a, call = review.assignment, review.assignment.proposal.call
        assert a.state == AssignmentState.ACCEPTED
        assert 1 <= review.version <= a.proposal.version
        scale = {str(c.id): c.scale_max for c in call.criteria}
        for key, score in review.scores.items():
            assert 1 <= score <= scale[key]
        if review.state == ReviewState.SUBMITTED:
            assert review.submitted_at is not None
            assert set(review.scores) == set(scale)
            assert len(review.to_applicant.strip()) >= 20
        else:
            assert review.submitted_at is None
    # Every decided version was reviewed.
    for p in db.scalars(select(Proposal).where(Proposal.state.in_(DECIDED))):
        versions = {
            r.version
            for r in db.scalars(
                select(Review).join(Assignment).where(Assignment.proposal_id == p.id)
            )
        }
        assert p.version in versions or not versions


def test_the_personas_have_a_full_load(db: Session, generated: dict[str, int]) -> None:
    pi, reviewer, official = (_persona(db, n) for n in ("pi", "reviewer", "official"))
    roles = Counter(db.scalars(select(TeamMember.role).where(TeamMember.user_id == pi.id)))
    assert roles[TeamRole.PI] >= SCALE.proposals // 20
    assert roles[TeamRole.CO_PI] + roles[TeamRole.MEMBER] >= SCALE.proposals // 50
    mine = db.scalar(
        select(func.count()).select_from(Assignment).where(Assignment.reviewer_id == reviewer.id)
    )
    every = db.scalar(select(func.count()).select_from(Assignment))
    assert mine and every and mine >= every / 20
    deciding = db.scalar(
        select(func.count())
        .select_from(CommitteeMember)
        .join(Call)
        .where(CommitteeMember.user_id == reviewer.id, Call.committee_decides.is_(True))
    )
    assert deciding and deciding >= 2
    assert db.scalars(awaiting_endorsement(official)).first() is not None


def test_the_proposals_trail_is_in_the_audit_log(db: Session, generated: dict[str, int]) -> None:
    events = Counter(
        db.scalars(select(AuditEvent.action).where(AuditEvent.object_type == "proposals"))
    )
    assert events["proposal.create"] == SCALE.proposals
    assert events["proposal.approve"] == db.scalar(
        select(func.count()).select_from(Proposal).where(Proposal.state == P.ACTIVE)
    )


def _fingerprint(db: Session) -> list[Any]:
    """What the seed decides (not the times, which follow the clock)."""
    return [
        db.execute(
            select(
                Proposal.title, Proposal.state, Proposal.institution_id, Proposal.version
            ).order_by(Proposal.id)
        ).all(),
        db.execute(select(ResourceRequest.hours).order_by(ResourceRequest.id)).all(),
        db.execute(select(Review.scores).order_by(Review.id)).all(),
    ]


def test_the_same_seed_gives_the_same_data(app: Flask, db: Session, only_proposals: None) -> None:
    small = Scale.of(0.01)
    with app.app_context():
        first = db.begin_nested()
        generate(db, small, seed=7)
        before = _fingerprint(db)
        first.rollback()
        generate(db, small, seed=7)
        assert _fingerprint(db) == before


def test_the_catalogs_resources_are_offered_within_their_free_capacity(
    app: Flask, db: Session, only_proposals: None
) -> None:
    nearly_full = Resource(
        cluster="busy", gpu_class="H100", capacity_hours=1_000_000, allocated_hours=850_000
    )
    db.add(nearly_full)
    db.flush()
    with app.app_context():
        counts = generate(db, Scale.of(0.02))
    assert "resources" not in counts  # none made: the catalog's is offered
    awarded = db.scalar(
        select(func.sum(Award.hours))
        .join(CallResource, CallResource.id == Award.call_resource_id)
        .where(CallResource.resource_id == nearly_full.id)
    )
    assert awarded and awarded <= 150_000
