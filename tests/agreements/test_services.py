"""Templates and their versions, issuing agreements for a subject, and re-issuing them for
re-consent — the rules program staff meet when they write and send agreements."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.agreements import services
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    SubjectType,
    VersionState,
)
from portal.agreements.text import FIELDS, fill, sha256
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import ConflictError, PermissionDeniedError, ValidationError
from portal.core.models import utcnow
from portal.institutions.models import InstitutionState
from portal.proposals.models import ProposalState
from tests.factories import (
    AGREEMENT_BODIES,
    make_agreement,
    make_agreement_template,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.mail import outbox


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


@pytest.fixture
def officer(db: Session) -> User:
    return make_user(db, Role.PROGRAM_OFFICER)


def _create(db: Session, officer: User, **kw: object) -> AgreementTemplate:
    values: dict[str, object] = {
        "kind": AgreementKind.PARTNERSHIP,
        "title": "  Partnership agreement  ",
        "body": AGREEMENT_BODIES[AgreementKind.PARTNERSHIP],
        **kw,
    }
    return services.create_template(db, actor=officer, **values)  # type: ignore[arg-type]


def _in_future(days: int = 30) -> dt.date:
    return utcnow().date() + dt.timedelta(days=days)


# --- templates ---------------------------------------------------------------------------------


def test_a_new_template_starts_with_a_draft_first_version(db: Session, officer: User) -> None:
    template = _create(db, officer, description=" For partners. ")
    assert (template.title, template.description) == ("Partnership agreement", "For partners.")
    (draft,) = template.versions
    assert (draft.number, draft.state) == (1, VersionState.DRAFT)
    assert template.draft == draft and template.current is None
    assert db.scalar(
        select(AuditEvent.id).where(
            AuditEvent.action == "agreement_template.create", AuditEvent.object_id == template.id
        )
    )


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("", "Write the agreement's text"),
        ("   \n ", "Write the agreement's text"),
        ("{{ institution }} and {{ sponsor }} agree.", "Placeholders you can use: country"),
        # A placeholder of another kind is unknown here.
        ("{{ project }} is funded.", "'project' is undefined"),
        ("{{ institution ", "cannot be filled in"),
        # The sandbox refuses to reach into Python objects.
        ("{{ lab.__class__.__mro__ }}", "cannot be filled in"),
    ],
)
def test_a_template_text_must_be_written_with_known_placeholders(
    db: Session, officer: User, body: str, complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        _create(db, officer, body=body)
    template = _create(db, officer)
    with pytest.raises(ValidationError, match=complaint):
        services.save_draft(db, template, actor=officer, body=body)
    assert db.scalars(select(AgreementTemplate)).all() == [template]
    assert template.versions[0].body == AGREEMENT_BODIES[AgreementKind.PARTNERSHIP]


@pytest.mark.parametrize("kind", list(AgreementKind))
def test_every_placeholder_a_kind_offers_may_be_used(
    db: Session, officer: User, kind: AgreementKind
) -> None:
    body = " ".join(f"{{{{ {name} }}}}" for name in FIELDS[kind])
    template = _create(db, officer, kind=kind, body=body)
    assert template.versions[0].body == body


def test_only_program_staff_write_templates(db: Session, officer: User) -> None:
    template = _create(db, officer)
    for role in (Role.SIGNING_OFFICIAL, Role.RESEARCHER, Role.REVIEWER, Role.DATA_STEWARD):
        user = make_user(db, role)
        with pytest.raises(PermissionDeniedError, match="Only program staff"):
            _create(db, user)
        with pytest.raises(PermissionDeniedError):
            services.save_draft(db, template, actor=user, body="{{ institution }} agrees.")
        with pytest.raises(PermissionDeniedError):
            services.publish_version(db, template.versions[0], actor=user)
    assert _create(db, make_user(db, Role.ADMIN)).id


def test_drafts_are_numbered_after_the_last_version_and_one_at_a_time(
    db: Session, officer: User
) -> None:
    template = _create(db, officer)
    v1 = template.versions[0]
    assert services.save_draft(db, template, actor=officer, body="{{ lab }} v1").id == v1.id
    services.publish_version(db, v1, actor=officer)
    assert template.current == v1 and template.draft is None

    v2 = services.save_draft(db, template, actor=officer, body="{{ lab }} v2", change_note=" New ")
    assert (v2.number, v2.change_note, v2.state) == (2, "New", VersionState.DRAFT)
    # Saving again edits the same draft; there is never a second one.
    assert services.save_draft(db, template, actor=officer, body="{{ lab }} v2b").id == v2.id
    services.publish_version(db, v2, actor=officer)
    db.refresh(v1)
    assert (v1.state, v2.state) == (VersionState.SUPERSEDED, VersionState.PUBLISHED)
    assert template.current == v2

    v3 = services.save_draft(db, template, actor=officer, body="{{ lab }} v3")
    assert [v.number for v in template.versions] == [1, 2, 3] and v3.number == 3
    assert v2.body == "{{ lab }} v2b" and v2.text_sha256 == sha256("{{ lab }} v2b")


def test_the_database_keeps_one_draft_per_template(db: Session, officer: User) -> None:
    template = _create(db, officer)
    with pytest.raises(IntegrityError), db.begin_nested():
        db.execute(
            text(
                "INSERT INTO agreement_versions (template_id, number, body, change_note, state, "
                "created_at) VALUES (:t, 2, 'x', '', 'draft', CURRENT_TIMESTAMP)"
            ),
            {"t": template.id},
        )


def test_a_reconsent_date_must_be_in_the_future(db: Session, officer: User) -> None:
    template = _create(db, officer)
    for day in (utcnow().date(), utcnow().date() - dt.timedelta(days=3)):
        with pytest.raises(ValidationError, match="in the future"):
            services.save_draft(db, template, actor=officer, body="{{ lab }}", reconsent_by=day)
    draft = services.save_draft(
        db, template, actor=officer, body="{{ lab }}", reconsent_by=_in_future()
    )
    assert draft.reconsent_by == _in_future()


def test_a_draft_with_a_broken_text_is_not_published(db: Session, officer: User) -> None:
    # Written before the placeholders were checked (or by hand): publishing checks again.
    template = make_agreement_template(db, state=VersionState.DRAFT, body="{{ nonsense }}")
    with pytest.raises(ValidationError, match="Placeholders you can use"):
        services.publish_version(db, template.versions[0], actor=officer)
    db.refresh(template.versions[0])
    assert template.versions[0].state == VersionState.DRAFT


def test_at_most_one_template_of_a_kind_is_issued_automatically(db: Session, officer: User) -> None:
    first = _create(db, officer, auto_issue=True)
    contribution = _create(
        db,
        officer,
        kind=AgreementKind.CONTRIBUTION,
        body=AGREEMENT_BODIES[AgreementKind.CONTRIBUTION],
        auto_issue=True,
    )
    second = _create(db, officer, auto_issue=True)
    db.refresh(first)
    assert (first.auto_issue, second.auto_issue, contribution.auto_issue) == (False, True, True)

    services.update_template(
        db, first, actor=officer, title="Partnership (2027)", description="", auto_issue=True
    )
    db.refresh(second)
    assert (first.auto_issue, second.auto_issue, first.title) == (True, False, "Partnership (2027)")
    services.update_template(db, first, actor=officer, title="P", description="", auto_issue=False)
    autos = db.scalars(select(AgreementTemplate).where(AgreementTemplate.auto_issue.is_(True)))
    assert list(autos) == [contribution]


def test_the_database_refuses_two_automatic_templates_of_a_kind(db: Session) -> None:
    make_agreement_template(db, kind=AgreementKind.DATA_USE, auto_issue=True)
    with pytest.raises(IntegrityError), db.begin_nested():
        make_agreement_template(db, kind=AgreementKind.DATA_USE, auto_issue=True)


# --- issuing -----------------------------------------------------------------------------------


def test_issuing_freezes_the_filled_in_text_and_the_parties(db: Session, officer: User) -> None:
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW, name="Eastbrook University")
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    template = make_agreement_template(db, kind=AgreementKind.PARTNERSHIP, title="Partnership")
    agreement = services.issue(db, template, services.institution_subject(inst), actor=officer)

    version = template.versions[0]
    assert agreement.version_id == version.id and agreement.issued_by_id == officer.id
    assert agreement.title == "Partnership — Eastbrook University"
    assert (agreement.subject_type, agreement.subject_id, agreement.institution_id) == (
        SubjectType.INSTITUTION,
        inst.id,
        inst.id,
    )
    assert agreement.text.startswith("# Partnership\n\nEastbrook University (https://ror.org/")
    assert f"and ATOM Lab agree to work together, from {utcnow():%d %B %Y}." in agreement.text
    assert agreement.text_sha256 == sha256(agreement.text)
    assert [(s.position, s.role.value, s.on_behalf_of) for s in agreement.signatures] == [
        (1, "signing_official", "Eastbrook University"),
        (2, "program", "ATOM Lab"),
    ]
    (mail,) = outbox(db, "agreements/to_sign")
    assert mail.recipient_id == official.id
    assert mail.context["party"] == "Signing official for Eastbrook University"


def test_a_contribution_agreement_names_the_project_its_hours_and_its_pi(
    db: Session, officer: User
) -> None:
    proposal = make_proposal(db, state=ProposalState.ACTIVE, title="Open weights for all")
    pi = proposal.pi
    assert pi is not None
    template = make_agreement_template(db, kind=AgreementKind.CONTRIBUTION)
    agreement = services.issue(db, template, services.project_subject(proposal), actor=officer)
    (award,) = proposal.awards
    resource = award.call_resource.resource.name
    assert agreement.text == fill(
        AGREEMENT_BODIES[AgreementKind.CONTRIBUTION],
        {
            "pi": pi.display_name,
            "institution": proposal.institution.name,
            "outputs": "Model weights: Weights (Apache-2.0)",
            "project": "Open weights for all",
            "total_hours": "1,000",
            "hours": f"1,000 GPU-hours on {resource}",
        },
    )
    assert (agreement.proposal_id, agreement.institution_id) == (
        proposal.id,
        proposal.institution_id,
    )
    assert agreement.signatures[0].user_id == pi.id


def test_only_program_staff_issue(db: Session) -> None:
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    template = make_agreement_template(db)
    with pytest.raises(PermissionDeniedError):
        services.issue(db, template, services.institution_subject(inst), actor=official)
    assert db.scalars(select(Agreement)).all() == []


def test_a_template_without_a_published_version_cannot_be_issued(
    db: Session, officer: User
) -> None:
    template = make_agreement_template(db, state=VersionState.DRAFT)
    with pytest.raises(ValidationError, match="has no published version"):
        services.issue(
            db, template, services.institution_subject(make_institution(db)), actor=officer
        )


def test_an_agreement_is_issued_only_for_the_subject_its_kind_is_about(
    db: Session, officer: User
) -> None:
    proposal = make_proposal(db, state=ProposalState.ACTIVE)
    partnership = make_agreement_template(db, kind=AgreementKind.PARTNERSHIP)
    contribution = make_agreement_template(db, kind=AgreementKind.CONTRIBUTION)
    with pytest.raises(ValidationError, match="A partnership agreement is about a institution"):
        services.issue(db, partnership, services.project_subject(proposal), actor=officer)
    with pytest.raises(ValidationError, match="about a project"):
        services.issue(
            db, contribution, services.institution_subject(proposal.institution), actor=officer
        )
    assert db.scalars(select(Agreement)).all() == []


def test_a_subject_has_one_agreement_of_a_kind_being_signed_at_a_time(
    db: Session, officer: User
) -> None:
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW, name="Westmoor College")
    template = make_agreement_template(db)
    other_template = make_agreement_template(db)
    first = services.issue(db, template, services.institution_subject(inst), actor=officer)
    for t in (template, other_template):
        with pytest.raises(ConflictError, match="Westmoor College already has a partnership"):
            services.issue(db, t, services.institution_subject(inst), actor=officer)
    # Another institution, and another kind for the same institution's project, are unaffected.
    services.issue(db, template, services.institution_subject(make_institution(db)), actor=officer)
    proposal = make_proposal(db, state=ProposalState.ACTIVE, institution=inst)
    services.issue(
        db,
        make_agreement_template(db, kind=AgreementKind.CONTRIBUTION),
        services.project_subject(proposal),
        actor=officer,
    )
    # Once the first is withdrawn a corrected one may go out.
    services.withdraw(db, first, actor=officer, reason="Wrong template.")
    second = services.issue(db, other_template, services.institution_subject(inst), actor=officer)
    assert second.state == AgreementState.AWAITING


def test_the_database_refuses_a_second_open_agreement_for_a_subject(db: Session) -> None:
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW)
    make_agreement(db, institution=inst)
    with pytest.raises(IntegrityError), db.begin_nested():
        make_agreement(db, institution=inst)
    make_agreement(db, institution=inst, state=AgreementState.ACTIVE)


def test_standing_and_in_force(db: Session) -> None:
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW)

    def now() -> tuple[Agreement | None, Agreement | None]:
        key = (AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, inst.id)
        return services.standing(db, *key), services.in_force(db, *key)

    assert now() == (None, None)
    make_agreement(db, institution=inst, state=AgreementState.DECLINED)
    make_agreement(db, institution=inst, state=AgreementState.WITHDRAWN)
    assert now() == (None, None)
    active = make_agreement(db, institution=inst, state=AgreementState.ACTIVE)
    assert now() == (active, active)
    awaiting = make_agreement(db, institution=inst)
    assert now() == (awaiting, active)
    active.reconsent_by = utcnow().date()
    assert now() == (awaiting, active)  # the last day of grace still counts
    active.reconsent_by = utcnow().date() - dt.timedelta(days=1)
    assert now() == (awaiting, None)


# --- re-consent --------------------------------------------------------------------------------


def _sign_all(db: Session, agreement: Agreement, signers: list[User]) -> None:
    for slot, user in zip(agreement.signatures, signers, strict=True):
        services.sign(
            db,
            slot,
            actor=user,
            typed_name=user.display_name,
            confirmed=True,
            shown_sha256=agreement.text_sha256,
            ip=None,
            user_agent=None,
        )


def _reconsent(db: Session, template: AgreementTemplate, officer: User, body: str) -> None:
    draft = services.save_draft(
        db, template, actor=officer, body=body, change_note="New clause", reconsent_by=_in_future()
    )
    services.publish_version(db, draft, actor=officer)


def test_reissuing_for_reconsent_copies_the_parties_onto_the_new_text(
    db: Session, officer: User
) -> None:
    proposal = make_proposal(db, state=ProposalState.ACTIVE)
    pi = proposal.pi
    assert pi is not None
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)
    template = make_agreement_template(db, kind=AgreementKind.CONTRIBUTION)
    old = services.issue(db, template, services.project_subject(proposal), actor=officer)
    _sign_all(db, old, [pi, official, officer])
    other = make_agreement(db, kind=AgreementKind.CONTRIBUTION, state=AgreementState.ACTIVE)

    _reconsent(db, template, officer, "{{ pi }} releases {{ outputs }} and reports yearly.")

    new = db.scalars(select(Agreement).where(Agreement.replaces_id == old.id)).one()
    assert [(s.position, s.role, s.user_id, s.on_behalf_of) for s in new.signatures] == [
        (s.position, s.role, s.user_id, s.on_behalf_of) for s in old.signatures
    ]
    assert (
        new.text
        == f"{pi.display_name} releases Model weights: Weights (Apache-2.0) and reports yearly."
    )
    assert (new.kind, new.subject_type, new.subject_id, new.proposal_id) == (
        old.kind,
        old.subject_type,
        old.subject_id,
        old.proposal_id,
    )
    assert new.version == template.current and new.version.number == 2
    assert old.reconsent_by == _in_future() and other.reconsent_by is None
    (mail,) = outbox(db, "agreements/reconsent")
    assert mail.recipient_id == pi.id and mail.context["change_note"] == "New clause"
    # The signed agreement of another template is not asked again.
    assert db.scalars(select(Agreement).where(Agreement.replaces_id == other.id)).all() == []


def test_a_second_reconsent_replaces_the_one_still_being_signed(db: Session, officer: User) -> None:
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    template = make_agreement_template(db)
    old = services.issue(db, template, services.institution_subject(inst), actor=officer)
    _sign_all(db, old, [official, officer])

    _reconsent(db, template, officer, "{{ institution }} agrees (v2).")
    v2 = db.scalars(select(Agreement).where(Agreement.replaces_id == old.id)).one()
    _reconsent(db, template, officer, "{{ institution }} agrees (v3).")

    assert v2.state == AgreementState.WITHDRAWN
    v3 = services.open_agreement(db, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, inst.id)
    assert v3 is not None and v3.replaces_id == old.id and v3.text.endswith("(v3).")
    assert old.state == AgreementState.ACTIVE
    _sign_all(db, v3, [official, officer])
    assert old.state == AgreementState.SUPERSEDED


def test_reconsent_withdraws_an_agreement_of_the_subject_still_being_signed(
    db: Session, officer: User
) -> None:
    """Signed on v1, then a corrected issue still waiting: re-consent to v2 replaces that one, so
    the parties only ever sign the newest wording."""
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    template = make_agreement_template(db)
    old = services.issue(db, template, services.institution_subject(inst), actor=officer)
    _sign_all(db, old, [official, officer])
    waiting = make_agreement(db, institution=inst)  # another template of the kind, being signed

    _reconsent(db, template, officer, "{{ institution }} agrees (v2).")

    assert waiting.state == AgreementState.WITHDRAWN
    assert waiting.reason is not None and "version 2" in waiting.reason
    new = services.open_agreement(db, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, inst.id)
    assert new is not None and new.replaces_id == old.id
