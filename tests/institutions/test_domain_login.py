"""A claimed e-mail domain affiliates people at login only once it is proven — through a real
OpenID provider (oidc-provider-mock over HTTP), the way the security report's attack went."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth import oidc
from portal.auth.models import Role
from portal.institutions import domains, services
from portal.institutions.models import Affiliation, AffiliationState, DomainState
from tests.factories import make_institution, make_user
from tests.support.oidc import add_provider, logged_in_user_id, mock_idp_process, oidc_login
from tests.support.oidc import set_claims as set_idp_claims


@pytest.fixture(scope="module")
def idp_url() -> Iterator[str]:
    with mock_idp_process() as url:
        yield url


@pytest.fixture(autouse=True)
def _client_secret(app: Flask) -> Iterator[None]:
    oidc.clear_metadata_cache()
    before = app.config["OIDC_CLIENT_SECRETS"]
    app.config["OIDC_CLIENT_SECRETS"] = {"idp-dom": "secret-dom"}
    yield
    app.config["OIDC_CLIENT_SECRETS"] = before
    oidc.clear_metadata_cache()


def _affiliations(db: Session, uid: int) -> list[Affiliation]:
    db.expire_all()
    return list(db.scalars(select(Affiliation).where(Affiliation.user_id == uid)))


def test_a_pending_domain_affiliates_nobody_until_staff_verify_it(
    client: FlaskClient, db: Session, idp_url: str
) -> None:
    north = make_institution(db, name="Northlake University")
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=north)
    add_provider(db, "idp-dom", idp_url, served=[(north, None)])
    # The official claims a domain nobody has proven belongs to Northlake.
    services.update_institution(
        db,
        north,
        actor=official,
        name=north.name,
        country=north.country,
        ror_id=north.ror_id,
        short_name=None,
        website=None,
        domains=[north.domains[0].domain, "claimed.example.edu"],
    )
    (claim,) = [d for d in north.all_domains if d.domain == "claimed.example.edu"]
    assert claim.state == DomainState.PENDING

    set_idp_claims(idp_url, "pat", {"email": "pat@claimed.example.edu", "email_verified": True})
    oidc_login(client, "idp-dom", idp_url, "pat")
    uid = logged_in_user_id(client)
    assert uid is not None
    assert _affiliations(db, uid) == []
    # A request to join is left for the official to decide, not settled by the pending domain.
    client.post("/affiliations/request", data={"institution_id": north.id, "title": "postdoc"})
    client.post("/auth/logout")
    oidc_login(client, "idp-dom", idp_url, "pat")
    (aff,) = _affiliations(db, uid)
    assert aff.state == AffiliationState.REQUESTED and aff.decided_at is None

    domains.verify_domain_by_staff(db, claim, actor=make_user(db, Role.PROGRAM_OFFICER))
    client.post("/auth/logout")
    oidc_login(client, "idp-dom", idp_url, "pat")
    (aff,) = _affiliations(db, uid)
    assert aff.state == AffiliationState.ACTIVE and aff.institution_id == north.id
