"""The institution lifecycle (``INSTITUTION_WORKFLOW``) over every (state, action) pair, allowed and
refused, through the shared runner: an application comes in (applied), program staff ask for
changes (the applicant sends it again), start the review, approve it — which issues the
partnership agreement — or decline it; the approved institution joins (becomes a partner) when its
partnership agreement is fully signed, taken by the last signer; partners are suspended and
reinstated; any of them withdraws.

Then, per action: who may take it (program staff, the applicant, the institution's signing
official, anyone else), which actions need a reason (kept as the decision note and in the audit
log), the mail each sends and to whom (the applicant and the signing officials; program officers
for a resubmitted application; nobody for the start of a review), what declining and withdrawing
let go of (pending domains, which another institution may then claim, and open invitations to be
signing official), the partnership gate of ``join`` (the message says what is missing), and
``partner_since``, set by the first join only. And the mail to the signing officials when someone
joins their institution."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.agreements import services as agreements
from portal.agreements.models import Agreement, AgreementKind, AgreementState, Signature
from portal.auth.models import Role, RoleGrant, User
from portal.core.audit import AuditEvent
from portal.core.errors import ConflictError, PermissionDeniedError, ValidationError
from portal.core.hooks import GateClosedError
from portal.core.models import utcnow
from portal.institutions import services
from portal.institutions.models import (
    AffiliationSource,
    AffiliationState,
    Application,
    DomainState,
    Institution,
    OfficialInvitation,
    OfficialInvitationState,
)
from portal.institutions.models import InstitutionState as S
from portal.institutions.workflow import (
    AFFILIATION_WORKFLOW,
    AUTOMATIC,
    INSTITUTION_WORKFLOW,
    TRANSITIONS,
)
from portal.notifications.models import OutboxMessage
from tests.factories import (
    make_affiliation,
    make_agreement,
    make_agreement_template,
    make_domain,
    make_institution,
    make_user,
)
from tests.support.workflows import assert_declared, assert_step, every_pair

#: The lifecycle as the program describes it (the table in workflow.py must say the same).
EXPECTED = {
    (S.APPLIED, "request_changes"): S.CHANGES_REQUESTED,
    (S.UNDER_REVIEW, "request_changes"): S.CHANGES_REQUESTED,
    (S.CHANGES_REQUESTED, "resubmit"): S.APPLIED,
    (S.APPLIED, "start_review"): S.UNDER_REVIEW,
    (S.UNDER_REVIEW, "approve"): S.APPROVED,
    (S.APPLIED, "decline"): S.DECLINED,
    (S.CHANGES_REQUESTED, "decline"): S.DECLINED,
    (S.UNDER_REVIEW, "decline"): S.DECLINED,
    (S.APPROVED, "join"): S.PARTNER,
    (S.PARTNER, "suspend"): S.SUSPENDED,
    (S.SUSPENDED, "reinstate"): S.PARTNER,
    **{
        (s, "withdraw"): S.WITHDRAWN
        for s in (
            S.APPLIED,
            S.CHANGES_REQUESTED,
            S.UNDER_REVIEW,
            S.APPROVED,
            S.PARTNER,
            S.SUSPENDED,
        )
    },
}

#: Declined and withdrawn are final.
FINAL = {S.DECLINED, S.WITHDRAWN}

#: The people the rules are asked about.
PEOPLE = ("officer", "admin", "applicant", "official", "member", "other_official", "stranger")
STAFF = frozenset({"officer", "admin"})

#: Who may take each action (whatever the state: the state is the table's business).
WHO: dict[str, frozenset[str]] = {
    "request_changes": STAFF,
    "resubmit": frozenset({"applicant", "official"}),
    "start_review": STAFF,
    "approve": STAFF,
    "decline": STAFF,
    # Taken by the partnership agreement's last signer (program staff countersign last).
    "join": STAFF | {"official"},
    "suspend": STAFF,
    "reinstate": STAFF,
    # The applicant takes an application back until the institution is a partner (below).
    "withdraw": STAFF | {"official", "applicant"},
}

#: The actions that need a reason.
NEEDS_REASON = frozenset({"request_changes", "decline", "suspend", "withdraw"})

DECIDED = "institutions/application_decided"
RECEIVED = "institutions/application_received"
STARTED = "institutions/partnership_started"
CHANGED = "institutions/partnership_changed"
MEMBER_JOINED = "institutions/member_joined"

#: The mail each action sends: to the applicant and the signing officials, or (``received``) to
#: program officers and a receipt to the applicant. ``start_review`` sends none.
MAIL: dict[str, str | None] = {
    "request_changes": DECIDED,
    "resubmit": RECEIVED,
    "start_review": None,
    "approve": DECIDED,
    "decline": DECIDED,
    "join": STARTED,
    "suspend": CHANGED,
    "reinstate": CHANGED,
    "withdraw": CHANGED,
}


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Steps write e-mails with links to the outbox, and a closed gate links to its agreement."""
    with app.app_context():
        yield


class Applied:
    """An institution that came in through an application, in some state: its applicant, its
    signing official, a researcher there, and program staff."""

    def __init__(self, db: Session, state: S, **kw: Any) -> None:
        self.inst = make_institution(db, state=state, **kw)
        self.applicant = make_user(db, display_name="Ann Applicant")
        self.inst.application = Application(
            applicant_id=self.applicant.id,
            statement="We train and release open language models for low-resource languages.",
            technical_contact_name="Tess Tech",
            technical_contact_email="tess@example.org",
        )
        self.official = make_user(
            db, Role.SIGNING_OFFICIAL, institution=self.inst, display_name="Sam Signer"
        )
        self.officer = make_user(db, Role.PROGRAM_OFFICER, display_name="Olga Officer")
        db.flush()

    def people(self, db: Session) -> dict[str, User | None]:
        return {
            "officer": self.officer,
            "admin": make_user(db, Role.ADMIN),
            "applicant": self.applicant,
            "official": self.official,
            "member": make_user(db, Role.RESEARCHER, institution=self.inst),
            "other_official": make_user(db, Role.SIGNING_OFFICIAL),
            "stranger": make_user(db),
        }

    def actor(self, action: str) -> User:
        """Whom the action is taken by in real life."""
        return self.applicant if action == "resubmit" else self.officer


def _events(db: Session, inst: Institution, action: str) -> list[AuditEvent]:
    return list(
        db.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.object_type == "institutions",
                AuditEvent.object_id == inst.id,
                AuditEvent.action == f"institution.{action}",
            )
            .order_by(AuditEvent.id)
        )
    )


def _from_state(action: str) -> S:
    """A state ``action`` is allowed from (the first in the table's order)."""
    return next(s for (s, a) in EXPECTED if a == action)


def _mails(db: Session, after: int) -> list[tuple[str, int | None]]:
    return sorted(
        (m.template, m.recipient_id)
        for m in db.scalars(select(OutboxMessage).where(OutboxMessage.id > after))
    )


def _last_mail_id(db: Session) -> int:
    return db.scalar(select(OutboxMessage.id).order_by(OutboxMessage.id.desc()).limit(1)) or 0


def sign(db: Session, slot: Signature, user: User) -> None:
    agreements.sign(
        db,
        slot,
        actor=user,
        typed_name=user.display_name,
        confirmed=True,
        shown_sha256=slot.agreement.text_sha256,
        ip="192.0.2.7",
        user_agent="pytest",
    )


# --- the declaration and the table -----------------------------------------------------------


def test_the_lifecycle_names_the_same_actions_everywhere() -> None:
    assert_declared(INSTITUTION_WORKFLOW)
    assert set(WHO) == set(MAIL) == set(TRANSITIONS)
    # Only joining happens by itself (the partnership agreement's last signature takes it).
    assert {"join"} == AUTOMATIC


def test_the_table_is_the_lifecycle() -> None:
    declared = {(s, a): tr.to for a, tr in TRANSITIONS.items() for s in tr.frm}
    assert declared == EXPECTED
    assert not any(s in FINAL for s, _ in EXPECTED)


@pytest.mark.parametrize(("state", "action"), every_pair(S, INSTITUTION_WORKFLOW))
def test_institution_transition_table(db: Session, state: S, action: str) -> None:
    case = Applied(db, state)
    # Joining and reinstating need a signed partnership agreement (the gate has its own tests
    # below and in tests/agreements/test_gates.py); this table is about the states.
    make_agreement(db, institution=case.inst, state=AgreementState.ACTIVE)
    actor = case.actor(action)
    assert_step(
        db,
        INSTITUTION_WORKFLOW,
        case.inst,
        action,
        EXPECTED,
        lambda: services.transition(db, case.inst, action, actor=actor, reason="Because."),
    )
    if (state, action) in EXPECTED:
        (event,) = _events(db, case.inst, action)
        assert event.actor_id == actor.id and event.details["reason"] == "Because."


# --- who may take each action ----------------------------------------------------------------


@pytest.mark.once
@pytest.mark.parametrize("action", list(TRANSITIONS))
def test_who_may_take_each_action(db: Session, action: str) -> None:
    case = Applied(db, _from_state(action))
    rule = INSTITUTION_WORKFLOW.permissions[action]
    people = case.people(db)
    allowed = {name for name, person in people.items() if rule(person, case.inst)}
    assert allowed == WHO[action]
    assert not rule(None, case.inst), "an anonymous visitor takes no step"


@pytest.mark.once
@pytest.mark.parametrize("state", [S.PARTNER, S.SUSPENDED])
def test_the_applicant_cannot_withdraw_a_partner(db: Session, state: S) -> None:
    """Once a partner, the institution is its signing officials' to withdraw, not the person who
    once applied for it."""
    case = Applied(db, state)
    people = case.people(db)
    rule = INSTITUTION_WORKFLOW.permissions["withdraw"]
    assert not rule(people["applicant"], case.inst)
    assert rule(people["official"], case.inst)


@pytest.mark.parametrize("action", list(TRANSITIONS))
def test_a_refused_person_changes_nothing_and_is_told_why(db: Session, action: str) -> None:
    case = Applied(db, _from_state(action))
    make_agreement(db, institution=case.inst, state=AgreementState.ACTIVE)
    state, mails = case.inst.state, _last_mail_id(db)
    stranger = make_user(db, Role.RESEARCHER)
    rule = INSTITUTION_WORKFLOW.permissions[action]
    with pytest.raises(PermissionDeniedError) as refused:
        services.transition(db, case.inst, action, actor=stranger, reason="Because.")
    assert str(refused.value) == rule.refusal
    db.expire(case.inst, ["state"])
    assert case.inst.state == state
    assert _events(db, case.inst, action) == []
    assert _mails(db, mails) == []


# --- reasons ---------------------------------------------------------------------------------


def test_which_actions_need_a_reason() -> None:
    assert {a for a, tr in TRANSITIONS.items() if tr.needs_reason} == NEEDS_REASON


@pytest.mark.parametrize("action", sorted(NEEDS_REASON))
def test_an_action_that_needs_a_reason_is_refused_without_one(db: Session, action: str) -> None:
    case = Applied(db, _from_state(action))
    state = case.inst.state
    with pytest.raises(ValidationError, match="please give a reason"):
        services.transition(db, case.inst, action, actor=case.actor(action), reason="  ")
    db.expire(case.inst, ["state"])
    assert case.inst.state == state and _events(db, case.inst, action) == []

    services.transition(db, case.inst, action, actor=case.actor(action), reason=" Why not. ")
    assert case.inst.decision_note == "Why not."
    (event,) = _events(db, case.inst, action)
    assert event.details["reason"] == "Why not."


# --- mails -----------------------------------------------------------------------------------


@pytest.mark.parametrize("action", list(TRANSITIONS))
def test_each_action_mails_the_people_it_concerns(db: Session, action: str) -> None:
    case = Applied(db, _from_state(action))
    second_official = make_user(db, Role.SIGNING_OFFICIAL, institution=case.inst)
    make_user(db, Role.SIGNING_OFFICIAL, institution=case.inst, is_disabled=True)
    another_officer = make_user(db, Role.PROGRAM_OFFICER)
    make_user(db, Role.ADMIN)  # staff, but not asked to decide applications
    make_agreement(db, institution=case.inst, state=AgreementState.ACTIVE)
    after = _last_mail_id(db)

    services.transition(db, case.inst, action, actor=case.actor(action), reason="Because.")

    template = MAIL[action]
    officials = db.scalars(
        select(RoleGrant.user_id)
        .join(User, User.id == RoleGrant.user_id)
        .where(
            RoleGrant.role == Role.SIGNING_OFFICIAL,
            RoleGrant.institution_id == case.inst.id,
            User.is_disabled.is_(False),
        )
    ).all()
    assert {case.official.id, second_official.id} <= set(officials)
    concerned = [case.applicant.id, *officials]
    if template is None:
        expected = []
    elif template == RECEIVED:
        # Every program officer is asked to look at it again; the applicant gets a receipt.
        officers = db.scalars(
            select(User.id).where(User.role_grants.any(role=Role.PROGRAM_OFFICER))
        ).all()
        assert {case.officer.id, another_officer.id} <= set(officers)
        expected = [(RECEIVED, i) for i in [*officers, case.applicant.id]]
        mails = list(db.scalars(select(OutboxMessage).where(OutboxMessage.id > after)))
        assert {m.recipient_id: m.context["for_staff"] for m in mails} == {
            **{i: True for i in officers},
            case.applicant.id: False,
        }
    else:
        expected = [(template, i) for i in concerned]
    assert _mails(db, after) == sorted(expected)


def test_a_decision_mail_carries_the_note_and_the_application_link(db: Session) -> None:
    case = Applied(db, S.UNDER_REVIEW, name="Eastfield University")
    after = _last_mail_id(db)
    services.transition(
        db, case.inst, "request_changes", actor=case.officer, reason="Add a technical contact."
    )
    mail = db.scalars(
        select(OutboxMessage).where(
            OutboxMessage.id > after, OutboxMessage.recipient_id == case.applicant.id
        )
    ).one()
    assert mail.template == DECIDED
    assert mail.context["note"] == "Add a technical contact."
    assert mail.context["changes_requested"] is True and mail.context["approved"] is False
    assert mail.context["decided_by"] == "Olga Officer"
    assert mail.context["application_url"].endswith(f"/applications/{case.inst.id}")


# --- what declining and withdrawing let go of ------------------------------------------------


def _invitation(
    db: Session, inst: Institution, email: str, state: OfficialInvitationState
) -> OfficialInvitation:
    token = secrets.token_urlsafe(16)
    invitation = OfficialInvitation(
        institution_id=inst.id,
        email=email,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        expires_at=utcnow() + dt.timedelta(days=14),
        state=state,
        decided_at=None if state == OfficialInvitationState.PENDING else utcnow(),
    )
    db.add(invitation)
    db.flush()
    return invitation


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (S.APPLIED, "decline"),
        (S.CHANGES_REQUESTED, "decline"),
        (S.UNDER_REVIEW, "decline"),
        (S.APPLIED, "withdraw"),
        (S.APPROVED, "withdraw"),
    ],
    ids=lambda v: getattr(v, "value", v),
)
def test_declining_or_withdrawing_releases_pending_domains_and_cancels_invitations(
    db: Session, state: S, action: str
) -> None:
    case = Applied(db, state)
    verified = case.inst.all_domains[0].domain
    claimed = f"lab-{case.inst.id}.example.edu"
    case.inst.all_domains.append(make_domain(claimed, state=DomainState.PENDING))
    pending = _invitation(db, case.inst, "dean@example.edu", OfficialInvitationState.PENDING)
    accepted = _invitation(db, case.inst, "vp@example.edu", OfficialInvitationState.ACCEPTED)
    # While the application stands, nobody else may claim its domain.
    with pytest.raises(ConflictError, match="pending proof there"):
        services.register_institution(
            db, actor=case.officer, name="Rival College", country="US", domains=[claimed]
        )

    services.transition(db, case.inst, action, actor=case.officer, reason="Not eligible.")

    assert [d.domain for d in case.inst.all_domains] == [verified]
    assert pending.state == OfficialInvitationState.CANCELLED and pending.decided_at is not None
    assert accepted.state == OfficialInvitationState.ACCEPTED
    rival = services.register_institution(
        db, actor=case.officer, name="Rival College", country="US", domains=[claimed]
    )
    assert [(d.domain, d.state) for d in rival.all_domains] == [(claimed, DomainState.PENDING)]


@pytest.mark.parametrize(
    ("state", "action"),
    [(S.APPLIED, "request_changes"), (S.APPLIED, "start_review"), (S.UNDER_REVIEW, "approve")],
)
def test_other_decisions_keep_the_domains_and_invitations(
    db: Session, state: S, action: str
) -> None:
    case = Applied(db, state)
    case.inst.all_domains.append(
        make_domain(f"lab-{case.inst.id}.example.edu", state=DomainState.PENDING)
    )
    pending = _invitation(db, case.inst, "dean@example.edu", OfficialInvitationState.PENDING)
    services.transition(db, case.inst, action, actor=case.officer, reason="Please add more.")
    assert len(case.inst.all_domains) == 2
    assert pending.state == OfficialInvitationState.PENDING


# --- joining: the partnership gate, and partner_since ----------------------------------------


def test_approval_issues_the_agreement_whose_last_signature_makes_a_partner(db: Session) -> None:
    case = Applied(db, S.UNDER_REVIEW, name="Northfield University")
    make_agreement_template(db, kind=AgreementKind.PARTNERSHIP, auto_issue=True)

    services.transition(db, case.inst, "approve", actor=case.officer)

    assert case.inst.state == S.APPROVED and case.inst.partner_since is None
    (agreement,) = db.scalars(select(Agreement).where(Agreement.institution_id == case.inst.id))
    assert agreement.kind == AgreementKind.PARTNERSHIP
    assert agreement.state == AgreementState.AWAITING
    # By hand, joining is refused while the agreement is not fully signed, saying who must sign.
    with pytest.raises(GateClosedError) as refused:
        services.transition(db, case.inst, "join", actor=case.officer)
    assert str(refused.value).endswith(
        "It is waiting on: Signing official for Northfield University (Sam Signer)."
    )

    sign(db, agreement.signatures[0], case.official)
    assert case.inst.state == S.APPROVED
    with pytest.raises(GateClosedError, match=r"waiting on: Program officer for .* \(Olga"):
        services.transition(db, case.inst, "join", actor=case.official)
    assert _events(db, case.inst, "join") == []

    after = _last_mail_id(db)
    sign(db, agreement.signatures[1], case.officer)

    assert case.inst.state == S.PARTNER
    assert case.inst.partner_since == utcnow().date()
    (event,) = _events(db, case.inst, "join")
    assert event.actor_id == case.officer.id and event.details["agreement"] == agreement.id
    assert (event.details["frm"], event.details["to"]) == ("approved", "partner")
    started = [r for t, r in _mails(db, after) if t == STARTED]
    assert started == sorted([case.applicant.id, case.official.id])


def test_joining_without_any_agreement_says_none_was_issued(db: Session) -> None:
    case = Applied(db, S.APPROVED, name="Lonely College")
    with pytest.raises(GateClosedError, match="none has been issued yet: program staff issue it"):
        services.transition(db, case.inst, "join", actor=case.officer)
    db.expire(case.inst, ["state"])
    assert case.inst.state == S.APPROVED and _events(db, case.inst, "join") == []


def test_another_institutions_or_a_projects_agreement_does_not_let_it_join(db: Session) -> None:
    case = Applied(db, S.APPROVED)
    make_agreement(db, institution=make_institution(db), state=AgreementState.ACTIVE)
    with pytest.raises(GateClosedError):
        services.transition(db, case.inst, "join", actor=case.officer)


def test_partner_since_is_set_by_the_first_join_only(db: Session) -> None:
    new = Applied(db, S.APPROVED)
    make_agreement(db, institution=new.inst, state=AgreementState.ACTIVE)
    services.transition(db, new.inst, "join", actor=new.officer)
    assert new.inst.partner_since == utcnow().date()

    # A partner before (records kept from an earlier partnership): its date stays.
    earlier = dt.date(2021, 3, 1)
    back = Applied(db, S.APPROVED, partner_since=earlier)
    make_agreement(db, institution=back.inst, state=AgreementState.ACTIVE)
    services.transition(db, back.inst, "join", actor=back.officer)
    assert back.inst.partner_since == earlier
    # Suspension and reinstatement leave it too.
    services.transition(db, back.inst, "suspend", actor=back.officer, reason="Audit.")
    services.transition(db, back.inst, "reinstate", actor=back.officer)
    db.expire(back.inst)
    assert back.inst.partner_since == earlier and back.inst.state == S.PARTNER


# --- the officials hear who joined their institution -----------------------------------------


@pytest.mark.parametrize("how", ["approve", "confirm_by_idp", "reject", "withdraw"])
def test_the_other_officials_hear_when_someone_joins(db: Session, how: str) -> None:
    inst = make_institution(db)
    deciding = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    other = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    person = make_user(db, display_name="Nia Newcomer")
    source = (
        AffiliationSource.IDP_CLAIM
        if how == "confirm_by_idp"
        else AffiliationSource.OFFICIAL_APPROVAL
    )
    aff = make_affiliation(db, user=person, institution=inst, source=source, title="postdoc")
    after = _last_mail_id(db)

    actor = deciding if how in ("approve", "reject") else person
    AFFILIATION_WORKFLOW.run(db, aff, how, actor=actor, reason="Not one of ours.")

    joined = list(
        db.scalars(
            select(OutboxMessage).where(
                OutboxMessage.id > after, OutboxMessage.template == MEMBER_JOINED
            )
        )
    )
    if how in ("approve", "confirm_by_idp"):
        assert aff.state == AffiliationState.ACTIVE
        # The official who approved knows already; on a login, both officials hear of it.
        expected = [other.id] if how == "approve" else [deciding.id, other.id]
        assert sorted(m.recipient_id or 0 for m in joined) == sorted(expected)
        assert {m.context["member_name"] for m in joined} == {"Nia Newcomer"}
    else:
        assert joined == []
