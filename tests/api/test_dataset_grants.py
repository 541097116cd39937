"""The operator API for storage: ``GET /api/v1/datasets/{id}/grants``. Who gets in (a storage
operator's bearer token only: none, malformed, unknown, expired, revoked, a resource operator's
token → refused; and a storage token gets nothing of the compute routes), what a token reaches
(the datasets it names: IDOR), the list (exactly the grants ``current_grants`` decides: pending,
past their end, revoked, suspended with the institution, of a disabled person, of another dataset
— absent), open and registered datasets, pages, a fixed number of SQL queries, the token's use
recorded, RFC 9457 problems, the OpenAPI document, the per-token rate limit, and the
administrators' making of storage tokens."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from portal import create_app
from portal.agreements.models import AgreementState
from portal.api import services as api_services
from portal.api.models import ApiToken, TokenScope
from portal.api.services import revoke_token
from portal.auth.models import Identity, Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import ValidationError
from portal.core.models import utcnow
from portal.datasets import services
from portal.datasets.models import AccessTier, Dataset, Grant, GrantState
from portal.extensions import db as _db
from portal.institutions import services as institution_services
from tests.api.conftest import bearer, make_token
from tests.factories import (
    make_agreement,
    make_dataset,
    make_grant,
    make_institution,
    make_resource,
    make_user,
)
from tests.support.app import TEST_CONFIG, login

Ctx = Callable[[], AbstractContextManager[Any]]
TODAY = dt.date.today


@pytest.fixture
def ctx(app: Flask) -> Ctx:
    """``with ctx(): …``: an app context for the factories (the services' mails link to the
    portal), popped before the test's requests."""
    return app.app_context


def make_storage_token(
    db: Session, *datasets: Dataset, days: int = 30, name: str = "Lustre ACL sync"
) -> tuple[ApiToken, str]:
    """A storage operator's token for ``datasets``, made by a new administrator."""
    admin = make_user(db, Role.ADMIN)
    token, secret = api_services.create_token(
        db,
        name=name,
        scope=TokenScope.DATASET_OPERATOR,
        datasets=list(datasets),
        expires_on=TODAY() + dt.timedelta(days=days),
        actor=admin,
    )
    db.commit()
    return token, secret


def assert_problem(resp: TestResponse, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json(force=True)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status and body["detail"]
    return dict(body)


def grants_of(client: FlaskClient, dataset: Dataset, secret: str, query: str = "") -> Any:
    resp = client.get(f"/api/v1/datasets/{dataset.id}/grants{query}", headers=bearer(secret))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    return resp.get_json()


def refusals(db: Session) -> list[AuditEvent]:
    return list(
        db.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "permission.denied")
            .order_by(AuditEvent.id)
        )
    )


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-portal-token",
        "Bearer atom_thisTokenWasNeverMadeByThePortal0000000000000",
    ],
    ids=["none", "empty", "basic", "malformed", "unknown"],
)
def test_a_request_without_a_valid_token_is_401_and_shows_nothing(
    client: FlaskClient, db: Session, ctx: Ctx, header: str | None
) -> None:
    with ctx():
        grant = make_grant(db)
        db.commit()
    headers = {"Authorization": header} if header else {}
    resp = client.get(f"/api/v1/datasets/{grant.dataset_id}/grants", headers=headers)
    body = assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (grant.user.email or "") not in resp.get_data(as_text=True)
    assert "token" in body["detail"].lower()


def test_an_expired_token_is_401(client: FlaskClient, db: Session, ctx: Ctx) -> None:
    with ctx():
        grant = make_grant(db)
    token, secret = make_storage_token(db, grant.dataset)
    db.execute(
        update(ApiToken)
        .where(ApiToken.id == token.id)
        .values(expires_at=utcnow() - dt.timedelta(seconds=1))
    )
    db.commit()
    resp = client.get(f"/api/v1/datasets/{grant.dataset_id}/grants", headers=bearer(secret))
    assert "expired" in assert_problem(resp, 401)["detail"]


def test_a_revoked_token_is_401_at_once(client: FlaskClient, db: Session, ctx: Ctx) -> None:
    with ctx():
        grant = make_grant(db)
    token, secret = make_storage_token(db, grant.dataset)
    assert [i["id"] for i in grants_of(client, grant.dataset, secret)["items"]] == [grant.id]
    revoke_token(db, token, actor=make_user(db, Role.ADMIN))
    db.commit()
    resp = client.get(f"/api/v1/datasets/{grant.dataset_id}/grants", headers=bearer(secret))
    assert "revoked" in assert_problem(resp, 401)["detail"]


def test_a_session_cookie_is_not_accepted(client: FlaskClient, db: Session, ctx: Ctx) -> None:
    with ctx():
        grant = make_grant(db)
        db.commit()
    login(client, make_user(db, Role.ADMIN))
    assert_problem(client.get(f"/api/v1/datasets/{grant.dataset_id}/grants"), 401)


# --- scopes: each token its own routes and its own datasets -------------------------------------


def test_a_resource_operators_token_is_refused_and_the_refusal_audited(
    client: FlaskClient, db: Session, ctx: Ctx
) -> None:
    with ctx():
        grant = make_grant(db)
    _, secret = make_token(db, make_resource(db))
    db.commit()
    resp = client.get(f"/api/v1/datasets/{grant.dataset_id}/grants", headers=bearer(secret))
    body = assert_problem(resp, 403)
    assert "resource operator" in body["detail"] and "storage operator" in body["detail"]
    assert (grant.user.email or "") not in resp.get_data(as_text=True)
    (event,) = refusals(db)
    assert event.channel == "api" and event.ip is not None
    assert event.details["path"] == f"/api/v1/datasets/{grant.dataset_id}/grants"


def test_a_storage_token_reaches_none_of_the_compute_routes(
    client: FlaskClient, db: Session, ctx: Ctx
) -> None:
    with ctx():
        dataset = make_dataset(db)
    _, secret = make_storage_token(db, dataset)
    assert (
        "storage operator"
        in (
            assert_problem(client.get("/api/v1/allocations", headers=bearer(secret)), 403)["detail"]
        )
    )
    job = {
        "cluster": "jupiter",
        "job_id": "1",
        "account": "atom-1-h100",
        "gpus": 4,
        "elapsed_seconds": 3600,
    }
    assert_problem(client.post("/api/v1/usage", json=[job], headers=bearer(secret)), 403)
    assert len(refusals(db)) == 2


def test_a_token_reads_only_the_datasets_it_names(
    client: FlaskClient, db: Session, ctx: Ctx
) -> None:
    with ctx():
        mine, theirs = make_grant(db), make_grant(db)
    _, secret = make_storage_token(db, mine.dataset)
    assert [i["id"] for i in grants_of(client, mine.dataset, secret)["items"]] == [mine.id]
    resp = client.get(f"/api/v1/datasets/{theirs.dataset_id}/grants", headers=bearer(secret))
    assert "does not cover" in assert_problem(resp, 403)["detail"]
    assert (theirs.user.email or "") not in resp.get_data(as_text=True)
    assert refusals(db)


def test_no_such_dataset_is_404(client: FlaskClient, db: Session, ctx: Ctx) -> None:
    with ctx():
        dataset = make_dataset(db)
    _, secret = make_storage_token(db, dataset)
    resp = client.get(f"/api/v1/datasets/{dataset.id + 1000}/grants", headers=bearer(secret))
    assert f"no dataset {dataset.id + 1000}" in assert_problem(resp, 404)["detail"]
    # Not an id the database could hold, or not an id at all: no route.
    for ident in ("0", "-1", "2147483648", "99999999999999999999", "web"):
        resp = client.get(f"/api/v1/datasets/{ident}/grants", headers=bearer(secret))
        assert_problem(resp, 404)


def test_a_retired_dataset_still_lists_its_holders(
    client: FlaskClient, db: Session, ctx: Ctx
) -> None:
    """Retiring stops new requests only: people with access keep it until its end."""
    with ctx():
        grant = make_grant(db)
        services.retire(db, grant.dataset, actor=make_user(db, Role.ADMIN), reason="Superseded.")
    _, secret = make_storage_token(db, grant.dataset)
    body = grants_of(client, grant.dataset, secret)
    assert body["dataset"]["state"] == "retired"
    assert [i["id"] for i in body["items"]] == [grant.id]


# --- the list -----------------------------------------------------------------------------------


def test_exactly_the_current_grants_are_listed(client: FlaskClient, db: Session, ctx: Ctx) -> None:
    today = TODAY()
    with ctx():
        dataset = make_dataset(db, slug="clinical-notes", name="Clinical notes")
        steward = dataset.stewards[0].user
        admin = make_user(db, Role.ADMIN)
        current = make_grant(db, dataset=dataset)
        pending = make_grant(db, dataset=dataset, signed=False)
        past_end = make_grant(db, dataset=dataset)
        revoked = make_grant(db, dataset=dataset)
        suspended = make_grant(db, dataset=dataset)
        disabled = make_grant(db, dataset=dataset)
        later = make_grant(db, dataset=dataset, days=300)
        elsewhere = make_grant(db, user=current.user)  # the same person, another dataset
        services.revoke(db, revoked, actor=steward, reason="Shared outside the project.")
        institution_services.transition(
            db, suspended.institution, "suspend", actor=admin, reason="Lapsed partnership."
        )
        # Past its end but not swept yet: the facts decide, not the state.
        db.execute(
            update(Grant)
            .where(Grant.id == past_end.id)
            .values(starts_on=today - dt.timedelta(days=40), ends_on=today - dt.timedelta(days=1))
        )
        db.execute(update(User).where(User.id == disabled.user_id).values(is_disabled=True))
        # A second login of the current holder (a federation proxy's campus).
        db.add(
            Identity(
                user_id=current.user_id,
                issuer="https://proxy.test",
                subject="campus-42",
                upstream_idp="https://idp.northlake.edu/saml",
            )
        )
        db.commit()
    db.expire_all()
    assert (pending.state, revoked.state, suspended.state) == (
        GrantState.PENDING,
        GrantState.REVOKED,
        GrantState.SUSPENDED,
    )
    assert (past_end.state, disabled.state) == (GrantState.ACTIVE, GrantState.ACTIVE)
    _, secret = make_storage_token(db, dataset, elsewhere.dataset)

    body = grants_of(client, dataset, secret)

    assert {k: v for k, v in body.items() if k != "items"} == {
        "dataset": {
            "id": dataset.id,
            "slug": "clinical-notes",
            "name": "Clinical notes",
            "tier": "controlled",
            "state": "published",
        },
        "as_of": today.isoformat(),
        "open": False,
        "next_after": None,
    }
    assert [i["id"] for i in body["items"]] == [current.id, later.id]
    user, institution = current.user, current.institution
    (first_login,) = [x for x in user.identities if x.issuer == "https://idp.test"]
    assert body["items"][0] == {
        "id": current.id,
        "user_id": user.id,
        "display_name": user.display_name,
        "email": user.email,
        "identities": [
            {"issuer": "https://idp.test", "subject": first_login.subject, "upstream_idp": None},
            {
                "issuer": "https://proxy.test",
                "subject": "campus-42",
                "upstream_idp": "https://idp.northlake.edu/saml",
            },
        ],
        "institution": {
            "id": institution.id,
            "name": institution.name,
            "ror_id": institution.ror_id,
        },
        "starts_on": today.isoformat(),
        "ends_on": current.ends_on.isoformat(),
    }
    assert body["items"][1]["ends_on"] == (today + dt.timedelta(days=300)).isoformat()
    # The list is current_grants' own, item for item.
    assert [i["id"] for i in body["items"]] == list(
        db.scalars(services.current_grants(dataset).with_only_columns(Grant.id))
    )

    # The sweep expires the one past its end: still absent; the other dataset lists its own.
    with ctx():
        assert services.sweep(db)["expired"] == 1
        db.commit()
    assert [i["id"] for i in grants_of(client, dataset, secret)["items"]] == [current.id, later.id]
    other = grants_of(client, elsewhere.dataset, secret)
    assert [i["id"] for i in other["items"]] == [elsewhere.id]


def test_reinstating_the_institution_lists_its_people_again(
    client: FlaskClient, db: Session, ctx: Ctx
) -> None:
    with ctx():
        grant = make_grant(db)
        admin = make_user(db, Role.ADMIN)
        # Its partnership agreement is signed: it may be reinstated.
        make_agreement(db, institution=grant.institution, state=AgreementState.ACTIVE)
        institution_services.transition(
            db, grant.institution, "suspend", actor=admin, reason="Audit."
        )
        db.commit()
    _, secret = make_storage_token(db, grant.dataset)
    assert grants_of(client, grant.dataset, secret)["items"] == []
    with ctx():
        institution_services.transition(db, grant.institution, "reinstate", actor=admin)
        db.commit()
    assert [i["id"] for i in grants_of(client, grant.dataset, secret)["items"]] == [grant.id]


def test_a_registered_dataset_lists_who_accepted_its_terms(
    client: FlaskClient, db: Session, ctx: Ctx
) -> None:
    with ctx():
        dataset = make_dataset(db, tier=AccessTier.REGISTERED, terms="Cite the corpus.")
        ada = make_user(db, Role.RESEARCHER)
        grace = make_user(db, Role.RESEARCHER)
        accepted = services.accept_terms(db, dataset, actor=ada, accepted=True)
        revoked = services.accept_terms(db, dataset, actor=grace, accepted=True)
        services.revoke(db, revoked, actor=make_user(db, Role.ADMIN), reason="Misuse.")
        db.commit()
    _, secret = make_storage_token(db, dataset)
    body = grants_of(client, dataset, secret)
    assert (body["dataset"]["tier"], body["open"]) == ("registered", False)
    assert [(i["id"], i["user_id"]) for i in body["items"]] == [(accepted.id, ada.id)]


def test_an_open_dataset_says_everyone_may_use_it(
    client: FlaskClient, db: Session, ctx: Ctx
) -> None:
    with ctx():
        dataset = make_dataset(db, tier=AccessTier.OPEN)
    _, secret = make_storage_token(db, dataset)
    body = grants_of(client, dataset, secret)
    assert (body["dataset"]["tier"], body["open"], body["items"], body["next_after"]) == (
        "open",
        True,
        [],
        None,
    )
    # A controlled dataset nobody holds is not open: an empty list means nobody.
    with ctx():
        closed = make_dataset(db)
    _, secret = make_storage_token(db, closed)
    assert (grants_of(client, closed, secret)["open"]) is False


def test_the_pages(client: FlaskClient, db: Session, ctx: Ctx) -> None:
    with ctx():
        dataset = make_dataset(db)
        grants = [make_grant(db, dataset=dataset) for _ in range(5)]
        db.commit()
    _, secret = make_storage_token(db, dataset)
    seen: list[int] = []
    after, pages = 0, 0
    while True:
        body = grants_of(client, dataset, secret, f"?limit=2&after={after}")
        seen += [i["id"] for i in body["items"]]
        pages += 1
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert seen == [g.id for g in grants] and pages == 3
    path = f"/api/v1/datasets/{dataset.id}/grants"
    for bad in ("?limit=100000", "?limit=0", "?after=-1", "?after=x", "?everyone=1"):
        assert_problem(client.get(path + bad, headers=bearer(secret)), 422)


def test_the_use_of_the_token_is_recorded_and_nothing_is_cached(
    client: FlaskClient, db: Session, ctx: Ctx
) -> None:
    with ctx():
        grant = make_grant(db)
    token, secret = make_storage_token(db, grant.dataset)
    assert token.last_used_at is None
    resp = client.get(f"/api/v1/datasets/{grant.dataset_id}/grants", headers=bearer(secret))
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    db.refresh(token)
    assert token.last_used_at is not None
    # Reading changes nothing else and is not an audited change.
    assert not db.scalars(
        select(AuditEvent).where(AuditEvent.action.like("dataset%"), AuditEvent.channel == "api")
    ).all()


def test_the_list_runs_a_fixed_number_of_queries(
    client: FlaskClient,
    db: Session,
    ctx: Ctx,
    count_queries: Callable[[Callable[[], object]], int],
) -> None:
    """Each holder has two logins (a list per item): still the same number of queries."""
    with ctx():
        dataset = make_dataset(db, tier=AccessTier.REGISTERED)
    institution = make_institution(db)
    _, secret = make_storage_token(db, dataset)
    with ctx():
        for _ in range(10):  # the real way: researchers accept the terms
            user = make_user(db, Role.RESEARCHER, institution=institution)
            db.add(Identity(user_id=user.id, issuer="https://proxy.test", subject=f"p{user.id}"))
            services.accept_terms(db, dataset, actor=user, accepted=True)
        db.commit()
    path = f"/api/v1/datasets/{dataset.id}/grants?limit=500"

    def page(n: int) -> int:
        def get() -> None:
            body = client.get(path, headers=bearer(secret)).get_json()
            assert len(body["items"]) == n
            assert all(len(i["identities"]) == 2 for i in body["items"])

        return count_queries(get)

    small = page(10)
    assert page(10) == small  # the token's last use is written at most once a minute
    # 190 more holders, added directly (accepting the terms 190 more times would be slow): each
    # active until the end date the terms give, with two logins.
    today = TODAY()
    for i in range(190):
        user = User(display_name=f"Bulk {i}", email=f"bulk{i}@example.org", email_verified=True)
        user.identities += [
            Identity(issuer="https://idp.test", subject=f"bulk-{i}"),
            Identity(issuer="https://proxy.test", subject=f"bulk-proxy-{i}"),
        ]
        db.add(
            Grant(
                dataset_id=dataset.id,
                user=user,
                institution_id=institution.id,
                starts_on=today,
                ends_on=services.longest_end(dataset, today),
                state=GrantState.ACTIVE,
                terms_accepted_at=utcnow(),
            )
        )
    db.commit()
    assert page(200) == small


# --- errors and the OpenAPI document ------------------------------------------------------------


def test_the_openapi_document_describes_the_route(client: FlaskClient, db: Session) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    validate(document)
    op = document["paths"]["/api/v1/datasets/{dataset_id}/grants"]["get"]
    assert "security" not in op or op["security"] != []  # a token is needed
    assert {p["name"]: p["in"] for p in op["parameters"]} == {
        "dataset_id": "path",
        "after": "query",
        "limit": "query",
    }
    assert set(op["responses"]) == {"200", "401", "403", "404", "422", "429"}
    schemas = document["components"]["schemas"]
    page_ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page = schemas[page_ref.rsplit("/", 1)[1]]
    assert set(page["required"]) >= {"dataset", "as_of", "open", "items", "next_after"}
    assert "everyone may use it" in page["properties"]["open"]["description"]
    (grant_schema,) = [v for k, v in schemas.items() if k.endswith(".GrantOut")]
    assert set(grant_schema["required"]) == {
        "id",
        "user_id",
        "display_name",
        "email",
        "identities",
        "institution",
        "starts_on",
        "ends_on",
    }
    # How tokens are scoped is said in the document itself.
    assert "storage operator" in document["info"]["description"]
    text = client.get("/api/v1/docs").get_data(as_text=True)
    assert "GET /api/v1/datasets/{dataset_id}/grants" in text
    assert "Who may use a dataset now" in text


def test_each_storage_token_has_its_own_rate_limit(tmp_path: Path) -> None:
    app = create_app(
        {
            **TEST_CONFIG,
            "RATELIMIT_ENABLED": True,
            "API_RATE_LIMIT": "3 per minute",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'rl.sqlite3'}",
        }
    )
    with app.app_context():
        _db.create_all()
        session = _db.session
        dataset = make_dataset(session, tier=AccessTier.OPEN)
        admin = make_user(session, Role.ADMIN)
        secrets = [
            api_services.create_token(
                session,
                name=name,
                scope=TokenScope.DATASET_OPERATOR,
                datasets=[dataset],
                expires_on=TODAY() + dt.timedelta(days=1),
                actor=admin,
            )[1]
            for name in ("a", "b")
        ]
        session.commit()
        path = f"/api/v1/datasets/{dataset.id}/grants"
    client = app.test_client()
    codes = [client.get(path, headers=bearer(secrets[0])).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert_problem(client.get(path, headers=bearer(secrets[0])), 429)
    assert client.get(path, headers=bearer(secrets[1])).status_code == 200
    with app.app_context():
        _db.engine.dispose()


# --- making storage tokens ----------------------------------------------------------------------


def test_a_storage_token_names_datasets_and_nothing_else(db: Session, ctx: Ctx) -> None:
    with ctx():
        dataset = make_dataset(db)
    resource = make_resource(db)
    admin = make_user(db, Role.ADMIN)
    until = TODAY() + dt.timedelta(days=5)
    make = api_services.create_token
    with pytest.raises(ValidationError, match="at least one dataset"):
        make(db, name="s", scope=TokenScope.DATASET_OPERATOR, expires_on=until, actor=admin)
    with pytest.raises(ValidationError, match="acts on no resources"):
        make(
            db,
            name="s",
            scope=TokenScope.DATASET_OPERATOR,
            datasets=[dataset],
            resources=[resource],
            expires_on=until,
            actor=admin,
        )
    with pytest.raises(ValidationError, match="reads no datasets"):
        make(db, name="r", resources=[resource], datasets=[dataset], expires_on=until, actor=admin)
    assert db.scalars(select(ApiToken)).all() == []
    token, _ = make(
        db,
        name="s",
        scope=TokenScope.DATASET_OPERATOR,
        datasets=[dataset],
        expires_on=until,
        actor=admin,
    )
    assert (token.scope, token.datasets, token.resources) == (
        TokenScope.DATASET_OPERATOR,
        [dataset],
        [],
    )
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "api_token.create")).one()
    assert (event.details["scope"], event.details["datasets"]) == (
        "dataset_operator",
        [dataset.id],
    )


@pytest.mark.once
def test_an_administrator_makes_a_storage_token_on_the_page(
    client: FlaskClient, db: Session, ctx: Ctx
) -> None:
    with ctx():
        dataset = make_dataset(db, slug="web-corpus", name="Web corpus")
        grant = make_grant(db, dataset=dataset)
    resource = make_resource(db)
    login(client, make_user(db, Role.ADMIN))
    db.commit()
    form = client.get("/admin/api-tokens/new").get_data(as_text=True)
    assert "Storage operator" in form and "Web corpus (web-corpus)" in form
    until = (TODAY() + dt.timedelta(days=30)).isoformat()
    base = {"name": "Lustre ACLs", "scope": "dataset_operator", "expires_on": until}
    # Refused, and nothing made: no dataset; a resource with a storage token.
    none = client.post("/admin/api-tokens/new", data=base)
    assert none.status_code == 422 and "Choose at least one dataset." in none.get_data(as_text=True)
    mixed = client.post(
        "/admin/api-tokens/new",
        data={**base, "datasets": str(dataset.id), "resources": str(resource.id)},
    )
    assert mixed.status_code == 422 and "leave this empty" in mixed.get_data(as_text=True)
    assert db.scalars(select(ApiToken)).all() == []

    page = client.post("/admin/api-tokens/new", data={**base, "datasets": str(dataset.id)})
    text = page.get_data(as_text=True)
    assert page.status_code == 200, text
    match = re.search(r'value="(atom_[A-Za-z0-9_\-]+)"', text)
    assert match and "storage operator's token for web-corpus" in text
    token = db.scalars(select(ApiToken)).one()
    assert (token.scope, [d.id for d in token.datasets]) == (
        TokenScope.DATASET_OPERATOR,
        [dataset.id],
    )
    listing = client.get("/admin/api-tokens/").get_data(as_text=True)
    assert "Storage operator" in listing and "web-corpus" in listing
    # The secret works, for that dataset's grants.
    body = grants_of(client, dataset, match.group(1))
    assert [i["id"] for i in body["items"]] == [grant.id]
