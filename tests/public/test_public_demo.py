"""The public pages over the demo data (``portal.dev.demo``, as ``make run`` shows it: partners,
applicants, suspended and withdrawn institutions, proposals in every state, reviews, PIs who
agreed to be named and PIs who did not): each page shows exactly the partners and awarded
projects, with the allowed fields, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from portal.allocations.charts import hours_text
from portal.auth.models import User
from portal.dev.demo import load
from portal.extensions import db as flask_db
from portal.institutions.models import Institution, InstitutionState
from portal.outputs.models import ReleasedOutput
from portal.proposals.models import Award, Proposal, ProposalState, TeamRole
from portal.public.countries import country_name
from portal.reviews.models import Review
from tests.public.pages import hrefs, main_html, table
from tests.support.app import sessions_on

#: Rendering over one data set: SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once


@pytest.fixture(scope="module")
def _demo_loaded(app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    """The demo loaded once for this module, in a transaction rolled back at the end."""
    with app.app_context():
        engine = flask_db.engine
    connection = engine.connect()
    outer = connection.begin()
    folder = app.config["ATTACHMENT_FOLDER"]
    app.config["ATTACHMENT_FOLDER"] = str(tmp_path_factory.mktemp("demo") / "attachments")
    try:
        with sessions_on(connection) as session, app.app_context():
            load(session)
            session.commit()
        yield connection
    finally:
        app.config["ATTACHMENT_FOLDER"] = folder
        outer.rollback()
        connection.close()


@pytest.fixture
def demo(app: Flask, _demo_loaded: Connection) -> Iterator[Session]:
    """The demo; what a test changes is rolled back after it. No application context stays
    pushed: each request of the test client has its own (and its own database session)."""
    with sessions_on(_demo_loaded) as session:
        yield session


@pytest.fixture
def client(app: Flask, demo: Session) -> FlaskClient:
    return app.test_client()


def _all_rows(client: FlaskClient, path: str, caption: str) -> list[list[str]]:
    """Every row of a paged list (the demo fits a few pages)."""
    rows: list[list[str]] = []
    for page in range(1, 20):
        resp = client.get(f"{path}?page={page}")
        assert resp.status_code == 200
        found = table(resp.get_data(as_text=True), caption)
        if not found or (page > 1 and found == rows[-len(found) :]):
            break
        rows += found
        if len(found) < 25:
            break
    return rows


def _public_projects(demo: Session) -> list[Proposal]:
    return list(
        demo.scalars(
            select(Proposal)
            .join(Institution, Institution.id == Proposal.institution_id)
            .where(
                Proposal.state == ProposalState.ACTIVE,
                Institution.state == InstitutionState.PARTNER,
            )
        )
    )


def _pi(proposal: Proposal) -> User:
    return next(m.user for m in proposal.team if m.role == TeamRole.PI)


def _forbidden(demo: Session) -> list[str]:
    """What no public page may show, from the demo's own data."""
    public = _public_projects(demo)
    named = {_pi(p).id for p in public if _pi(p).public_name}
    texts: list[str] = []
    for user in demo.scalars(select(User)):
        if user.id not in named:
            texts.append(user.display_name)
        if user.email:
            texts.append(user.email)
    public_ids = {p.id for p in public}
    texts += [
        p.title
        for p in demo.scalars(select(Proposal))
        if p.id not in public_ids
        # A hidden proposal may share its title with an awarded one (a resubmission).
        and p.title not in {q.title for q in public}
    ]
    texts += [
        i.name for i in demo.scalars(select(Institution)) if i.state != InstitutionState.PARTNER
    ]
    for review in demo.scalars(select(Review)):
        texts += [t for t in (review.to_applicant, review.confidential) if len(t) > 20]
        texts += [str(c) for c in review.comments.values() if len(str(c)) > 20]
    for p in demo.scalars(select(Proposal)):
        texts += [t for t in (p.decision_note, p.decision_reason) if t and len(t) > 20]
    return [t for t in texts if t]


def test_the_demo_has_what_the_public_pages_must_sort_out(demo: Session) -> None:
    states = set(demo.scalars(select(Institution.state).distinct()))
    assert InstitutionState.PARTNER in states and len(states) > 1
    public = _public_projects(demo)
    assert public, "no awarded project of a partner in the demo"
    assert {ProposalState.DRAFT, ProposalState.DECLINED} <= set(
        demo.scalars(select(Proposal.state).distinct())
    )
    assert demo.scalar(select(func.count()).select_from(Review))
    pis = [_pi(p) for p in public]
    assert any(u.public_name for u in pis), "no consenting PI among the awarded projects"
    assert any(not u.public_name for u in pis), "no PI who did not consent"


def test_no_public_page_shows_what_is_not_public(client: FlaskClient, demo: Session) -> None:
    forbidden = _forbidden(demo)
    paths = ["/program/", "/program/partners", "/program/projects", "/program/calls"]
    paths += [f"/program/institutions/{i}" for i in demo.scalars(
        select(Institution.id).where(Institution.state == InstitutionState.PARTNER)
    )]  # fmt: skip
    paths += [f"/program/projects/{p.id}" for p in _public_projects(demo)]
    for path in paths:
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert "Set-Cookie" not in resp.headers, path
        content = main_html(resp.get_data(as_text=True))
        leaked = [t for t in forbidden if t in content]
        assert not leaked, f"{path} shows {leaked}"


def test_the_directory_lists_exactly_the_partners(client: FlaskClient, demo: Session) -> None:
    rows = _all_rows(client, "/program/partners", "Partner institutions")
    partners = sorted(
        demo.scalars(select(Institution).where(Institution.state == InstitutionState.PARTNER)),
        key=lambda i: (i.name.lower(), i.id),
    )
    assert [r[0] for r in rows] == [i.name for i in partners]
    assert [r[1] for r in rows] == [country_name(i.country) for i in partners]
    assert [r[3] for r in rows] == [
        i.partner_since.strftime("%B %Y") if i.partner_since else "—" for i in partners
    ]
    public = _public_projects(demo)
    assert [int(r[4]) for r in rows] == [
        sum(1 for p in public if p.institution_id == i.id) for i in partners
    ]
    for other in demo.scalars(
        select(Institution).where(Institution.state != InstitutionState.PARTNER)
    ):
        assert client.get(f"/program/institutions/{other.id}").status_code == 404, other.name


def test_the_projects_list_shows_exactly_the_awarded_projects(
    client: FlaskClient, demo: Session
) -> None:
    rows = {r[0]: r for r in _all_rows(client, "/program/projects", "Awarded projects")}
    public = _public_projects(demo)
    assert sorted(rows) == sorted(p.title for p in public)
    for p in public:
        pi = _pi(p)
        hours = demo.scalar(select(func.sum(Award.hours)).where(Award.proposal_id == p.id)) or 0
        released = demo.scalar(
            select(func.count())
            .select_from(ReleasedOutput)
            .where(ReleasedOutput.proposal_id == p.id)
        )
        _title, institution, named, shown_hours, outputs, _score = rows[p.title]
        assert institution == p.institution.name
        assert named == (pi.display_name if pi.public_name else "PI not named")
        assert shown_hours == hours_text(hours)
        assert (outputs == "None yet") == (released == 0)
    for p in demo.scalars(select(Proposal)):
        if p not in public:
            assert client.get(f"/program/projects/{p.id}").status_code == 404, p.title


def test_the_overview_counts_the_demo(client: FlaskClient, demo: Session) -> None:
    body = client.get("/program/").get_data(as_text=True)
    partners = demo.scalars(
        select(Institution.country).where(Institution.state == InstitutionState.PARTNER)
    ).all()
    by_country = table(body, "Partner institutions by country (the chart's figures)")
    assert sum(int(n) for _, n in by_country) == len(partners)
    assert {c for c, _ in by_country} == {country_name(c) for c in partners}
    by_kind = table(body, "Open outputs released, by kind (the chart's figures)")
    public_ids = [p.id for p in _public_projects(demo)]
    released = demo.scalar(
        select(func.count())
        .select_from(ReleasedOutput)
        .where(ReleasedOutput.proposal_id.in_(public_ids))
    )
    assert sum(int(n) for _, n in by_kind) == released
    assert "/program/partners" in hrefs(body)
