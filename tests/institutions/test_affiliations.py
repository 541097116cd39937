"""Affiliation requests: asked by the person, decided by the institution's signing official."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.core.errors import (
    ConflictError,
    InvalidTransitionError,
    PermissionDeniedError,
    ValidationError,
)
from portal.institutions import services
from portal.institutions.models import (
    AffiliationSource,
    AffiliationState,
    InstitutionState,
)
from portal.institutions.permissions import decidable_affiliations
from portal.institutions.workflow import AFFILIATION_WORKFLOW
from tests.factories import make_affiliation, make_institution, make_user
from tests.support.workflows import assert_step, every_pair


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Deciding and requesting write e-mails to the outbox, which reads the app's configuration."""
    with app.app_context():
        yield


def test_request_then_official_approves_and_person_becomes_researcher(db: Session) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    person = make_user(db)
    aff = services.request_affiliation(db, inst, actor=person, title="postdoc")
    assert (
        aff.state == AffiliationState.REQUESTED
        and aff.source == AffiliationSource.OFFICIAL_APPROVAL
    )
    services.decide_affiliation(db, aff, "approve", actor=official)
    assert aff.state == AffiliationState.ACTIVE and aff.decided_by_id == official.id
    db.refresh(person)
    assert person.has_role(Role.RESEARCHER, inst)
    actions = [e.action for e in db.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions[-2:] == ["affiliation.request", "affiliation.approve"]


def test_rejection_needs_a_reason_and_is_final(db: Session) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    aff = services.request_affiliation(db, inst, actor=make_user(db))
    with pytest.raises(ValidationError):
        services.decide_affiliation(db, aff, "reject", actor=official)
    services.decide_affiliation(db, aff, "reject", actor=official, reason="Not one of ours")
    assert aff.state == AffiliationState.REJECTED and aff.decision_note == "Not one of ours"
    with pytest.raises(InvalidTransitionError):
        services.decide_affiliation(db, aff, "approve", actor=official)


@pytest.mark.parametrize(
    "who", ["other official", "officer", "admin", "self official", "requester"]
)
def test_only_that_institutions_official_decides(db: Session, who: str) -> None:
    inst, other = make_institution(db), make_institution(db)
    make_user(db, Role.SIGNING_OFFICIAL, institution=inst)  # the one who decides
    person = make_user(db)
    if who == "self official":
        # An official whose own membership ended asks to join again: someone else decides.
        person = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
        person.affiliations[0].state = AffiliationState.ENDED
        db.flush()
    aff = services.request_affiliation(db, inst, actor=person)
    actor = {
        "other official": lambda: make_user(db, Role.SIGNING_OFFICIAL, institution=other),
        "officer": lambda: make_user(db, Role.PROGRAM_OFFICER),
        "admin": lambda: make_user(db, Role.ADMIN),
        "self official": lambda: person,
        "requester": lambda: person,
    }[who]()
    with pytest.raises(PermissionDeniedError):
        services.decide_affiliation(db, aff, "approve", actor=actor)
    assert aff.state == AffiliationState.REQUESTED


def test_program_officers_decide_where_the_institution_has_no_signing_official(
    db: Session,
) -> None:
    """The mail about such a request goes to program officers, so they may decide it; as soon as
    the institution has an official, only the official decides."""
    inst = make_institution(db)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    first, second = make_user(db), make_user(db)
    aff = services.request_affiliation(db, inst, actor=first)
    assert aff in db.scalars(decidable_affiliations(officer)).all()
    services.decide_affiliation(db, aff, "approve", actor=officer)
    assert aff.state == AffiliationState.ACTIVE and aff.decided_by_id == officer.id
    make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    later = services.request_affiliation(db, inst, actor=second)
    assert later not in db.scalars(decidable_affiliations(officer)).all()
    with pytest.raises(PermissionDeniedError):
        services.decide_affiliation(db, later, "approve", actor=officer)


def test_no_second_open_request_and_no_request_to_withdrawn_institutions(db: Session) -> None:
    inst = make_institution(db)
    person = make_user(db)
    services.request_affiliation(db, inst, actor=person)
    with pytest.raises(ConflictError):
        services.request_affiliation(db, inst, actor=person)
    gone = make_institution(db, state=InstitutionState.WITHDRAWN)
    with pytest.raises(PermissionDeniedError):
        services.request_affiliation(db, gone, actor=person)


def test_withdraw_own_request_only(db: Session) -> None:
    inst = make_institution(db)
    person, stranger = make_user(db), make_user(db)
    aff = services.request_affiliation(db, inst, actor=person)
    with pytest.raises(PermissionDeniedError):
        services.withdraw_affiliation_request(db, aff, actor=stranger)
    services.withdraw_affiliation_request(db, aff, actor=person)
    assert aff.state == AffiliationState.ENDED
    # …and may ask again later.
    assert services.request_affiliation(db, inst, actor=person).state == AffiliationState.REQUESTED


def test_officials_list_shows_only_their_institutions_requests(db: Session) -> None:
    inst, other = make_institution(db), make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    mine = services.request_affiliation(db, inst, actor=make_user(db))
    services.request_affiliation(db, other, actor=make_user(db))
    listed = db.scalars(decidable_affiliations(official)).all()
    assert [a.id for a in listed if a.state == AffiliationState.REQUESTED] == [mine.id]
    assert db.scalars(decidable_affiliations(make_user(db, Role.ADMIN))).all() == []


AFFILIATION_ALLOWED = {
    (AffiliationState.REQUESTED, "approve"): AffiliationState.ACTIVE,
    (AffiliationState.REQUESTED, "reject"): AffiliationState.REJECTED,
    (AffiliationState.REQUESTED, "withdraw"): AffiliationState.ENDED,
    (AffiliationState.REQUESTED, "confirm_by_idp"): AffiliationState.ACTIVE,
    (AffiliationState.ACTIVE, "end"): AffiliationState.ENDED,
}


@pytest.mark.parametrize(("state", "action"), every_pair(AffiliationState, AFFILIATION_WORKFLOW))
def test_affiliation_transition_table(db: Session, state: AffiliationState, action: str) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    person = make_user(db)
    # Only an affiliation that came from identity-provider claims is ended by a login.
    source = AffiliationSource.IDP_CLAIM if action == "end" else AffiliationSource.OFFICIAL_APPROVAL
    aff = make_affiliation(db, user=person, institution=inst, state=state, source=source)
    take = {
        "approve": lambda: services.decide_affiliation(db, aff, action, actor=official),
        "reject": lambda: services.decide_affiliation(db, aff, action, actor=official, reason="x"),
        "withdraw": lambda: services.withdraw_affiliation_request(db, aff, actor=person),
        "confirm_by_idp": lambda: AFFILIATION_WORKFLOW.run(db, aff, action, actor=person),
        "end": lambda: AFFILIATION_WORKFLOW.run(db, aff, action, actor=person, reason="gone"),
    }[action]
    assert_step(db, AFFILIATION_WORKFLOW, aff, action, AFFILIATION_ALLOWED, take)
    if (state, action) in AFFILIATION_ALLOWED:
        assert aff.decided_at is not None


@pytest.mark.parametrize("source", [AffiliationSource.OFFICIAL_APPROVAL, AffiliationSource.STAFF])
def test_only_idp_claimed_affiliations_are_ended_and_only_by_the_person(
    db: Session, source: AffiliationSource
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    person = make_user(db, Role.RESEARCHER, institution=inst)
    (kept,) = person.affiliations
    kept.source = source
    db.flush()
    with pytest.raises(PermissionDeniedError):
        AFFILIATION_WORKFLOW.run(db, kept, "end", actor=person, reason="claims gone")
    assert kept.state == AffiliationState.ACTIVE and person.has_role(Role.RESEARCHER, inst)
    kept.source = AffiliationSource.IDP_CLAIM
    db.flush()
    with pytest.raises(PermissionDeniedError):
        AFFILIATION_WORKFLOW.run(db, kept, "end", actor=official, reason="claims gone")
    AFFILIATION_WORKFLOW.run(db, kept, "end", actor=person, reason="claims gone")
    db.refresh(person)
    assert kept.state == AffiliationState.ENDED and not person.has_role(Role.RESEARCHER, inst)
