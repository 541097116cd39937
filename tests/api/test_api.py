"""The operator API: who gets in (bearer tokens only: none, malformed, unknown, expired, revoked,
a cookie instead), what a token reaches (its resources only: IDOR), the allocations list (its
pages and a fixed number of SQL queries), usage pushes (the same records as a file import,
idempotent, other resources' jobs refused and never charged), RFC 9457 problems, the OpenAPI
document, and the per-token rate limit."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
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
from portal.allocations.models import Allocation, AllocationState, UsageRecord
from portal.allocations.usage import Job, parse_sacct, record_usage
from portal.api import api as api_module
from portal.api.models import ApiToken
from portal.api.services import digest
from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.core.models import utcnow
from portal.extensions import db as _db
from portal.proposals.models import Resource
from tests.api.conftest import bearer, make_token
from tests.factories import make_call, make_user
from tests.support.app import TEST_CONFIG, login

Allocate = Callable[..., Allocation]


def assert_problem(resp: TestResponse, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json(force=True)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status and body["detail"]
    return dict(body)


def job(a: Allocation | tuple[str, str], job_id: str, **kw: Any) -> dict[str, Any]:
    cluster, account = a if isinstance(a, tuple) else (a.cluster, a.account)
    return {
        "cluster": cluster,
        "job_id": job_id,
        "account": account,
        "gpus": kw.get("gpus", 4),
        "elapsed_seconds": kw.get("elapsed", 3600),
        "started_at": "2026-11-01T10:00:00+00:00",
        "ended_at": "2026-11-01T11:00:00+00:00",
        "state": "COMPLETED",
    }


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/allocations", "/api/v1/usage"])
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
def test_a_request_without_a_valid_token_is_401_problem(
    client: FlaskClient, db: Session, allocate: Allocate, path: str, header: str | None
) -> None:
    allocate()
    headers = {"Authorization": header} if header else {}
    method = "POST" if path.endswith("usage") else "GET"
    resp = client.open(path, method=method, headers=headers, json=[])
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_an_expired_token_is_401(client: FlaskClient, db: Session, allocate: Allocate) -> None:
    a = allocate()
    token, secret = make_token(db, a.resource)
    db.execute(
        update(ApiToken)
        .where(ApiToken.id == token.id)
        .values(expires_at=utcnow() - dt.timedelta(seconds=1))
    )
    db.commit()
    body = assert_problem(client.get("/api/v1/allocations", headers=bearer(secret)), 401)
    assert "expired" in body["detail"]


def test_a_revoked_token_is_401_and_the_revocation_is_audited(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    from portal.api.services import revoke_token

    a = allocate()
    token, secret = make_token(db, a.resource)
    assert client.get("/api/v1/allocations", headers=bearer(secret)).status_code == 200
    admin = make_user(db, Role.ADMIN)
    revoke_token(db, token, actor=admin)
    db.commit()
    body = assert_problem(client.get("/api/v1/allocations", headers=bearer(secret)), 401)
    assert "revoked" in body["detail"]
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "api_token.revoke")).one()
    assert (event.actor_id, event.object_id) == (admin.id, token.id)


def test_a_session_cookie_is_not_accepted(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    allocate()
    login(client, make_user(db, Role.ADMIN))
    assert client.get("/dashboard").status_code == 200  # the cookie works elsewhere
    assert_problem(client.get("/api/v1/allocations"), 401)
    assert_problem(client.post("/api/v1/usage", json=[]), 401)


def test_the_token_is_stored_only_as_its_hash_and_its_use_is_recorded(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    a = allocate()
    token, secret = make_token(db, a.resource)
    assert token.token_sha256 == digest(secret) and secret not in (token.prefix, token.name)
    assert secret.startswith(token.prefix) and len(secret) > 40
    assert token.last_used_at is None
    client.get("/api/v1/allocations", headers=bearer(secret))
    db.refresh(token)
    assert token.last_used_at is not None


def test_no_csrf_token_is_needed_with_a_bearer_token(
    app: Flask, client: FlaskClient, db: Session, allocate: Allocate, csrf_enabled: None
) -> None:
    a = allocate()
    _, secret = make_token(db, a.resource)
    resp = client.post("/api/v1/usage", json=[job(a, "1")], headers=bearer(secret))
    assert resp.status_code == 200, resp.get_data(as_text=True)


# --- what a token reaches (IDOR) ----------------------------------------------------------------


def test_an_operator_sees_only_its_own_resources_allocations(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    mine, theirs = allocate(), allocate()
    _, secret = make_token(db, mine.resource)
    resp = client.get("/api/v1/allocations", headers=bearer(secret))
    assert [i["id"] for i in resp.get_json()["items"]] == [mine.id]
    item = resp.get_json()["items"][0]
    assert item == {
        "id": mine.id,
        "project_id": mine.proposal_id,
        "project_title": mine.proposal.title,
        "cluster": mine.cluster,
        "account": mine.account,
        "resource_id": mine.resource_id,
        "state": "active",
        "starts_on": mine.starts_on.isoformat(),
        "ends_on": mine.ends_on.isoformat(),
        "hours": mine.hours,
        "used_hours": 0.0,
        "left_hours": float(mine.hours),
    }
    # Another resource, named: 403 (audited), whatever it holds.
    resp = client.get(f"/api/v1/allocations?resource={theirs.resource_id}", headers=bearer(secret))
    assert_problem(resp, 403)
    assert db.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "permission.denied", AuditEvent.ip.is_not(None)
        )
    ).first()


def test_the_state_filter_and_the_pages(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    call = make_call(db, budget_hours=1_000_000, max_request_hours=10_000)
    allocations = [allocate(call=call, usable=i != 1) for i in range(4)]
    _, secret = make_token(db, allocations[0].resource)
    resource = allocations[0].resource_id
    active = client.get(
        f"/api/v1/allocations?resource={resource}&state=active", headers=bearer(secret)
    ).get_json()
    assert [i["id"] for i in active["items"]] == [a.id for a in allocations if a.state == "active"]
    seen: list[int] = []
    after = 0
    while True:
        page = client.get(f"/api/v1/allocations?limit=3&after={after}", headers=bearer(secret))
        body = page.get_json()
        seen += [i["id"] for i in body["items"]]
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert seen == sorted(a.id for a in allocations)
    too_many = client.get("/api/v1/allocations?limit=100000", headers=bearer(secret))
    assert_problem(too_many, 422)
    assert_problem(client.get("/api/v1/allocations?state=nope", headers=bearer(secret)), 422)


def test_an_operator_charges_only_its_own_resources_jobs(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    mine, theirs = allocate(), allocate()
    _, secret = make_token(db, mine.resource)
    resp = client.post(
        "/api/v1/usage",
        json=[job(mine, "1"), job(theirs, "2"), job((mine.cluster, "nobody"), "3")],
        headers=bearer(secret),
    )
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["new"] == 1 and body["gpu_seconds"] == 4 * 3600
    assert [(r["index"], r["job_id"]) for r in body["refused"]] == [(1, "2"), (2, "3")]
    db.refresh(mine)
    db.refresh(theirs)
    assert (mine.used_gpu_seconds, theirs.used_gpu_seconds) == (4 * 3600, 0)
    assert db.scalars(select(UsageRecord.job_id).order_by(UsageRecord.job_id)).all() == ["1"]


def test_a_token_cannot_move_a_job_recorded_on_another_resource(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    """Job ids are per cluster: an operator of one GPU class of a cluster may not re-report,
    under its own account, a job recorded against another resource's allocation."""
    theirs = allocate()
    record_usage(db, [Job(theirs.cluster, "77", theirs.account, 2, 3600)])
    mine = allocate()
    # The same cluster, another resource: move mine there.
    db.execute(update(Allocation).where(Allocation.id == mine.id).values(cluster=theirs.cluster))
    db.commit()
    _, secret = make_token(db, mine.resource)
    body = client.post(
        "/api/v1/usage", json=[job((theirs.cluster, mine.account), "77")], headers=bearer(secret)
    ).get_json()
    assert [r["job_id"] for r in body["refused"]] == ["77"] and body["gpu_seconds"] == 0
    db.refresh(theirs)
    assert theirs.used_gpu_seconds == 2 * 3600


# --- usage --------------------------------------------------------------------------------------

HEADER = "JobID|Account|Cluster|AllocTRES|ElapsedRaw|Start|End|State"


def test_a_push_records_what_the_same_file_imported_records_and_twice_charges_once(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    pushed, imported = allocate(), allocate()
    _, secret = make_token(db, pushed.resource)

    def lines(a: Allocation) -> list[str]:
        return [
            HEADER,
            f"10|{a.account}|{a.cluster}|cpu=8,gres/gpu=4|3600|2026-11-01T10:00:00|2026-11-01T11:00:00|COMPLETED",
            f"10.batch|{a.account}|{a.cluster}|cpu=8,gres/gpu=4|3600|2026-11-01T10:00:00|2026-11-01T11:00:00|COMPLETED",
            f"11|{a.account}|{a.cluster}|gres/gpu=2|1800|2026-11-02T10:00:00|2026-11-02T10:30:00|TIMEOUT",
            f"12|{a.account}|{a.cluster}|cpu=4|600|2026-11-02T10:00:00|2026-11-02T10:10:00|FAILED",
        ]

    record_usage(db, [j for j in parse_sacct(lines(imported)) if isinstance(j, Job)])
    db.commit()
    as_json = [
        {
            "cluster": j.cluster,
            "job_id": j.job_id,
            "account": j.account,
            "gpus": j.gpus,
            "elapsed_seconds": j.elapsed_seconds,
            "started_at": j.started_at.isoformat() if j.started_at else None,
            "ended_at": j.ended_at.isoformat() if j.ended_at else None,
            "state": j.state,
        }
        for j in parse_sacct(lines(pushed))
        if isinstance(j, Job)
    ]
    first = client.post("/api/v1/usage", json=as_json, headers=bearer(secret)).get_json()
    second = client.post("/api/v1/usage", json=as_json, headers=bearer(secret)).get_json()
    assert (first["new"], first["no_gpus"], first["gpu_seconds"]) == (2, 1, 4 * 3600 + 2 * 1800)
    assert (second["new"], second["unchanged"], second["gpu_seconds"]) == (0, 2, 0)

    def records(a: Allocation) -> list[tuple[Any, ...]]:
        return [
            (r.job_id, r.gpus, r.elapsed_seconds, r.started_at, r.ended_at, r.job_state)
            for r in db.scalars(
                select(UsageRecord)
                .where(UsageRecord.allocation_id == a.id)
                .order_by(UsageRecord.job_id)
            )
        ]

    assert records(pushed) == records(imported) and len(records(pushed)) == 2
    db.refresh(pushed)
    db.refresh(imported)
    assert pushed.used_gpu_seconds == imported.used_gpu_seconds == 4 * 3600 + 2 * 1800
    assert db.scalars(select(AuditEvent).where(AuditEvent.action == "usage.import")).all()


def test_a_token_of_every_resource_moves_a_job_between_its_own_allocations(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    """Slurm lets an administrator change a job's account: pushed again under the other account
    of the same cluster, its usage moves, when the token covers both allocations."""
    first, second = allocate(), allocate()
    db.execute(update(Allocation).where(Allocation.id == second.id).values(cluster=first.cluster))
    db.commit()
    _, secret = make_token(db, *db.scalars(select(Resource).order_by(Resource.id)))
    pushed = client.post("/api/v1/usage", json=[job(first, "5")], headers=bearer(secret))
    assert pushed.get_json()["new"] == 1
    moved = client.post(
        "/api/v1/usage", json=[job((first.cluster, second.account), "5")], headers=bearer(secret)
    ).get_json()
    assert (moved["refused"], moved["updated"], moved["gpu_seconds"]) == ([], 1, 0)
    db.refresh(first)
    db.refresh(second)
    assert (first.used_gpu_seconds, second.used_gpu_seconds) == (0, 4 * 3600)


def test_too_many_jobs_or_bad_ones_are_422_and_bad_json_400(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    a = allocate()
    _, secret = make_token(db, a.resource)
    many = [job(a, str(i)) for i in range(api_module.MAX_JOBS + 1)]
    assert_problem(client.post("/api/v1/usage", json=many, headers=bearer(secret)), 422)
    bad = assert_problem(
        client.post("/api/v1/usage", json=[{**job(a, "1"), "gpus": -1}], headers=bearer(secret)),
        422,
    )
    assert bad["errors"] and "gpus" in bad["errors"][0]["where"]
    naive = {**job(a, "1"), "started_at": "2026-11-01T10:00:00"}
    assert_problem(client.post("/api/v1/usage", json=[naive], headers=bearer(secret)), 422)
    resp = client.post(
        "/api/v1/usage", data="[{", content_type="application/json", headers=bearer(secret)
    )
    assert_problem(resp, 400)
    db.refresh(a)
    assert a.used_gpu_seconds == 0


def test_other_errors_under_api_are_problems_too(client: FlaskClient, db: Session) -> None:
    assert_problem(client.get("/api/v1/nothing-here"), 404)
    assert_problem(client.get("/api/v1/usage"), 405)


# --- a fixed number of queries ------------------------------------------------------------------


def test_the_pages_follow_the_ids_across_the_tokens_resources(
    client: FlaskClient, db: Session, allocate: Allocate
) -> None:
    """A token of two resources pages through both together in id order, the state filter
    applied before a page is cut; a third resource's allocations never come."""
    calls = [make_call(db, budget_hours=1_000_000, max_request_hours=10_000) for _ in range(3)]
    made = [allocate(call=calls[i % 3], usable=i % 4 != 1) for i in range(10)]
    covered = {made[0].resource_id, made[1].resource_id}
    _, secret = make_token(db, made[0].resource, made[1].resource)

    def pages(query: str) -> list[list[int]]:
        seen: list[list[int]] = []
        after = 0
        while True:
            url = f"/api/v1/allocations?limit=2&after={after}{query}"
            body = client.get(url, headers=bearer(secret)).get_json()
            seen.append([i["id"] for i in body["items"]])
            if body["next_after"] is None:
                return seen
            after = body["next_after"]

    def cut(ids: list[int]) -> list[list[int]]:
        return [ids[i : i + 2] for i in range(0, len(ids), 2)] or [[]]

    mine = sorted(a.id for a in made if a.resource_id in covered)
    active = sorted(
        a.id for a in made if a.resource_id in covered and a.state == AllocationState.ACTIVE
    )
    assert len(mine) == 7 and 0 < len(active) < len(mine)
    assert pages("") == cut(mine)
    assert pages("&state=active") == cut(active)
    assert pages(f"&resource={made[1].resource_id}") == cut(
        sorted(a.id for a in made if a.resource_id == made[1].resource_id)
    )


def test_the_allocations_list_runs_a_fixed_number_of_queries(
    client: FlaskClient,
    db: Session,
    allocate: Allocate,
    count_queries: Callable[[Callable[[], object]], int],
) -> None:
    call = make_call(db, budget_hours=10_000_000, max_request_hours=10_000)
    first = allocate(call=call)
    _, secret = make_token(db, first.resource)

    def page(n: int) -> int:
        def get() -> None:
            resp = client.get(f"/api/v1/allocations?limit={n}", headers=bearer(secret))
            assert len(resp.get_json()["items"]) == n

        return count_queries(get)

    for _ in range(11):
        allocate(call=call)
    small = page(10)
    with_touch = page(10)  # the token's last use is written at most once a minute
    assert small == with_touch
    # 200 rows, added directly (approving 190 more proposals would be slow): each a renewal of
    # the one before, as one award may have only one allocation that renews nothing.
    previous = first
    for i in range(189):
        renewal = Allocation(
            award_id=first.award_id,
            renewed_from_id=previous.id,
            proposal_id=first.proposal_id,
            call_resource_id=first.call_resource_id,
            resource_id=first.resource_id,
            institution_id=first.institution_id,
            hours=10,
            starts_on=first.starts_on,
            ends_on=first.ends_on,
            cluster=first.cluster,
            account=f"bulk-{i}",
            state=AllocationState.ACTIVE,
        )
        db.add(renewal)
        db.flush()
        previous = renewal
    db.commit()
    assert page(200) == small


@pytest.mark.parametrize("every_resource", [True, False])
def test_a_push_runs_a_fixed_number_of_queries(
    client: FlaskClient,
    db: Session,
    allocate: Allocate,
    count_queries: Callable[[Callable[[], object]], int],
    every_resource: bool,
) -> None:
    """Whatever the number of jobs: with a token of one resource among others too (which reads
    whether the jobs were recorded on another resource's allocation)."""
    mine, theirs = allocate(), allocate()
    resources = db.scalars(select(Resource).order_by(Resource.id)).all()
    _, secret = make_token(db, *(resources if every_resource else [mine.resource]))
    others = [job(theirs, "0")]

    def push(first: int, n: int) -> Callable[[], object]:
        jobs = [job(mine, str(i), elapsed=60) for i in range(first, first + n)] + others
        return lambda: client.post("/api/v1/usage", json=jobs, headers=bearer(secret))

    push(0, 1)()  # the token's first use is recorded (once a minute): not counted here
    few, many = count_queries(push(100, 3)), count_queries(push(1000, 300))
    assert few == many
    db.refresh(mine)
    assert mine.used_gpu_seconds == (1 + 3 + 300) * 4 * 60


# --- the OpenAPI document -----------------------------------------------------------------------


def test_the_openapi_document_validates_and_matches_the_routes(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    validate(document)
    documented = {
        (path, method.upper()) for path, ops in document["paths"].items() for method in ops
    }
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert documented == routes
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert document["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for path, method in documented:
        assert f"{method} {path}" in text
    assert "<script>" not in text and "cdn" not in text.lower()


# --- rate limit ---------------------------------------------------------------------------------


def test_each_token_has_its_own_rate_limit(tmp_path: Path) -> None:
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
        from portal.api.services import create_token
        from tests.factories import make_resource

        session = _db.session
        resource = make_resource(session)
        admin = make_user(session, Role.ADMIN)
        until = dt.date.today() + dt.timedelta(days=1)
        _, one = create_token(
            session, name="a", resources=[resource], expires_on=until, actor=admin
        )
        _, two = create_token(
            session, name="b", resources=[resource], expires_on=until, actor=admin
        )
        session.commit()
    client = app.test_client()
    codes = [client.get("/api/v1/allocations", headers=bearer(one)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert_problem(client.get("/api/v1/allocations", headers=bearer(one)), 429)
    assert client.get("/api/v1/allocations", headers=bearer(two)).status_code == 200
    with app.app_context():
        _db.engine.dispose()
