"""The allocation pages run a fixed number of SQL queries whatever the rows shown (no N+1), at 10
and at 200 allocations on one resource (from several calls, at many institutions, with their
jobs): the list of allocations (filtered, and as CSV) for each kind of viewer, one allocation with
its chart's table and its jobs, the burn-down chart, the resources, one resource (and its CSV),
the project page with its allocations and the dashboard card."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.allocations import services
from portal.allocations.models import Allocation, UsageRecord
from portal.auth.models import Role, User
from portal.proposals.models import Call, CallResource
from tests.factories import make_call, make_institution, make_project_allocation, make_user
from tests.support.app import login

#: Allocations (and jobs of the first one) on the first count, and on the second.
FEW, MANY = 10, 200
#: A new call offers the resource every this many allocations (the per-call rows grow too).
PER_CALL = 20


def test_allocation_pages_run_a_fixed_number_of_queries(
    app: Flask,
    client: FlaskClient,
    db: Session,
    count_queries: Callable[[Callable[[], object]], int],
) -> None:
    inst = make_institution(db)
    pi = make_user(db, Role.RESEARCHER, institution=inst)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    first_call = make_call(db, budget_hours=1_000_000, max_request_hours=10_000)
    resource = first_call.resources[0].resource
    made: list[Allocation] = []
    calls: list[Call] = [first_call]
    jobs = 0

    def add(n: int) -> None:
        """``n`` more allocations on the resource (every other one the PI's, the others at new
        institutions; a new call every PER_CALL), and ``n`` more jobs on the first one."""
        nonlocal jobs
        with app.app_context():
            for _ in range(n):
                i = len(made)
                if i and i % PER_CALL == 0:
                    call = make_call(db, resources=0)
                    call.resources.append(
                        CallResource(
                            resource=resource, budget_hours=100_000, max_request_hours=10_000
                        )
                    )
                    db.flush()
                    calls.append(call)
                mine = i % 2 == 0
                lead = (
                    pi if mine else make_user(db, Role.RESEARCHER, institution=make_institution(db))
                )
                made.append(
                    make_project_allocation(
                        db, pi=lead, call=calls[-1], officer=officer, hours=500, usable=mine
                    )
                )
            first = made[0]
            for _ in range(n):
                jobs += 1
                record = UsageRecord(
                    allocation_id=first.id,
                    cluster=first.cluster,
                    job_id=str(jobs),
                    account=first.account,
                    gpus=1,
                    elapsed_seconds=60,
                    ended_at=dt.datetime(2027, 1 + jobs % 12, 1 + jobs % 28, tzinfo=dt.UTC),
                    job_state="COMPLETED",
                )
                db.add(record)
                db.flush()
                services.charge(db, first, record.gpu_seconds)

    add(FEW)
    first = made[0]
    pages: list[tuple[User, str]] = [
        (officer, "/allocations/"),
        (officer, "/allocations/?format=csv"),
        (officer, f"/allocations/?q=reasoning&state=pending&resource={resource.id}&sort=used"),
        (officer, "/allocations/resources"),
        (officer, f"/allocations/resources/{resource.id}"),
        (officer, f"/allocations/resources/{resource.id}?format=csv"),
        (officer, f"/allocations/{first.id}"),
        (officer, f"/allocations/{first.id}/burndown.svg"),
        (pi, "/allocations/"),
        (pi, f"/allocations/?sort=project&resource={resource.id}"),
        (pi, f"/allocations/{first.id}"),
        (pi, f"/proposals/{first.proposal_id}"),
        (pi, "/dashboard"),
        (official, "/allocations/"),
        (official, "/allocations/?state=active&sort=ending"),
    ]

    def counts() -> list[int]:
        out = []
        for viewer, url in pages:
            login(client, viewer)
            assert client.get(url).status_code == 200, url
            out.append(count_queries(lambda url=url: client.get(url)))  # type: ignore[misc]
        return out

    few = counts()
    add(MANY - FEW)
    many = counts()
    for (viewer, url), a, b in zip(pages, few, many, strict=True):
        print(f"{url} as {viewer.display_name}: {a} queries at {FEW} rows, {b} at {MANY}")
    assert many == few, [
        (url, a, b) for (_, url), a, b in zip(pages, few, many, strict=True) if a != b
    ]
