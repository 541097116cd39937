"""Applying to become a partner (``portal.institutions.onboarding``): what an application creates
and whom it mails, what it refuses and why, changing and resending it, staff's decisions, and who
sees which application."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.core.errors import (
    ConflictError,
    InvalidTransitionError,
    PermissionDeniedError,
    ValidationError,
)
from portal.institutions import onboarding
from portal.institutions.emails import APPLICATION_DECIDED, APPLICATION_RECEIVED, OFFICIAL_INVITED
from portal.institutions.models import (
    DomainState,
    Institution,
    InstitutionState,
    OfficialInvitation,
    OfficialInvitationState,
)
from portal.institutions.permissions import can_view_application, visible_applications
from tests.factories import make_domain, make_institution, make_ror, make_user
from tests.institutions.onboarding_factories import application_fields, make_application
from tests.support.mail import outbox
from tests.support.visibility import disagreements


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """The services build absolute links for their mails."""
    with app.app_context():
        yield


def _events(db: Session, action: str) -> list[AuditEvent]:
    return list(
        db.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id))
    )


def _count(db: Session, model: type[object]) -> int:
    return db.scalar(select(func.count()).select_from(model)) or 0


# --- applying ------------------------------------------------------------------------------------


def test_an_application_creates_the_institution_its_domains_and_invitations(db: Session) -> None:
    applicant = make_user(db, display_name="Ada Applicant")
    officer = make_user(db, Role.PROGRAM_OFFICER)
    fields = application_fields(
        domain="tallinn-tech.ee",
        domains=["tallinn-tech.ee", "@CS.Tallinn-Tech.ee"],
        officials=["Rector@tallinn-tech.ee", "dean@cs.tallinn-tech.ee"],
        country="ee",
    )
    inst = onboarding.apply(db, actor=applicant, **fields)

    assert inst.state == InstitutionState.APPLIED and inst.country == "EE"
    assert sorted(d.domain for d in inst.all_domains) == ["cs.tallinn-tech.ee", "tallinn-tech.ee"]
    assert {d.state for d in inst.all_domains} == {DomainState.PENDING}
    assert inst.application is not None and inst.application.applicant_id == applicant.id
    invitations = db.scalars(
        select(OfficialInvitation).where(OfficialInvitation.institution_id == inst.id)
    ).all()
    assert sorted(i.email for i in invitations) == [
        "dean@cs.tallinn-tech.ee",
        "rector@tallinn-tech.ee",
    ]
    for inv in invitations:
        assert inv.state == OfficialInvitationState.PENDING and len(inv.token_hash) == 64
        assert 29 <= (inv.expires_at - inv.created_at).days <= 30

    # The audit trail: the application, its domains and its invitations.
    (applied,) = _events(db, "institution.apply")
    assert applied.object_id == inst.id and applied.actor_id == applicant.id
    assert len(_events(db, "institution.official_invite")) == 2
    assert len(_events(db, "institution.domain_add")) == 2

    # The mails: program officers asked to review, the applicant's receipt, each official's link.
    received = outbox(db, APPLICATION_RECEIVED.key)
    assert sorted(m.to_addr for m in received) == sorted([str(officer.email), str(applicant.email)])
    staff_mail = next(m for m in received if m.to_addr == officer.email)
    assert staff_mail.context["for_staff"] is True
    assert staff_mail.context["application_url"].endswith(f"/applications/{inst.id}")
    invited = outbox(db, OFFICIAL_INVITED.key)
    assert sorted(m.to_addr for m in invited) == [
        "dean@cs.tallinn-tech.ee",
        "rector@tallinn-tech.ee",
    ]
    # The link carries the token whose hash is stored; the token itself is not.
    token = invited[0].context["accept_url"].rsplit("/", 1)[1]
    assert onboarding.invitation_for_token(db, token) is not None
    assert all(token not in i.token_hash for i in invitations)


def test_a_domain_another_institution_claims_is_refused_by_name(db: Session) -> None:
    other = make_institution(db)
    claimed = other.domains[0].domain
    with pytest.raises(ConflictError, match=claimed.replace(".", r"\.")):
        onboarding.apply(
            db,
            actor=make_user(db),
            **application_fields(domains=["fresh-campus.edu", claimed]),
        )
    other.all_domains.append(make_domain("pending-claim.edu", state=DomainState.PENDING))
    db.flush()
    with pytest.raises(ConflictError, match=r"pending-claim\.edu"):
        onboarding.apply(db, actor=make_user(db), **application_fields(domain="pending-claim.edu"))


@pytest.mark.parametrize("domain", ["gmail.com", "mail.yahoo.com"])
def test_public_webmail_domains_are_refused(db: Session, domain: str) -> None:
    with pytest.raises(ValidationError, match="public webmail"):
        onboarding.apply(
            db, actor=make_user(db), **application_fields(domains=["real-uni.edu", domain])
        )
    assert _count(db, Institution) == 0 or not db.scalar(
        select(Institution).where(Institution.name.like("Applicant University%"))
    )


def test_a_ror_id_another_institution_has_is_refused(db: Session) -> None:
    partner = make_institution(db, name="Partner University")
    with pytest.raises(ConflictError, match="already a partner"):
        onboarding.apply(db, actor=make_user(db), **application_fields(ror_id=partner.ror_id))
    applied = make_institution(db, state=InstitutionState.APPLIED)
    with pytest.raises(ConflictError, match="already has the ROR id"):
        onboarding.apply(db, actor=make_user(db), **application_fields(ror_id=applied.ror_id))


def test_the_same_person_cannot_apply_twice_for_the_same_institution(db: Session) -> None:
    applicant = make_user(db)
    first = make_application(db, applicant=applicant)
    with pytest.raises(ConflictError, match="You already have an open application"):
        onboarding.apply(
            db,
            actor=applicant,
            **application_fields(ror_id=first.ror_id, domain="second-try.edu"),
        )


def test_an_id_missing_from_the_ror_subset_but_well_formed_is_accepted(db: Session) -> None:
    ror_id = make_ror(987_654)
    inst = onboarding.apply(db, actor=make_user(db), **application_fields(ror_id=ror_id))
    assert inst.ror_id == ror_id


def test_a_ror_id_with_a_wrong_checksum_is_refused(db: Session) -> None:
    with pytest.raises(ValidationError, match="is not a ROR id"):
        onboarding.apply(db, actor=make_user(db), **application_fields(ror_id="042nb2s45"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "  "}, "name is required"),
        ({"country": "Germany"}, "two-letter ISO code"),
        ({"website": "javascript:alert(1)"}, "full address"),
        ({"domains": []}, "at least one e-mail domain"),
        ({"domains": ["not a domain"]}, "is not an e-mail domain"),
        ({"statement": "Short."}, "at least 50 characters"),
        ({"technical_contact_email": "nobody"}, "not a usable e-mail address"),
        ({"officials": []}, "at least one signing official"),
        ({"officials": ["boss@elsewhere.org"]}, "must be at one of the institution's"),
        ({"officials": [f"o{i}@apply-many.edu" for i in range(6)]}, "at most 5"),
        ({"idp_entity_id": "x" * 501}, "too long"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_bad_fields_are_refused_with_a_reason_and_nothing_is_made(
    db: Session, change: dict[str, object], message: str
) -> None:
    before = _count(db, Institution)
    fields = application_fields(domain="apply-many.edu")
    with pytest.raises(ValidationError, match=message):
        onboarding.apply(db, actor=make_user(db), **{**fields, **change})
    assert _count(db, Institution) == before
    assert outbox(db, OFFICIAL_INVITED.key) == []


def test_a_disabled_account_cannot_apply(db: Session) -> None:
    with pytest.raises(PermissionDeniedError):
        onboarding.apply(db, actor=make_user(db, is_disabled=True), **application_fields())


# --- changing and sending again ------------------------------------------------------------------


def test_the_applicant_changes_the_application_and_the_invitations_follow(db: Session) -> None:
    applicant = make_user(db)
    inst = make_application(
        db,
        applicant=applicant,
        domain="change-me.edu",
        officials=["keep@change-me.edu", "drop@change-me.edu"],
    )
    fields = application_fields(
        domain="change-me.edu",
        name="Changed University",
        ror_id=inst.ror_id,
        officials=["keep@change-me.edu", "new@change-me.edu"],
        domains=["change-me.edu", "lab.change-me.edu"],
    )
    onboarding.update_application(db, inst, actor=applicant, **fields)
    db.expire_all()
    assert inst.name == "Changed University"
    assert sorted(d.domain for d in inst.all_domains) == ["change-me.edu", "lab.change-me.edu"]
    states = {i.email: i.state for i in inst.official_invitations}
    assert states == {
        "keep@change-me.edu": OfficialInvitationState.PENDING,
        "drop@change-me.edu": OfficialInvitationState.CANCELLED,
        "new@change-me.edu": OfficialInvitationState.PENDING,
    }
    assert [m.to_addr for m in outbox(db, OFFICIAL_INVITED.key)].count("keep@change-me.edu") == 1
    (update,) = _events(db, "institution.application_update")
    assert update.details["before"]["domains"] == ["change-me.edu"]


def test_an_application_under_review_cannot_be_changed(db: Session) -> None:
    applicant = make_user(db)
    inst = make_application(db, applicant=applicant, state=InstitutionState.UNDER_REVIEW)
    with pytest.raises(ConflictError, match="only be changed while"):
        onboarding.update_application(
            db, inst, actor=applicant, **application_fields(ror_id=inst.ror_id)
        )


def test_someone_else_cannot_change_an_application(db: Session) -> None:
    inst = make_application(db)
    with pytest.raises(PermissionDeniedError):
        onboarding.update_application(
            db, inst, actor=make_user(db), **application_fields(ror_id=inst.ror_id)
        )


def test_sent_back_then_resent_asks_program_officers_again(db: Session) -> None:
    applicant = make_user(db)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    inst = make_application(
        db, applicant=applicant, staff=officer, state=InstitutionState.CHANGES_REQUESTED
    )
    decided = outbox(db, APPLICATION_DECIDED.key)
    assert [m.to_addr for m in decided] == [applicant.email]
    assert decided[0].context["changes_requested"] is True
    assert decided[0].context["note"] == "Add the technical contact's phone."
    sent_at = inst.application.submitted_at if inst.application else None

    onboarding.resubmit(db, inst, actor=applicant)
    assert inst.state == InstitutionState.APPLIED
    assert inst.application is not None and sent_at is not None
    assert inst.application.submitted_at >= sent_at
    received = outbox(db, APPLICATION_RECEIVED.key)
    assert [m.to_addr for m in received].count(str(officer.email)) == 2


def test_decide_runs_only_the_staff_decisions(db: Session) -> None:
    inst = make_application(db)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    with pytest.raises(ValidationError, match="Choose to ask for changes"):
        onboarding.decide(db, inst, "join", actor=officer)
    with pytest.raises(InvalidTransitionError):
        onboarding.decide(db, inst, "approve", actor=officer)
    with pytest.raises(PermissionDeniedError):
        onboarding.decide(db, inst, "start_review", actor=make_user(db, Role.REVIEWER))
    onboarding.decide(db, inst, "start_review", actor=officer)
    onboarding.decide(db, inst, "approve", actor=officer)
    assert inst.state == InstitutionState.APPROVED


def test_declining_releases_the_domains_and_cancels_the_invitations(db: Session) -> None:
    inst = make_application(db, domain="released.edu", state=InstitutionState.DECLINED)
    db.expire_all()
    assert inst.all_domains == []
    assert {i.state for i in inst.official_invitations} == {OfficialInvitationState.CANCELLED}
    # Another institution may claim the domain now.
    other = onboarding.apply(db, actor=make_user(db), **application_fields(domain="released.edu"))
    assert [d.domain for d in other.all_domains] == ["released.edu"]


# --- who sees which application ------------------------------------------------------------------


def test_an_applicant_sees_only_their_own_application(db: Session) -> None:
    ada, bob = make_user(db), make_user(db)
    ada_app = make_application(db, applicant=ada)
    bob_app = make_application(db, applicant=bob)
    assert can_view_application(ada, ada_app) and not can_view_application(ada, bob_app)
    listed = db.scalars(visible_applications(ada)).all()
    assert ada_app in listed and bob_app not in listed


def test_the_list_and_the_page_agree_for_every_role(db: Session) -> None:
    home = make_institution(db)
    applicant = make_user(db)
    mine = make_application(db, applicant=applicant)
    changes = make_application(db, state=InstitutionState.CHANGES_REQUESTED)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=changes)
    users = [
        applicant,
        official,
        make_user(db, Role.SIGNING_OFFICIAL, institution=home),
        make_user(db, Role.RESEARCHER, institution=home),
        make_user(db, Role.REVIEWER),
        make_user(db, Role.PROGRAM_OFFICER),
        make_user(db, Role.ADMIN),
        None,
    ]
    objects = [mine, changes, home, make_application(db, state=InstitutionState.DECLINED)]
    assert disagreements(db, visible_applications, can_view_application, users, objects) == []
