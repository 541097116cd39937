"""The administrators' token pages by every role, a token's secret shown once (and only its hash
kept), revocation, and CSRF on the forms."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.api.models import ApiToken
from portal.api.services import digest
from portal.auth.models import Role
from portal.core.audit import AuditEvent
from tests.api.conftest import make_token
from tests.factories import ROLE_NAMES, make_actor, make_institution, make_resource, make_user
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

ADMIN = {"admin"}
UNTIL = (dt.date.today() + dt.timedelta(days=30)).isoformat()
NEW = {"name": "Slurm on cluster-1", "resources": "{resource}", "expires_on": UNTIL}

CASES = [
    case("tokens", "GET", "/admin/api-tokens/", ADMIN),
    case("new token form", "GET", "/admin/api-tokens/new", ADMIN),
    case("make a token", "POST", "/admin/api-tokens/new", ADMIN, 200, NEW),
    case(
        "make a token that expires too late",
        "POST",
        "/admin/api-tokens/new",
        ADMIN,
        422,
        {**NEW, "expires_on": "2999-01-01"},
        changes=False,
    ),
    case("revoke a token", "POST", "/admin/api-tokens/{token}/revoke", ADMIN, 302),
    case(
        "revoke a revoked token",
        "POST",
        "/admin/api-tokens/{revoked}/revoke",
        ADMIN,
        303,
        changes=False,
    ),
]


def _snapshot(db: Session) -> list[object]:
    return [
        (t.id, t.name, t.revoked_at, [r.id for r in t.resources])
        for t in db.scalars(select(ApiToken).order_by(ApiToken.id))
    ]


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(client: FlaskClient, db: Session, role: str, case: Case) -> None:
    actor = make_actor(db, role, make_institution(db))
    if actor is not None:
        login(client, actor)
    resource = make_resource(db)
    token, _ = make_token(db, resource)
    revoked, _ = make_token(db, resource)
    revoked.revoked_at = revoked.created_at
    db.commit()
    values: dict[str, Any] = {"resource": resource.id, "token": token.id, "revoked": revoked.id}
    check_route(client, db, role, actor.id if actor else None, case, values, lambda: _snapshot(db))


def test_the_secret_is_shown_once_and_only_its_hash_is_kept(
    client: FlaskClient, db: Session
) -> None:
    admin = make_user(db, Role.ADMIN)
    login(client, admin)
    resource = make_resource(db)
    page = client.post(
        "/admin/api-tokens/new", data={**NEW, "resources": str(resource.id)}
    ).get_data(as_text=True)
    match = re.search(r'value="(atom_[A-Za-z0-9_\-]+)"', page)
    assert match, page
    secret = match.group(1)
    token = db.scalars(select(ApiToken)).one()
    assert token.token_sha256 == digest(secret)
    assert [r.id for r in token.resources] == [resource.id]
    assert token.created_by_id == admin.id
    assert token.expires_at == dt.datetime.combine(
        dt.date.fromisoformat(UNTIL) + dt.timedelta(days=1), dt.time(), dt.UTC
    )
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "api_token.create")).one()
    assert event.actor_id == admin.id and secret not in str(event.details)
    listing = client.get("/admin/api-tokens/").get_data(as_text=True)
    assert secret not in listing and token.prefix in listing and "Never" in listing
    # used: the list shows when
    client.get("/api/v1/allocations", headers={"Authorization": f"Bearer {secret}"})
    assert "Never" not in client.get("/admin/api-tokens/").get_data(as_text=True)


def test_the_forms_need_their_csrf_token(
    client: FlaskClient, db: Session, csrf_enabled: None
) -> None:
    login(client, make_user(db, Role.ADMIN))
    resource = make_resource(db)
    token, _ = make_token(db, resource)
    db.commit()
    made = client.post("/admin/api-tokens/new", data={**NEW, "resources": str(resource.id)})
    assert made.status_code == 400 and db.scalars(select(ApiToken)).all() == [token]
    assert client.post(f"/admin/api-tokens/{token.id}/revoke").status_code == 400
    db.refresh(token)
    assert token.revoked_at is None
