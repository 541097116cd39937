"""Vetted details and e-mail domains (security report, item 1): a signing official cannot rewrite
the vetted name, ROR id or country of their institution; a new e-mail domain is pending until a DNS
TXT record or program staff prove it; public webmail domains are refused; only proven domains
vouch for anyone."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.core.errors import ConflictError, PermissionDeniedError, ValidationError
from portal.institutions import domains, services
from portal.institutions.models import (
    DomainProof,
    DomainState,
    Institution,
    InstitutionDomain,
    InstitutionState,
    is_public_webmail,
)
from tests.factories import make_domain, make_institution, make_user


def _edit(db: Session, inst: Institution, actor: Any, **changes: Any) -> Institution:
    details: dict[str, Any] = {
        "name": inst.name,
        "country": inst.country,
        "ror_id": inst.ror_id,
        "short_name": inst.short_name,
        "website": inst.website,
        "domains": [d.domain for d in inst.all_domains],
    }
    return services.update_institution(db, inst, actor=actor, **{**details, **changes})


def _pending(db: Session, inst: Institution, domain: str) -> InstitutionDomain:
    claim = make_domain(domain, state=DomainState.PENDING)
    inst.all_domains.append(claim)
    db.flush()
    return claim


# --- Vetted details ------------------------------------------------------------------------------

VETTED = [
    {"name": "Massachusetts Institute of Technology"},
    {"ror_id": "https://ror.org/042nb2s44"},
    {"country": "GB"},
]


@pytest.mark.parametrize("state", [InstitutionState.UNDER_REVIEW, InstitutionState.PARTNER])
@pytest.mark.parametrize("change", VETTED, ids=lambda c: next(iter(c)))
def test_official_cannot_change_vetted_details_of_own_institution(
    db: Session, state: InstitutionState, change: dict[str, str]
) -> None:
    inst = make_institution(db, state=state, name="Northlake University")
    before = (inst.name, inst.ror_id, inst.country)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    with pytest.raises(PermissionDeniedError, match="only program staff change them"):
        _edit(db, inst, official, **change)
    db.expire_all()
    assert (inst.name, inst.ror_id, inst.country) == before


@pytest.mark.parametrize("change", VETTED, ids=lambda c: next(iter(c)))
def test_program_staff_change_vetted_details(db: Session, change: dict[str, str]) -> None:
    inst = make_institution(db, state=InstitutionState.PARTNER)
    _edit(db, inst, make_user(db, Role.PROGRAM_OFFICER), **change)
    key, value = next(iter(change.items()))
    assert getattr(inst, key) == value


def test_official_still_edits_short_name_and_website_of_a_partner(db: Session) -> None:
    inst = make_institution(db, state=InstitutionState.PARTNER)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    _edit(db, inst, official, short_name="NLU", website="https://nlu.example.edu")
    assert (inst.short_name, inst.website) == ("NLU", "https://nlu.example.edu")


def test_official_of_a_mere_applicant_may_still_correct_its_name(db: Session) -> None:
    inst = make_institution(db, state=InstitutionState.APPLIED, ror_id=None)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    _edit(db, inst, official, name="Northlake University (corrected)")
    assert inst.name == "Northlake University (corrected)"


# --- New domains are pending; webmail refused -----------------------------------------------------


def test_a_domain_an_official_adds_is_pending_and_vouches_for_nobody(db: Session) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    _edit(db, inst, official, domains=[inst.domains[0].domain, "mit.edu"])
    (claim,) = [d for d in inst.all_domains if d.domain == "mit.edu"]
    assert claim.state == DomainState.PENDING and claim.verified_at is None
    assert claim.txt_name == "_atom-portal.mit.edu"
    assert claim.txt_value == f"atom-portal-verification={claim.token}" and len(claim.token) >= 32
    assert "mit.edu" not in [d.domain for d in inst.domains]
    assert services.find_by_email_domain(db, "ada@mit.edu") is None
    assert services.find_by_email_domain(db, "ada@cs.mit.edu") is None
    added = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "institution.domain_add")
    ).one()
    assert added.details == {"domain": "mit.edu"} and added.actor_id == official.id


@pytest.mark.parametrize("webmail", ["gmail.com", "Outlook.com", "mail.yahoo.com", "qq.com"])
def test_public_webmail_domains_are_refused(db: Session, webmail: str) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    with pytest.raises(ValidationError, match=webmail.lower().replace(".", r"\.")):
        _edit(db, inst, official, domains=[webmail])
    with pytest.raises(ValidationError, match="public webmail"):
        services.register_institution(
            db, actor=make_user(db, Role.ADMIN), name="X", country="US", domains=[webmail]
        )


def test_the_webmail_list_is_the_shipped_one_and_spares_universities() -> None:
    assert is_public_webmail("gmail.com") and is_public_webmail("proton.me")
    assert not is_public_webmail("mit.edu") and not is_public_webmail("tu-rheinfeld.de")


def test_a_verified_domain_of_another_institution_is_refused(db: Session) -> None:
    owner = make_institution(db)
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    with pytest.raises(ConflictError, match="already belong to another institution"):
        _edit(db, inst, official, domains=[owner.domains[0].domain])


def test_a_domain_pending_elsewhere_is_refused_and_staff_can_remove_that_claim(
    db: Session,
) -> None:
    squatter = make_institution(db)
    claim = _pending(db, squatter, "realowner.edu")
    owner = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=owner)
    with pytest.raises(ConflictError, match=r"pending proof there: realowner\.edu"):
        _edit(db, owner, official, domains=["realowner.edu"])
    domains.remove_domain(db, claim, actor=make_user(db, Role.PROGRAM_OFFICER))
    _edit(db, owner, official, domains=["realowner.edu"])
    assert [d.domain for d in owner.all_domains] == ["realowner.edu"]


# --- Proof: DNS and staff --------------------------------------------------------------------------


def test_dns_record_with_the_right_token_verifies_the_domain(db: Session) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    claim = _pending(db, inst, "northlake-health.org")
    asked: list[str] = []

    def fake(name: str) -> list[str]:
        asked.append(name)
        return ["v=spf1 -all", claim.txt_value]

    domains.check_domain_dns(db, claim, actor=official, lookup=fake)
    assert asked == ["_atom-portal.northlake-health.org"]
    assert claim.state == DomainState.VERIFIED and claim.method == DomainProof.DNS
    assert claim.verified_at is not None and claim.verified_by_id is None
    assert services.find_by_email_domain(db, "a@northlake-health.org") == inst
    assert "northlake-health.org" in [d.domain for d in inst.domains]
    ev = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "institution_domain.verify_dns")
    ).one()
    assert ev.actor_id == official.id and ev.details["domain"] == "northlake-health.org"


@pytest.mark.parametrize(
    "records",
    [[], ["atom-portal-verification=wrong"], ["atom-portal-verification="]],
    ids=["none", "wrong token", "empty token"],
)
def test_dns_record_missing_or_with_a_wrong_token_changes_nothing(
    db: Session, records: list[str]
) -> None:
    inst = make_institution(db)
    claim = _pending(db, inst, "northlake-health.org")
    with pytest.raises(ValidationError, match="No TXT record"):
        domains.check_domain_dns(
            db, claim, actor=make_user(db, Role.ADMIN), lookup=lambda name: records
        )
    assert claim.state == DomainState.PENDING
    assert services.find_by_email_domain(db, "a@northlake-health.org") is None


def test_dns_out_of_reach_is_explained_and_changes_nothing(db: Session) -> None:
    inst = make_institution(db)
    claim = _pending(db, inst, "northlake-health.org")

    def down(name: str) -> list[str]:
        raise domains.DnsUnavailableError("no answer in time")

    with pytest.raises(ValidationError, match="DNS could not be checked"):
        domains.check_domain_dns(db, claim, actor=make_user(db, Role.ADMIN), lookup=down)
    assert claim.state == DomainState.PENDING


def _closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_dnspython_lookup_against_an_unreachable_nameserver_fails_cleanly(
    db: Session,
) -> None:
    lookup = domains.dns_txt_lookup([f"127.0.0.1:{_closed_udp_port()}"], timeout=1.0)
    with pytest.raises(domains.DnsUnavailableError):
        lookup("_atom-portal.example.edu")
    inst = make_institution(db)
    claim = _pending(db, inst, "northlake-health.org")
    with pytest.raises(ValidationError, match="DNS could not be checked"):
        domains.check_domain_dns(db, claim, actor=make_user(db, Role.ADMIN), lookup=lookup)
    assert claim.state == DomainState.PENDING


def test_program_officer_verifies_a_domain_and_officials_cannot(db: Session) -> None:
    inst = make_institution(db)
    claim = _pending(db, inst, "northlake-health.org")
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    with pytest.raises(PermissionDeniedError, match="Only program staff"):
        domains.verify_domain_by_staff(db, claim, actor=official)
    assert claim.state == DomainState.PENDING
    officer = make_user(db, Role.PROGRAM_OFFICER)
    domains.verify_domain_by_staff(db, claim, actor=officer)
    assert claim.state == DomainState.VERIFIED and claim.method == DomainProof.STAFF
    assert claim.verified_by_id == officer.id
    assert services.find_by_email_domain(db, "a@northlake-health.org") == inst


def test_officials_of_another_institution_cannot_check_or_remove_its_domains(
    db: Session,
) -> None:
    inst = make_institution(db)
    claim = _pending(db, inst, "northlake-health.org")
    stranger = make_user(db, Role.SIGNING_OFFICIAL)
    with pytest.raises(PermissionDeniedError):
        domains.check_domain_dns(db, claim, actor=stranger, lookup=lambda n: [claim.txt_value])
    with pytest.raises(PermissionDeniedError):
        domains.remove_domain(db, claim, actor=stranger)
    assert claim.state == DomainState.PENDING


def test_official_removes_a_domain_and_it_is_audited(db: Session) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    verified = inst.all_domains[0]
    name = verified.domain
    domains.remove_domain(db, verified, actor=official)
    assert inst.all_domains == [] and inst.domains == []
    assert services.find_by_email_domain(db, f"a@{name}") is None
    ev = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "institution.domain_remove")
    ).one()
    assert ev.details == {"domain": name, "state": "verified"} and ev.object_id == inst.id
