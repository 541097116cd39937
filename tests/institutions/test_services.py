from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.errors import ConflictError, PermissionDeniedError, ValidationError
from portal.institutions import services
from portal.institutions.models import DomainState, InstitutionState
from tests.factories import make_institution, make_user


def test_program_officer_registers_an_institution_that_starts_as_applied(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    inst = services.register_institution(
        db,
        actor=officer,
        name=" Example University ",
        country="us",
        ror_id="042nb2s44",
        domains=["@Example.EDU", "example.edu", "cs.example.edu"],
    )
    assert inst.state == InstitutionState.APPLIED
    assert inst.name == "Example University" and inst.country == "US"
    assert inst.ror_id == "https://ror.org/042nb2s44"
    assert sorted(d.domain for d in inst.all_domains) == ["cs.example.edu", "example.edu"]
    # Nobody has proven them yet: they vouch for nobody.
    assert {d.state for d in inst.all_domains} == {DomainState.PENDING}
    assert inst.domains == []


def test_researcher_cannot_register_institutions(db: Session) -> None:
    with pytest.raises(PermissionDeniedError):
        services.register_institution(
            db, actor=make_user(db, Role.RESEARCHER), name="X", country="US"
        )


@pytest.mark.parametrize("ror", ["042nb2s45", "https://ror.org/not-an-id", "1234"])
def test_mistyped_ror_ids_are_refused(db: Session, ror: str) -> None:
    with pytest.raises(ValidationError, match="not a ROR id"):
        services.register_institution(
            db, actor=make_user(db, Role.ADMIN), name="X", country="US", ror_id=ror
        )


def test_a_domain_belongs_to_one_institution_only(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    services.register_institution(db, actor=officer, name="A", country="US", domains=["a.edu"])
    with pytest.raises(ConflictError, match=r"a\.edu"):
        services.register_institution(db, actor=officer, name="B", country="US", domains=["a.edu"])


def test_invalid_domain_is_named_in_the_error(db: Session) -> None:
    with pytest.raises(ValidationError, match="not an e-mail domain"):
        services.register_institution(
            db, actor=make_user(db, Role.ADMIN), name="A", country="US", domains=["no spaces.edu"]
        )


def test_approval_needs_a_ror_id(db: Session) -> None:
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW, ror_id=None)
    with pytest.raises(ValidationError, match="ROR"):
        services.transition(db, inst, "approve", actor=make_user(db, Role.PROGRAM_OFFICER))
    assert inst.state == InstitutionState.UNDER_REVIEW


def test_suspension_needs_a_reason(db: Session) -> None:
    inst = make_institution(db)
    with pytest.raises(ValidationError, match="reason"):
        services.transition(
            db, inst, "suspend", actor=make_user(db, Role.PROGRAM_OFFICER), reason=" "
        )
    assert inst.state == InstitutionState.PARTNER


def test_signing_official_may_withdraw_own_institution_but_not_approve_it(
    app: Flask, db: Session
) -> None:
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    with pytest.raises(PermissionDeniedError):
        services.transition(db, inst, "approve", actor=official)
    with app.app_context():  # withdrawing mails the institution's officials, with links
        services.transition(db, inst, "withdraw", actor=official, reason="we merged")
    assert inst.state == InstitutionState.WITHDRAWN


def test_signing_official_cannot_touch_another_institution(db: Session) -> None:
    official = make_user(db, Role.SIGNING_OFFICIAL)
    other = make_institution(db)
    with pytest.raises(PermissionDeniedError):
        services.transition(db, other, "withdraw", actor=official, reason="x")


def test_partner_keeps_its_ror_id(db: Session) -> None:
    inst = make_institution(db)
    with pytest.raises(ValidationError, match="keep a ROR id"):
        services.update_institution(
            db,
            inst,
            actor=make_user(db, Role.ADMIN),
            name=inst.name,
            country="US",
            ror_id="",
            short_name=None,
            website=None,
            domains=[],
        )


def test_institution_found_by_email_domain_including_subdomains(db: Session) -> None:
    inst = make_institution(db)
    domain = inst.domains[0].domain
    assert services.find_by_email_domain(db, f"ada@{domain}") == inst
    assert services.find_by_email_domain(db, f"ada@cs.{domain}") == inst
    assert services.find_by_email_domain(db, "ada@elsewhere.org") is None
