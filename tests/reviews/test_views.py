"""Every route of the reviewer pool and of assignments by every role, other reviewers'
assignments and declared conflicts (IDOR), a committee member of one call on another call's
proposal, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.proposals import attachments
from portal.proposals.models import CommitteeMember, Proposal, ProposalState
from portal.reviews.models import (
    Assignment,
    ConflictWaiver,
    DeclaredConflict,
    ReviewerProfile,
)
from tests.factories import (
    LOGGED_IN,
    ROLE_NAMES,
    make_actor,
    make_assignment,
    make_call,
    make_institution,
    make_proposal,
    make_reviewer,
    make_user,
)
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}
REVIEWER = {"reviewer"}

# Placeholders: {proposal} a submitted proposal; {free} a reviewer without conflict with it and
# {conflicted} one from its institution; {mine} an assignment of the actor when a reviewer (else
# of another reviewer), {att} the attachment of its proposal; {other} another reviewer's
# assignment; {my_conflict} a conflict the actor declared (when a reviewer), {other_conflict}
# another reviewer's; {inst} an institution.
CASES = [
    case("profile", "GET", "/reviews/profile", REVIEWER),
    case(
        "save profile",
        "POST",
        "/reviews/profile",
        REVIEWER,
        302,
        {"expertise": "robotics", "keywords": "tokenizers, Protein folding", "load_limit": "3"},
    ),
    case(
        "declare a conflict",
        "POST",
        "/reviews/profile/conflicts",
        REVIEWER,
        302,
        {"institution_id": "{inst}", "reason": "My spouse works there."},
    ),
    case(
        "remove my declared conflict",
        "POST",
        "/reviews/profile/conflicts/{my_conflict}/remove",
        REVIEWER,
        302,
    ),
    case(
        "remove another's declared conflict (IDOR)",
        "POST",
        "/reviews/profile/conflicts/{other_conflict}/remove",
        set(),
    ),
    case("pool", "GET", "/reviews/pool", STAFF),
    case("assign page", "GET", "/reviews/proposals/{proposal}/assign", STAFF),
    case(
        "assign a reviewer",
        "POST",
        "/reviews/proposals/{proposal}/assign",
        STAFF,
        302,
        {"reviewer_id": "{free}", "due_on": "2030-05-01"},
    ),
    case(
        "waive a conflict",
        "POST",
        "/reviews/proposals/{proposal}/waivers",
        STAFF,
        302,
        {"reviewer_id": "{conflicted}", "reason": "Another faculty, never worked together."},
    ),
    case("my assignment", "GET", "/reviews/assignments/{mine}", REVIEWER | STAFF),
    case(
        "my assignment's attachment",
        "GET",
        "/reviews/assignments/{mine}/attachments/{att}",
        REVIEWER | STAFF,
    ),
    case(
        "accept",
        "POST",
        "/reviews/assignments/{mine}/answer",
        REVIEWER,
        302,
        {"action": "accept"},
    ),
    case(
        "decline",
        "POST",
        "/reviews/assignments/{mine}/answer",
        REVIEWER,
        302,
        {"action": "decline", "reason": "Travelling all month."},
    ),
    case(
        "declare a conflict on the assignment",
        "POST",
        "/reviews/assignments/{mine}/answer",
        REVIEWER,
        302,
        {"action": "declare_conflict", "reason": "The PI was my student."},
    ),
    case(
        "withdraw the assignment",
        "POST",
        "/reviews/assignments/{mine}/answer",
        STAFF,
        302,
        {"action": "remove"},
    ),
    case("another reviewer's assignment (IDOR)", "GET", "/reviews/assignments/{other}", STAFF),
    case(
        "another reviewer's attachment (IDOR)",
        "GET",
        "/reviews/assignments/{other}/attachments/{other_att}",
        STAFF,
    ),
    case(
        "accept another's assignment (IDOR)",
        "POST",
        "/reviews/assignments/{other}/answer",
        set(),
        data={"action": "accept"},
    ),
    case("dashboard", "GET", "/dashboard", LOGGED_IN),
]


def _snapshot(db: Session) -> list[object]:
    return [
        sorted((a.id, a.state, a.reason) for a in db.scalars(select(Assignment))),
        sorted(
            (p.user_id, tuple(p.expertise), p.load_limit)
            for p in db.scalars(select(ReviewerProfile))
        ),
        sorted(d.id for d in db.scalars(select(DeclaredConflict))),
        db.scalar(select(func.count()).select_from(ConflictWaiver)),
        sorted((p.id, p.state) for p in db.scalars(select(Proposal))),
    ]


@pytest.fixture
def folder(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "attachments"
    path.mkdir()
    monkeypatch.setitem(app.config, "ATTACHMENT_FOLDER", str(path))
    return path


def _in_review(db: Session, folder: Path) -> Proposal:
    proposal = make_proposal(db, state=ProposalState.IN_REVIEW)
    for a in proposal.attachments:
        attachments.attachment_path(a, folder).write_bytes(b"%PDF-1.4 test")
    return proposal


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(
    client: FlaskClient, db: Session, folder: Path, role: str, case: Case
) -> None:
    own = make_institution(db)
    actor = make_actor(db, role, own)
    if actor is not None:
        login(client, actor)
    proposal = make_proposal(db, state=ProposalState.SUBMITTED)
    free = make_reviewer(db)
    conflicted = make_reviewer(db, institution=proposal.institution)
    me = actor if role == "reviewer" and actor is not None else make_reviewer(db)
    mine = make_assignment(db, proposal=_in_review(db, folder), reviewer=me)
    other = make_assignment(db, proposal=_in_review(db, folder))
    inst = make_institution(db)
    my_conflict = DeclaredConflict(reviewer_id=me.id, institution_id=inst.id)
    other_conflict = DeclaredConflict(reviewer_id=other.reviewer_id, institution_id=inst.id)
    db.add_all([my_conflict, other_conflict])
    db.flush()
    check_route(
        client,
        db,
        role,
        actor.id if actor else None,
        case,
        {
            "proposal": proposal.id,
            "free": free.id,
            "conflicted": conflicted.id,
            "mine": mine.id,
            "att": mine.proposal.attachments[0].id,
            "other": other.id,
            "other_att": other.proposal.attachments[0].id,
            "my_conflict": my_conflict.id,
            "other_conflict": other_conflict.id,
            "inst": make_institution(db).id,
        },
        lambda: _snapshot(db),
    ).close()


def test_a_committee_member_of_one_call_sees_nothing_of_another(
    client: FlaskClient, db: Session
) -> None:
    """Deciders see the assignments of their call's proposals, never another call's; and only
    program staff assign."""
    ours, theirs = make_call(db, committee_decides=True), make_call(db, committee_decides=True)
    member = make_user(db, Role.REVIEWER)
    db.add(CommitteeMember(call_id=ours.id, user_id=member.id))
    db.flush()
    in_ours = make_assignment(
        db, proposal=make_proposal(db, call=ours, state=ProposalState.IN_REVIEW)
    )
    in_theirs = make_assignment(
        db, proposal=make_proposal(db, call=theirs, state=ProposalState.IN_REVIEW)
    )
    login(client, member)
    assert client.get(f"/reviews/assignments/{in_ours.id}").status_code == 200
    assert client.get(f"/reviews/assignments/{in_theirs.id}").status_code == 404
    for a in (in_ours, in_theirs):
        assert client.get(f"/reviews/proposals/{a.proposal_id}/assign").status_code == 403
        resp = client.post(
            f"/reviews/proposals/{a.proposal_id}/assign", data={"reviewer_id": member.id}
        )
        assert resp.status_code == 403
    assert db.scalar(select(func.count()).select_from(Assignment)) == 2


def test_an_unknown_reviewer_or_bad_input_changes_nothing(client: FlaskClient, db: Session) -> None:
    proposal = make_proposal(db, state=ProposalState.SUBMITTED)
    reviewer = make_reviewer(db)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    url = f"/reviews/proposals/{proposal.id}/assign"
    assert client.post(url, data={"reviewer_id": "999999"}).status_code == 404
    assert client.post(url, data={"reviewer_id": "x"}).status_code == 404
    assert client.post(url, data={"reviewer_id": ""}).status_code == 422
    resp = client.post(url, data={"reviewer_id": reviewer.id, "due_on": "soon"})
    assert resp.status_code == 422
    assert db.scalar(select(func.count()).select_from(Assignment)) == 0
    # Assigning twice: the second is refused with a message.
    assert client.post(url, data={"reviewer_id": reviewer.id}).status_code == 302
    resp = client.post(url, data={"reviewer_id": reviewer.id}, follow_redirects=True)
    assert "already assigned" in resp.get_data(as_text=True)
    assert db.scalar(select(func.count()).select_from(Assignment)) == 1
    # A draft is not reviewed.
    draft = make_proposal(db)
    resp = client.post(
        f"/reviews/proposals/{draft.id}/assign",
        data={"reviewer_id": reviewer.id},
        follow_redirects=True,
    )
    assert "Only submitted proposals are reviewed" in resp.get_data(as_text=True)


def test_a_reviewer_keeps_a_profile_and_declares_conflicts(
    client: FlaskClient, db: Session
) -> None:
    reviewer = make_reviewer(db)
    pi = make_user(db, Role.RESEARCHER, email="pi@uni.example")
    login(client, reviewer)
    resp = client.post(
        "/reviews/profile",
        data={"expertise": ["robotics", "speech"], "keywords": "Tokenizers", "load_limit": "0"},
    )
    assert resp.status_code == 422
    resp = client.post(
        "/reviews/profile",
        data={"expertise": ["robotics", "speech"], "keywords": "Tokenizers", "load_limit": "4"},
    )
    assert resp.status_code == 302
    profile = db.scalars(
        select(ReviewerProfile).where(ReviewerProfile.user_id == reviewer.id)
    ).one()
    db.refresh(profile)
    assert profile.expertise == ["robotics", "speech", "tokenizers"] and profile.load_limit == 4
    page = client.get("/reviews/profile").get_data(as_text=True)
    assert 'value="tokenizers"' in page and page.count("checked") == 2

    assert client.post("/reviews/profile/conflicts", data={}).status_code == 422
    resp = client.post("/reviews/profile/conflicts", data={"email": "nobody@nowhere.example"})
    assert resp.status_code == 422 and "Nobody on the portal" in resp.get_data(as_text=True)
    resp = client.post(
        "/reviews/profile/conflicts", data={"email": "PI@uni.example", "reason": "Co-author"}
    )
    assert resp.status_code == 302
    (declared,) = db.scalars(
        select(DeclaredConflict).where(DeclaredConflict.reviewer_id == reviewer.id)
    ).all()
    assert declared.person_id == pi.id
    assert "Co-author" in client.get("/reviews/profile").get_data(as_text=True)
