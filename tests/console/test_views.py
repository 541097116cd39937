"""The console by every role: each page and action of one's own institution and of another
(IDOR: a signing official of A gets 403 or 404 on every route of B, and on B's objects through A's
routes), bad input (a clear reason, nothing changed), CSRF, and what the pages offer to whom."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import ProviderInstitution, ProviderKind, Role, RoleGrant, User
from portal.core.audit import AuditEvent
from portal.institutions.models import Affiliation, AffiliationState, DomainState
from tests.console.factories import make_mapping, make_provider
from tests.factories import (
    ROLE_NAMES,
    make_actor,
    make_affiliation,
    make_domain,
    make_institution,
    make_user,
)
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}
#: Who opens the console of the actor's own institution (officials there) and of any (staff).
OWN = STAFF | {"official"}
#: Who changes the login mapping of the actor's own institution (officials) and of any (admins).
MAPPERS = {"official", "admin"}

#: A verified domain of the official's institution: entity ids are published under it.
OWN_DOMAIN = "example.edu"
ENTITY = "https://idp.own.example.edu/idp/shibboleth"
URN = "urn:mace:incommon:own.example.edu"

# Placeholders: {own} the actor's institution (where researchers and officials hold their role;
# it has another signing official besides), {other} another partner institution with an official
# of its own; {own_request}/{other_request} a request to join each; {own_map}/{other_map} each
# one's mapping on a federation login; {free} another enabled federation login serving neither.
CASES = [
    case("choose", "GET", "/console/", OWN, statuses={"official": 302}),
    case("choose, searched", "GET", "/console/?q=Univ&state=partner&page=2", OWN),
    case("own console", "GET", "/console/{own}", OWN),
    case("another institution's console (IDOR)", "GET", "/console/{other}", STAFF),
    case("a console that does not exist", "GET", "/console/2147483647", set()),
    case("own requests", "GET", "/console/{own}/requests", OWN),
    case("own requests, searched", "GET", "/console/{own}/requests?q=per&sort=newest", OWN),
    case("another's requests (IDOR)", "GET", "/console/{other}/requests", STAFF),
    case("own members", "GET", "/console/{own}/members", OWN),
    case("own members, searched", "GET", "/console/{own}/members?q=per&sort=newest", OWN),
    case("own members as CSV", "GET", "/console/{own}/members?format=csv", OWN),
    case("another's members (IDOR)", "GET", "/console/{other}/members", STAFF),
    case("another's members as CSV (IDOR)", "GET", "/console/{other}/members?format=csv", STAFF),
    case("own endorsements", "GET", "/console/{own}/endorsements", OWN),
    case("another's endorsements (IDOR)", "GET", "/console/{other}/endorsements", STAFF),
    case("own agreements", "GET", "/console/{own}/agreements", OWN),
    case("another's agreements (IDOR)", "GET", "/console/{other}/agreements", STAFF),
    case("own projects", "GET", "/console/{own}/projects", OWN),
    case("own projects, searched", "GET", "/console/{own}/projects?q=x&sort=newest", OWN),
    case("own projects as CSV", "GET", "/console/{own}/projects?format=csv", OWN),
    case("another's projects (IDOR)", "GET", "/console/{other}/projects", STAFF),
    case("another's projects as CSV (IDOR)", "GET", "/console/{other}/projects?format=csv", STAFF),
    case("own logins", "GET", "/console/{own}/logins", OWN),
    case("another's logins (IDOR)", "GET", "/console/{other}/logins", STAFF),
    case(
        "map own institution to a federation login",
        "POST",
        "/console/{own}/logins",
        MAPPERS,
        302,
        {"provider_id": "{free}", "entity_id": ENTITY},
    ),
    case(
        "map another institution (IDOR)",
        "POST",
        "/console/{other}/logins",
        {"admin"},
        302,
        {"provider_id": "{free}", "entity_id": ENTITY},
    ),
    case("own mapping (page)", "GET", "/console/{own}/logins/{own_map}", MAPPERS),
    case(
        "change own entity id",
        "POST",
        "/console/{own}/logins/{own_map}",
        MAPPERS,
        302,
        {"entity_id": URN},
    ),
    case(
        "another's mapping through own console (IDOR)",
        "POST",
        "/console/{own}/logins/{other_map}",
        set(),
        data={"entity_id": URN},
    ),
    case(
        "another's mapping (IDOR)",
        "POST",
        "/console/{other}/logins/{other_map}",
        {"admin"},
        302,
        {"entity_id": URN},
    ),
    case("a mapping that does not exist", "GET", "/console/{own}/logins/2147483647", set()),
    case(
        "approve a request to join",
        "POST",
        "/console/{own}/requests/{own_request}/decide",
        {"official"},
        302,
        {"decision": "approve"},
    ),
    case(
        "reject a request to join",
        "POST",
        "/console/{own}/requests/{own_request}/decide",
        {"official"},
        302,
        {"decision": "reject", "note": "Not at this institution."},
    ),
    case(
        "decide another's request through own console (IDOR)",
        "POST",
        "/console/{own}/requests/{other_request}/decide",
        set(),
        data={"decision": "approve"},
    ),
    case(
        "decide another's request (IDOR)",
        "POST",
        "/console/{other}/requests/{other_request}/decide",
        set(),
        data={"decision": "approve"},
    ),
]


def _snapshot(db: Session) -> list[object]:
    affiliations = [
        (a.id, a.state, a.decision_note)
        for a in db.scalars(select(Affiliation).order_by(Affiliation.id))
    ]
    mappings = [
        (m.id, m.provider_id, m.institution_id, m.entity_id)
        for m in db.scalars(select(ProviderInstitution).order_by(ProviderInstitution.id))
    ]
    return [affiliations, mappings]


def _world(db: Session, role: str) -> tuple[User | None, dict[str, Any]]:
    own = make_institution(db)
    own.all_domains.append(make_domain(OWN_DOMAIN))
    other = make_institution(db)
    actor = make_actor(db, role, own)
    make_user(db, Role.SIGNING_OFFICIAL, institution=own)
    make_user(db, Role.SIGNING_OFFICIAL, institution=other)
    federation = make_provider(db)
    free = make_provider(db)
    return actor, {
        "own": own.id,
        "other": other.id,
        "own_request": make_affiliation(db, institution=own).id,
        "other_request": make_affiliation(db, institution=other).id,
        "own_map": make_mapping(db, federation, own).id,
        "other_map": make_mapping(db, federation, other).id,
        "free": free.id,
    }


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(
    app: Flask, client: FlaskClient, db: Session, role: str, case: Case
) -> None:
    actor, values = _world(db, role)
    if actor is not None:
        login(client, actor)
    resp = check_route(
        client, db, role, actor.id if actor else None, case, values, lambda: _snapshot(db)
    )
    if role in case.allowed and "format=csv" in case.path:
        assert resp.mimetype == "text/csv"


# --- helpers -------------------------------------------------------------------------------------


def _page(client: FlaskClient, url: str) -> str:
    resp = client.get(url)
    assert resp.status_code == 200, (url, resp.status_code)
    return resp.get_data(as_text=True)


# --- choosing a console --------------------------------------------------------------------------


def test_an_official_of_two_institutions_chooses_between_them_and_sees_no_other(
    client: FlaskClient, db: Session
) -> None:
    first = make_institution(db, name="First University")
    second = make_institution(db, name="Second University")
    make_institution(db, name="Unrelated College")
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=first)
    db.add(RoleGrant(user_id=official.id, role=Role.SIGNING_OFFICIAL, institution_id=second.id))
    db.flush()
    login(client, official)
    body = _page(client, "/console/")
    assert "First University" in body and "Second University" in body
    assert "Unrelated College" not in body


def test_staff_choose_among_every_institution(client: FlaskClient, db: Session) -> None:
    make_institution(db, name="First University")
    make_institution(db, name="Unrelated College")
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    body = _page(client, "/console/")
    assert "First University" in body and "Unrelated College" in body


def test_the_console_is_in_the_navigation_of_officials_and_staff_only(
    client: FlaskClient, db: Session
) -> None:
    for role, shown in [
        (Role.SIGNING_OFFICIAL, True),
        (Role.PROGRAM_OFFICER, True),
        (Role.ADMIN, True),
        (Role.RESEARCHER, False),
        (Role.REVIEWER, False),
        (Role.DATA_STEWARD, False),
    ]:
        login(client, make_user(db, role))
        assert ('href="/console/"' in _page(client, "/dashboard")) == shown, role


# --- requests to join ----------------------------------------------------------------------------


def test_an_official_approves_a_request_and_the_person_becomes_a_researcher(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    request = make_affiliation(db, institution=inst)
    login(client, official)
    assert f"/console/{inst.id}/requests/{request.id}/decide" in _page(
        client, f"/console/{inst.id}/requests"
    )
    resp = client.post(
        f"/console/{inst.id}/requests/{request.id}/decide", data={"decision": "approve"}
    )
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith(f"/console/{inst.id}/requests")
    db.expire_all()
    assert request.state == AffiliationState.ACTIVE
    assert request.user.has_role(Role.RESEARCHER, inst)
    assert request.user.display_name in _page(client, f"/console/{inst.id}/members")


def test_deciding_is_a_post(client: FlaskClient, db: Session) -> None:
    inst = make_institution(db)
    login(client, make_user(db, Role.SIGNING_OFFICIAL, institution=inst))
    request = make_affiliation(db, institution=inst)
    assert client.get(f"/console/{inst.id}/requests/{request.id}/decide").status_code == 405


def test_a_rejection_needs_a_reason_and_changes_nothing_without_one(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    request = make_affiliation(db, institution=inst)
    login(client, official)
    resp = client.post(
        f"/console/{inst.id}/requests/{request.id}/decide", data={"decision": "reject"}
    )
    assert resp.status_code == 303
    db.expire_all()
    assert request.state == AffiliationState.REQUESTED
    assert "reason" in _page(client, f"/console/{inst.id}/requests").lower()


def test_a_decision_that_is_not_approve_or_reject_is_refused(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    request = make_affiliation(db, institution=inst)
    login(client, official)
    resp = client.post(
        f"/console/{inst.id}/requests/{request.id}/decide", data={"decision": "explode"}
    )
    assert resp.status_code == 400
    db.expire_all()
    assert request.state == AffiliationState.REQUESTED


def test_a_decided_request_cannot_be_decided_again(client: FlaskClient, db: Session) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    request = make_affiliation(db, institution=inst)
    login(client, official)
    url = f"/console/{inst.id}/requests/{request.id}/decide"
    assert client.post(url, data={"decision": "approve"}).status_code == 302
    assert client.post(url, data={"decision": "reject", "note": "No."}).status_code == 303
    db.expire_all()
    assert request.state == AffiliationState.ACTIVE


def test_program_officers_see_requests_and_decide_only_where_there_is_no_official(
    client: FlaskClient, db: Session
) -> None:
    with_official = make_institution(db)
    make_user(db, Role.SIGNING_OFFICIAL, institution=with_official)
    without = make_institution(db)
    first = make_affiliation(db, institution=with_official)
    second = make_affiliation(db, institution=without)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    body = _page(client, f"/console/{with_official.id}/requests")
    assert first.user.display_name in body and "/decide" not in body
    body = _page(client, f"/console/{without.id}/requests")
    assert f"/requests/{second.id}/decide" in body


def test_an_official_does_not_decide_their_own_request(client: FlaskClient, db: Session) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=make_institution(db))
    db.add(RoleGrant(user_id=official.id, role=Role.SIGNING_OFFICIAL, institution_id=inst.id))
    own = make_affiliation(db, institution=inst, user=official)
    login(client, official)
    body = _page(client, f"/console/{inst.id}/requests")
    assert "Your own request" in body and "/decide" not in body
    resp = client.post(f"/console/{inst.id}/requests/{own.id}/decide", data={"decision": "approve"})
    assert resp.status_code == 403
    db.expire_all()
    assert own.state == AffiliationState.REQUESTED


def test_deciding_without_a_csrf_token_is_refused(
    client: FlaskClient, db: Session, csrf_enabled: None
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    request = make_affiliation(db, institution=inst)
    login(client, official)
    resp = client.post(
        f"/console/{inst.id}/requests/{request.id}/decide", data={"decision": "approve"}
    )
    assert resp.status_code == 400
    resp = client.post(f"/console/{inst.id}/logins", data={"entity_id": ENTITY})
    assert resp.status_code == 400
    db.expire_all()
    assert request.state == AffiliationState.REQUESTED


# --- logins --------------------------------------------------------------------------------------


def _mapping_world(db: Session) -> tuple[Any, User, ProviderInstitution, Any]:
    inst = make_institution(db)
    inst.all_domains.append(make_domain(OWN_DOMAIN))
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    federation = make_provider(db, name="CILogon test")
    return inst, official, make_mapping(db, federation, inst), federation


@pytest.mark.parametrize(
    "value",
    [
        "",
        "http://idp.example.edu/idp/shibboleth",
        "idp.example.edu",
        "https://",
        "urn:",
        "javascript:alert(1)",
        "https://idp.example.edu/" + "x" * 500,
    ],
)
def test_an_entity_id_must_be_an_https_url_or_a_urn(
    client: FlaskClient, db: Session, value: str
) -> None:
    inst, official, mapping, _ = _mapping_world(db)
    before = mapping.entity_id
    login(client, official)
    resp = client.post(f"/console/{inst.id}/logins/{mapping.id}", data={"entity_id": value})
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert "https URL" in body or "This field is required" in body or "500" in body
    db.expire_all()
    assert mapping.entity_id == before


def test_an_official_changes_the_entity_id_and_it_is_audited(
    client: FlaskClient, db: Session
) -> None:
    inst, official, mapping, _ = _mapping_world(db)
    before = mapping.entity_id
    login(client, official)
    resp = client.post(f"/console/{inst.id}/logins/{mapping.id}", data={"entity_id": f" {URN} "})
    assert resp.status_code == 302
    db.expire_all()
    assert mapping.entity_id == URN
    event = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "institution.login_mapping_change")
    ).one()
    assert event.actor_id == official.id and event.object_id == inst.id
    assert event.details["before"] == before and event.details["after"] == URN


def test_an_entity_id_naming_another_institution_is_refused(
    client: FlaskClient, db: Session
) -> None:
    inst, official, mapping, federation = _mapping_world(db)
    theirs = make_mapping(db, federation, make_institution(db))
    login(client, official)
    resp = client.post(
        f"/console/{inst.id}/logins/{mapping.id}", data={"entity_id": theirs.entity_id}
    )
    assert resp.status_code == 422
    assert "already names another institution" in resp.get_data(as_text=True)
    free = make_provider(db)
    make_mapping(db, free, make_institution(db), entity_id=ENTITY)
    resp = client.post(
        f"/console/{inst.id}/logins", data={"provider_id": free.id, "entity_id": ENTITY}
    )
    assert resp.status_code == 422
    assert "already names another institution" in resp.get_data(as_text=True)


def test_an_official_maps_only_entity_ids_under_the_institutions_verified_domains(
    client: FlaskClient, db: Session
) -> None:
    """A login naming the entity id vouches for affiliation: an official must not claim another
    campus's id (an administrator may map any)."""
    inst, official, mapping, _ = _mapping_world(db)
    before = mapping.entity_id
    login(client, official)
    for foreign in ("https://idp.other-campus.org/shibboleth", "urn:mace:incommon:other.org"):
        resp = client.post(f"/console/{inst.id}/logins/{mapping.id}", data={"entity_id": foreign})
        assert resp.status_code == 422
        assert "verified domains (example.edu" in resp.get_data(as_text=True)
    db.expire_all()
    assert mapping.entity_id == before
    login(client, make_user(db, Role.ADMIN))
    resp = client.post(
        f"/console/{inst.id}/logins/{mapping.id}",
        data={"entity_id": "https://idp.other-campus.org/shibboleth"},
    )
    assert resp.status_code == 302
    db.expire_all()
    assert mapping.entity_id == "https://idp.other-campus.org/shibboleth"


def test_only_enabled_federation_logins_not_serving_it_yet_are_offered(
    client: FlaskClient, db: Session
) -> None:
    inst, official, _, federation = _mapping_world(db)
    disabled = make_provider(db, enabled=False, name="Disabled federation")
    own_idp = make_provider(db, kind=ProviderKind.INSTITUTION, name="Campus own login")
    offered = make_provider(db, name="Offered federation")
    login(client, official)
    body = _page(client, f"/console/{inst.id}/logins")
    assert f'value="{offered.id}"' in body
    for provider in (federation, disabled, own_idp):
        assert f'value="{provider.id}"' not in body
        resp = client.post(
            f"/console/{inst.id}/logins", data={"provider_id": provider.id, "entity_id": ENTITY}
        )
        assert resp.status_code == 422, provider.name
    assert db.scalars(
        select(ProviderInstitution).where(ProviderInstitution.institution_id == inst.id)
    ).all() == [db.get(ProviderInstitution, _mapping_id(db, federation.id, inst.id))]
    resp = client.post(
        f"/console/{inst.id}/logins", data={"provider_id": offered.id, "entity_id": ENTITY}
    )
    assert resp.status_code == 302
    assert db.scalars(
        select(AuditEvent).where(AuditEvent.action == "institution.login_mapping_add")
    ).one().details == {"provider": offered.slug, "entity_id": ENTITY}


def _mapping_id(db: Session, provider_id: int, institution_id: int) -> int:
    return db.scalars(
        select(ProviderInstitution.id).where(
            ProviderInstitution.provider_id == provider_id,
            ProviderInstitution.institution_id == institution_id,
        )
    ).one()


def test_an_institutions_own_login_has_no_entity_id_to_change(
    client: FlaskClient, db: Session
) -> None:
    inst, official, _, _ = _mapping_world(db)
    own_idp = make_mapping(db, make_provider(db, kind=ProviderKind.INSTITUTION), inst)
    login(client, official)
    assert client.get(f"/console/{inst.id}/logins/{own_idp.id}").status_code == 404
    resp = client.post(f"/console/{inst.id}/logins/{own_idp.id}", data={"entity_id": URN})
    assert resp.status_code == 404
    db.expire_all()
    assert own_idp.entity_id is None


def test_program_officers_see_the_logins_but_change_nothing(
    client: FlaskClient, db: Session
) -> None:
    inst, _, mapping, _ = _mapping_world(db)
    offered = make_provider(db)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    body = _page(client, f"/console/{inst.id}/logins")
    assert mapping.entity_id is not None and mapping.entity_id in body
    assert "Add a federation login" not in body and "/logins/" not in body
    resp = client.post(
        f"/console/{inst.id}/logins", data={"provider_id": offered.id, "entity_id": ENTITY}
    )
    assert resp.status_code == 403


# --- the start page ------------------------------------------------------------------------------


def test_the_start_page_shows_the_profile_domains_logins_and_links_to_the_institution_pages(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db, website="https://www.example.edu", name="Example University")
    inst.all_domains.append(make_domain("pending.example.edu", state=DomainState.PENDING))
    db.flush()
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    mapping = make_mapping(db, make_provider(db, name="CILogon test"), inst)
    login(client, official)
    body = _page(client, f"/console/{inst.id}")
    assert inst.ror_id is not None and inst.ror_id in body
    assert "https://www.example.edu" in body and "pending.example.edu" in body
    assert "Pending proof" in body and "Verified" in body
    assert f"/institutions/{inst.id}/edit" in body and f'/institutions/{inst.id}"' in body
    assert "CILogon test" in body and str(mapping.entity_id) in body
    assert official.display_name in body
