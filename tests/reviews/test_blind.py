"""Blind tests: in a single-blind call no page, CSV or mail the applicant can reach names a
reviewer — before, and after each decision — while program staff do see who reviewed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.ctx import AppContext
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.notifications.rendering import render_email
from portal.proposals.models import Proposal, TeamMember, TeamRole
from portal.proposals.services import decide_proposal
from portal.reviews.models import Assignment
from tests.factories import make_call, make_user
from tests.reviews.review_kit import in_review, mails, write_review
from tests.support.app import login


@pytest.fixture
def ctx(app: Flask) -> Callable[[], AppContext]:
    return app.app_context


def _secrets(assignments: list[Assignment]) -> list[str]:
    return [s for a in assignments for s in (a.reviewer.display_name, a.reviewer.email) if s]


def _applicant_pages(proposal: Proposal) -> list[str]:
    return [
        f"/proposals/{proposal.id}",
        f"/proposals/{proposal.id}/versions/1",
        "/proposals/",
        "/dashboard",
    ]


def _assert_nothing_names(client: FlaskClient, urls: list[str], secrets: list[str]) -> None:
    for url in urls:
        resp = client.get(url)
        assert resp.status_code == 200, url
        text = resp.get_data(as_text=True)
        for secret in secrets:
            assert secret not in text, f"{url} names {secret}"


@pytest.mark.parametrize("decision", [None, "approve", "revise", "decline"])
def test_single_blind_hides_reviewers_from_the_team_everywhere(
    app: Flask,
    ctx: Callable[[], AppContext],
    client: FlaskClient,
    db: Session,
    decision: str | None,
) -> None:
    call = make_call(db, single_blind=True)
    with ctx():
        proposal, officer, assignments = in_review(db, call=call)
    member = make_user(db, Role.RESEARCHER, institution=proposal.institution)
    proposal.team.append(TeamMember(user=member, role=TeamRole.CO_PI))
    db.flush()
    with ctx():
        for a in assignments:
            write_review(db, a, (4, 3), to_applicant=f"Comments to the team from {a.id} in full.")
        if decision is not None:
            awards = {r.call_resource_id: r.hours for r in proposal.requests}
            decide_proposal(
                db, proposal, decision, actor=officer, reason="The panel's reasons, in full.",
                awards=awards if decision == "approve" else None,
            )  # fmt: skip
    secrets = _secrets(assignments)
    staff = login(app.test_client(), officer)
    team_member = login(app.test_client(), member)
    assert proposal.pi is not None
    login(client, proposal.pi)
    for who in (client, team_member):
        _assert_nothing_names(who, _applicant_pages(proposal), secrets)
        # Nor can they reach what names the reviewers.
        assert who.get(f"/reviews/calls/{call.id}/ranking").status_code == 403
        assert who.get(f"/reviews/calls/{call.id}/ranking?format=csv").status_code == 403
        assert who.get(f"/reviews/proposals/{proposal.id}/decide").status_code == 403
        for a in assignments:
            assert who.get(f"/reviews/assignments/{a.id}/review").status_code == 404
    page = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    if decision is None:
        assert "In review: 2 of 2 reviews in" in page
        assert "Comments to the team" not in page
    else:
        assert "The panel&#39;s reasons, in full." in page
        assert f"Comments to the team from {assignments[0].id} in full." in page
        (mail,) = [m for m in mails(db, "proposals/decided") if m.to_addr == proposal.pi.email]
        with ctx():
            rendered = render_email(mail)
        for secret in secrets:
            for part in (rendered.subject, rendered.text, rendered.html):
                assert secret not in part
    # Staff see who reviewed.
    ranking = staff.get(f"/reviews/calls/{call.id}/ranking?format=csv").get_data(as_text=True)
    decide = staff.get(f"/reviews/proposals/{proposal.id}/decide").get_data(as_text=True)
    if decision is None:
        for a in assignments:
            assert a.reviewer.display_name in ranking
    for a in assignments:
        assert a.reviewer.display_name in decide


def test_an_open_call_names_its_reviewers_to_the_team_after_the_decision(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    call = make_call(db, single_blind=False)
    with ctx():
        proposal, officer, assignments = in_review(db, call=call)
        for a in assignments:
            write_review(db, a, (4, 3))
        decide_proposal(db, proposal, "decline", actor=officer, reason="Out of scope, sorry.")
    assert proposal.pi is not None
    login(client, proposal.pi)
    page = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    assert assignments[0].reviewer.display_name in page
