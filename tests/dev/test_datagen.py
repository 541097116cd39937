"""The benchmark generator (``flask demo generate``) writes in bulk, yet keeps the rules the
services keep: every generated partner has its partnership agreement in force, signed by its
signing official and countersigned by a program officer. Its institutions are real records of the
shipped ROR subset, never invented ROR ids or domains."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.agreements import services as agreements
from portal.agreements.models import AgreementKind, AgreementTemplate, SubjectType
from portal.auth.models import Identity, Role, RoleGrant, User
from portal.core.hooks import blockers
from portal.dev import datagen
from portal.dev.datagen import PERSONAS, AlreadyGeneratedError, Scale, generate
from portal.dev.demo import load
from portal.institutions.models import Institution, InstitutionState
from portal.institutions.ror import DATA_FILE, by_id

PARTNERS = (InstitutionState.PARTNER, InstitutionState.SUSPENDED)


def _tiny(**sizes: int) -> Scale:
    """One row of every kind but ``sizes``."""
    return replace(Scale.of(0), **sizes)


def _check_partners(db: Session, institutions: list[Institution]) -> list[User]:
    """Each partner's agreement is in force and well signed; returns who countersigned."""
    countersigners = []
    for institution in institutions:
        agreement = agreements.in_force(
            db, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, institution.id
        )
        assert agreement is not None, institution.name
        assert agreements.verify(agreement).ok
        official, program = agreement.signatures
        assert official.signed_by is not None and program.signed_by is not None
        assert official.signed_by.has_role(Role.SIGNING_OFFICIAL, institution)
        assert program.signed_by.has_role(Role.PROGRAM_OFFICER)
        assert blockers(db, "institution.join", institution) == []
        countersigners.append(program.signed_by)
    return countersigners


def test_generated_partners_have_a_signed_partnership_agreement(app: Flask, db: Session) -> None:
    with app.app_context():
        counts = generate(db, _tiny(institutions=12, users=40))
        generated = db.scalars(select(Institution)).all()
        partners = [i for i in generated if i.state in PARTNERS]
        assert partners and counts["partnership agreements"] == len(partners)
        _check_partners(db, partners)
        (template,) = db.scalars(
            select(AgreementTemplate).where(AgreementTemplate.kind == AgreementKind.PARTNERSHIP)
        ).all()
        assert template.auto_issue and template.current is not None


def test_without_officials_for_all_the_rest_are_applicants(app: Flask, db: Session) -> None:
    with app.app_context():
        generate(db, _tiny(institutions=10, users=4))
        institutions = db.scalars(select(Institution).order_by(Institution.id)).all()
        assert {i.state for i in institutions[4:]} == {InstitutionState.APPLIED}
        _check_partners(db, [i for i in institutions if i.state in PARTNERS])


def test_generated_on_top_of_the_demo_uses_its_template(
    app: Flask, db: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "ATTACHMENT_FOLDER", str(tmp_path / "attachments"))
    with app.app_context():
        load(db)
        first_new = max(db.scalars(select(Institution.id))) + 1
        generate(db, _tiny(institutions=8, users=20))
        new = db.scalars(select(Institution).where(Institution.id >= first_new)).all()
        _check_real(db, list(new))
        countersigners = _check_partners(db, [i for i in new if i.state in PARTNERS])
        officer = db.scalars(
            select(User).join(Identity).where(Identity.subject == PERSONAS["officer"])
        ).one()
        assert countersigners and {u.id for u in countersigners} == {officer.id}
        partnership = agreements.auto_template(db, AgreementKind.PARTNERSHIP)
        assert partnership is not None and partnership.current is not None
        assert len(db.scalars(select(AgreementTemplate)).all()) == 3  # the demo's, no new one


def _check_real(db: Session, institutions: list[Institution]) -> None:
    """Each institution is its ROR record (or, without a ROR id, has a ``.example`` domain);
    its people's addresses are at its domain, under the reserved ``.example``."""
    for institution in institutions:
        (domain,) = [d.domain for d in institution.all_domains]
        record = by_id(institution.ror_id)
        if institution.ror_id is None:
            assert domain.endswith(".example") and institution.state == InstitutionState.APPLIED
            continue
        assert record is not None, institution.ror_id
        assert (institution.name, institution.country, institution.website) == (
            record.name,
            record.country_code,
            record.website,
        )
        assert domain in record.domains
        if institution.state in PARTNERS:
            assert institution.partner_since is not None
        for grant in db.scalars(
            select(RoleGrant).where(RoleGrant.institution_id == institution.id)
        ):
            # At the institution's domain under .example: never a real mailbox.
            assert (grant.user.email or "").endswith(f"@{domain.removesuffix('.example')}.example")


def test_generated_institutions_are_real_ror_records(app: Flask, db: Session) -> None:
    with app.app_context():
        generate(db, _tiny(institutions=30, users=60))
        institutions = db.scalars(select(Institution)).all()
        assert len({i.ror_id for i in institutions}) == 30
        assert sum(1 for i in institutions if i.country != institutions[0].country)
        _check_real(db, list(institutions))


def test_beyond_the_subset_institutions_have_no_ror_id(
    app: Flask, db: Session, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With a subset of two records, the third institution is a made-up ``.example`` one."""
    subset = tmp_path / "ror.json"
    subset.write_text(
        json.dumps(json.loads(DATA_FILE.read_text(encoding="utf-8"))[:40]), encoding="utf-8"
    )
    monkeypatch.setattr(datagen, "DATA_FILE", subset)
    with_domain = sum(1 for r in json.loads(subset.read_text(encoding="utf-8")) if r["domains"])
    with app.app_context():
        generate(db, _tiny(institutions=with_domain + 2, users=4))
        institutions = db.scalars(select(Institution)).all()
        assert sum(1 for i in institutions if i.ror_id is None) >= 2
        _check_real(db, list(institutions))


def test_the_personas_hold_their_roles(app: Flask, db: Session) -> None:
    """The people a benchmark logs in as: the first institution's signing official, a PI there,
    a reviewer elsewhere, a program officer and a data steward."""
    with app.app_context():
        generate(db, _tiny(institutions=5, users=30))
        first = db.scalars(select(Institution).order_by(Institution.id)).first()
        assert first is not None and first.state == InstitutionState.PARTNER
        people = {
            name: db.scalars(select(User).join(Identity).where(Identity.subject == subject)).one()
            for name, subject in PERSONAS.items()
        }
        assert people["official"].has_role(Role.SIGNING_OFFICIAL, first)
        assert people["pi"].has_role(Role.RESEARCHER, first)
        assert people["reviewer"].has_role(Role.REVIEWER)
        assert not people["reviewer"].has_role(Role.RESEARCHER, first)
        assert people["officer"].has_role(Role.PROGRAM_OFFICER)
        assert people["steward"].has_role(Role.DATA_STEWARD)


def test_a_fraction_of_the_reference_scale_keeps_one_of_each() -> None:
    assert Scale.of(1) == Scale()
    assert Scale.of(0.01).proposals == 50 and Scale.of(0.01).usage_records == 20_000
    assert min(vars(Scale.of(0.0001)).values()) == 1


def test_a_second_run_on_the_same_database_is_refused(app: Flask, db: Session) -> None:
    with app.app_context():
        generate(db, _tiny(institutions=3, users=10))
        users = len(db.scalars(select(User.id)).all())
        with pytest.raises(AlreadyGeneratedError, match="already holds generated data"):
            generate(db, _tiny(institutions=3, users=10))
        assert len(db.scalars(select(User.id)).all()) == users
