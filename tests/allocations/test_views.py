"""Every allocations route by every role, other institutions' and other projects' allocations
(IDOR), why a pending allocation cannot be used, the burn-down chart (valid SVG with a title, and
its table per month), the jobs, the resource pages and their CSV (formulas quoted), the project
page's allocations section and the dashboard card."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementKind
from portal.allocations import services
from portal.allocations.models import Allocation, AllocationState, UsageRecord
from portal.allocations.views import project_section
from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.institutions.models import Institution
from portal.proposals.models import CallResource, Proposal, ProposalState
from tests.factories import (
    LOGGED_IN,
    ROLE_NAMES,
    make_actor,
    make_agreement,
    make_call,
    make_institution,
    make_project_allocation,
    make_proposal,
    make_user,
)
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}
#: Who sees an allocation of a project at the actor's institution led by the actor (researcher).
OWN = STAFF | {"researcher", "official"}
SVG = "{http://www.w3.org/2000/svg}"

# Placeholders: {own} an active allocation of a project at the actor's institution (led by the
# actor when a researcher), {project} that project; {other} an allocation at another institution;
# {resource} the own allocation's resource.
CASES = [
    case("allocations list", "GET", "/allocations/", LOGGED_IN),
    case(
        "allocations list, filtered and sorted",
        "GET",
        "/allocations/?q=reasoning&state=active&resource={resource}&sort=used&page=2",
        LOGGED_IN,
    ),
    case("allocations as CSV", "GET", "/allocations/?format=csv", STAFF),
    case("own project's allocation", "GET", "/allocations/{own}", OWN),
    case("own project's allocation, jobs page 2", "GET", "/allocations/{own}?page=2", OWN),
    case("own project's burn-down", "GET", "/allocations/{own}/burndown.svg", OWN),
    case("another institution's allocation (IDOR)", "GET", "/allocations/{other}", STAFF),
    case(
        "another institution's burn-down (IDOR)", "GET", "/allocations/{other}/burndown.svg", STAFF
    ),
    case("an allocation that does not exist", "GET", "/allocations/2147483647", set()),
    case("resources", "GET", "/allocations/resources", STAFF),
    case("resources, searched", "GET", "/allocations/resources?q=H100&sort=capacity", STAFF),
    case("one resource", "GET", "/allocations/resources/{resource}", STAFF),
    case("one resource as CSV", "GET", "/allocations/resources/{resource}?format=csv", STAFF),
    case("a resource that does not exist", "GET", "/allocations/resources/2147483647", set()),
    # Signing officials see an active project's allocations, but not (proposals decide) its page.
    case("the project page", "GET", "/proposals/{project}", STAFF | {"researcher"}),
    case("dashboard", "GET", "/dashboard", LOGGED_IN),
]


@pytest.fixture
def allocate(app: Flask, db: Session) -> Callable[..., Allocation]:
    """``allocate(**kw)``: ``make_project_allocation`` in an app context of its own (the mails of
    the approval link to the portal), popped before the test's requests."""

    def make(**kw: Any) -> Allocation:
        with app.app_context():
            return make_project_allocation(db, **kw)

    return make


def section(app: Flask, proposal: Proposal, user: User) -> dict[str, Any] | None:
    with app.app_context():
        return project_section(proposal, user)


def _snapshot(db: Session) -> list[object]:
    return [
        (a.id, a.state, a.used_gpu_seconds, a.hours)
        for a in db.scalars(select(Allocation).order_by(Allocation.id))
    ]


def use(
    db: Session, allocation: Allocation, *, job: str, gpus: int, hours: float, ended: dt.datetime
) -> UsageRecord:
    """One job of ``gpus`` GPUs for ``hours`` ending at ``ended``, charged to ``allocation`` the
    way an import does: the record, then ``services.charge``."""
    elapsed = int(hours * 3600)
    record = UsageRecord(
        allocation_id=allocation.id,
        cluster=allocation.cluster,
        job_id=job,
        account=allocation.account,
        gpus=gpus,
        elapsed_seconds=elapsed,
        started_at=ended - dt.timedelta(seconds=elapsed),
        ended_at=ended,
        job_state="COMPLETED",
    )
    db.add(record)
    db.flush()
    services.charge(db, allocation, record.gpu_seconds)
    return record


def started_days_ago(db: Session, allocation: Allocation, days: int, months: int = 12) -> None:
    """Move ``allocation``'s period so that it began ``days`` ago (projects made by the factories
    start in 2027)."""
    start = utcnow().date() - dt.timedelta(days=days)
    db.execute(
        update(Allocation)
        .where(Allocation.id == allocation.id)
        .values(starts_on=start, ends_on=start + dt.timedelta(days=30 * months))
    )
    db.flush()
    db.refresh(allocation)


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(
    client: FlaskClient, db: Session, role: str, case: Case, allocate: Callable[..., Allocation]
) -> None:
    own_inst = make_institution(db)
    actor = make_actor(db, role, own_inst)
    if actor is not None:
        login(client, actor)
    pi = actor if role == "researcher" else make_user(db, Role.RESEARCHER, institution=own_inst)
    own = allocate(pi=pi)
    other = allocate()
    assert own.state == other.state == AllocationState.ACTIVE
    started_days_ago(db, own, 40)
    for i in range(30):  # more than a page of jobs
        use(db, own, job=f"{i}", gpus=8, hours=1, ended=dt.datetime.now(dt.UTC))
    values: dict[str, Any] = {
        "own": own.id,
        "project": own.proposal_id,
        "other": other.id,
        "resource": own.resource_id,
    }
    resp = check_route(
        client, db, role, actor.id if actor else None, case, values, lambda: _snapshot(db)
    )
    if role in case.allowed and case.path.endswith(".svg"):
        assert resp.mimetype == "image/svg+xml"
    if role in case.allowed and "format=csv" in case.path:
        assert resp.mimetype == "text/csv"


# --- IDOR -------------------------------------------------------------------------------------


def test_another_institutions_official_and_another_projects_pi_are_refused(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation], app: Flask
) -> None:
    allocation = allocate()
    proposal = allocation.proposal
    other_official = make_user(db, Role.SIGNING_OFFICIAL, institution=make_institution(db))
    # A PI at the same institution, of another project: not on this project's team.
    other_pi = make_user(db, Role.RESEARCHER, institution=allocation.institution)
    theirs = allocate(pi=other_pi)
    for intruder in (other_official, other_pi):
        login(client, intruder)
        assert client.get(f"/allocations/{allocation.id}").status_code == 403
        assert client.get(f"/allocations/{allocation.id}/burndown.svg").status_code == 403
        assert section(app, proposal, intruder) is None
        listed = client.get("/allocations/").get_data(as_text=True)
        assert f'/allocations/{allocation.id}"' not in listed
        assert client.get("/allocations/?format=csv").status_code == 403

    # The other PI's own project page shows their allocation, never this one.
    login(client, other_pi)
    page = client.get(f"/proposals/{theirs.proposal_id}").get_data(as_text=True)
    assert f'/allocations/{theirs.id}"' in page
    assert f'/allocations/{allocation.id}"' not in page
    assert allocation.account not in page

    # This project's PI, and its institution's signing official, do see it.
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=allocation.institution)
    pi = proposal.team[0].user
    for viewer in (pi, official):
        ctx = section(app, proposal, viewer)
        assert ctx is not None and [a.id for a, _ in ctx["rows"]] == [allocation.id]


def test_the_list_shows_only_what_the_detail_page_would(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    mine = allocate()
    allocate()
    login(client, mine.proposal.team[0].user)
    page = client.get("/allocations/").get_data(as_text=True)
    assert re.findall(r'href="/allocations/(\d+)"', page) == [str(mine.id)]


# --- why it cannot be used ----------------------------------------------------------------------


def test_a_pending_allocation_says_why_it_cannot_be_used(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    allocation = allocate(usable=False)
    assert allocation.state == AllocationState.PENDING
    pi = allocation.proposal.team[0].user

    # No contribution agreement yet: program staff issue it (the link is theirs only).
    login(client, pi)
    page = client.get(f"/allocations/{allocation.id}").get_data(as_text=True)
    assert "Why these GPU-hours cannot be used yet" in page
    assert "none has been issued yet: program staff issue it." in page
    assert "/agreements/issue" not in page
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    page = client.get(f"/allocations/{allocation.id}").get_data(as_text=True)
    assert "/agreements/issue?kind=contribution" in page and "Issue it" in page

    # Issued and waiting on the PI: the page says so and links to the agreement.
    agreement = make_agreement(db, kind=AgreementKind.CONTRIBUTION, proposal=allocation.proposal)
    login(client, pi)
    page = client.get(f"/allocations/{allocation.id}").get_data(as_text=True)
    assert "It is waiting on: Principal investigator" in page
    assert f"/agreements/{agreement.id}" in page and "Open the agreement" in page
    # …and so does the project page's section.
    page = client.get(f"/proposals/{allocation.proposal_id}").get_data(as_text=True)
    section = page.partition('id="allocations"')[2].partition("</section>")[0]
    assert "Waiting on the agreement" in section  # the state's label
    assert "It is waiting on: Principal investigator" in section
    assert f"/allocations/{allocation.id}" in section and f"/agreements/{agreement.id}" in section


def test_a_suspended_allocation_says_its_institution_is_suspended(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation], app: Flask
) -> None:
    from portal.allocations.workflow import ALLOCATION_WORKFLOW
    from portal.institutions.models import InstitutionState

    allocation = allocate()
    officer = make_user(db, Role.PROGRAM_OFFICER)
    with app.app_context():
        ALLOCATION_WORKFLOW.run(db, allocation, "suspend", actor=officer, reason="Unpaid dues.")
    inst: Institution = allocation.institution
    inst.state = InstitutionState.SUSPENDED
    db.flush()
    login(client, allocation.proposal.team[0].user)
    page = client.get(f"/allocations/{allocation.id}").get_data(as_text=True)
    assert "Why these GPU-hours cannot be used:" in page
    assert f"{inst.name} is suspended, not a partner in good standing" in page


def test_an_active_allocation_shows_no_blocker(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    allocation = allocate()
    login(client, allocation.proposal.team[0].user)
    page = client.get(f"/allocations/{allocation.id}").get_data(as_text=True)
    assert 'id="blocker"' not in page and "cannot be used" not in page


# --- the burn-down ------------------------------------------------------------------------------


def test_the_burndown_is_valid_svg_with_a_title_and_a_table_per_month(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    allocation = allocate(hours=1000, title='Tokens <&> "quotes" ]]>')
    started_days_ago(db, allocation, 70)
    start = allocation.starts_on
    first = dt.datetime.combine(start + dt.timedelta(days=3), dt.time(12), tzinfo=dt.UTC)
    use(db, allocation, job="1", gpus=8, hours=10, ended=first)  # 80 GPU-hours
    use(db, allocation, job="2", gpus=4, hours=5, ended=first)  # 20, the same day
    later = dt.datetime.combine(start + dt.timedelta(days=45), dt.time(1), tzinfo=dt.UTC)
    use(db, allocation, job="3", gpus=2, hours=25, ended=later)  # 50
    login(client, allocation.proposal.team[0].user)

    resp = client.get(f"/allocations/{allocation.id}/burndown.svg")
    assert resp.status_code == 200 and resp.mimetype == "image/svg+xml"
    root = ElementTree.fromstring(resp.data)  # noqa: S314 - the portal's own output
    assert root.tag == f"{SVG}svg"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and title.text is not None and desc is not None and desc.text
    assert 'Tokens <&> "quotes" ]]>' in title.text
    assert "150 used" in desc.text and "850 left" in desc.text
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert start.replace(day=1) <= start and any(
        t == (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1).strftime("%b %Y")
        for t in texts
    ), texts  # a month label on the time axis
    assert "GPU-hours left" in texts
    assert root.find(f"{SVG}polyline") is not None  # what is left
    assert b"<script" not in resp.data

    page = client.get(f"/allocations/{allocation.id}").get_data(as_text=True)
    assert f'src="/allocations/{allocation.id}/burndown.svg"' in page
    assert "Tokens &lt;&amp;&gt; &#34;quotes&#34; ]]&gt;" in page
    table = page.partition('id="usage-per-month"')[2].partition("</table>")[0]
    month_rows = re.findall(r"<tr>\s*<th scope=\"row\"[^>]*>([^<]+)</th>(.*?)</tr>", table, re.S)
    assert month_rows[0][0] == start.strftime("%B %Y")
    cells = [re.findall(r'<td class="text-end">([^<]+)</td>', r) for _, r in month_rows]
    used_in = {m: c[0] for (m, _), c in zip(month_rows, cells, strict=True)}
    first_month = first.strftime("%B %Y")
    later_month = later.strftime("%B %Y")
    if first_month == later_month:
        assert used_in[first_month] == "150"
    else:
        assert used_in[first_month] == "100" and used_in[later_month] == "50"
    assert cells[-1][0] == "—"  # months still to come have no figures yet
    # The jobs, latest first.
    jobs = page.partition('id="jobs-h"')[2]
    assert jobs.index("<code>3</code>") < jobs.index("<code>1</code>")


def test_an_allocation_without_usage_draws_a_flat_line(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    allocation = allocate()  # starts in 2027: the future
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.get(f"/allocations/{allocation.id}/burndown.svg")
    root = ElementTree.fromstring(resp.data)  # noqa: S314 - the portal's own output
    assert root.find(f"{SVG}title") is not None
    page = client.get(f"/allocations/{allocation.id}").get_data(as_text=True)
    assert "No jobs reported yet." in page


# --- resources ----------------------------------------------------------------------------------


def _csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


def test_csv_downloads_quote_cells_a_spreadsheet_would_run(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    evil = '=HYPERLINK("https://evil.example","x")'
    inst = make_institution(db, name="@SUM(1+1) University")
    pi = make_user(db, Role.RESEARCHER, institution=inst)
    call = make_call(db, title="+cmd call", budget_hours=100_000)
    allocation = allocate(pi=pi, call=call, title=evil)
    login(client, make_user(db, Role.PROGRAM_OFFICER))

    rows = _csv(client.get("/allocations/?format=csv").data)
    header, line = rows[0], next(r for r in rows[1:] if r[0] == str(allocation.id))
    assert line[header.index("project")] == "'" + evil
    assert line[header.index("institution")] == "'@SUM(1+1) University"
    assert line[header.index("hours")] == "1000"

    resp = client.get(f"/allocations/resources/{allocation.resource_id}?format=csv")
    assert resp.mimetype == "text/csv"
    assert (
        resp.headers["Content-Disposition"]
        == f'attachment; filename="resource-{allocation.resource_id}.csv"'
    )
    rows = _csv(resp.data)
    assert rows[0] == ["group", "name", "budget_hours", "awarded_hours", "used_hours", "left_hours"]
    assert ["call", "'+cmd call", "100000", "1000", "0", "99000"] in rows
    assert ["institution", "'@SUM(1+1) University", "", "1000", "0", "1000"] in rows
    assert rows[1][0] == "resource" and rows[1][3] == "1000"


def test_the_resource_page_shows_each_call_and_institution_as_chart_and_table(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    call = make_call(db, budget_hours=50_000)
    cr: CallResource = call.resources[0]
    a1 = allocate(call=call, hours=1000)
    a2 = allocate(call=call, hours=500)
    use(db, a1, job="1", gpus=8, hours=25, ended=dt.datetime.now(dt.UTC))  # 200 GPU-hours
    login(client, make_user(db, Role.ADMIN))
    page = client.get(f"/allocations/resources/{cr.resource_id}").get_data(as_text=True)
    assert page.count("<h1") == 1
    per_call = page.partition('id="per-call"')[2].partition("</table>")[0]
    assert call.title in per_call
    assert re.search(
        r"50,000</td><td class=\"text-end\">1,500</td><td class=\"text-end\">200</td>"
        r"<td class=\"text-end\">48,500</td>",
        per_call,
    ), per_call
    per_inst = page.partition('id="per-institution"')[2].partition("</table>")[0]
    assert a1.institution.name in per_inst and a2.institution.name in per_inst
    assert ">800</td>" in per_inst  # a1: 1,000 awarded, 200 used
    # Two inline charts, each with its accessible name and description.
    charts = re.findall(r"<svg[^>]*>", page)
    assert len(charts) == 2
    for prefix in ("calls-chart", "institutions-chart"):
        assert f'aria-labelledby="{prefix}-title"' in page
        assert f'<title id="{prefix}-title">' in page
    svg = page[page.index("<svg") : page.index("</svg>") + 6]
    ElementTree.fromstring(svg)  # noqa: S314 - well-formed
    # The list of resources links here, with the hours allocated and used.
    listing = client.get("/allocations/resources").get_data(as_text=True)
    assert f'href="/allocations/resources/{cr.resource_id}"' in listing


def test_bad_filters_never_fail(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    allocate()
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    for query in (
        "resource=abc&sort=%00x&state=nope&page=-4",
        "resource=99999999999999999999&q=%25_%5C",
        "format=csv&resource=-1&state=active&q=%27%20OR%201%3D1",
    ):
        resp = client.get(f"/allocations/?{query}")
        assert resp.status_code < 500, query
        resp = client.get(f"/allocations/resources?{query}")
        assert resp.status_code < 500, query


# --- the project page and the dashboard ---------------------------------------------------------


def test_the_project_page_lists_its_allocations_with_their_use(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    allocation = allocate(hours=2000)
    use(db, allocation, job="1", gpus=10, hours=50, ended=dt.datetime.now(dt.UTC))  # 25 %
    pi: User = allocation.proposal.team[0].user
    login(client, pi)
    page = client.get(f"/proposals/{allocation.proposal_id}").get_data(as_text=True)
    section = page.partition('id="allocations"')[2].partition("</section>")[0]
    assert f'href="/allocations/{allocation.id}"' in section
    assert "2,000 GPU-hours · 500 used · 1,500 left" in section
    assert '<progress class="w-100" value="500.0" max="2000"' in section
    assert "25% used" in section

    dashboard = client.get("/dashboard").get_data(as_text=True)
    card = dashboard.partition('id="myalloc-h"')[2].partition("</section>")[0]
    assert allocation.proposal.title in card and "25% used" in card


def test_nobody_without_allocations_gets_the_section_or_the_card(
    client: FlaskClient, db: Session, app: Flask
) -> None:
    pi = make_user(db, Role.RESEARCHER)
    login(client, pi)
    assert 'id="myalloc-h"' not in client.get("/dashboard").get_data(as_text=True)
    without = make_proposal(db, pi=pi, state=ProposalState.ACTIVE)
    assert section(app, without, pi) is None
    assert section(app, without, make_user(db, Role.PROGRAM_OFFICER)) is None
    page = client.get(f"/proposals/{without.id}").get_data(as_text=True)
    assert 'id="allocations"' not in page


def test_the_navigation_offers_allocations_to_everyone_and_resources_to_staff(
    client: FlaskClient, db: Session
) -> None:
    login(client, make_user(db, Role.RESEARCHER))
    nav = client.get("/dashboard").get_data(as_text=True).partition("</nav>")[0]
    assert 'href="/allocations/"' in nav and 'href="/allocations/resources"' not in nav
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    nav = client.get("/dashboard").get_data(as_text=True).partition("</nav>")[0]
    assert 'href="/allocations/"' in nav and 'href="/allocations/resources"' in nav
    assert 'href="/resources/"' in nav  # the catalog, in the same drop-down
