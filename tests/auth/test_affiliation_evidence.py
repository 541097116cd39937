"""What signing officials see about a requester's address: an address a provider "verified" means
something only where that provider has authority. The requests list says which provider vouched
for each address and whether that provider serves the institution."""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Identity, IdentityProvider, Role, User
from portal.institutions import services
from portal.institutions.models import Institution
from tests.factories import make_affiliation, make_institution, make_user
from tests.support.app import login
from tests.support.oidc import add_provider, logged_in_user_id, oidc_login, set_claims


def _person_via(
    client: FlaskClient, db: Session, slug: str, idp_url: str, sub: str, claims: dict[str, object]
) -> User:
    client.post("/auth/logout")
    set_claims(idp_url, sub, {"name": sub.title(), **claims})
    oidc_login(client, slug, idp_url, sub)
    uid = logged_in_user_id(client)
    user = db.get(User, uid) if uid else None
    assert user is not None
    client.post("/auth/logout")
    return user


def _row(page: str, name: str) -> str:
    """The list item of ``name``'s request on the page, as plain text."""
    match = re.search(
        rf"<li class=\"list-group-item px-0\">(?:(?!</li>).)*?{name}.*?</li>", page, re.S
    )
    assert match is not None, f"no request by {name} on the page"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(0)).split())


def test_officials_see_who_vouched_for_each_address_and_whether_it_serves_them(
    app: Flask, client: FlaskClient, db: Session, idp_a_url: str, idp_b_url: str
) -> None:
    north = make_institution(db, name="Northlake University")
    south = make_institution(db, name="Southbay College")
    domain = north.domains[0].domain
    add_provider(db, "idp-a", idp_a_url, served=[(north, None)])
    # A provider of another institution that lets its users claim any address, "verified".
    add_provider(db, "idp-b", idp_b_url, served=[(south, None)])
    genuine = _person_via(
        client,
        db,
        "idp-a",
        idp_a_url,
        "gina",
        {"email": "gina@gmail.example", "email_verified": True},
    )
    borrowed = _person_via(
        client,
        db,
        "idp-b",
        idp_b_url,
        "boris",
        {"email": f"boris@{domain}", "email_verified": True},
    )
    typed = _person_via(
        client, db, "idp-a", idp_a_url, "tess", {"email": f"tess@{domain}", "email_verified": False}
    )
    with app.app_context():
        for person in (genuine, borrowed, typed):
            services.request_affiliation(db, north, actor=person)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=north)
    login(client, official)
    page = client.get("/affiliations/").get_data(as_text=True)

    gina = _row(page, "Gina")
    assert "gina@gmail.example" in gina and "verified by Provider idp-a" in gina
    assert "Provider idp-a serves Northlake University" in gina
    assert "does not serve" not in gina and "not verified" not in gina

    boris = _row(page, "Boris")
    assert f"boris@{domain}" in boris and "verified by Provider idp-b" in boris
    assert "vouched for by a provider that does not serve Northlake University" in boris

    tess = _row(page, "Tess")
    assert f"tess@{domain}" in tess and "address not verified" in tess
    assert "verified by" not in tess


def _request_vouched_by(db: Session, inst: Institution, provider: IdentityProvider) -> None:
    person = make_user(db, issuer=provider.issuer)
    person.identities[0].email_verified = True
    make_affiliation(db, user=person, institution=inst)


def test_the_requests_list_loads_identities_without_a_query_per_person(
    client: FlaskClient,
    db: Session,
    idp_a_url: str,
    count_queries: Callable[[Callable[[], object]], int],
) -> None:
    inst = make_institution(db)
    provider = add_provider(db, "idp-a", idp_a_url, served=[(inst, None)])
    login(client, make_user(db, Role.SIGNING_OFFICIAL, institution=inst))
    for _ in range(2):
        _request_vouched_by(db, inst, provider)
    db.flush()
    few = count_queries(lambda: client.get("/affiliations/"))
    for _ in range(8):
        _request_vouched_by(db, inst, provider)
    db.flush()
    page = client.get("/affiliations/").get_data(as_text=True)
    assert page.count("Provider idp-a serves") == 10
    assert count_queries(lambda: client.get("/affiliations/")) == few
    assert db.scalar(select(Identity.id).where(Identity.issuer == provider.issuer).limit(1))
