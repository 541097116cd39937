"""The portal over HTTP under gunicorn, beside a bare-Flask floor (``make bench``).

On a copy of the scale database, logged in as each persona (and anonymously, and with operator
API tokens): each main page's median and p95 latency and SQL statements with one worker; then
requests per second on the program officer's proposal list (a call's proposals) with one worker
and with the configured number, and the workers' memory after; the floor measured the same way. Figures are
recorded and printed, never asserted; what is asserted is that the bench measured real pages:
every persona is logged in, and every page answered 200.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import func, select, table

from portal.datasets.models import Dataset
from portal.extensions import db
from tests.benchmarks.database import ScaleDatabase, working_copy
from tests.benchmarks.pages import (
    API_ALLOCATIONS,
    API_GRANTS,
    PROPOSAL_LIST,
    busiest_dataset,
    pages,
)
from tests.benchmarks.report import PageResult, RateResult, Results
from tests.benchmarks.server import (
    FLOOR_APP,
    PORTAL_APP,
    Server,
    gunicorn,
    portal_app,
    portal_config,
)
from tests.benchmarks.settings import Settings
from tests.benchmarks.timing import fetch, latency, throughput
from tests.benchmarks.visitors import (
    ADMIN,
    ANONYMOUS,
    Visitor,
    add_admin,
    all_resources,
    anonymous,
    api_token,
    log_in,
    personas,
)

MAX_REDIRECTS = 5
#: The tables whose sizes the results show (the generator's main output).
COUNTED = (
    "institutions",
    "users",
    "calls",
    "proposals",
    "assignments",
    "reviews",
    "allocations",
    "usage_records",
    "allocation_requests",
    "datasets",
    "dataset_grants",
    "dataset_requests",
    "agreements",
    "agreement_signatures",
    "audit_events",
    "outbox",
)


def _prepare(url: str, secret: str) -> tuple[dict[str, Visitor], dict[str, str], dict[str, int]]:
    """Log the visitors in and make the API tokens (with the path each token lists); count the
    data."""
    app = portal_app(url, secret)
    with app.app_context():
        session = db.session()
        users = personas(session)
        admin = add_admin(session)
        visitors = {name: log_in(app, session, name, user) for name, user in users.items()}
        visitors[ADMIN] = log_in(app, session, ADMIN, admin)
        visitors[ANONYMOUS] = anonymous()
        api: dict[str, str] = {}
        resources = all_resources(session)
        if resources:
            headers = api_token(session, admin, resources=resources)
            visitors[API_ALLOCATIONS] = Visitor(API_ALLOCATIONS, None, "", headers)
            api[API_ALLOCATIONS] = "/api/v1/allocations"
        dataset = busiest_dataset(session)
        if dataset is not None:
            headers = api_token(session, admin, datasets=[session.get_one(Dataset, dataset)])
            visitors[API_GRANTS] = Visitor(API_GRANTS, None, "", headers)
            api[API_GRANTS] = f"/api/v1/datasets/{dataset}/grants"
        counts = {
            name: session.scalar(select(func.count()).select_from(table(name))) or 0
            for name in COUNTED
        }
        session.commit()
        db.session.remove()
        db.engine.dispose()
    return visitors, api, counts


def _browser(server: Server, visitors: dict[str, Visitor]) -> Callable[[str | None, str], str]:
    """``get(visitor, path)``: the page's HTML as the visitor sees it (redirects followed)."""

    def get(who: str | None, path: str) -> str:
        headers = visitors[who or ANONYMOUS].headers
        for _ in range(MAX_REDIRECTS):
            answer = fetch(server.port, path, headers)
            if answer.location is None:
                if answer.status != 200:
                    raise LookupError(f"{path} answered {answer.status}")
                return answer.body.decode()
            path = urlsplit(answer.location)._replace(scheme="", netloc="").geturl()
        raise LookupError(f"{path}: more than {MAX_REDIRECTS} redirects")

    return get


def _check_logins(server: Server, visitors: dict[str, Visitor]) -> None:
    """Each logged-in visitor's dashboard is theirs (200, with their name), not the login page."""
    for v in visitors.values():
        if v.user_id is None:
            continue
        answer = fetch(server.port, "/dashboard", v.headers)
        assert answer.status == 200, f"{v.name}'s dashboard answered {answer.status}"
        assert v.display_name.encode() in answer.body, f"{v.name} is not logged in"


def _rate(
    server: Server, name: str, path: str, headers: dict[str, str], settings: Settings
) -> RateResult:
    run = throughput(
        server.port,
        path,
        headers,
        seconds=settings.seconds,
        clients=settings.clients_for(server.workers),
    )
    memory = server.memory()
    return RateResult(
        server=name,
        path=path,
        workers=server.workers,
        clients=run.clients,
        seconds=run.seconds,
        requests=run.requests,
        errors=run.errors,
        rps=run.rps,
        rps_per_worker=run.rps / server.workers,
        rss_max_mib=memory.max_mib,
        rss_mean_mib=memory.mean_mib,
    )


def test_portal_pages_over_http_beside_the_floor(
    settings: Settings, scale_database: ScaleDatabase, results: Results, tmp_path: Path
) -> None:
    secret = secrets.token_urlsafe(48)  # a new one each run: production refuses a weak key
    with working_copy(scale_database, tmp_path) as url:
        visitors, api, results.data = _prepare(url, secret)
        env = portal_config(url, secret)
        worker_counts = sorted({1, settings.workers})

        with gunicorn(PORTAL_APP, 1, env, tmp_path) as server:
            _check_logins(server, visitors)
            timed_pages, results.missing = pages(_browser(server, visitors), api=api)
            loaded = next(p for p in timed_pages if (p.visitor, p.label) == PROPOSAL_LIST)
            headers = visitors[loaded.visitor].headers
            for page in timed_pages:
                timed = latency(
                    server.port, page.path, visitors[page.visitor].headers, settings.rounds
                )
                results.pages.append(
                    PageResult(
                        visitor=page.visitor,
                        page=page.label,
                        path=page.path,
                        status=timed.status,
                        bytes=timed.bytes,
                        statements=timed.statements,
                        statements_max=timed.statements_max,
                        median_ms=timed.median_ms,
                        p95_ms=timed.p95_ms,
                    )
                )
                print(
                    f"{page.label:<36} {page.visitor:<24} {timed.status} "
                    f"{timed.median_ms:7.1f} ms  {timed.statements} SQL"
                )
            results.throughput.append(_rate(server, "portal", loaded.path, headers, settings))
        list_bytes = next(p.bytes for p in results.pages if p.path == loaded.path)
        floor_env = {"BENCH_FLOOR_BYTES": str(list_bytes)}
        with gunicorn(FLOOR_APP, 1, floor_env, tmp_path) as floor:
            timed = latency(floor.port, "/", {}, settings.rounds)
            results.floor = {
                "bytes": timed.bytes,
                "median_ms": timed.median_ms,
                "p95_ms": timed.p95_ms,
            }
            results.throughput.append(_rate(floor, "floor", "/", {}, settings))
        for workers in worker_counts[1:]:
            with gunicorn(PORTAL_APP, workers, env, tmp_path) as server:
                results.throughput.append(_rate(server, "portal", loaded.path, headers, settings))
            with gunicorn(FLOOR_APP, workers, floor_env, tmp_path) as floor:
                results.throughput.append(_rate(floor, "floor", "/", {}, settings))

    for p in results.pages:
        p.ratio = p.median_ms / results.floor["median_ms"]
    floors = {t.workers: t.rps for t in results.throughput if t.server == "floor"}
    for t in results.throughput:
        if t.server == "portal":
            t.share_of_floor = t.rps / floors[t.workers]
    failed = [f"{p.page} as {p.visitor}: {p.status}" for p in results.pages if p.status != 200]
    assert not failed, "pages that did not answer 200: " + ", ".join(failed)
