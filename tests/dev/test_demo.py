"""The demo data ``make run`` loads: made through the real services, it shows every state of the
institution and agreement workflows, keeps every rule the gates keep, gives each demo signer
something to sign, is the same each time, and loads only once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from portal.agreements import services as agreements
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    PartyRole,
    Signature,
    SignatureState,
    SubjectType,
    TemplateVersion,
    VersionState,
)
from portal.agreements.permissions import signable_signatures, signers_of
from portal.auth.models import Identity, Role, User
from portal.core.hooks import blockers
from portal.core.models import utcnow
from portal.dev.demo import FORMER_PEOPLE, PEOPLE, load, load_if_empty
from portal.dev.demo_agreements import DEMO_IP
from portal.extensions import db as flask_db
from portal.institutions.models import Institution, InstitutionState
from portal.proposals.models import Proposal, ProposalState


@pytest.fixture
def attachments_in_tmp(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's proposal PDFs go to the test's own folder."""
    monkeypatch.setitem(app.config, "ATTACHMENT_FOLDER", str(tmp_path / "attachments"))


@pytest.fixture
def demo(app: Flask, db: Session, attachments_in_tmp: None) -> Iterator[Session]:
    """The demo loaded into the test's database (rolled back after the test)."""
    with app.app_context():
        load(db)
        yield db


def _person(db: Session, login: str) -> User:
    return db.scalars(select(User).join(Identity).where(Identity.subject == login)).one()


def _states(db: Session, column: InstrumentedAttribute[Any]) -> Counter[Any]:
    return Counter(dict(db.execute(select(column, func.count()).group_by(column)).all()))


def test_the_demo_shows_every_state_of_agreements_signatures_and_versions(demo: Session) -> None:
    assert set(_states(demo, Agreement.state)) == set(AgreementState)
    assert set(_states(demo, Signature.state)) == set(SignatureState)
    assert set(_states(demo, TemplateVersion.state)) == set(VersionState)
    assert set(_states(demo, Institution.state)) == set(InstitutionState)


def test_the_demo_is_the_same_each_time(demo: Session) -> None:
    """Deterministic: the same agreements, in the same states, on every load."""
    assert _states(demo, Agreement.state) == {
        AgreementState.AWAITING: 7,
        AgreementState.ACTIVE: 6,
        AgreementState.DECLINED: 1,
        AgreementState.WITHDRAWN: 1,
        AgreementState.SUPERSEDED: 1,
    }
    assert _states(demo, Agreement.kind) == {
        AgreementKind.PARTNERSHIP: 10,
        AgreementKind.CONTRIBUTION: 6,
    }
    assert _states(demo, TemplateVersion.state) == {
        VersionState.PUBLISHED: 3,
        VersionState.SUPERSEDED: 1,
        VersionState.DRAFT: 1,
    }


def test_templates_of_every_kind_with_versions_a_draft_and_a_reconsent(demo: Session) -> None:
    templates = {t.kind: t for t in demo.scalars(select(AgreementTemplate))}
    assert set(templates) == set(AgreementKind)
    assert all(t.current is not None for t in templates.values())
    assert {k for k, t in templates.items() if t.auto_issue} == {
        AgreementKind.PARTNERSHIP,
        AgreementKind.CONTRIBUTION,
    }
    partnership = templates[AgreementKind.PARTNERSHIP]
    assert [(v.number, v.state) for v in partnership.versions] == [
        (1, VersionState.SUPERSEDED),
        (2, VersionState.PUBLISHED),
    ]
    current = partnership.current
    assert current is not None and current.change_note
    assert current.reconsent_by is not None and current.reconsent_by > utcnow().date()
    draft = templates[AgreementKind.CONTRIBUTION].draft
    assert draft is not None and draft.number == 2 and draft.change_note


def test_partners_have_a_signed_partnership_agreement_in_force(demo: Session) -> None:
    """Signed by the institution's signing official, countersigned by a program officer, bound to
    the text by its hash; a partner (or suspended partner) can be approved (or reinstated)."""
    partners = demo.scalars(
        select(Institution).where(
            Institution.state.in_((InstitutionState.PARTNER, InstitutionState.SUSPENDED))
        )
    ).all()
    assert len(partners) == 4
    for institution in partners:
        agreement = agreements.in_force(
            demo, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, institution.id
        )
        assert agreement is not None, institution.name
        official, program = agreement.signatures
        assert official.signed_by is not None and program.signed_by is not None
        assert official.signed_by.has_role(Role.SIGNING_OFFICIAL, institution)
        assert program.signed_by.has_role(Role.PROGRAM_OFFICER)
        assert official.typed_name == official.signed_by.display_name
        assert {official.ip, program.ip} == {DEMO_IP}
        assert blockers(demo, "institution.approve", institution) == []
    for agreement in demo.scalars(select(Agreement)):
        assert agreements.verify(agreement).ok, agreement.title


def test_signed_partnerships_wait_for_re_consent_to_the_new_version(demo: Session) -> None:
    """Signed on version 1, they count until the re-consent date while version 2 is signed; Kyoto
    has signed it (its first agreement is superseded)."""
    reissued = demo.scalars(select(Agreement).where(Agreement.replaces_id.is_not(None))).all()
    assert len(reissued) == 4
    states = Counter(a.state for a in reissued)
    assert states == {AgreementState.AWAITING: 3, AgreementState.ACTIVE: 1}
    for agreement in reissued:
        old = agreement.replaces
        assert old is not None and old.reconsent_by is not None
        expected = (
            AgreementState.SUPERSEDED
            if agreement.state == AgreementState.ACTIVE
            else AgreementState.ACTIVE
        )
        assert old.state == expected


def test_an_institution_under_review_waits_on_its_signing_official(demo: Session) -> None:
    reviewed = demo.scalars(
        select(Institution).where(Institution.state == InstitutionState.UNDER_REVIEW)
    ).all()
    assert reviewed
    for institution in reviewed:
        agreement = agreements.standing(
            demo, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, institution.id
        )
        assert agreement is not None and agreement.state == AgreementState.AWAITING
        (turn,) = agreement.next_signatures
        assert turn.role == PartyRole.SIGNING_OFFICIAL
        assert demo.scalars(signers_of(turn)).all()
        (blocker,) = blockers(demo, "institution.approve", institution)
        assert "Signing official" in blocker.message


def test_every_active_project_has_its_contribution_agreement(demo: Session) -> None:
    """Issued when the project was approved; the fully signed ones make its hours usable, the
    others say whom they wait on."""
    usable, waiting = [], Counter[PartyRole]()
    for project in demo.scalars(select(Proposal).where(Proposal.state == ProposalState.ACTIVE)):
        agreement = agreements.standing(
            demo, AgreementKind.CONTRIBUTION, SubjectType.PROJECT, project.id
        )
        assert agreement is not None, project.title
        if agreement.state == AgreementState.ACTIVE:
            assert blockers(demo, "proposal.use_compute", project) == []
            usable.append(project.title)
        else:
            (turn,) = agreement.next_signatures
            waiting[turn.role] += 1
            assert blockers(demo, "proposal.use_compute", project)
    assert len(usable) == 2
    assert set(waiting) == {PartyRole.PI, PartyRole.SIGNING_OFFICIAL, PartyRole.PROGRAM}
    declined = demo.scalars(select(Agreement).where(Agreement.state == AgreementState.DECLINED))
    assert all(a.reason for a in declined)
    withdrawn = demo.scalars(select(Agreement).where(Agreement.state == AgreementState.WITHDRAWN))
    assert all(a.reason for a in withdrawn)


@pytest.mark.parametrize(
    ("login", "role"),
    [
        ("professor", PartyRole.PI),
        ("official", PartyRole.SIGNING_OFFICIAL),
        ("officer", PartyRole.PROGRAM),
        ("tum-official", PartyRole.SIGNING_OFFICIAL),
        ("savanna-official", PartyRole.SIGNING_OFFICIAL),
    ],
)
def test_each_demo_signer_has_an_agreement_to_sign(
    demo: Session, login: str, role: PartyRole
) -> None:
    mine = demo.scalars(signable_signatures(_person(demo, login))).all()
    assert role in {s.role for s in mine}


def test_every_signing_official_login_signed_or_has_something_to_sign(demo: Session) -> None:
    for p in PEOPLE:
        if not any(role == Role.SIGNING_OFFICIAL for role, _ in p.roles):
            continue
        user = _person(demo, p.sub)
        signed = demo.scalar(select(func.count()).where(Signature.signed_by_id == user.id))
        assert signed or demo.scalars(signable_signatures(user)).all(), p.sub


def test_a_former_signing_official_is_disabled_and_asked_for_nothing(demo: Session) -> None:
    for former, _ in FORMER_PEOPLE:
        user = _person(demo, former.sub)
        assert user.is_disabled
        assert demo.scalar(select(func.count()).where(Signature.signed_by_id == user.id))
        assert demo.scalars(signable_signatures(user)).all() == []


def test_loading_twice_loads_once(app: Flask, db: Session, attachments_in_tmp: None) -> None:
    """``make run`` loads the demo on first start only (its database already has institutions)."""
    with app.app_context():
        first = load_if_empty()
        again = load_if_empty()
        assert first is not None and first["agreements"] == 16
        assert again is None
        assert flask_db.session.scalar(select(func.count()).select_from(Agreement)) == 16
