"""Every (state, action) pair of template versions, agreements and signatures, allowed and refused,
through the shared runner; and signing as the parties live it: each in turn, once, only their own
slot, declining with a reason, the last signature completing the agreement."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.agreements import services
from portal.agreements.models import Agreement, AgreementKind, Signature
from portal.agreements.models import AgreementState as A
from portal.agreements.models import SignatureState as G
from portal.agreements.models import VersionState as V
from portal.agreements.permissions import can_decline_agreement
from portal.agreements.text import sha256
from portal.agreements.workflow import AGREEMENT_WORKFLOW, SIGNATURE_WORKFLOW, VERSION_WORKFLOW
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import (
    ConflictError,
    InvalidTransitionError,
    PermissionDeniedError,
    ValidationError,
)
from portal.core.models import utcnow
from portal.core.workflow import Workflow
from portal.institutions.models import Institution, InstitutionState
from portal.proposals.models import ProposalState
from tests.factories import (
    make_agreement,
    make_agreement_template,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.mail import outbox
from tests.support.workflows import assert_declared, assert_step, every_pair

#: Template versions as the program describes them: a draft is published, and the next published
#: version supersedes it.
VERSIONS = {
    (V.DRAFT, "publish"): V.PUBLISHED,
    (V.PUBLISHED, "supersede"): V.SUPERSEDED,
}

#: Agreements: only one being signed can be completed, declined or withdrawn; only a signed one
#: can be superseded (by its re-consent successor).
AGREEMENTS = {
    (A.AWAITING, "complete"): A.ACTIVE,
    (A.AWAITING, "decline"): A.DECLINED,
    (A.AWAITING, "withdraw"): A.WITHDRAWN,
    (A.ACTIVE, "supersede"): A.SUPERSEDED,
}

#: Signature slots: a slot to sign is signed or declined, once.
SIGNATURES = {
    (G.PENDING, "sign"): G.SIGNED,
    (G.PENDING, "decline"): G.DECLINED,
}


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Steps write e-mails to the outbox (with links) and name the lab."""
    with app.app_context():
        yield


def sign(db: Session, signature: Signature, user: User, **kw: Any) -> Signature:
    """``user`` signs ``signature`` the way the signing page does, having read the agreement."""
    return services.sign(
        db,
        signature,
        actor=user,
        typed_name=kw.pop("typed_name", user.display_name),
        confirmed=kw.pop("confirmed", True),
        shown_sha256=kw.pop("shown_sha256", signature.agreement.text_sha256),
        ip="192.0.2.7",
        user_agent="pytest",
    )


def events(db: Session, obj: Any, action: str) -> list[AuditEvent]:
    return list(
        db.scalars(
            select(AuditEvent).where(
                AuditEvent.object_type == obj.__tablename__,
                AuditEvent.object_id == obj.id,
                AuditEvent.action == action,
            )
        )
    )


@pytest.mark.parametrize(
    "workflow",
    [VERSION_WORKFLOW, AGREEMENT_WORKFLOW, SIGNATURE_WORKFLOW],
    ids=lambda w: w.name,
)
def test_workflow_names_the_same_actions_everywhere(workflow: Workflow[Any, Any]) -> None:
    assert_declared(workflow)


# --- the tables --------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "action"), every_pair(V, VERSION_WORKFLOW))
def test_version_transition_table(db: Session, state: V, action: str) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    version = make_agreement_template(db, state=state).versions[0]

    def take() -> object:
        if action == "publish":
            return services.publish_version(db, version, actor=officer)
        # Superseding is never asked for by hand: publishing the next version does it.
        return VERSION_WORKFLOW.run(db, version, action, actor=officer)

    assert_step(db, VERSION_WORKFLOW, version, action, VERSIONS, take)
    if (state, action) == (V.DRAFT, "publish"):
        assert version.published_at is not None and version.published_by_id == officer.id
        assert version.text_sha256 == sha256(version.body)


@pytest.mark.parametrize(("state", "action"), every_pair(A, AGREEMENT_WORKFLOW))
def test_agreement_transition_table(db: Session, state: A, action: str) -> None:
    """Each action is taken by someone its rule allows, at the moment it is taken in real life:
    completing after every slot is signed, declining after a party declined its slot, superseding
    once a newer version asked for re-consent — so only the state decides."""
    officer = make_user(db, Role.PROGRAM_OFFICER)
    agreement = make_agreement(db, state=state, signed=2 if action == "complete" else 0)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=agreement.institution)
    first = agreement.signatures[0]
    actor: User = officer
    if action == "complete":
        actor = first.signed_by  # type: ignore[assignment]
    elif action == "decline":
        first.state, first.decline_reason = G.DECLINED, "We cannot accept clause 4."
        actor = official
    elif action == "supersede":
        agreement.reconsent_by = utcnow().date()
    db.flush()

    assert_step(
        db,
        AGREEMENT_WORKFLOW,
        agreement,
        action,
        AGREEMENTS,
        lambda: AGREEMENT_WORKFLOW.run(db, agreement, action, actor=actor, reason="A reason"),
    )
    if (state, action) == (A.AWAITING, "complete"):
        assert agreement.completed_at is not None
    if (state, action) in {(A.AWAITING, "decline"), (A.AWAITING, "withdraw")}:
        assert agreement.reason == "A reason"


@pytest.mark.parametrize(("state", "action"), every_pair(G, SIGNATURE_WORKFLOW))
def test_signature_transition_table(db: Session, state: G, action: str) -> None:
    make_user(db, Role.PROGRAM_OFFICER)  # the next party, to be asked
    agreement = make_agreement(db, signed=1 if state == G.SIGNED else 0)
    slot = agreement.signatures[0]
    if state == G.DECLINED:
        slot.state, slot.decline_reason = G.DECLINED, "Not this year."
        db.flush()
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=agreement.institution)

    def take() -> object:
        if action == "sign":
            return sign(db, slot, official)
        return SIGNATURE_WORKFLOW.run(db, slot, action, actor=official, reason="Not this year.")

    assert_step(db, SIGNATURE_WORKFLOW, slot, action, SIGNATURES, take)
    if (state, action) == (G.PENDING, "sign"):
        assert slot.signed_by_id == official.id and slot.typed_name == official.display_name
    if (state, action) == (G.PENDING, "decline"):
        assert slot.decline_reason == "Not this year."
        assert agreement.state == A.DECLINED


# --- signing -----------------------------------------------------------------------------------


def _partnership(db: Session) -> tuple[Agreement, Institution, User, User]:
    """A partnership agreement issued for an institution under review: (agreement, institution,
    a signing official of it, a program officer)."""
    officer = make_user(db, Role.PROGRAM_OFFICER, display_name="Olga Officer")
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW, name="Northfield University")
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst, display_name="Sam Signer")
    template = make_agreement_template(db, kind=AgreementKind.PARTNERSHIP)
    agreement = services.issue(db, template, services.institution_subject(inst), actor=officer)
    return agreement, inst, official, officer


def test_parties_sign_in_order_and_the_last_signature_completes_it(db: Session) -> None:
    agreement, inst, official, officer = _partnership(db)
    first, second = agreement.signatures
    assert (first.role.value, first.on_behalf_of) == ("signing_official", inst.name)
    assert (second.role.value, second.on_behalf_of) == ("program", "ATOM Lab")
    assert [m.recipient_id for m in outbox(db, "agreements/to_sign")] == [official.id]

    sign(db, first, official, typed_name="  sam   SIGNER ")
    assert agreement.state == A.AWAITING and agreement.completed_at is None
    assert first.typed_name == "sam SIGNER" and first.ip == "192.0.2.7"
    assert agreement.next_signatures == [second]
    # Now the lab is asked to countersign.
    assert [m.recipient_id for m in outbox(db, "agreements/to_sign")] == [official.id, officer.id]

    countersigner = make_user(db, Role.PROGRAM_OFFICER)
    assert second.signed_by is None  # as the signing page shows it, before signing
    sign(db, second, countersigner)
    assert agreement.state == A.ACTIVE and agreement.completed_at is not None
    assert agreement.next_signatures == []
    (done,) = events(db, agreement, "agreement.complete")
    assert done.actor_id == countersigner.id
    # Every signer (the last one too) and the issuer get the signed agreement.
    assert sorted(m.recipient_id for m in outbox(db, "agreements/signed")) == sorted(
        [officer.id, official.id, countersigner.id]
    )


def test_a_contribution_agreement_is_signed_by_the_pi_the_institution_then_the_lab(
    db: Session,
) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    proposal = make_proposal(db, state=ProposalState.ACTIVE)
    pi = proposal.pi
    assert pi is not None
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)
    template = make_agreement_template(db, kind=AgreementKind.CONTRIBUTION)
    agreement = services.issue(db, template, services.project_subject(proposal), actor=officer)
    assert [(s.position, s.role.value, s.user_id) for s in agreement.signatures] == [
        (1, "pi", pi.id),
        (2, "signing_official", None),
        (3, "program", None),
    ]
    with pytest.raises(ConflictError, match="Not your turn yet: Principal investigator"):
        sign(db, agreement.signatures[1], official)
    for slot, who in zip(agreement.signatures, (pi, official, officer), strict=True):
        assert agreement.state == A.AWAITING
        sign(db, slot, who)
    assert agreement.state == A.ACTIVE


def test_the_second_party_cannot_sign_before_the_first(db: Session) -> None:
    agreement, _, _, officer = _partnership(db)
    with pytest.raises(ConflictError, match="Not your turn yet: Signing official for Northfield"):
        sign(db, agreement.signatures[1], officer)
    db.expire_all()
    assert [s.state for s in agreement.signatures] == [G.PENDING, G.PENDING]
    assert agreement.state == A.AWAITING
    assert events(db, agreement.signatures[1], "signature.sign") == []


def test_a_slot_is_signed_once(db: Session) -> None:
    agreement, inst, official, _ = _partnership(db)
    colleague = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    first = agreement.signatures[0]
    sign(db, first, official)
    for who in (official, colleague):
        with pytest.raises(InvalidTransitionError, match="not possible while the signature is"):
            sign(db, first, who)
    db.expire_all()
    assert first.signed_by_id == official.id
    assert len(events(db, first, "signature.sign")) == 1


@pytest.mark.parametrize(
    "who", ["researcher", "other official", "reviewer", "steward", "admin", "disabled official"]
)
def test_someone_who_is_not_the_party_cannot_sign(db: Session, who: str) -> None:
    agreement, inst, _, _ = _partnership(db)
    user = {
        "researcher": lambda: make_user(db, Role.RESEARCHER, institution=inst),
        "other official": lambda: make_user(db, Role.SIGNING_OFFICIAL),
        "reviewer": lambda: make_user(db, Role.REVIEWER),
        "steward": lambda: make_user(db, Role.DATA_STEWARD),
        # Administrators run the portal; countersigning for the lab is a program officer's.
        "admin": lambda: make_user(db, Role.ADMIN),
        "disabled official": lambda: make_user(
            db, Role.SIGNING_OFFICIAL, institution=inst, is_disabled=True
        ),
    }[who]()
    with pytest.raises(PermissionDeniedError, match="not yours to give"):
        sign(db, agreement.signatures[0], user)
    with pytest.raises(PermissionDeniedError):
        services.decline(db, agreement, actor=user, reason="No.")
    db.expire_all()
    assert agreement.state == A.AWAITING
    assert [s.state for s in agreement.signatures] == [G.PENDING, G.PENDING]


def test_a_signature_needs_the_confirmation_and_the_signers_own_name(db: Session) -> None:
    agreement, _, official, _ = _partnership(db)
    first = agreement.signatures[0]
    with pytest.raises(ValidationError, match="Tick the box"):
        sign(db, first, official, confirmed=False)
    with pytest.raises(ValidationError, match=r"exactly as the portal knows it \(Sam Signer\)"):
        sign(db, first, official, typed_name="Someone Else")
    with pytest.raises(ValidationError, match="full name"):
        sign(db, first, official, typed_name="   ")
    db.expire_all()
    assert first.state == G.PENDING and first.signed_by_id is None


def test_declining_needs_a_reason_and_declines_the_agreement(db: Session) -> None:
    agreement, _, official, officer = _partnership(db)
    for blank in ("", "   "):
        with pytest.raises(ValidationError, match="reason"):
            services.decline(db, agreement, actor=official, reason=blank)
    assert agreement.state == A.AWAITING

    services.decline(db, agreement, actor=official, reason="Clause 4 is not acceptable.")
    first, second = agreement.signatures
    assert agreement.state == A.DECLINED and agreement.reason == "Clause 4 is not acceptable."
    assert first.state == G.DECLINED and first.decline_reason == "Clause 4 is not acceptable."
    assert second.state == G.PENDING
    (event,) = events(db, agreement, "agreement.decline")
    assert event.actor_id == official.id
    # The issuer hears who declined and why; nobody is asked to sign any more.
    (mail,) = outbox(db, "agreements/declined")
    assert mail.recipient_id == officer.id
    assert mail.context["declined_by"] == "Sam Signer"
    assert mail.context["reason"] == "Clause 4 is not acceptable."
    with pytest.raises(ConflictError, match="declined: it takes no more signatures"):
        sign(db, second, officer)


def test_only_the_party_whose_turn_it_is_may_decline(db: Session) -> None:
    agreement, _, _, officer = _partnership(db)
    # The program officer's slot is second: it may not refuse before the institution has signed
    # (declining is the turn's party's to do: a refused permission, audited).
    assert not can_decline_agreement(officer, agreement)
    with pytest.raises(PermissionDeniedError):
        services.decline(db, agreement, actor=officer, reason="Wrong institution.")
    db.expire_all()
    assert agreement.state == A.AWAITING
    assert [s.state for s in agreement.signatures] == [G.PENDING, G.PENDING]


def test_a_withdrawn_agreement_takes_no_signatures(db: Session) -> None:
    agreement, _, official, officer = _partnership(db)
    with pytest.raises(ValidationError, match="reason"):
        services.withdraw(db, agreement, actor=officer, reason="")
    with pytest.raises(PermissionDeniedError):
        services.withdraw(db, agreement, actor=official, reason="We changed our minds.")
    services.withdraw(db, agreement, actor=officer, reason="Issued to the wrong institution.")
    assert agreement.state == A.WITHDRAWN
    with pytest.raises(ConflictError, match="withdrawn: it takes no more signatures"):
        sign(db, agreement.signatures[0], official)
