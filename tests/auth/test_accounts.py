"""Accounts and affiliations from claims: linking and unlinking identities, verified versus
unverified e-mail, eduPersonScopedAffiliation, and a federation proxy's ``idp`` claim."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Identity, IdentityProvider, ProviderKind, Role, User
from portal.core.audit import AuditEvent
from portal.institutions.models import (
    Affiliation,
    AffiliationSource,
    AffiliationState,
    InstitutionState,
)
from tests.factories import make_institution
from tests.support.oidc import (
    add_provider,
    authorize_at_mock,
    logged_in_user_id,
    oidc_login,
    path_of,
    set_claims,
    start_login,
)


def _affiliations(db: Session, uid: int) -> list[Affiliation]:
    return list(db.scalars(select(Affiliation).where(Affiliation.user_id == uid)))


def test_unverified_email_is_never_used_for_affiliation(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    inst = make_institution(db, name="Unverified U")
    domain = inst.domains[0].domain
    add_provider(db, "idp-a", idp_a_url, served=[(inst, None)])
    set_claims(idp_a_url, "eve", {"email": f"eve@{domain}", "email_verified": False})
    oidc_login(client, "idp-a", idp_a_url, "eve")
    uid = logged_in_user_id(client)
    assert uid is not None
    assert _affiliations(db, uid) == []
    user = db.get(User, uid)
    assert user is not None and user.email == f"eve@{domain}" and user.email_verified is False
    assert not user.has_role(Role.RESEARCHER)


def test_email_verified_as_a_string_is_not_verified(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    inst = make_institution(db)
    add_provider(db, "idp-a", idp_a_url, served=[(inst, None)])
    set_claims(
        idp_a_url, "eve2", {"email": f"e@{inst.domains[0].domain}", "email_verified": "true"}
    )
    oidc_login(client, "idp-a", idp_a_url, "eve2")
    uid = logged_in_user_id(client)
    assert uid is not None and _affiliations(db, uid) == []


def test_verified_email_at_a_served_partner_gives_an_affiliation(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    inst = make_institution(db)
    add_provider(db, "idp-a", idp_a_url, served=[(inst, None)])
    set_claims(
        idp_a_url, "vera", {"email": f"vera@cs.{inst.domains[0].domain}", "email_verified": True}
    )
    oidc_login(client, "idp-a", idp_a_url, "vera")
    uid = logged_in_user_id(client)
    assert uid is not None
    (aff,) = _affiliations(db, uid)
    assert aff.institution_id == inst.id and aff.state == AffiliationState.ACTIVE
    assert aff.source == AffiliationSource.IDP_CLAIM
    user = db.get(User, uid)
    assert user is not None and user.has_role(Role.RESEARCHER, inst)
    ev = db.scalars(select(AuditEvent).where(AuditEvent.action == "affiliation.idp_claim")).one()
    assert ev.details["basis"] == "verified_email"


def test_provider_vouches_only_for_institutions_it_serves(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    """A verified address at another university proves nothing through this provider
    (CVE-2022-31027: a GitHub account with a university address got in through CILogon)."""
    mine, theirs = make_institution(db), make_institution(db)
    add_provider(db, "idp-a", idp_a_url, served=[(mine, None)])
    set_claims(idp_a_url, "gh", {"email": f"x@{theirs.domains[0].domain}", "email_verified": True})
    oidc_login(client, "idp-a", idp_a_url, "gh")
    uid = logged_in_user_id(client)
    assert uid is not None and _affiliations(db, uid) == []


def test_scoped_affiliation_gives_affiliation_and_title(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    inst = make_institution(db)
    add_provider(db, "idp-a", idp_a_url, served=[(inst, None)])
    set_claims(
        idp_a_url,
        "fac",
        {"eduPersonScopedAffiliation": [f"faculty@{inst.domains[0].domain}"], "name": "F"},
    )
    oidc_login(client, "idp-a", idp_a_url, "fac")
    uid = logged_in_user_id(client)
    assert uid is not None
    (aff,) = _affiliations(db, uid)
    assert aff.title == "faculty" and aff.state == AffiliationState.ACTIVE


def test_no_affiliation_at_an_institution_that_is_not_a_partner(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    inst = make_institution(db, state=InstitutionState.APPLIED)
    add_provider(db, "idp-a", idp_a_url, served=[(inst, None)])
    set_claims(idp_a_url, "app", {"email": f"a@{inst.domains[0].domain}", "email_verified": True})
    oidc_login(client, "idp-a", idp_a_url, "app")
    uid = logged_in_user_id(client)
    assert uid is not None and _affiliations(db, uid) == []


def test_idp_claims_settle_an_open_request(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    inst = make_institution(db)
    add_provider(db, "idp-a", idp_a_url, served=[(inst, None)])
    set_claims(idp_a_url, "req", {"email": "r@gmail.example", "email_verified": True})
    oidc_login(client, "idp-a", idp_a_url, "req")
    uid = logged_in_user_id(client)
    assert uid is not None
    client.post("/affiliations/request", data={"institution_id": inst.id, "title": "postdoc"})
    (aff,) = _affiliations(db, uid)
    assert aff.state == AffiliationState.REQUESTED
    client.post("/auth/logout")
    set_claims(idp_a_url, "req", {"email": f"r@{inst.domains[0].domain}", "email_verified": True})
    oidc_login(client, "idp-a", idp_a_url, "req")
    db.expire_all()
    (aff,) = _affiliations(db, uid)
    assert aff.state == AffiliationState.ACTIVE and aff.source == AffiliationSource.IDP_CLAIM
    assert aff.title == "postdoc"


def test_federation_proxy_maps_the_idp_claim_and_sends_idphint(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    north, south = make_institution(db, name="North"), make_institution(db, name="South")
    add_provider(
        db,
        "fed",
        idp_a_url,
        kind=ProviderKind.FEDERATION,
        served=[(north, "urn:mace:north"), (south, "https://idp.south.edu/idp/shibboleth")],
    )
    url = start_login(client, "fed", institution_id=south.id)
    assert parse_qs(urlsplit(url).query)["idphint"] == ["https://idp.south.edu/idp/shibboleth"]
    # The same issuer for every campus: the campus is the idp claim. Its e-mail is unverified.
    set_claims(
        idp_a_url,
        "s-user",
        {"idp": "https://idp.south.edu/idp/shibboleth", "email": "x@gmail.example"},
    )
    client.get(path_of(authorize_at_mock(url, "s-user")))
    uid = logged_in_user_id(client)
    assert uid is not None
    (aff,) = _affiliations(db, uid)
    assert aff.institution_id == south.id
    ident = db.scalars(select(Identity).where(Identity.user_id == uid)).one()
    assert ident.upstream_idp == "https://idp.south.edu/idp/shibboleth"
    # The last choice is remembered on the login page.
    client.post("/auth/logout")
    page = client.get("/auth/login").get_data(as_text=True)
    assert "Continue with South" in page


def test_federation_claim_of_an_unmapped_campus_gives_nothing(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    north = make_institution(db)
    add_provider(db, "fed", idp_a_url, kind=ProviderKind.FEDERATION, served=[(north, "urn:north")])
    set_claims(
        idp_a_url,
        "gh-user",
        {
            "idp": "http://github.com/login/oauth/authorize",
            "email": f"a@{north.domains[0].domain}",
            "email_verified": True,
        },
    )
    oidc_login(client, "fed", idp_a_url, "gh-user")
    uid = logged_in_user_id(client)
    assert uid is not None and _affiliations(db, uid) == []


# --- linking and unlinking ------------------------------------------------------------------------


def test_link_a_second_identity_then_unlink_one_but_never_the_last(
    client: FlaskClient,
    db: Session,
    provider_a: IdentityProvider,
    provider_b: IdentityProvider,
    idp_a_url: str,
    idp_b_url: str,
) -> None:
    oidc_login(client, "idp-a", idp_a_url, "linker")
    uid = logged_in_user_id(client)
    resp = client.post("/auth/link/idp-b")
    assert resp.status_code == 302
    back = client.get(path_of(authorize_at_mock(resp.headers["Location"], "linker-at-b")))
    assert back.status_code == 302 and back.headers["Location"] == "/auth/account"
    idents = db.scalars(select(Identity).where(Identity.user_id == uid).order_by(Identity.id)).all()
    assert [i.issuer for i in idents] == [idp_a_url, idp_b_url]
    # Either login now opens the same account.
    client.post("/auth/logout")
    oidc_login(client, "idp-b", idp_b_url, "linker-at-b")
    assert logged_in_user_id(client) == uid
    # Unlink one; the last one stays.
    assert client.post(f"/auth/identities/{idents[0].id}/unlink").status_code == 302
    resp = client.post(f"/auth/identities/{idents[1].id}/unlink")
    assert resp.status_code == 303
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Identity).where(Identity.user_id == uid)) == 1
    actions = set(db.scalars(select(AuditEvent.action)))
    assert {"identity.link", "identity.unlink"} <= actions


def test_linking_an_identity_that_belongs_to_someone_else_is_refused(
    client: FlaskClient,
    db: Session,
    provider_a: IdentityProvider,
    provider_b: IdentityProvider,
    idp_a_url: str,
    idp_b_url: str,
) -> None:
    other = client.application.test_client()
    oidc_login(other, "idp-b", idp_b_url, "taken")
    other_uid = logged_in_user_id(other)
    oidc_login(client, "idp-a", idp_a_url, "me")
    me = logged_in_user_id(client)
    resp = client.post("/auth/link/idp-b")
    back = client.get(path_of(authorize_at_mock(resp.headers["Location"], "taken")))
    assert back.status_code == 409
    owner = db.scalars(
        select(Identity.user_id).where(Identity.issuer == idp_b_url, Identity.subject == "taken")
    ).one()
    assert owner == other_uid != me


def test_nobody_unlinks_another_persons_identity(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    other = client.application.test_client()
    oidc_login(other, "idp-a", idp_a_url, "victim")
    victim_ident = db.scalars(select(Identity).where(Identity.subject == "victim")).one()
    oidc_login(client, "idp-a", idp_a_url, "attacker")
    assert client.post(f"/auth/identities/{victim_ident.id}/unlink").status_code == 403
    assert client.post("/auth/identities/999999/unlink").status_code == 404
    assert db.get(Identity, victim_ident.id) is not None
