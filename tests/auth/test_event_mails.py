"""The first events are wired: the mail is written in the same transaction as the change that
causes it (the outbox row exists exactly when the change committed)."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import IdentityProvider, Role
from portal.institutions.models import Affiliation, AffiliationState
from portal.notifications.models import OutboxMessage
from tests.factories import make_institution, make_user
from tests.support.app import login
from tests.support.oidc import oidc_login, set_claims


def _mails(db: Session, template: str) -> list[OutboxMessage]:
    db.expire_all()
    return list(db.scalars(select(OutboxMessage).where(OutboxMessage.template == template)))


def test_first_login_queues_one_welcome_mail(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    set_claims(
        idp_a_url,
        "wendy",
        {"name": "Wendy Welcome", "email": "wendy@example.org", "email_verified": True},
    )
    oidc_login(client, "idp-a", idp_a_url, "wendy")
    client.post("/auth/logout")
    oidc_login(client, "idp-a", idp_a_url, "wendy")
    mails = _mails(db, "auth/welcome")
    assert [m.to_addr for m in mails] == ["wendy@example.org"]


def test_affiliation_request_and_decision_mail_the_right_people(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst, email="off@uni.example")
    newcomer = make_user(db, email="new@elsewhere.example")
    login(client, newcomer)
    resp = client.post(
        "/affiliations/request", data={"institution_id": inst.id, "title": "postdoc"}
    )
    assert resp.status_code == 302
    assert [m.to_addr for m in _mails(db, "institutions/affiliation_requested")] == [
        "off@uni.example"
    ]
    assert _mails(db, "institutions/affiliation_decided") == []

    aff = db.scalars(select(Affiliation).where(Affiliation.user_id == newcomer.id)).one()
    login(client, official)
    resp = client.post(f"/affiliations/{aff.id}/decide", data={"decision": "approve", "note": ""})
    assert resp.status_code == 302
    db.refresh(aff)
    assert aff.state == AffiliationState.ACTIVE
    assert [m.to_addr for m in _mails(db, "institutions/affiliation_decided")] == [
        "new@elsewhere.example"
    ]


def test_a_refused_decision_queues_no_mail(client: FlaskClient, db: Session) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    newcomer = make_user(db)
    login(client, newcomer)
    client.post("/affiliations/request", data={"institution_id": inst.id})
    aff = db.scalars(select(Affiliation).where(Affiliation.user_id == newcomer.id)).one()
    login(client, official)
    # Rejection without a reason is refused: nothing changes, no mail.
    client.post(f"/affiliations/{aff.id}/decide", data={"decision": "reject", "note": ""})
    db.refresh(aff)
    assert aff.state == AffiliationState.REQUESTED
    assert _mails(db, "institutions/affiliation_decided") == []
