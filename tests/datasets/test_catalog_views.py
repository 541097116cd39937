"""The catalog pages by every role: the public catalog (anonymous visitors see open and registered
datasets in the catalog, never a draft or a controlled one), one dataset with what it takes and
the visitor's next step, adding and editing entries (form errors change nothing), publishing,
retiring and restoring, stewards; the datasets a proposal plans to use and the proposal page's
section; a steward's pre-approvals (never another dataset's); CSRF on every POST; sizes."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from wtforms.validators import ValidationError as FieldError

from portal.agreements.models import AgreementKind
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.models import utcnow
from portal.datasets.forms import exact_size, parse_size, size_label
from portal.datasets.models import (
    AccessTier,
    ConsentState,
    Dataset,
    DatasetState,
    DatasetSteward,
    GrantState,
    ProposalDataset,
    RequestState,
)
from portal.proposals.models import ProposalState
from tests.factories import (
    LOGGED_IN,
    ROLE_NAMES,
    make_access_request,
    make_actor,
    make_agreement_template,
    make_dataset,
    make_grant,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}
EVERYONE = frozenset(ROLE_NAMES)
#: Program staff, and the actor when they are a data steward of the dataset.
CURATORS = STAFF | {"steward"}

# Placeholders: {own} a listed controlled dataset the actor stewards (when a steward; a
# steward of the other one is never a steward of this), {other} a listed controlled dataset
# someone else stewards, {open} and {registered} listed datasets of those tiers, {draft} a draft
# the actor stewards, {other_draft} one they do not, {retired} a retired dataset the actor
# stewards; {*_id} their ids, {dua} a data-use template, {extra} a second steward of {own} (its
# DatasetSteward id), {candidate} the address of a data steward who stewards nothing; {proposal}
# a draft proposal led by the actor (a researcher), {own_link} and {other_link} the asked
# pre-approvals of {own} and {other} for a submitted proposal.
EDIT = {
    "slug": "{own}",
    "name": "Clinical notes, second release",
    "summary": "De-identified notes.",
    "description": "Notes.",
    "version": "2.0",
    "size": "1.5 TB",
    "licence": "CC-BY-4.0",
    "tier": "controlled",
    "terms": "No re-identification.",
    "dua_template_id": "{dua}",
    "max_months": "12",
    "location": "s3://atom-datasets/notes-v2/",
}
NEW = {
    "slug": "web-corpus-2026",
    "name": "Web corpus 2026",
    "summary": "Filtered web text.",
    "description": "# The corpus\n\nText.",
    "version": "1",
    "size": "12 GB",
    "licence": "ODC-By-1.0",
    "tier": "open",
    "terms": "",
    "dua_template_id": "",
    "max_months": "12",
    "location": "s3://atom-datasets/web-2026/",
}
PICK = {
    "rows-0-dataset_id": "{open_id}",
    "rows-0-chosen": "y",
    "rows-0-purpose": "Evaluating the project's models on it.",
}

CASES = [
    case("catalog", "GET", "/datasets/", EVERYONE),
    case(
        "catalog, searched and filtered",
        "GET",
        "/datasets/?q=notes&tier=controlled&state=draft&sort=largest&page=2",
        EVERYONE,
    ),
    case("catalog as CSV", "GET", "/datasets/?format=csv", STAFF),
    case("an open dataset", "GET", "/datasets/{open}", EVERYONE),
    case("a registered dataset", "GET", "/datasets/{registered}", EVERYONE),
    case("a controlled dataset", "GET", "/datasets/{own}", LOGGED_IN),
    case("a retired dataset", "GET", "/datasets/{retired}", LOGGED_IN),
    case("a draft the steward stewards", "GET", "/datasets/{draft}", CURATORS),
    case("another steward's draft", "GET", "/datasets/{other_draft}", STAFF),
    case("new dataset form", "GET", "/datasets/new", STAFF),
    case("add a dataset", "POST", "/datasets/new", STAFF, 302, NEW),
    case("edit form", "GET", "/datasets/{own}/edit", CURATORS),
    case("edit", "POST", "/datasets/{own}/edit", CURATORS, 302, EDIT),
    case("edit form of another steward's dataset", "GET", "/datasets/{other}/edit", STAFF),
    case(
        "edit another steward's dataset",
        "POST",
        "/datasets/{other}/edit",
        STAFF,
        302,
        {**EDIT, "slug": "{other}"},
    ),
    case("edit a draft of another steward", "GET", "/datasets/{other_draft}/edit", STAFF),
    case("publish", "POST", "/datasets/{draft}/publish", CURATORS, 302),
    case("retire", "POST", "/datasets/{own}/retire", CURATORS, 302, {"reason": "Superseded."}),
    case(
        "retire another steward's dataset",
        "POST",
        "/datasets/{other}/retire",
        STAFF,
        302,
        {"reason": "Superseded."},
    ),
    case("restore", "POST", "/datasets/{retired}/restore", CURATORS, 302),
    case("an action that does not exist", "POST", "/datasets/{own}/explode", set()),
    case("add a steward", "POST", "/datasets/{own}/stewards", STAFF, 302, {"email": "{candidate}"}),
    case("remove a steward", "POST", "/datasets/{own}/stewards/{extra}/remove", STAFF, 302),
    case("choose a proposal's datasets", "GET", "/datasets/proposals/{proposal}", {"researcher"}),
    case(
        "save a proposal's datasets",
        "POST",
        "/datasets/proposals/{proposal}",
        {"researcher"},
        302,
        PICK,
    ),
    case("pre-approvals", "GET", "/datasets/pre-approvals", LOGGED_IN),
    case("pre-approvals given", "GET", "/datasets/pre-approvals?state=consented&q=x", LOGGED_IN),
    case(
        "pre-approve own dataset",
        "POST",
        "/datasets/pre-approvals/{own_link}/consent",
        {"steward"},
        302,
        {"reason": "Fine."},
    ),
    case(
        "refuse own dataset",
        "POST",
        "/datasets/pre-approvals/{own_link}/refuse",
        {"steward"},
        302,
        {"reason": "Not for this purpose."},
    ),
    case(
        "pre-approve another steward's dataset",
        "POST",
        "/datasets/pre-approvals/{other_link}/consent",
        set(),
    ),
    case("the proposal page", "GET", "/proposals/{proposal}", STAFF | {"researcher"}),
    case("dashboard", "GET", "/dashboard", LOGGED_IN),
]


def _asked_link(db: Session, dataset: Dataset) -> ProposalDataset:
    """``dataset`` planned by a submitted proposal whose team its stewards are not on, and its
    stewards asked to pre-approve it."""
    proposal = make_proposal(db, state=ProposalState.SUBMITTED)
    link = ProposalDataset(
        proposal_id=proposal.id,
        dataset_id=dataset.id,
        purpose="Training a clinical summariser.",
        state=ConsentState.ASKED,
        asked_at=utcnow(),
    )
    db.add(link)
    db.flush()
    return link


def world(db: Session, actor: User | None, own_inst: Any) -> dict[str, Any]:
    """The objects of the matrix, for ``actor``."""
    steward = (
        actor if actor is not None and actor.has_role(Role.DATA_STEWARD) else None
    ) or make_user(db, Role.DATA_STEWARD)
    someone_else = make_user(db, Role.DATA_STEWARD)
    dua = make_agreement_template(db, kind=AgreementKind.DATA_USE)
    extra = make_user(db, Role.DATA_STEWARD)
    own = make_dataset(db, stewards=[steward, extra], dua_template=dua, name="Clinical notes")
    other = make_dataset(db, stewards=[someone_else])
    pi = (
        actor
        if actor is not None and actor.has_role(Role.RESEARCHER)
        else make_user(db, Role.RESEARCHER, institution=own_inst)
    )
    proposal = make_proposal(db, pi=pi)
    open_ = make_dataset(db, tier=AccessTier.OPEN)
    values = {
        "own": own.slug,
        "other": other.slug,
        "open": open_.slug,
        "open_id": open_.id,
        "registered": make_dataset(db, tier=AccessTier.REGISTERED).slug,
        "draft": make_dataset(db, state=DatasetState.DRAFT, stewards=[steward]).slug,
        "other_draft": make_dataset(db, state=DatasetState.DRAFT, stewards=[someone_else]).slug,
        "retired": make_dataset(db, state=DatasetState.RETIRED, stewards=[steward]).slug,
        "dua": dua.id,
        "extra": next(s.id for s in own.stewards if s.user_id == extra.id),
        "candidate": make_user(db, Role.DATA_STEWARD).email,
        "proposal": proposal.id,
        "own_link": _asked_link(db, own).id,
        "other_link": _asked_link(db, other).id,
    }
    return values


def _snapshot(db: Session) -> list[object]:
    return [
        [
            (d.id, d.slug, d.name, d.state, d.tier, d.size_bytes, d.version, d.location)
            for d in db.scalars(select(Dataset).order_by(Dataset.id))
        ],
        sorted((s.dataset_id, s.user_id) for s in db.scalars(select(DatasetSteward))),
        [
            (link.proposal_id, link.dataset_id, link.state, link.purpose, link.decision_note)
            for link in db.scalars(select(ProposalDataset).order_by(ProposalDataset.id))
        ],
    ]


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(client: FlaskClient, db: Session, role: str, case: Case) -> None:
    own_inst = make_institution(db)
    actor = make_actor(db, role, own_inst)
    values = world(db, actor, own_inst)
    if actor is not None:
        login(client, actor)
    resp = check_route(
        client, db, role, actor.id if actor else None, case, values, lambda: _snapshot(db)
    )
    if role in case.allowed and "format=csv" in case.path:
        assert resp.mimetype == "text/csv"


# --- the public catalog ---------------------------------------------------------------------------


def _slugs(page: str) -> set[str]:
    """The datasets a catalog page lists (its table's links)."""
    rows = page.partition("<tbody>")[2].partition("</tbody>")[0]
    return set(re.findall(r'href="/datasets/([a-z0-9-]+)"', rows))


def test_anonymous_visitors_see_listed_open_and_registered_datasets_only(
    client: FlaskClient, db: Session
) -> None:
    open_ = make_dataset(db, tier=AccessTier.OPEN, name="Open web text")
    registered = make_dataset(db, tier=AccessTier.REGISTERED, name="Registered speech")
    controlled = make_dataset(db, name="Controlled notes")
    draft = make_dataset(db, tier=AccessTier.OPEN, state=DatasetState.DRAFT, name="Draft corpus")
    retired = make_dataset(db, tier=AccessTier.OPEN, state=DatasetState.RETIRED)

    page = client.get("/datasets/").get_data(as_text=True)
    assert _slugs(page) == {open_.slug, registered.slug, retired.slug}
    assert "Draft corpus" not in page and "Controlled notes" not in page
    assert "Open: download freely" in page and "Registered: accept the terms" in page
    assert "Your access" not in page and "New dataset" not in page
    # The state filter is not theirs: asking for drafts shows none.
    page = client.get("/datasets/?state=draft").get_data(as_text=True)
    assert draft.slug not in _slugs(page)
    assert 'name="state"' not in page

    assert client.get(f"/datasets/{open_.slug}").status_code == 200
    assert client.get(f"/datasets/{registered.slug}").status_code == 200
    for hidden in (controlled, draft):
        resp = client.get(f"/datasets/{hidden.slug}")
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/auth/login")
    assert client.get("/datasets/nothing-here").status_code == 404
    assert client.get("/datasets/?format=csv").status_code == 302


def test_logged_in_people_also_see_controlled_and_curators_their_drafts(
    client: FlaskClient, db: Session
) -> None:
    steward = make_user(db, Role.DATA_STEWARD)
    mine = make_dataset(db, state=DatasetState.DRAFT, stewards=[steward], name="My draft")
    theirs = make_dataset(db, state=DatasetState.DRAFT, name="Their draft")
    controlled = make_dataset(db, name="Controlled notes")

    login(client, make_user(db, Role.RESEARCHER))
    page = client.get("/datasets/").get_data(as_text=True)
    assert controlled.slug in _slugs(page) and not {mine.slug, theirs.slug} & _slugs(page)
    assert client.get(f"/datasets/{mine.slug}").status_code == 404
    assert "Controlled: a steward approves; sign a data-use agreement" in page

    login(client, steward)
    page = client.get("/datasets/").get_data(as_text=True)
    assert mine.slug in _slugs(page) and theirs.slug not in _slugs(page)
    page = client.get("/datasets/?state=draft").get_data(as_text=True)
    assert _slugs(page) == {mine.slug}

    login(client, make_user(db, Role.PROGRAM_OFFICER))
    page = client.get("/datasets/?state=draft").get_data(as_text=True)
    assert _slugs(page) == {mine.slug, theirs.slug}
    assert "New dataset" in page


def test_catalog_search_tier_filter_size_and_licence(client: FlaskClient, db: Session) -> None:
    big = make_dataset(
        db, tier=AccessTier.OPEN, name="Big corpus", size_bytes=1_530_000_000_000, licence="MIT"
    )
    small = make_dataset(
        db, tier=AccessTier.REGISTERED, name="Speech", summary="Read aloud", size_bytes=900
    )
    make_dataset(db, tier=AccessTier.OPEN, name="Other", description="Nothing about sound")
    page = client.get("/datasets/?q=aloud").get_data(as_text=True)
    assert _slugs(page) == {small.slug}
    page = client.get("/datasets/?q=sound").get_data(as_text=True)
    assert len(_slugs(page)) == 1 and small.slug not in _slugs(page)
    page = client.get("/datasets/?tier=open&sort=largest").get_data(as_text=True)
    assert small.slug not in _slugs(page) and big.slug in _slugs(page)
    assert "1.53 TB" in page and "<code>MIT</code>" in page
    # A tier that does not exist filters nothing (and fails nothing).
    assert client.get("/datasets/?tier=secret&sort=bogus&page=-3").status_code == 200


def test_catalog_says_where_a_logged_in_visitor_stands(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    researcher = make_user(db, Role.RESEARCHER)
    held = make_dataset(db, name="Held")
    asked = make_dataset(db, name="Asked")
    askable = make_dataset(db, name="Askable")
    registered = make_dataset(db, tier=AccessTier.REGISTERED, name="Registered")
    with app.app_context():
        grant = make_grant(db, dataset=held, user=researcher, days=90)
    request = make_access_request(db, dataset=asked, user=researcher)

    login(client, researcher)
    page = client.get("/datasets/").get_data(as_text=True)
    until = (utcnow().date() + dt.timedelta(days=90)).strftime("%d %b %Y")
    assert f'href="/datasets/access/{grant.id}"' in page and f"Access until {until}" in page
    assert f'href="/datasets/requests/{request.id}"' in page and "Waiting for a steward" in page
    assert f'href="/datasets/{askable.slug}/request"' in page
    assert f'href="/datasets/{registered.slug}#access"' in page

    # Program staff are not researchers at a partner: nothing to ask, no link to a refusal.
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    page = client.get("/datasets/").get_data(as_text=True)
    assert f"/{askable.slug}/request" not in page and "Ask for access" not in page


def test_catalog_csv_for_program_staff(client: FlaskClient, db: Session) -> None:
    steward = make_user(db, Role.DATA_STEWARD, display_name="Sam Steward")
    make_dataset(db, name="=HYPERLINK()", stewards=[steward], size_bytes=12)
    login(client, make_user(db, Role.ADMIN))
    resp = client.get("/datasets/?format=csv&tier=controlled")
    assert resp.mimetype == "text/csv"
    lines = resp.get_data(as_text=True).splitlines()
    assert lines[0].startswith("id,slug,name,tier,state,licence")
    assert len(lines) == 2 and "'=HYPERLINK()" in lines[1] and "Sam Steward" in lines[1]


# --- one dataset ----------------------------------------------------------------------------------


def test_dataset_page_shows_what_it_takes_and_the_next_step(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    steward = make_user(db, Role.DATA_STEWARD, display_name="Dana Steward")
    dataset = make_dataset(
        db,
        stewards=[steward],
        description="# Notes\n\n<script>alert(1)</script> **bold**",
        terms="Never re-identify anyone.",
        version="3.1",
        size_bytes=12_000_000_000,
        location="s3://secret-bucket/notes/",
        institution_signs=True,
    )
    researcher = make_user(db, Role.RESEARCHER)
    login(client, researcher)
    page = client.get(f"/datasets/{dataset.slug}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "<strong>bold</strong>" in page and "<h3>Notes</h3>" in page
    assert "Controlled: a steward approves; sign a data-use agreement" in page
    assert "12 GB" in page and "3.1" in page and "Dana Steward" in page
    assert "Never re-identify anyone." in page and "co-signs" in page
    assert "secret-bucket" not in page  # no access: the location is not shown
    assert f'href="/datasets/{dataset.slug}/request"' in page and "Ask for access" in page
    assert "/edit" not in page and "/publish" not in page and "/stewards" not in page

    request = make_access_request(db, dataset=dataset, user=researcher)
    page = client.get(f"/datasets/{dataset.slug}").get_data(as_text=True)
    assert f'href="/datasets/requests/{request.id}"' in page and "Ask for access" not in page

    with app.app_context():
        db.delete(request)
        db.flush()
        grant = make_grant(db, dataset=dataset, user=researcher, days=30)
    assert grant.state == GrantState.ACTIVE
    page = client.get(f"/datasets/{dataset.slug}").get_data(as_text=True)
    until = (utcnow().date() + dt.timedelta(days=30)).strftime("%d %B %Y")
    assert f"You have access until <strong>{until}</strong>" in page
    assert f'href="/datasets/access/{grant.id}"' in page and "secret-bucket" in page

    # Its steward sees the location, the lists of its requests and grants, and the actions.
    login(client, steward)
    page = client.get(f"/datasets/{dataset.slug}").get_data(as_text=True)
    assert "secret-bucket" in page
    assert f'href="/datasets/requests?dataset={dataset.id}"' in page
    assert f'href="/datasets/access?dataset={dataset.id}"' in page
    assert f'action="/datasets/{dataset.slug}/retire"' in page
    assert f'href="/datasets/{dataset.slug}/edit"' in page
    assert f'action="/datasets/{dataset.slug}/stewards"' not in page  # program staff's


def test_registered_dataset_offers_the_terms_to_accept(client: FlaskClient, db: Session) -> None:
    dataset = make_dataset(db, tier=AccessTier.REGISTERED, terms="Cite the corpus.")
    page = client.get(f"/datasets/{dataset.slug}").get_data(as_text=True)
    assert "Log in" in page and "accept_terms" not in page and "/accept" not in page
    login(client, make_user(db, Role.RESEARCHER))
    page = client.get(f"/datasets/{dataset.slug}").get_data(as_text=True)
    form = page.partition(f'action="/datasets/{dataset.slug}/accept"')[2].partition("</form>")[0]
    assert 'name="csrf_token"' in form
    assert re.search(r'<input[^>]*name="accepted"[^>]*required', form)
    assert "Cite the corpus." in page


def test_open_dataset_shows_its_location_to_everyone(client: FlaskClient, db: Session) -> None:
    dataset = make_dataset(db, tier=AccessTier.OPEN, location="https://data.example/open/")
    page = client.get(f"/datasets/{dataset.slug}").get_data(as_text=True)
    assert "https://data.example/open/" in page and "use it freely" in page


# --- adding and editing ---------------------------------------------------------------------------


def _count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Dataset)) or 0


def test_new_dataset_is_a_draft_with_its_size_parsed(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.post("/datasets/new", data={**NEW, "size": "1.5 TB"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/datasets/web-corpus-2026"
    dataset = db.scalar(select(Dataset).where(Dataset.slug == "web-corpus-2026"))
    assert dataset is not None and dataset.state == DatasetState.DRAFT
    assert dataset.size_bytes == 1_500_000_000_000 and dataset.licence == "ODC-By-1.0"
    assert db.scalar(select(AuditEvent).where(AuditEvent.action == "dataset.create"))
    # The edit form shows the size exactly as it is stored.
    page = client.get("/datasets/web-corpus-2026/edit").get_data(as_text=True)
    assert 'value="1.5 TB"' in page


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": "12 parsecs"}, "Unknown unit"),
        ({"size": "twelve"}, "Write the size as a number"),
        ({"size": "1.5 B"}, "not a whole number of bytes"),
        ({"licence": "Not-A-Licence"}, "is not an SPDX licence expression"),
        ({"tier": "controlled"}, "needs a data-use agreement"),
        ({"max_months": "61"}, "between 1 and 60"),
        ({"name": ""}, "This field is required"),
        ({"slug": "Web Corpus"}, "lowercase letters, digits and single hyphens"),
        ({"slug": "requests"}, "taken by the catalog"),
        ({"slug": "{taken}"}, "already has the short name"),
        ({"tier": "secret"}, "Not a valid choice"),
    ],
)
def test_form_errors_change_nothing(
    client: FlaskClient, db: Session, change: dict[str, str], message: str
) -> None:
    taken = make_dataset(db, tier=AccessTier.OPEN)
    login(client, make_user(db, Role.ADMIN))
    before = _count(db)
    data = {**NEW, **{k: v.format(taken=taken.slug) for k, v in change.items()}}
    resp = client.post("/datasets/new", data=data)
    assert resp.status_code == 422
    assert message in resp.get_data(as_text=True)
    assert _count(db) == before


def test_edit_errors_change_nothing_and_a_held_tier_stays(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    dataset = make_dataset(db, name="Clinical notes")
    steward = dataset.stewards[0].user
    with app.app_context():
        make_grant(db, dataset=dataset)
    login(client, steward)
    data = {
        **{k: v.format(own=dataset.slug, dua=dataset.dua_template_id) for k, v in EDIT.items()},
        "tier": "open",
    }
    resp = client.post(f"/datasets/{dataset.slug}/edit", data=data)
    assert resp.status_code == 422 and "cannot change" in resp.get_data(as_text=True)
    resp = client.post(f"/datasets/{dataset.slug}/edit", data={**data, "size": "-4 GB"})
    assert resp.status_code == 422
    db.expire_all()
    assert dataset.tier == AccessTier.CONTROLLED and dataset.name == "Clinical notes"
    assert dataset.size_bytes is None

    resp = client.post(f"/datasets/{dataset.slug}/edit", data={**data, "tier": "controlled"})
    assert resp.status_code == 302
    db.expire_all()
    assert dataset.name == "Clinical notes, second release"
    assert dataset.size_bytes == 1_500_000_000_000


def test_a_steward_of_one_dataset_cannot_edit_or_decide_another(
    client: FlaskClient, db: Session
) -> None:
    a = make_dataset(db)
    b = make_dataset(db, name="Dataset B")
    steward_a = a.stewards[0].user
    link_b = _asked_link(db, b)
    login(client, steward_a)
    data = {k: v.format(own=b.slug, dua=b.dua_template_id) for k, v in EDIT.items()}
    assert client.post(f"/datasets/{b.slug}/edit", data=data).status_code == 403
    assert client.post(f"/datasets/{b.slug}/retire", data={"reason": "x"}).status_code == 403
    resp = client.post(f"/datasets/pre-approvals/{link_b.id}/consent", data={"reason": "ok"})
    assert resp.status_code == 403
    db.expire_all()
    assert b.name == "Dataset B" and b.state == DatasetState.PUBLISHED
    assert link_b.state == ConsentState.ASKED
    # B's link is not in A's steward's queue either.
    page = client.get("/datasets/pre-approvals").get_data(as_text=True)
    assert f"/pre-approvals/{link_b.id}/" not in page


# --- publishing, retiring, stewards ----------------------------------------------------------------


def test_publish_retire_restore(client: FlaskClient, db: Session) -> None:
    dataset = make_dataset(db, state=DatasetState.DRAFT)
    login(client, dataset.stewards[0].user)
    page = client.get(f"/datasets/{dataset.slug}").get_data(as_text=True)
    assert f'action="/datasets/{dataset.slug}/publish"' in page
    assert f'action="/datasets/{dataset.slug}/retire"' not in page
    resp = client.post(f"/datasets/{dataset.slug}/publish", follow_redirects=True)
    assert "is now in the catalog" in resp.get_data(as_text=True)
    db.expire_all()
    assert dataset.state == DatasetState.PUBLISHED

    # Retiring takes a reason: without one nothing changes.
    resp = client.post(f"/datasets/{dataset.slug}/retire", data={"reason": " "})
    assert resp.status_code == 303
    db.expire_all()
    assert dataset.state == DatasetState.PUBLISHED
    client.post(f"/datasets/{dataset.slug}/retire", data={"reason": "Superseded by v2."})
    db.expire_all()
    assert dataset.state == DatasetState.RETIRED
    client.post(f"/datasets/{dataset.slug}/restore")
    db.expire_all()
    assert dataset.state == DatasetState.PUBLISHED


def test_a_draft_missing_what_publishing_needs_stays_a_draft(
    client: FlaskClient, db: Session
) -> None:
    template = make_agreement_template(db, kind=AgreementKind.DATA_USE)
    dataset = make_dataset(db, state=DatasetState.DRAFT, stewards=[], dua_template=template)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.post(f"/datasets/{dataset.slug}/publish", follow_redirects=True)
    assert "needs at least one steward" in resp.get_data(as_text=True)
    db.expire_all()
    assert dataset.state == DatasetState.DRAFT


def test_stewards_are_added_by_address_and_one_is_kept(client: FlaskClient, db: Session) -> None:
    dataset = make_dataset(db)
    only = dataset.stewards[0]
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    url = f"/datasets/{dataset.slug}/stewards"

    def stewards() -> list[int]:
        db.expire_all()
        return sorted(s.user_id for s in db.scalars(select(DatasetSteward)))

    before = stewards()
    resp = client.post(url, data={"email": "nobody@nowhere.example"}, follow_redirects=True)
    assert "Nobody with the address" in resp.get_data(as_text=True)
    researcher = make_user(db, Role.RESEARCHER)
    resp = client.post(url, data={"email": researcher.email}, follow_redirects=True)
    assert "does not hold the data steward role" in resp.get_data(as_text=True)
    resp = client.post(url, data={"email": (only.user.email or "").upper()}, follow_redirects=True)
    assert "already stewards" in resp.get_data(as_text=True)
    # The last steward of a controlled dataset in the catalog stays.
    resp = client.post(f"{url}/{only.id}/remove", follow_redirects=True)
    assert "add another steward first" in resp.get_data(as_text=True)
    assert stewards() == before

    new = make_user(db, Role.DATA_STEWARD, display_name="Nia New")
    resp = client.post(
        url, data={"email": f"  {(new.email or '').upper()} "}, follow_redirects=True
    )
    assert "Nia New now stewards" in resp.get_data(as_text=True)
    client.post(f"{url}/{only.id}/remove")
    assert stewards() == [new.id]
    # A steward of another dataset is not removed through this one.
    other = make_dataset(db)
    resp = client.post(f"{url}/{other.stewards[0].id}/remove", follow_redirects=True)
    assert "does not steward this dataset" in resp.get_data(as_text=True)
    assert len(stewards()) == 2


# --- a proposal's datasets ------------------------------------------------------------------------


def test_editors_choose_a_proposals_datasets_with_a_purpose(
    client: FlaskClient, db: Session
) -> None:
    proposal = make_proposal(db)
    pi = proposal.team[0].user
    controlled = make_dataset(db, name="Clinical notes")
    open_ = make_dataset(db, tier=AccessTier.OPEN, name="Open text")
    draft = make_dataset(db, tier=AccessTier.OPEN, state=DatasetState.DRAFT)
    login(client, pi)

    page = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    section = page.partition('id="datasets"')[2].partition("</section>")[0]
    assert f'href="/datasets/proposals/{proposal.id}"' in section and "None chosen yet" in section

    page = client.get(f"/datasets/proposals/{proposal.id}").get_data(as_text=True)
    offered = re.findall(r'name="rows-(\d+)-dataset_id"[^>]*value="(\d+)"', page)
    ids = {int(v) for _, v in offered}
    assert ids == {controlled.id, open_.id} and draft.id not in ids
    index = {int(v): i for i, v in offered}

    def pick(**rows: tuple[int, str]) -> Any:
        data: dict[str, str] = {}
        for n, (ident, purpose) in enumerate(rows.values()):
            data |= {f"rows-{n}-dataset_id": str(ident), f"rows-{n}-purpose": purpose}
            data[f"rows-{n}-chosen"] = "y"
        return client.post(f"/datasets/proposals/{proposal.id}", data=data)

    # Chosen without a purpose: nothing is saved.
    resp = pick(a=(controlled.id, ""))
    assert resp.status_code == 422 and "Say what the project will do" in resp.get_data(as_text=True)
    # A dataset that is not offered (a draft): nothing is saved.
    resp = pick(a=(draft.id, "Evaluating the models on it."))
    assert resp.status_code == 422 and "Choose datasets from the list" in resp.get_data(
        as_text=True
    )
    assert db.scalar(select(func.count()).select_from(ProposalDataset)) == 0

    resp = pick(
        a=(controlled.id, "Fine-tuning a clinical summariser."),
        b=(open_.id, "Evaluating the models on it."),
    )
    assert resp.status_code == 302 and resp.headers["Location"].endswith("#datasets")
    links = {
        link.dataset_id: link
        for link in db.scalars(
            select(ProposalDataset).where(ProposalDataset.proposal_id == proposal.id)
        )
    }
    assert links[controlled.id].state == ConsentState.ASKED
    assert links[controlled.id].asked_at is None
    assert links[open_.id].state == ConsentState.NOT_NEEDED
    assert index  # both rows were offered

    page = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    section = page.partition('id="datasets"')[2].partition("</section>")[0]
    assert "Clinical notes" in section and "Fine-tuning a clinical summariser." in section
    assert "Waiting for the steward" in section and "No approval needed" in section
    assert "once the proposal is submitted" in section


def test_proposal_section_is_shown_to_whoever_sees_the_proposal_and_editable_by_editors(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    from portal.datasets.views import proposal_section

    proposal = make_proposal(db, state=ProposalState.SUBMITTED)
    dataset = make_dataset(db, name="Clinical notes")
    link = _asked_link(db, dataset)
    db.delete(link)
    db.flush()
    db.add(
        ProposalDataset(
            proposal_id=proposal.id,
            dataset_id=dataset.id,
            purpose="Summaries.",
            state=ConsentState.REFUSED,
            asked_at=utcnow(),
            decided_at=utcnow(),
            decision_note="Only for de-identified work.",
        )
    )
    db.flush()
    officer = make_user(db, Role.PROGRAM_OFFICER)
    stranger = make_user(db, Role.RESEARCHER)
    with app.test_request_context():
        ctx = proposal_section(proposal, officer)
        assert ctx is not None and not ctx["may_pick"] and len(ctx["links"]) == 1
        # Submitted: its PI no longer edits it, and sees the steward's note.
        pi_ctx = proposal_section(proposal, proposal.team[0].user)
        assert pi_ctx is not None and not pi_ctx["may_pick"]
        assert proposal_section(proposal, stranger) is None
    login(client, proposal.team[0].user)
    page = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    section = page.partition('id="datasets"')[2].partition("</section>")[0]
    assert "Only for de-identified work." in section and "Not pre-approved" in section
    assert "/datasets/proposals/" not in section
    assert client.get(f"/datasets/proposals/{proposal.id}").status_code == 403


# --- pre-approvals --------------------------------------------------------------------------------


def test_a_steward_pre_approves_or_refuses_with_a_reason(client: FlaskClient, db: Session) -> None:
    dataset = make_dataset(db, name="Clinical notes")
    steward = dataset.stewards[0].user
    asked = _asked_link(db, dataset)
    refused = _asked_link(db, dataset)
    # Not submitted yet: not in the queue.
    unasked = ProposalDataset(
        proposal_id=make_proposal(db).id, dataset_id=dataset.id, state=ConsentState.ASKED
    )
    db.add(unasked)
    db.flush()
    login(client, steward)
    page = client.get("/datasets/pre-approvals").get_data(as_text=True)
    assert f"/pre-approvals/{asked.id}/consent" in page
    assert f"/pre-approvals/{refused.id}/refuse" in page
    assert f"/pre-approvals/{unasked.id}/" not in page
    assert asked.proposal.title in page and asked.proposal.institution.name in page
    assert "Training a clinical summariser." in page

    # Refusing takes a reason.
    resp = client.post(f"/datasets/pre-approvals/{refused.id}/refuse", data={"reason": ""})
    assert resp.status_code == 303
    db.expire_all()
    assert refused.state == ConsentState.ASKED
    resp = client.post(
        f"/datasets/pre-approvals/{refused.id}/refuse", data={"reason": "Not for this purpose."}
    )
    assert resp.status_code == 302
    resp = client.post(f"/datasets/pre-approvals/{asked.id}/consent", data={"reason": "Fine."})
    assert resp.status_code == 302
    db.expire_all()
    assert (
        refused.state == ConsentState.REFUSED and refused.decision_note == "Not for this purpose."
    )
    assert asked.state == ConsentState.CONSENTED and asked.decided_by_id == steward.id
    # Decided twice: the second is refused and changes nothing.
    resp = client.post(f"/datasets/pre-approvals/{asked.id}/refuse", data={"reason": "No."})
    assert resp.status_code == 303
    db.expire_all()
    assert asked.state == ConsentState.CONSENTED

    page = client.get("/datasets/pre-approvals").get_data(as_text=True)
    assert "Nothing waits for your pre-approval." in page
    page = client.get("/datasets/pre-approvals?state=consented").get_data(as_text=True)
    assert asked.proposal.title in page and "Fine." in page
    assert client.post(f"/datasets/pre-approvals/{asked.id}/explode").status_code == 404


def test_a_steward_on_the_proposals_team_does_not_decide_it(
    client: FlaskClient, db: Session
) -> None:
    dataset = make_dataset(db)
    steward = dataset.stewards[0].user
    proposal = make_proposal(db, pi=steward, state=ProposalState.SUBMITTED)
    link = ProposalDataset(
        proposal_id=proposal.id,
        dataset_id=dataset.id,
        state=ConsentState.ASKED,
        asked_at=utcnow(),
    )
    db.add(link)
    db.flush()
    login(client, steward)
    assert f"/pre-approvals/{link.id}/" not in client.get("/datasets/pre-approvals").get_data(
        as_text=True
    )
    assert client.post(f"/datasets/pre-approvals/{link.id}/consent").status_code == 403


# --- CSRF -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("csrf_enabled")
def test_posts_without_a_csrf_token_change_nothing(client: FlaskClient, db: Session) -> None:
    admin = make_user(db, Role.ADMIN)
    steward = make_user(db, Role.DATA_STEWARD)
    dataset = make_dataset(db, stewards=[steward, make_user(db, Role.DATA_STEWARD)])
    draft = make_dataset(db, state=DatasetState.DRAFT, stewards=[steward])
    link = _asked_link(db, dataset)
    proposal = make_proposal(db)
    candidate = make_user(db, Role.DATA_STEWARD)
    before = _snapshot(db)
    edit = {k: v.format(own=dataset.slug, dua=dataset.dua_template_id) for k, v in EDIT.items()}
    posts: list[tuple[User, str, dict[str, str]]] = [
        (admin, "/datasets/new", NEW),
        (admin, f"/datasets/{dataset.slug}/edit", edit),
        (admin, f"/datasets/{draft.slug}/publish", {}),
        (admin, f"/datasets/{dataset.slug}/retire", {"reason": "Old."}),
        (admin, f"/datasets/{dataset.slug}/stewards", {"email": candidate.email or ""}),
        (admin, f"/datasets/{dataset.slug}/stewards/{dataset.stewards[1].id}/remove", {}),
        (steward, f"/datasets/pre-approvals/{link.id}/consent", {"reason": "ok"}),
        (steward, f"/datasets/pre-approvals/{link.id}/refuse", {"reason": "no"}),
        (
            proposal.team[0].user,
            f"/datasets/proposals/{proposal.id}",
            {k: v.format(open_id=dataset.id) for k, v in PICK.items()},
        ),
    ]
    for user, url, data in posts:
        login(client, user)
        resp = client.post(url, data=data)
        assert resp.status_code in (400, 422), (url, resp.status_code)
        body = resp.get_data(as_text=True)
        assert "Reload the page" in body or "CSRF" in body, url
    assert _snapshot(db) == before


# --- navigation and dashboard ---------------------------------------------------------------------


def test_navigation_and_dashboard_cards(app: Flask, client: FlaskClient, db: Session) -> None:
    dataset = make_dataset(db, name="Clinical notes")
    steward = dataset.stewards[0].user
    researcher = make_user(db, Role.RESEARCHER)
    request = make_access_request(db, dataset=dataset, user=researcher)
    link = _asked_link(db, dataset)
    registered = make_dataset(db, tier=AccessTier.REGISTERED, name="Speech")
    with app.app_context():
        from portal.datasets import services

        grant = services.accept_terms(db, registered, actor=researcher, accepted=True)

    login(client, steward)
    page = client.get("/dashboard").get_data(as_text=True)
    assert 'href="/datasets/"' in page and 'href="/datasets/pre-approvals"' in page
    assert f'href="/datasets/requests/{request.id}"' in page
    assert link.proposal.title in page

    login(client, researcher)
    page = client.get("/dashboard").get_data(as_text=True)
    assert 'href="/datasets/"' in page and 'href="/datasets/pre-approvals"' not in page
    assert f'href="/datasets/access/{grant.id}"' in page
    assert f'href="/datasets/requests/{request.id}"' in page and "Waiting for a steward" in page
    assert request.state == RequestState.SUBMITTED


# --- sizes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("12 GB", 12 * 10**9),
        ("1.5 TB", 15 * 10**11),
        ("1.5tb", 15 * 10**11),
        ("800 MiB", 800 * 2**20),
        ("123456789", 123_456_789),
        ("1,500,000 bytes", 1_500_000),
        ("2 kB", 2000),
        ("  ", None),
    ],
)
def test_sizes_are_read_from_units_or_bytes(text: str, size: int | None) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["twelve", "12 parsecs", "1.5 B", "-3 GB", "1,5 TB", "2 EB"])
def test_sizes_that_make_no_sense_are_refused(text: str) -> None:
    with pytest.raises(FieldError):
        parse_size(text)


@pytest.mark.parametrize("size", [0, 900, 1000, 1234567, 1_500_000_000_000, 12 * 10**9, 2**40])
def test_a_size_written_back_reads_the_same(size: int) -> None:
    assert parse_size(exact_size(size)) == size


def test_sizes_for_people() -> None:
    assert size_label(None) == "—"
    assert size_label(1) == "1 byte" and size_label(900) == "900 bytes"
    assert size_label(12 * 10**9) == "12 GB" and size_label(1_534_000_000_000) == "1.53 TB"
    assert size_label(123_456_789) == "123 MB"
