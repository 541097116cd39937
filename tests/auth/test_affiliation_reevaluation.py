"""Affiliations from identity-provider claims are re-evaluated at every login: when the login no
longer carries the evidence (address moved or unverified, scoped affiliation gone, domain removed),
the affiliation and its researcher role end — through the workflow, audited, and the person told.
Affiliations an official approved or staff recorded are never ended by a login."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from portal.auth.models import Role, RoleGrant, User
from portal.core.audit import AuditEvent
from portal.institutions.models import (
    Affiliation,
    AffiliationSource,
    AffiliationState,
    Institution,
    InstitutionDomain,
)
from portal.notifications.models import OutboxMessage
from tests.factories import make_affiliation, make_institution
from tests.support.oidc import add_provider, logged_in_user_id, oidc_login, set_claims


def _login(client: FlaskClient, idp_url: str, sub: str, claims: dict[str, Any]) -> int:
    client.post("/auth/logout")
    set_claims(idp_url, sub, {"name": "Vera Vouched", **claims})
    oidc_login(client, "idp-a", idp_url, sub)
    uid = logged_in_user_id(client)
    assert uid is not None
    return uid


def _affiliations(db: Session, uid: int) -> list[Affiliation]:
    db.expire_all()
    return list(db.scalars(select(Affiliation).where(Affiliation.user_id == uid)))


def _researcher_at(db: Session, uid: int, inst: Institution) -> bool:
    user = db.get(User, uid)
    assert user is not None
    return user.has_role(Role.RESEARCHER, inst)


def _ended_mails(db: Session) -> list[OutboxMessage]:
    return list(
        db.scalars(
            select(OutboxMessage).where(OutboxMessage.template == "institutions/affiliation_ended")
        )
    )


def _verified(address: str) -> dict[str, Any]:
    return {"email": address, "email_verified": True}


@pytest.mark.parametrize(
    "gone",
    ["address moved", "address unverified", "scoped affiliation gone", "domain removed"],
)
def test_a_login_without_the_evidence_ends_the_affiliation_and_the_role(
    client: FlaskClient, db: Session, idp_a_url: str, gone: str
) -> None:
    inst = make_institution(db, name="Northlake University")
    domain = inst.domains[0].domain
    add_provider(db, "idp-a", idp_a_url, served=[(inst, None)])
    at_inst = _verified(f"vera@{domain}")
    first, later = {
        "address moved": (at_inst, _verified("vera@gmail.example")),
        "address unverified": (at_inst, {"email": f"vera@{domain}", "email_verified": False}),
        "scoped affiliation gone": (
            {**_verified("vera@gmail.example"), "eduPersonScopedAffiliation": [f"staff@{domain}"]},
            _verified("vera@gmail.example"),
        ),
        "domain removed": (at_inst, at_inst),
    }[gone]
    uid = _login(client, idp_a_url, f"vera-{gone[:6]}", first)
    (aff,) = _affiliations(db, uid)
    assert aff.state == AffiliationState.ACTIVE and aff.source == AffiliationSource.IDP_CLAIM
    assert _researcher_at(db, uid, inst)
    if gone == "domain removed":
        db.execute(delete(InstitutionDomain).where(InstitutionDomain.institution_id == inst.id))
        db.flush()

    _login(client, idp_a_url, f"vera-{gone[:6]}", later)
    (aff,) = _affiliations(db, uid)
    assert aff.state == AffiliationState.ENDED
    assert not _researcher_at(db, uid, inst)
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "affiliation.end")).one()
    assert event.actor_id == uid and event.details["provider"] == "idp-a"
    assert event.details["frm"] == "active" and event.details["to"] == "ended"
    reason = event.details["reason"]
    assert "Provider idp-a no longer vouches" in reason and "Northlake University" in reason
    assert aff.decision_note == reason
    (mail,) = _ended_mails(db)
    assert mail.recipient_id == uid and mail.context["reason"] == reason
    assert mail.context["institution_name"] == "Northlake University"


def test_a_login_that_still_carries_the_evidence_keeps_the_affiliation(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    inst = make_institution(db)
    add_provider(db, "idp-a", idp_a_url, served=[(inst, None)])
    claims = _verified(f"kept@{inst.domains[0].domain}")
    uid = _login(client, idp_a_url, "kept", claims)
    _login(client, idp_a_url, "kept", claims)
    (aff,) = _affiliations(db, uid)
    assert aff.state == AffiliationState.ACTIVE and _researcher_at(db, uid, inst)
    assert _ended_mails(db) == []


def test_affiliations_from_officials_or_staff_are_never_ended_by_a_login(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    approved, recorded = make_institution(db), make_institution(db)
    add_provider(db, "idp-a", idp_a_url, served=[(approved, None), (recorded, None)])
    uid = _login(client, idp_a_url, "olga", _verified("olga@gmail.example"))
    user = db.get(User, uid)
    for inst, source in (
        (approved, AffiliationSource.OFFICIAL_APPROVAL),
        (recorded, AffiliationSource.STAFF),
    ):
        make_affiliation(
            db, user=user, institution=inst, state=AffiliationState.ACTIVE, source=source
        )
        db.add(RoleGrant(user_id=uid, role=Role.RESEARCHER, institution_id=inst.id))
    db.flush()
    _login(client, idp_a_url, "olga", _verified("olga@gmail.example"))
    affs = _affiliations(db, uid)
    assert [a.state for a in affs] == [AffiliationState.ACTIVE, AffiliationState.ACTIVE]
    assert _researcher_at(db, uid, approved) and _researcher_at(db, uid, recorded)
    assert _ended_mails(db) == []


def test_a_provider_ends_nothing_at_institutions_it_does_not_serve(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    """Another institution's provider vouched for that affiliation; this one has no say there."""
    served, elsewhere = make_institution(db), make_institution(db)
    add_provider(db, "idp-a", idp_a_url, served=[(served, None)])
    uid = _login(client, idp_a_url, "nils", _verified("nils@gmail.example"))
    make_affiliation(
        db,
        user=db.get(User, uid),
        institution=elsewhere,
        state=AffiliationState.ACTIVE,
        source=AffiliationSource.IDP_CLAIM,
    )
    _login(client, idp_a_url, "nils", _verified("nils@gmail.example"))
    (aff,) = _affiliations(db, uid)
    assert aff.state == AffiliationState.ACTIVE
