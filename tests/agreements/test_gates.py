"""The gates agreements open in other domains: an approved institution becomes a partner (and a
suspended one is reinstated) only with its partnership agreement fully signed — the last signature
takes that step itself — and a project's GPU-hours are usable only with its contribution agreement
fully signed — each closed gate saying which agreement, who must sign next and where. A suspended
institution's agreements take no signatures. Re-consent to a newer version: the old agreement
counts until its date, then the gate waits for the new one. And the follow-ups that issue
agreements when their moment comes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.agreements import gates, services
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    Signature,
    SubjectType,
    VersionState,
)
from portal.auth.models import Role, User
from portal.core import hooks
from portal.core.audit import AuditEvent
from portal.core.errors import ConflictError
from portal.core.hooks import GateClosedError
from portal.core.models import utcnow
from portal.institutions import services as institutions
from portal.institutions.models import Institution, InstitutionState
from portal.notifications.rendering import external_url
from portal.proposals import services as proposals
from portal.proposals.models import CommitteeMember, Proposal, ProposalState
from tests.factories import (
    make_agreement,
    make_agreement_template,
    make_call,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.mail import outbox


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Blockers link to agreements (absolute URLs from the configuration)."""
    with app.app_context():
        yield


def sign(db: Session, slot: Signature, user: User) -> None:
    services.sign(
        db,
        slot,
        actor=user,
        typed_name=user.display_name,
        confirmed=True,
        shown_sha256=slot.agreement.text_sha256,
        ip=None,
        user_agent=None,
    )


def _applicant(db: Session) -> tuple[Institution, User, User, AgreementTemplate]:
    """An approved institution (awaiting its agreement) with a signing official, a program
    officer, and a partnership template to issue."""
    officer = make_user(db, Role.PROGRAM_OFFICER, display_name="Olga Officer")
    inst = make_institution(db, state=InstitutionState.APPROVED, name="Northfield University")
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst, display_name="Sam Signer")
    template = make_agreement_template(db, kind=AgreementKind.PARTNERSHIP, title="Partnership")
    return inst, official, officer, template


def _refused(db: Session, inst: Institution, action: str, officer: User) -> GateClosedError:
    state = inst.state
    with pytest.raises(GateClosedError) as refused:
        institutions.transition(db, inst, action, actor=officer)
    db.expire(inst, ["state"])
    assert inst.state == state
    assert not db.scalars(
        select(AuditEvent).where(
            AuditEvent.action == f"institution.{action}", AuditEvent.object_id == inst.id
        )
    ).all()
    return refused.value


# --- partnership -------------------------------------------------------------------------------


def test_joining_waits_until_the_partnership_agreement_is_fully_signed(db: Session) -> None:
    inst, official, officer, template = _applicant(db)

    blocker = _refused(db, inst, "join", officer).blocker
    assert blocker.message == (
        "Partnership with Northfield University needs a signed partnership agreement, and none "
        "has been issued yet: program staff issue it."
    )
    # Where program staff issue it (an absolute link, for mails too).
    assert blocker.url is not None and blocker.url.startswith(external_url("agreements.index"))

    agreement = services.issue(db, template, services.institution_subject(inst), actor=officer)
    error = _refused(db, inst, "join", officer)
    assert (
        str(error)
        == error.blocker.message
        == (
            "Partnership with Northfield University needs the partnership agreement “Partnership — "
            "Northfield University” fully signed. It is waiting on: Signing official for "
            "Northfield University (Sam Signer)."
        )
    )
    assert error.blocker.url == external_url("agreements.detail", agreement_id=agreement.id)
    assert error.blocker.url.startswith("http") and error.blocker.link_text == "Open the agreement"

    sign(db, agreement.signatures[0], official)
    assert _refused(db, inst, "join", officer).blocker.message.endswith(
        "It is waiting on: Program officer for ATOM Lab (Olga Officer)."
    )
    assert inst.state == InstitutionState.APPROVED

    # The countersignature completes the agreement, and its signer takes the institution in.
    sign(db, agreement.signatures[1], officer)
    assert inst.state == InstitutionState.PARTNER
    (joined,) = db.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "institution.join", AuditEvent.object_id == inst.id
        )
    )
    assert joined.actor_id == officer.id and joined.details["agreement"] == agreement.id


def test_a_declined_or_withdrawn_agreement_does_not_open_the_gate(db: Session) -> None:
    inst, official, officer, template = _applicant(db)
    agreement = services.issue(db, template, services.institution_subject(inst), actor=officer)
    services.decline(db, agreement, actor=official, reason="Not this year.")
    assert "none has been issued yet" in _refused(db, inst, "join", officer).blocker.message
    again = services.issue(db, template, services.institution_subject(inst), actor=officer)
    services.withdraw(db, again, actor=officer, reason="Wrong template.")
    assert "none has been issued yet" in _refused(db, inst, "join", officer).blocker.message


def test_another_institutions_agreement_does_not_open_the_gate(db: Session) -> None:
    inst, _, officer, _ = _applicant(db)
    make_agreement(db, institution=make_institution(db), state=AgreementState.ACTIVE)
    _refused(db, inst, "join", officer)


def test_a_blocker_names_at_most_three_signers(db: Session) -> None:
    inst, _, officer, template = _applicant(db)
    for n in range(3):
        make_user(db, Role.SIGNING_OFFICIAL, institution=inst, display_name=f"Zed {n}")
    services.issue(db, template, services.institution_subject(inst), actor=officer)
    assert _refused(db, inst, "join", officer).blocker.message.endswith(
        "(Sam Signer, Zed 0, Zed 1 and others)."
    )


def test_a_blocker_says_when_nobody_holds_the_role(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    inst = make_institution(db, state=InstitutionState.APPROVED, name="Lonely College")
    template = make_agreement_template(db, kind=AgreementKind.PARTNERSHIP)
    services.issue(db, template, services.institution_subject(inst), actor=officer)
    assert _refused(db, inst, "join", officer).blocker.message.endswith(
        "Signing official for Lonely College (nobody holds this role yet)."
    )


def test_reinstating_a_partner_needs_its_agreement_in_force(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    signed = make_institution(db, state=InstitutionState.SUSPENDED)
    make_agreement(db, institution=signed, state=AgreementState.ACTIVE)
    unsigned = make_institution(db, state=InstitutionState.SUSPENDED, name="Southgate Institute")

    error = _refused(db, unsigned, "reinstate", officer)
    assert error.blocker.message.startswith(
        "Partnership with Southgate Institute needs a signed partnership agreement"
    )
    institutions.transition(db, signed, "reinstate", actor=officer)
    assert signed.state == InstitutionState.PARTNER


def test_other_steps_of_an_institution_are_not_gated(db: Session) -> None:
    """Deciding the application needs no agreement (approving issues it); nor do suspending and
    withdrawing."""
    officer = make_user(db, Role.PROGRAM_OFFICER)
    applied = make_institution(db, state=InstitutionState.APPLIED)
    institutions.transition(db, applied, "start_review", actor=officer)
    institutions.transition(db, applied, "approve", actor=officer)
    declined = make_institution(db, state=InstitutionState.APPLIED)
    institutions.transition(db, declined, "request_changes", actor=officer, reason="Statement?")
    institutions.transition(db, declined, "decline", actor=officer, reason="Not eligible.")
    partner = make_institution(db)
    institutions.transition(db, partner, "suspend", actor=officer, reason="Audit pending.")
    institutions.transition(db, partner, "withdraw", actor=officer, reason="It closed.")
    assert (applied.state, declined.state, partner.state) == (
        InstitutionState.APPROVED,
        InstitutionState.DECLINED,
        InstitutionState.WITHDRAWN,
    )


def test_the_institution_page_notice_shows_the_blocker_until_signed(db: Session) -> None:
    inst, official, officer, template = _applicant(db)
    (notice,) = hooks.notices_for(inst)
    assert "none has been issued yet" in notice.message
    agreement = services.issue(db, template, services.institution_subject(inst), actor=officer)
    (notice,) = hooks.notices_for(inst)
    assert "waiting on: Signing official" in notice.message
    assert notice.url == external_url("agreements.detail", agreement_id=agreement.id)
    sign(db, agreement.signatures[0], official)
    sign(db, agreement.signatures[1], officer)
    assert hooks.notices_for(inst) == []


# --- suspension --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["suspend", "withdraw"])
def test_a_suspended_or_withdrawn_institutions_agreements_take_no_signatures(
    db: Session, how: str
) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    proposal = make_proposal(db, state=ProposalState.ACTIVE)
    inst = proposal.institution
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    agreement = make_agreement(
        db, kind=AgreementKind.CONTRIBUTION, proposal=proposal, signed=1
    )  # the PI has signed
    institutions.transition(db, inst, how, actor=officer, reason="Audit pending.")

    slot = agreement.signatures[1]
    expected = "suspended" if how == "suspend" else "withdrawn"
    with pytest.raises(
        ConflictError, match=f"is {expected}: its agreements take no new signatures"
    ):
        sign(db, slot, official)
    with pytest.raises(ConflictError, match="take no new signatures"):
        services.decline(db, agreement, actor=official, reason="We are suspended anyway.")
    db.expire_all()
    assert slot.signed_by_id is None and agreement.state == AgreementState.AWAITING

    if how == "suspend":
        make_agreement(db, institution=inst, state=AgreementState.ACTIVE)
        institutions.transition(db, inst, "reinstate", actor=officer)
        sign(db, slot, official)
        assert slot.signed_by_id == official.id


# --- compute -----------------------------------------------------------------------------------


def test_compute_waits_until_the_contribution_agreement_is_fully_signed(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER, display_name="Olga Officer")
    proposal = make_proposal(db, state=ProposalState.ACTIVE, title="Long-context reasoning")
    pi = proposal.pi
    assert pi is not None
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)

    with pytest.raises(GateClosedError, match="none has been issued yet") as refused:
        hooks.check_gates(db, gates.USE_COMPUTE, proposal)
    assert refused.value.blocker.message.startswith(
        "Using the GPU-hours awarded to “Long-context reasoning” needs a signed project "
        "contribution agreement"
    )

    template = make_agreement_template(db, kind=AgreementKind.CONTRIBUTION)
    agreement = services.issue(db, template, services.project_subject(proposal), actor=officer)
    for slot, signer in zip(agreement.signatures, (pi, official, officer), strict=True):
        with pytest.raises(GateClosedError) as refused:
            hooks.check_gates(db, gates.USE_COMPUTE, proposal)
        assert f"It is waiting on: {slot.party} ({signer.display_name})" in str(refused.value)
        assert refused.value.blocker.url == external_url(
            "agreements.detail", agreement_id=agreement.id
        )
        sign(db, slot, signer)

    hooks.check_gates(db, gates.USE_COMPUTE, proposal)
    assert hooks.blockers(db, gates.USE_COMPUTE, proposal) == []


def test_the_project_page_notice_shows_the_blocker_of_an_active_project(db: Session) -> None:
    proposal = make_proposal(db, state=ProposalState.ACTIVE)
    pi = proposal.pi
    assert pi is not None
    (notice,) = hooks.notices_for(proposal)
    assert "needs a signed project contribution agreement" in notice.message
    agreement = make_agreement(db, kind=AgreementKind.CONTRIBUTION, proposal=proposal)
    (notice,) = hooks.notices_for(proposal)
    assert f"waiting on: Principal investigator ({pi.display_name})" in notice.message
    assert notice.url == external_url("agreements.detail", agreement_id=agreement.id)
    make_agreement(
        db, kind=AgreementKind.CONTRIBUTION, proposal=proposal, state=AgreementState.ACTIVE
    )
    assert hooks.notices_for(proposal) == []
    # Only an active project's page says so.
    assert hooks.notices_for(make_proposal(db, state=ProposalState.IN_REVIEW)) == []


# --- re-consent --------------------------------------------------------------------------------


def _signed_partner(db: Session) -> tuple[Institution, User, User, AgreementTemplate, Agreement]:
    inst, official, officer, template = _applicant(db)
    old = services.issue(db, template, services.institution_subject(inst), actor=officer)
    sign(db, old.signatures[0], official)
    sign(db, old.signatures[1], officer)  # the last signature makes it a partner
    assert inst.state == InstitutionState.PARTNER
    return inst, official, officer, template, old


def _publish_with_reconsent(
    db: Session, template: AgreementTemplate, officer: User, by: dt.date
) -> None:
    draft = services.save_draft(
        db,
        template,
        actor=officer,
        body=template.versions[0].body + "\n\nBoth parties publish their results openly.",
        change_note="Open results clause",
        reconsent_by=by,
    )
    services.publish_version(db, draft, actor=officer)


def _new_of(db: Session, old: Agreement) -> Agreement:
    return db.scalars(select(Agreement).where(Agreement.replaces_id == old.id)).one()


def test_reconsent_keeps_the_old_agreement_until_its_date_then_waits_for_the_new(
    db: Session,
) -> None:
    inst, official, officer, template, old = _signed_partner(db)
    by = utcnow().date() + dt.timedelta(days=30)
    _publish_with_reconsent(db, template, officer, by)

    new = _new_of(db, old)
    assert old.state == AgreementState.ACTIVE and old.reconsent_by == by
    assert new.state == AgreementState.AWAITING and new.version.number == 2
    assert "publish their results openly" in new.text
    (mail,) = outbox(db, "agreements/reconsent")
    assert mail.recipient_id == official.id and mail.context["reconsent_by"] == f"{by:%d %B %Y}"
    # Within the grace period the old agreement still counts.
    assert hooks.blockers(db, gates.INSTITUTION_JOIN, inst) == []
    assert services.in_force(db, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, inst.id) == old

    # The date passes.
    old.reconsent_by = utcnow().date() - dt.timedelta(days=1)
    db.flush()
    (blocker,) = hooks.blockers(db, gates.INSTITUTION_REINSTATE, inst)
    assert "waiting on: Signing official for Northfield University (Sam Signer)" in blocker.message
    assert blocker.url == external_url("agreements.detail", agreement_id=new.id)
    assert [b.message for b in hooks.notices_for(inst)] == [blocker.message]

    sign(db, new.signatures[0], official)
    sign(db, new.signatures[1], officer)
    assert new.state == AgreementState.ACTIVE
    assert old.state == AgreementState.SUPERSEDED
    assert hooks.blockers(db, gates.INSTITUTION_JOIN, inst) == []
    assert services.in_force(db, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, inst.id) == new
    (event,) = db.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "agreement.supersede", AuditEvent.object_id == old.id
        )
    )
    assert event.details["by"] == new.id


def test_a_lapsed_agreement_whose_successor_was_withdrawn_says_it_lapsed(db: Session) -> None:
    inst, _, officer, template, old = _signed_partner(db)
    _publish_with_reconsent(db, template, officer, utcnow().date() + dt.timedelta(days=30))
    services.withdraw(db, _new_of(db, old), actor=officer, reason="Wrong wording.")
    assert hooks.blockers(db, gates.INSTITUTION_JOIN, inst) == []

    lapsed = utcnow().date() - dt.timedelta(days=1)
    old.reconsent_by = lapsed
    db.flush()
    (blocker,) = hooks.blockers(db, gates.INSTITUTION_JOIN, inst)
    assert blocker.message == (
        "Partnership with Northfield University needs the partnership agreement signed again: "
        f"“{old.title}” lapsed on {lapsed:%d %B %Y} and its newer version is not fully signed."
    )
    assert blocker.url == external_url("agreements.detail", agreement_id=old.id)


def test_a_version_without_reconsent_leaves_signed_agreements_alone(db: Session) -> None:
    inst, _, officer, template, old = _signed_partner(db)
    draft = services.save_draft(db, template, actor=officer, body="{{ institution }} agrees.")
    services.publish_version(db, draft, actor=officer)
    assert old.reconsent_by is None and old.state == AgreementState.ACTIVE
    assert db.scalars(select(Agreement).where(Agreement.replaces_id == old.id)).all() == []
    assert template.versions[0].state == VersionState.SUPERSEDED
    assert hooks.blockers(db, gates.INSTITUTION_JOIN, inst) == []


# --- follow-ups: agreements issued when their moment comes -------------------------------------


@pytest.mark.parametrize(
    "templates",
    ["auto, published", "none", "not auto", "auto, draft only"],
)
def test_approving_an_institution_issues_the_partnership_agreement(
    db: Session, templates: str
) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    inst = make_institution(db, state=InstitutionState.APPLIED)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    if templates != "none":
        make_agreement_template(
            db,
            kind=AgreementKind.PARTNERSHIP,
            auto_issue=templates.startswith("auto"),
            state=VersionState.DRAFT if "draft" in templates else VersionState.PUBLISHED,
        )
    # A contribution template issued automatically is not for institutions.
    make_agreement_template(db, kind=AgreementKind.CONTRIBUTION, auto_issue=True)

    # Starting the review issues nothing yet: the program has not decided.
    institutions.transition(db, inst, "start_review", actor=officer)
    assert db.scalars(select(Agreement).where(Agreement.institution_id == inst.id)).all() == []
    institutions.transition(db, inst, "approve", actor=officer)

    issued = db.scalars(select(Agreement).where(Agreement.institution_id == inst.id)).all()
    if templates == "auto, published":
        (agreement,) = issued
        assert (agreement.kind, agreement.subject_type, agreement.subject_id) == (
            AgreementKind.PARTNERSHIP,
            SubjectType.INSTITUTION,
            inst.id,
        )
        assert agreement.state == AgreementState.AWAITING and agreement.issued_by_id == officer.id
        assert [m.recipient_id for m in outbox(db, "agreements/to_sign")] == [official.id]
    else:
        assert issued == []
        assert outbox(db, "agreements/to_sign") == []
    assert inst.state == InstitutionState.APPROVED


@pytest.mark.parametrize("who", ["official", "officer"])
def test_withdrawing_an_approved_institution_withdraws_its_unsigned_agreement(
    db: Session, who: str
) -> None:
    """Nobody is left asked to sign a partnership that will not be; a signed one of another
    institution is untouched."""
    inst, official, officer, _ = _applicant(db)
    agreement = make_agreement(db, institution=inst, state=AgreementState.AWAITING)
    other = make_agreement(db, state=AgreementState.AWAITING)
    actor = official if who == "official" else officer
    institutions.transition(db, inst, "withdraw", actor=actor, reason="We will not sign.")
    db.expire_all()
    assert inst.state == InstitutionState.WITHDRAWN
    assert agreement.state == AgreementState.WITHDRAWN
    assert other.state == AgreementState.AWAITING
    (event,) = db.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "agreement.withdraw", AuditEvent.object_id == agreement.id
        )
    ).all()
    assert event.actor_id == actor.id
    assert f"{inst.name} was withdrawn" in event.details["reason"]


def test_an_institution_with_an_agreement_standing_is_not_issued_another(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW)
    make_agreement_template(db, kind=AgreementKind.PARTNERSHIP, auto_issue=True)
    existing = make_agreement(db, institution=inst, state=AgreementState.ACTIVE)
    institutions.transition(db, inst, "approve", actor=officer)
    assert db.scalars(select(Agreement).where(Agreement.institution_id == inst.id)).all() == [
        existing
    ]


def _in_review(db: Session, *, committee: User | None = None) -> Proposal:
    call = make_call(db, committee_decides=committee is not None)
    if committee is not None:
        db.add(CommitteeMember(call_id=call.id, user_id=committee.id))
        db.flush()
    proposal = make_proposal(db, call=call, state=ProposalState.IN_REVIEW)
    make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)
    return proposal


@pytest.mark.parametrize("decider", ["program officer", "allocation committee"])
def test_approving_a_project_issues_its_contribution_agreement(db: Session, decider: str) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    member = make_user(db, Role.REVIEWER) if decider == "allocation committee" else None
    proposal = _in_review(db, committee=member)
    pi = proposal.pi
    assert pi is not None
    template = make_agreement_template(db, kind=AgreementKind.CONTRIBUTION, auto_issue=True)
    (request,) = proposal.requests

    proposals.decide_proposal(
        db, proposal, "approve", actor=member or officer, awards={request.call_resource_id: 600}
    )

    assert proposal.state == ProposalState.ACTIVE
    (agreement,) = db.scalars(select(Agreement).where(Agreement.proposal_id == proposal.id))
    assert agreement.version_id == template.versions[0].id
    assert (agreement.kind, agreement.state) == (
        AgreementKind.CONTRIBUTION,
        AgreementState.AWAITING,
    )
    assert "600 GPU-hours" in agreement.text
    assert [m.recipient_id for m in outbox(db, "agreements/to_sign")] == [pi.id]
    (notice,) = hooks.notices_for(proposal)
    assert "Principal investigator" in notice.message


@pytest.mark.parametrize("action", ["revise", "decline"])
def test_other_decisions_issue_no_contribution_agreement(db: Session, action: str) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    proposal = _in_review(db)
    make_agreement_template(db, kind=AgreementKind.CONTRIBUTION, auto_issue=True)
    proposals.decide_proposal(db, proposal, action, actor=officer, reason="Not yet.")
    assert db.scalars(select(Agreement).where(Agreement.proposal_id == proposal.id)).all() == []


def test_a_suspended_partner_whose_agreement_lapsed_signs_again_and_is_reinstated(
    db: Session,
) -> None:
    """The way back: a suspended institution's partnership agreement stays signable (its other
    agreements do not), so a lapse during the suspension is not a dead end."""
    inst, official, officer, template, old = _signed_partner(db)
    _publish_with_reconsent(db, template, officer, utcnow().date() + dt.timedelta(days=30))
    new = _new_of(db, old)
    institutions.transition(db, inst, "suspend", actor=officer, reason="Audit pending.")
    old.reconsent_by = utcnow().date() - dt.timedelta(days=1)
    db.flush()
    _refused(db, inst, "reinstate", officer)

    sign(db, new.signatures[0], official)
    sign(db, new.signatures[1], officer)
    institutions.transition(db, inst, "reinstate", actor=officer)
    assert inst.state == InstitutionState.PARTNER
