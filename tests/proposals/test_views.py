"""Every proposals route by every role, objects of other people and institutions (IDOR), the
journey from a call to an endorsed proposal, and bad input."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.notifications.models import OutboxMessage
from portal.notifications.rendering import render_email
from portal.proposals.models import (
    Attachment,
    AttachmentKind,
    Call,
    CallState,
    Proposal,
    ProposalState,
    ProposalVersion,
    Resource,
)
from tests.factories import (
    LOGGED_IN,
    ROLE_NAMES,
    make_actor,
    make_call,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}
EVERYONE = set(ROLE_NAMES)

# Placeholders: {call} an open call, {draft_call} a draft call, {resource} a catalog resource;
# {mine} a complete draft whose PI is the actor when the actor is a researcher (else a researcher
# of the actor's institution); {own_draft} another researcher's draft at the actor's institution;
# {own_waiting} / {other_waiting} proposals awaiting endorsement at the actor's / another
# institution.
CASES = [
    case("public call list", "GET", "/calls/", EVERYONE),
    case("public call page", "GET", "/calls/{call}", EVERYONE),
    case("draft call page", "GET", "/calls/{draft_call}", STAFF),
    case("new call form", "GET", "/calls/new", STAFF),
    case(
        "create call",
        "POST",
        "/calls/new",
        STAFF,
        302,
        {"title": "Spring call", "reviews_wanted": "2", "page_limit": "10"},
    ),
    case("edit call form", "GET", "/calls/{call}/edit", STAFF),
    case("close call", "POST", "/calls/{call}/transition", STAFF, 302, {"action": "close"}),
    case(
        "open draft call", "POST", "/calls/{draft_call}/transition", STAFF, 302, {"action": "open"}
    ),
    case("call's proposals", "GET", "/calls/{call}/proposals", STAFF),
    case("call's proposals as CSV", "GET", "/calls/{call}/proposals?format=csv", STAFF),
    case("resources", "GET", "/resources/", STAFF),
    case("new resource form", "GET", "/resources/new", STAFF),
    case(
        "add resource",
        "POST",
        "/resources/new",
        STAFF,
        302,
        {"cluster": "north", "gpu_class": "B200", "capacity_hours": "5000", "period_months": "12"},
    ),
    case("edit resource form", "GET", "/resources/{resource}/edit", STAFF),
    case("start a proposal", "POST", "/calls/{call}/propose", {"researcher", "official"}, 302),
    case("my proposals", "GET", "/proposals/", LOGGED_IN),
    case("my draft", "GET", "/proposals/{mine}", {"researcher"} | STAFF),
    case("another researcher's draft", "GET", "/proposals/{own_draft}", STAFF),
    case("own institution's submitted", "GET", "/proposals/{own_waiting}", STAFF | {"official"}),
    case("other institution's submitted", "GET", "/proposals/{other_waiting}", STAFF),
    case("edit my draft form", "GET", "/proposals/{mine}/edit", {"researcher"}),
    case(
        "save my draft",
        "POST",
        "/proposals/{mine}/edit",
        {"researcher"},
        302,
        {"title": "A better title for the draft", "field": "Robotics"},
    ),
    case("edit another's draft", "POST", "/proposals/{own_draft}/edit", set(), data={"title": "x"}),
    case("submit my draft", "POST", "/proposals/{mine}/submit", {"researcher"}, 302),
    case("submit another's draft", "POST", "/proposals/{own_draft}/submit", set()),
    case("withdraw another's proposal", "POST", "/proposals/{own_waiting}/withdraw", set()),
    case(
        "endorse own institution's",
        "POST",
        "/proposals/{own_waiting}/endorsement",
        {"official"},
        302,
        {"action": "endorse"},
    ),
    case(
        "return own institution's",
        "POST",
        "/proposals/{own_waiting}/endorsement",
        {"official"},
        302,
        {"action": "return", "reason": "Add the letter of support."},
    ),
    case(
        "endorse other institution's (IDOR)",
        "POST",
        "/proposals/{other_waiting}/endorsement",
        set(),
        data={"action": "endorse"},
    ),
    case("a submitted version", "GET", "/proposals/{own_waiting}/versions/1", STAFF | {"official"}),
    case("endorsement queue", "GET", "/endorsements/", LOGGED_IN),
    case("dashboard", "GET", "/dashboard", LOGGED_IN),
]


def _snapshot(db: Session) -> list[object]:
    return [
        [(p.id, p.state, p.title, p.field, p.version) for p in db.scalars(select(Proposal))],
        [(c.id, c.state, c.title) for c in db.scalars(select(Call))],
        db.scalar(select(func.count()).select_from(Resource)),
        db.scalar(select(func.count()).select_from(ProposalVersion)),
    ]


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(client: FlaskClient, db: Session, role: str, case: Case) -> None:
    own = make_institution(db)
    other = make_institution(db)
    call = make_call(db)
    draft_call = make_call(db, state=CallState.DRAFT)
    actor = make_actor(db, role, own)
    if actor is not None:
        login(client, actor)
    pi = actor if role == "researcher" else make_user(db, Role.RESEARCHER, institution=own)
    mine = make_proposal(db, call=call, pi=pi, complete=True)
    own_draft = make_proposal(db, call=call, pi=make_user(db, Role.RESEARCHER, institution=own))
    own_waiting = make_proposal(
        db,
        call=call,
        pi=make_user(db, Role.RESEARCHER, institution=own),
        state=ProposalState.AWAITING_ENDORSEMENT,
    )
    other_waiting = make_proposal(
        db,
        call=call,
        pi=make_user(db, Role.RESEARCHER, institution=other),
        state=ProposalState.AWAITING_ENDORSEMENT,
    )
    check_route(
        client,
        db,
        role,
        actor.id if actor else None,
        case,
        {
            "call": call.id,
            "draft_call": draft_call.id,
            "resource": call.resources[0].resource_id,
            "mine": mine.id,
            "own_draft": own_draft.id,
            "own_waiting": own_waiting.id,
            "other_waiting": other_waiting.id,
        },
        lambda: _snapshot(db),
    )


# --- the journey --------------------------------------------------------------------------------

ABSTRACT = "We train small open language models and study how they reason. " * 5
PLAN = "First we build the corpus; then we train three model sizes and evaluate them. " * 8
JUSTIFICATION = "Three training runs of a 1B model, 2,000 GPU-hours each, plus evaluation."


def _draft_form(call: Call, **changes: str) -> dict[str, str]:
    cr = call.resources[0]
    data = {
        "title": "Reasoning in small open models",
        "abstract": ABSTRACT,
        "field": "Natural language processing",
        "plan": PLAN,
        "requested_datasets": "The Pile, for comparison.",
        "start_date": "2027-01-01",
        "duration_months": "12",
        "requests-0-call_resource_id": str(cr.id),
        "requests-0-hours": "6000",
        "requests-0-justification": JUSTIFICATION,
        "outputs-0-kind": "weights",
        "outputs-0-license": "Apache-2.0",
        "outputs-0-description": "All checkpoints",
    }
    return {**data, **changes}


def test_a_researcher_proposes_and_the_signing_official_endorses(
    client: FlaskClient, db: Session
) -> None:
    call = make_call(db, description="Compute for **open** research.")
    researcher = make_user(db, Role.RESEARCHER)
    inst = researcher.affiliations[0].institution
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    login(client, researcher)
    page = client.get(f"/calls/{call.id}").get_data(as_text=True)
    assert "Start a proposal" in page and "<strong>open</strong>" in page

    resp = client.post(f"/calls/{call.id}/propose", data={"title": ""})
    assert resp.status_code == 302 and resp.location.endswith("/edit")
    proposal = db.scalars(select(Proposal).where(Proposal.call_id == call.id)).one()
    assert proposal.pi == researcher and proposal.state == ProposalState.DRAFT

    resp = client.post(f"/proposals/{proposal.id}/edit", data=_draft_form(call))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.expire_all()
    assert proposal.requests[0].hours == 6000 and proposal.outputs[0].license == "Apache-2.0"
    page = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    assert "the project description as a PDF attachment" in page  # the checklist

    # Uploading is the attachments page's business; a stored row stands in for the upload here.
    proposal.attachments.append(
        Attachment(
            kind=AttachmentKind.DESCRIPTION,
            stored_name="f" * 32,
            original_name="description.pdf",
            size_bytes=1000,
            pages=4,
            sha256="0" * 64,
        )
    )
    db.flush()
    page = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    assert "Everything the call asks for is there" in page

    resp = client.post(f"/proposals/{proposal.id}/submit", follow_redirects=True)
    assert "Submitted (version 1)" in resp.get_data(as_text=True)
    db.expire_all()
    assert proposal.state == ProposalState.AWAITING_ENDORSEMENT and proposal.version == 1

    login(client, official)
    assert proposal.title in client.get("/endorsements/").get_data(as_text=True)
    resp = client.post(
        f"/proposals/{proposal.id}/endorsement", data={"action": "return"}, follow_redirects=True
    )
    assert "please give a reason" in resp.get_data(as_text=True)
    db.expire_all()
    assert proposal.state == ProposalState.AWAITING_ENDORSEMENT
    resp = client.post(
        f"/proposals/{proposal.id}/endorsement", data={"action": "endorse"}, follow_redirects=True
    )
    assert "Endorsed" in resp.get_data(as_text=True)
    db.expire_all()
    assert proposal.state == ProposalState.SUBMITTED and proposal.endorsed_by_id == official.id


def test_versions_show_an_escaped_diff_of_the_text(client: FlaskClient, db: Session) -> None:
    proposal = make_proposal(db, state=ProposalState.RETURNED)
    login(client, proposal.pi)  # type: ignore[arg-type]
    proposal.title = "Second <b>version</b> title"
    db.flush()
    resp = client.post(f"/proposals/{proposal.id}/submit")
    assert resp.status_code == 302
    db.expire_all()
    assert proposal.version == 2
    html = client.get(f"/proposals/{proposal.id}/versions/2").get_data(as_text=True)
    assert "Changes since version 1" in html
    assert "+ Second &lt;b&gt;version&lt;/b&gt; title" in html
    assert "<b>version</b>" not in html
    assert client.get(f"/proposals/{proposal.id}/versions/3").status_code == 404


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ("-5", "must be a positive number"),
        ("0", "must be a positive number"),
        ("lots", "Enter a whole number of GPU-hours"),
        ("1e3", "Enter a whole number of GPU-hours"),
        ("²", "Enter a whole number of GPU-hours"),
        ("10001", "at most 10,000 GPU-hours"),
    ],
)
def test_bad_gpu_hours_are_a_form_error_and_change_nothing(
    client: FlaskClient, db: Session, hours: str, message: str
) -> None:
    proposal = make_proposal(db, complete=True)
    before = (proposal.title, [(r.hours, r.justification) for r in proposal.requests])
    login(client, proposal.pi)  # type: ignore[arg-type]
    resp = client.post(
        f"/proposals/{proposal.id}/edit",
        data=_draft_form(proposal.call, title="Changed title", **{"requests-0-hours": hours}),
    )
    assert resp.status_code == 422
    assert message in resp.get_data(as_text=True)
    db.expire_all()
    assert (proposal.title, [(r.hours, r.justification) for r in proposal.requests]) == before


@pytest.mark.parametrize("licence", ["Apache", "MIT AND", "Totally-Free-1.0"])
def test_an_invalid_spdx_licence_is_a_form_error(
    client: FlaskClient, db: Session, licence: str
) -> None:
    proposal = make_proposal(db, complete=True)
    login(client, proposal.pi)  # type: ignore[arg-type]
    resp = client.post(
        f"/proposals/{proposal.id}/edit",
        data=_draft_form(proposal.call, **{"outputs-0-license": licence}),
    )
    assert resp.status_code == 422
    assert "SPDX" in resp.get_data(as_text=True)
    db.expire_all()
    assert [o.license for o in proposal.outputs] == ["Apache-2.0"]


def test_submitting_twice_is_refused_and_keeps_one_version(
    client: FlaskClient, db: Session
) -> None:
    proposal = make_proposal(db, complete=True)
    login(client, proposal.pi)  # type: ignore[arg-type]
    assert client.post(f"/proposals/{proposal.id}/submit").status_code == 302
    resp = client.post(f"/proposals/{proposal.id}/submit")
    assert resp.status_code == 303
    page = client.get(resp.location).get_data(as_text=True)
    assert "not possible while the proposal is awaiting endorsement" in page
    db.expire_all()
    assert proposal.version == 1 and len(proposal.versions) == 1


def test_submitting_to_a_closed_call_is_refused(client: FlaskClient, db: Session) -> None:
    proposal = make_proposal(db, call=make_call(db, state=CallState.CLOSED), complete=True)
    login(client, proposal.pi)  # type: ignore[arg-type]
    resp = client.post(f"/proposals/{proposal.id}/submit", follow_redirects=True)
    assert "The call is closed" in resp.get_data(as_text=True)
    db.expire_all()
    assert proposal.state == ProposalState.DRAFT and proposal.version == 0


def test_an_incomplete_draft_is_not_submitted(client: FlaskClient, db: Session) -> None:
    proposal = make_proposal(db)
    login(client, proposal.pi)  # type: ignore[arg-type]
    resp = client.post(f"/proposals/{proposal.id}/submit", follow_redirects=True)
    assert "Not complete yet" in resp.get_data(as_text=True)
    db.expire_all()
    assert proposal.state == ProposalState.DRAFT


def test_a_submitted_proposal_is_not_edited(client: FlaskClient, db: Session) -> None:
    proposal = make_proposal(db, state=ProposalState.SUBMITTED)
    title = proposal.title
    login(client, proposal.pi)  # type: ignore[arg-type]
    resp = client.post(
        f"/proposals/{proposal.id}/edit", data=_draft_form(proposal.call, title="Sneaky change")
    )
    assert resp.status_code == 303
    assert "it no longer changes" in client.get(resp.location).get_data(as_text=True)
    assert client.get(f"/proposals/{proposal.id}/edit").status_code == 303
    db.expire_all()
    assert proposal.title == title


def test_withdrawing_keeps_the_reason(client: FlaskClient, db: Session) -> None:
    proposal = make_proposal(db, state=ProposalState.AWAITING_ENDORSEMENT)
    login(client, proposal.pi)  # type: ignore[arg-type]
    resp = client.post(f"/proposals/{proposal.id}/withdraw", data={"reason": "Funded elsewhere"})
    assert resp.status_code == 302
    db.expire_all()
    assert proposal.state == ProposalState.WITHDRAWN


def test_script_in_a_title_is_escaped_on_pages_and_in_mail(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    evil = "<script>alert(1)</script> models"
    proposal = make_proposal(db, complete=True, title=evil)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)
    login(client, proposal.pi)  # type: ignore[arg-type]
    client.post(f"/proposals/{proposal.id}/submit")
    for url in (f"/proposals/{proposal.id}", "/proposals/", "/dashboard"):
        html = client.get(url).get_data(as_text=True)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url
        assert "<script>alert(1)" not in html, url
    login(client, official)
    html = client.get("/endorsements/").get_data(as_text=True)
    assert "&lt;script&gt;" in html and "<script>alert(1)" not in html
    mails = db.scalars(select(OutboxMessage)).all()
    assert mails
    with app.app_context():
        for msg in mails:
            rendered = render_email(msg)
            assert "<script>alert(1)" not in rendered.html
            assert "&lt;script&gt;" in rendered.html


def test_call_description_markdown_is_rendered_without_html(
    client: FlaskClient, db: Session
) -> None:
    call = make_call(
        db,
        description="**Bold** <script>alert(1)</script> [x](javascript:alert(1)) <img src=x>",
    )
    html = client.get(f"/calls/{call.id}").get_data(as_text=True)
    assert "<strong>Bold</strong>" in html
    assert "&lt;script&gt;" in html and "<script>alert" not in html
    assert "javascript:" not in html.replace("[x](javascript:alert(1))", "")
    assert "<img src=x>" not in html


def test_anonymous_visitors_see_published_calls_only(client: FlaskClient, db: Session) -> None:
    make_call(db, title="Open call for everyone")
    make_call(db, title="Secret draft call", state=CallState.DRAFT)
    html = client.get("/calls/").get_data(as_text=True)
    assert "Open call for everyone" in html and "Secret draft call" not in html
    assert "Log in to apply" in client.get(
        f"/calls/{db.scalars(select(Call.id).where(Call.title.like('Open%'))).one()}"
    ).get_data(as_text=True)


def test_officer_list_filters_by_state_institution_field_and_resource(
    client: FlaskClient, db: Session
) -> None:
    call = make_call(db, resources=2)
    a = make_proposal(db, call=call, state=ProposalState.SUBMITTED, title="Alpha project")
    b = make_proposal(db, call=call, title="Beta project", field="Robotics")
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    base = f"/calls/{call.id}/proposals"

    def shown(query: str) -> set[str]:
        html = client.get(base + query).get_data(as_text=True)
        return {t for t in ("Alpha project", "Beta project") if t in html}

    assert shown("") == {"Alpha project", "Beta project"}
    assert shown("?state=submitted") == {"Alpha project"}
    assert shown(f"?institution={b.institution_id}") == {"Beta project"}
    assert shown("?field=Robotics") == {"Beta project"}
    assert shown(f"?resource={call.resources[0].id}") == {"Alpha project"}
    assert shown("?q=alpha") == {"Alpha project"}
    assert shown("?institution=x&field=nope&resource=-1&sort=bogus&page=-2") == {
        "Alpha project",
        "Beta project",
    }
    assert a.id != b.id
