"""Invitations to be an institution's signing official: accepting (the role follows), declining,
links that no longer work (used, declined, cancelled, expired, unknown) and what they say, and a
login under another address than the invited one (allowed, both addresses audited)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal.auth.models import Role, RoleGrant
from portal.core.audit import AuditEvent
from portal.core.errors import NotFoundError, PermissionDeniedError
from portal.core.models import utcnow
from portal.core.workflow import StaleStateError
from portal.institutions import onboarding
from portal.institutions.emails import OFFICIAL_ANSWERED, OFFICIAL_INVITED
from portal.institutions.models import Institution, InstitutionState, OfficialInvitation
from portal.institutions.models import OfficialInvitationState as State
from portal.institutions.onboarding import InvitationGoneError
from portal.institutions.permissions import can_edit_application, can_view_application
from portal.institutions.workflow import OFFICIAL_INVITATION_WORKFLOW
from portal.notifications.rendering import render_email
from tests.factories import make_user
from tests.institutions.onboarding_factories import (
    application_fields,
    mailed_token,
    make_application,
)
from tests.support.mail import outbox
from tests.support.workflows import assert_declared, assert_step, every_pair

BOSS = "rector@invite-uni.edu"


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def _application(db: Session, **kw: Any) -> tuple[Institution, str]:
    inst = make_application(db, domain="invite-uni.edu", officials=[BOSS], **kw)
    return inst, mailed_token(db, BOSS)


def _invitation(db: Session, token: str) -> OfficialInvitation:
    found = onboarding.invitation_for_token(db, token)
    assert found is not None
    db.refresh(found)
    return found


def _last(db: Session, action: str) -> AuditEvent:
    event = db.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id.desc())
    ).first()
    assert event is not None
    return event


def test_accepting_makes_the_person_a_signing_official(db: Session) -> None:
    inst, token = _application(db)
    rector = make_user(db, email=BOSS)
    assert not can_view_application(rector, inst)

    invitation = onboarding.accept_invitation(db, token, actor=rector)
    assert invitation.state == State.ACCEPTED and invitation.accepted_by_id == rector.id
    assert invitation.decided_at is not None
    assert rector.has_role(Role.SIGNING_OFFICIAL, inst)
    # Now they see the application and may change it with the applicant.
    assert can_view_application(rector, inst) and can_edit_application(rector, inst)
    event = _last(db, "official_invitation.accept")
    assert event.actor_id == rector.id and event.details["same_address"] is True
    assert event.details["invited_email"] == BOSS == event.details["login_email"]


def test_a_login_under_another_address_may_accept_and_both_are_audited(db: Session) -> None:
    _, token = _application(db)
    other = make_user(db, email="j.rector@personal.example.org")
    onboarding.accept_invitation(db, token, actor=other)
    event = _last(db, "official_invitation.accept")
    assert event.details["same_address"] is False
    assert event.details["invited_email"] == BOSS
    assert event.details["login_email"] == "j.rector@personal.example.org"
    # An unverified address is recorded as such, and never counts as the same.
    inst2 = make_application(db, domain="second-uni.edu")
    token2 = mailed_token(db, "official@second-uni.edu")
    unverified = make_user(db, email="official@second-uni.edu", email_verified=False)
    onboarding.accept_invitation(db, token2, actor=unverified)
    event = _last(db, "official_invitation.accept")
    assert event.details["same_address"] is False
    assert event.details["login_email_verified"] is False
    assert unverified.has_role(Role.SIGNING_OFFICIAL, inst2)


def test_a_link_works_once(db: Session) -> None:
    _, token = _application(db)
    rector = make_user(db, email=BOSS)
    onboarding.accept_invitation(db, token, actor=rector)
    with pytest.raises(InvitationGoneError, match="already accepted"):
        onboarding.accept_invitation(db, token, actor=rector)
    with pytest.raises(InvitationGoneError, match="already been used"):
        onboarding.accept_invitation(db, token, actor=make_user(db))
    with pytest.raises(InvitationGoneError, match="already been used"):
        onboarding.decline_invitation(db, token, actor=make_user(db))
    grants = db.scalars(select(RoleGrant).where(RoleGrant.role == Role.SIGNING_OFFICIAL)).all()
    assert [g.user_id for g in grants] == [rector.id]


def test_declining_stops_the_link(db: Session) -> None:
    inst, token = _application(db)
    rector = make_user(db, email=BOSS)
    invitation = onboarding.decline_invitation(db, token, actor=rector)
    assert invitation.state == State.DECLINED and invitation.accepted_by_id is None
    assert not rector.has_role(Role.SIGNING_OFFICIAL)
    assert _last(db, "official_invitation.decline").actor_id == rector.id
    with pytest.raises(InvitationGoneError, match="was declined"):
        onboarding.accept_invitation(db, token, actor=rector)
    assert inst.state == InstitutionState.APPLIED


def test_an_expired_link_is_refused_and_saving_the_application_sends_a_new_one(
    db: Session,
) -> None:
    applicant = make_user(db)
    inst, token = _application(db, applicant=applicant)
    db.execute(
        update(OfficialInvitation)
        .where(OfficialInvitation.institution_id == inst.id)
        .values(expires_at=utcnow() - dt.timedelta(minutes=1))
    )
    db.expire_all()
    rector = make_user(db, email=BOSS)
    with pytest.raises(InvitationGoneError, match="expired on"):
        onboarding.accept_invitation(db, token, actor=rector)
    with pytest.raises(InvitationGoneError, match="expired on"):
        onboarding.decline_invitation(db, token, actor=rector)

    fields = application_fields(domain="invite-uni.edu", ror_id=inst.ror_id, officials=[BOSS])
    onboarding.update_application(db, inst, actor=applicant, **fields)
    assert [m.to_addr for m in outbox(db, OFFICIAL_INVITED.key)] == [BOSS, BOSS]
    fresh = mailed_token(db, BOSS)
    assert fresh != token
    assert _invitation(db, token).state == State.CANCELLED
    onboarding.accept_invitation(db, fresh, actor=rector)
    assert rector.has_role(Role.SIGNING_OFFICIAL, inst)


def test_a_declined_application_cancels_its_links(db: Session) -> None:
    _, token = _application(db, state=InstitutionState.DECLINED)
    assert _invitation(db, token).state == State.CANCELLED
    with pytest.raises(InvitationGoneError, match="cancelled"):
        onboarding.accept_invitation(db, token, actor=make_user(db, email=BOSS))


@pytest.mark.parametrize("token", ["", "nope", "x" * 500])
def test_an_unknown_link_is_not_found(db: Session, token: str) -> None:
    with pytest.raises(NotFoundError, match="not valid"):
        onboarding.accept_invitation(db, token, actor=make_user(db))


def test_a_disabled_account_cannot_answer(db: Session) -> None:
    _, token = _application(db)
    with pytest.raises(PermissionDeniedError):
        onboarding.accept_invitation(db, token, actor=make_user(db, is_disabled=True))
    assert _invitation(db, token).state == State.PENDING


def test_someone_already_official_there_keeps_one_grant(db: Session) -> None:
    inst = make_application(
        db, domain="twice-uni.edu", officials=["a@twice-uni.edu", "b@twice-uni.edu"]
    )
    person = make_user(db, email="a@twice-uni.edu")
    onboarding.accept_invitation(db, mailed_token(db, "a@twice-uni.edu"), actor=person)
    onboarding.accept_invitation(db, mailed_token(db, "b@twice-uni.edu"), actor=person)
    grants = db.scalars(
        select(RoleGrant).where(RoleGrant.user_id == person.id, RoleGrant.institution_id == inst.id)
    ).all()
    assert len(grants) == 1


def test_an_answer_to_an_invitation_answered_meanwhile_changes_nothing(db: Session) -> None:
    _, token = _application(db)
    invitation = _invitation(db, token)
    # Someone else's answer lands between reading the invitation and writing (compare-and-set).
    db.execute(
        update(OfficialInvitation)
        .where(OfficialInvitation.id == invitation.id)
        .values(state=State.DECLINED, decided_at=utcnow())
        .execution_options(synchronize_session=False)  # this session still reads it pending
    )
    person = make_user(db)
    with pytest.raises(StaleStateError, match="someone else has already changed this invitation"):
        OFFICIAL_INVITATION_WORKFLOW.run(db, invitation, "accept", actor=person)
    db.expire_all()
    assert invitation.state == State.DECLINED
    assert not person.has_role(Role.SIGNING_OFFICIAL)


# --- the invitation's workflow -------------------------------------------------------------------

#: Pending until answered or cancelled; every other state is final.
INVITATION_EXPECTED = {
    (State.PENDING, "accept"): State.ACCEPTED,
    (State.PENDING, "decline"): State.DECLINED,
    (State.PENDING, "cancel"): State.CANCELLED,
}


def test_the_invitation_workflow_is_declared_consistently() -> None:
    assert_declared(OFFICIAL_INVITATION_WORKFLOW)
    assert {
        (s, a): tr.to for a, tr in OFFICIAL_INVITATION_WORKFLOW.transitions.items() for s in tr.frm
    } == INVITATION_EXPECTED


@pytest.mark.parametrize(("state", "action"), every_pair(State, OFFICIAL_INVITATION_WORKFLOW))
def test_every_invitation_state_and_action(db: Session, state: State, action: str) -> None:
    inst, token = _application(db)
    invitation = _invitation(db, token)
    invitation.state = state  # the starting point of this pair, set up directly
    invitation.decided_at = None if state == State.PENDING else utcnow()
    db.flush()
    staff = make_user(db, Role.PROGRAM_OFFICER)
    actor = staff if action == "cancel" else make_user(db)
    assert_step(
        db,
        OFFICIAL_INVITATION_WORKFLOW,
        invitation,
        action,
        INVITATION_EXPECTED,
        lambda: OFFICIAL_INVITATION_WORKFLOW.run(db, invitation, action, actor=actor),
    )
    if (state, action) in INVITATION_EXPECTED:
        assert invitation.decided_at is not None
        assert actor.has_role(Role.SIGNING_OFFICIAL, inst) == (action == "accept")
        assert (invitation.accepted_by_id == actor.id) == (action == "accept")


def test_only_staff_and_those_who_may_change_the_application_cancel(db: Session) -> None:
    inst, token = _application(db)
    invitation = _invitation(db, token)
    rule = OFFICIAL_INVITATION_WORKFLOW.permissions["cancel"]
    applicant = inst.application.applicant if inst.application else None
    assert rule(make_user(db, Role.PROGRAM_OFFICER), invitation)
    assert rule(applicant, invitation)
    assert not rule(make_user(db), invitation)
    assert not rule(
        make_user(db, Role.SIGNING_OFFICIAL, institution=make_application(db)), invitation
    )


@pytest.mark.parametrize("answer", ["accept", "decline"])
def test_the_applicant_hears_each_answer_and_what_to_do_next(db: Session, answer: str) -> None:
    inst, token = _application(db)
    rector = make_user(db, display_name="Rita Rector", email=BOSS)
    (onboarding.accept_invitation if answer == "accept" else onboarding.decline_invitation)(
        db, token, actor=rector
    )
    (msg,) = outbox(db, OFFICIAL_ANSWERED.key)
    assert inst.application is not None and msg.recipient_id == inst.application.applicant_id
    r = render_email(msg)
    verb = "accepted" if answer == "accept" else "declined"
    assert r.subject == f"Rita Rector {verb} to sign for {inst.name}"
    assert f"/applications/{inst.id}" in r.text
    if answer == "decline":
        assert f"/applications/{inst.id}/edit" in r.text and "propose someone else" in r.text
    else:
        assert "Nothing is needed from you" in r.text and "partnership agreement" in r.text


def test_an_applicant_who_accepts_their_own_invitation_gets_no_mail_about_it(db: Session) -> None:
    inst, token = _application(db)
    assert inst.application is not None and inst.application.applicant is not None
    onboarding.accept_invitation(db, token, actor=inst.application.applicant)
    assert outbox(db, OFFICIAL_ANSWERED.key) == []
