"""Deciding: approve with GPU-hours (at most what was asked for), send back for a revision (the
next version goes to the same reviewers), decline with a reason the applicants read; a call's
allocation committee decides instead of staff; two deciders at once leave one decision."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.ctx import AppContext
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.notifications.models import OutboxMessage
from portal.notifications.rendering import render_email
from portal.proposals.models import Award, CommitteeMember, Proposal, ProposalState
from portal.proposals.services import decide_proposal
from portal.reviews.models import Assignment, ReviewState
from portal.reviews.services import answer, assign
from tests.factories import make_call, make_institution, make_proposal, make_user
from tests.reviews.review_kit import in_review, mails, write_review
from tests.support.app import login
from tests.support.live import live_session, logged_in_client
from tests.support.race import TRIES, post, race, redirects, report, who_was_told_what


@pytest.fixture
def ctx(app: Flask) -> Callable[[], AppContext]:
    return app.app_context


def _reviewed(
    ctx: Callable[[], AppContext], db: Session, **kw: object
) -> tuple[Proposal, object, list[Assignment]]:
    with ctx():
        proposal, officer, assignments = in_review(db, **kw)  # type: ignore[arg-type]
        for a in assignments:
            write_review(db, a, (4, 4))
    return proposal, officer, assignments


def test_approval_awards_at_most_what_was_asked_for(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    proposal, officer, _ = _reviewed(ctx, db)
    (request,) = proposal.requests
    login(client, officer)  # type: ignore[arg-type]
    url = f"/reviews/proposals/{proposal.id}/decide"
    page = client.get(url).get_data(as_text=True)
    assert f'value="{request.hours}"' in page  # the award defaults to the hours asked for
    over = client.post(
        url, data={"action": "approve", f"award_{request.call_resource_id}": str(request.hours + 1)}
    )
    assert over.status_code == 422 and "what was asked for" in over.get_data(as_text=True)
    db.expire_all()
    assert proposal.state == ProposalState.IN_REVIEW and proposal.awards == []
    ok = client.post(url, data={"action": "approve", f"award_{request.call_resource_id}": "600"})
    assert ok.status_code == 302
    db.expire_all()
    assert proposal.state == ProposalState.ACTIVE
    assert [(a.call_resource_id, a.hours) for a in proposal.awards] == [
        (request.call_resource_id, 600)
    ]
    assert sorted(m.to_addr for m in mails(db, "proposals/decided")) == [proposal.pi.email]
    login(client, proposal.pi)
    page = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    assert "Approved: it is an active project." in page and "600 GPU-hours awarded" in page


def test_revision_goes_back_to_the_same_reviewers(
    app: Flask, ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    call = make_call(db, endorsement_required=False)
    proposal, officer, assignments = _reviewed(ctx, db, call=call)
    pi = proposal.pi
    assert pi is not None
    reviewer = login(app.test_client(), assignments[0].reviewer)
    staff = login(app.test_client(), officer)  # type: ignore[arg-type]
    login(client, pi)
    url = f"/reviews/proposals/{proposal.id}/decide"
    resp = staff.post(
        url, data={"action": "revise", "reason": "Add baselines for the small models."}
    )
    assert resp.status_code == 302
    page = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    assert "Add baselines for the small models." in page
    assert proposal.title not in reviewer.get("/reviews/").get_data(as_text=True)
    # The PI edits and resubmits: version 2.
    assert client.get(f"/proposals/{proposal.id}/edit").status_code == 200
    assert client.post(f"/proposals/{proposal.id}/submit").status_code == 302
    db.expire_all()
    assert proposal.state == ProposalState.SUBMITTED and proposal.version == 2
    # The same reviewers: their queue shows it again, with a new draft for version 2.
    queue = reviewer.get("/reviews/").get_data(as_text=True)
    assert proposal.title in queue and "Not started" in queue
    a = assignments[0]
    c1, c2 = (c.id for c in call.criteria)
    form = {f"score_{c1}": "5", f"score_{c2}": "", f"comment_{c1}": "", f"comment_{c2}": "",
            "to_applicant": "", "confidential": ""}  # fmt: skip
    assert reviewer.post(f"/reviews/assignments/{a.id}/review", data=form).status_code == 302
    db.expire_all()
    assert [(r.version, r.state) for r in a.reviews] == [
        (1, ReviewState.SUBMITTED),
        (2, ReviewState.DRAFT),
    ]
    assert db.scalars(select(Assignment.id).where(Assignment.proposal_id == proposal.id)).all() == [
        x.id for x in assignments
    ]
    # Staff start the review of version 2; then it can be decided again.
    assert staff.post(url, data={"action": "start_review"}).status_code == 302
    db.expire_all()
    assert proposal.state == ProposalState.IN_REVIEW


def test_a_declined_proposal_shows_its_reason(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    proposal, officer, _ = _reviewed(ctx, db)
    login(client, officer)  # type: ignore[arg-type]
    url = f"/reviews/proposals/{proposal.id}/decide"
    no_reason = client.post(url, data={"action": "decline", "reason": ""})
    assert no_reason.status_code == 422
    assert (
        client.post(
            url, data={"action": "decline", "reason": "Outside the call's scope."}
        ).status_code
        == 302
    )
    db.expire_all()
    assert proposal.state == ProposalState.DECLINED
    login(client, proposal.pi)  # type: ignore[arg-type]
    page = client.get(f"/proposals/{proposal.id}").get_data(as_text=True)
    assert "Declined." in page and "Outside the call&#39;s scope." in page


def test_a_committee_call_is_decided_by_its_committee_not_staff(
    app: Flask, ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    call = make_call(db, committee_decides=True)
    member = make_user(db, Role.REVIEWER)
    db.add(CommitteeMember(call_id=call.id, user_id=member.id))
    db.flush()
    proposal, officer, _ = _reviewed(ctx, db, call=call)
    outsider = login(app.test_client(), make_user(db, Role.REVIEWER))
    committee = login(app.test_client(), member)
    login(client, officer)  # type: ignore[arg-type]
    url = f"/reviews/proposals/{proposal.id}/decide"
    assert (
        client.post(url, data={"action": "decline", "reason": "Staff must not decide."}).status_code
        == 403
    )
    assert outsider.get(url).status_code == 403
    assert outsider.get(f"/reviews/calls/{call.id}/ranking").status_code == 403
    db.expire_all()
    assert proposal.state == ProposalState.IN_REVIEW
    ranking = committee.get(f"/reviews/calls/{call.id}/ranking").get_data(as_text=True)
    assert proposal.title in ranking and "Decide" in ranking
    (request,) = proposal.requests
    resp = committee.post(
        url, data={"action": "approve", f"award_{request.call_resource_id}": "500"}
    )
    assert resp.status_code == 302
    db.expire_all()
    assert proposal.state == ProposalState.ACTIVE and proposal.decided_by_id == member.id


# --- two deciders at once ------------------------------------------------------------------------


@pytest.mark.parametrize("second", ["decline", "approve"])
def test_two_deciders_at_once_leave_exactly_one_decision(race_app: Flask, second: str) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            proposal, officer, assignments = in_review(s)
            for a in assignments:
                write_review(s, a, (4, 4))
            other = make_user(s, Role.PROGRAM_OFFICER)
            (req,) = proposal.requests
            ids = proposal.id, officer.id, other.id, req.call_resource_id
        proposal_id, first_id, second_id, cr_id = ids
        approving = logged_in_client(race_app, first_id)
        other_client = logged_in_client(race_app, second_id)
        url = f"/reviews/proposals/{proposal_id}/decide"
        approve = post(approving, url, action="approve", **{f"award_{cr_id}": "700"})
        if second == "decline":
            rival = post(other_client, url, action="decline", reason="Out of scope.")
        else:
            rival = post(other_client, url, action="approve", **{f"award_{cr_id}": "300"})
        if attempt % 2:
            one, two = race(approve, rival)
        else:
            two, one = race(rival, approve)
        problems = redirects(first=one, second=two)
        with live_session(race_app) as s:
            p = s.get(Proposal, proposal_id)
            assert p is not None
            state, decided_by = p.state, p.decided_by_id
            events = s.scalars(
                select(AuditEvent.action).where(
                    AuditEvent.object_type == "proposals",
                    AuditEvent.object_id == proposal_id,
                    AuditEvent.action.in_(["proposal.approve", "proposal.decline"]),
                )
            ).all()
            awards = s.scalars(select(Award.hours).where(Award.proposal_id == proposal_id)).all()
            decided_mails = s.scalars(
                select(OutboxMessage.id)
                .where(OutboxMessage.template == "proposals/decided")
                .where(OutboxMessage.context["title"].as_string() == p.title)
            ).all()
        if len(events) != 1:
            problems.append(f"{len(events)} decisions in the audit log: {events}")
        if state == ProposalState.ACTIVE:
            expected_hours = [700] if decided_by == first_id else [300]
            if list(awards) != expected_hours:
                problems.append(f"approved by {decided_by} but awards {list(awards)}")
        elif state == ProposalState.DECLINED:
            if awards:
                problems.append(f"declined but awards {list(awards)}")
        else:
            problems.append(f"the proposal is {state.value}")
        if len(decided_mails) != 1:
            problems.append(f"{len(decided_mails)} decision mails")
        if not any(p.endswith("redirect") for p in problems):
            winner_first = decided_by == first_id
            by_first, by_second = (approving, one), (other_client, two)
            problems += who_was_told_what(
                winner=by_first if winner_first else by_second,
                loser=by_second if winner_first else by_first,
            )
        if problems:
            broken[attempt] = problems
    assert not broken, report(broken)


# --- the mails, compared with stored text ----------------------------------------------------------

EXPECTED = Path(__file__).parent.parent / "notifications" / "expected"
_TOKEN = re.compile(r"/notifications/unsubscribe/[A-Za-z0-9_.\-]+")
_IDS = re.compile(r"/(proposals|calls|assignments)/\d+")


def _rendered(msg: OutboxMessage) -> str:
    r = render_email(msg)
    text = f"Subject: {r.subject}\n\n--- text/plain ---\n{r.text}\n--- text/html ---\n{r.html}"
    text = _IDS.sub(r"/\1/<id>", _TOKEN.sub("/notifications/unsubscribe/<token>", text))
    return re.sub(r"cluster-\d+", "cluster-<n>", text)


def _check(name: str, actual: str) -> None:
    path = EXPECTED / f"{name}.txt"
    if os.environ.get("UPDATE_EXPECTED"):
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} differs from {path}"


def _named_proposal(db: Session, call_title: str) -> tuple[Proposal, object, list[Assignment]]:
    inst = make_institution(db, name="Northlake University")
    ada = make_user(db, Role.RESEARCHER, institution=inst, display_name="Ada Lovelace",
                    email="ada@northlake.edu")  # fmt: skip
    officer = make_user(db, Role.PROGRAM_OFFICER, display_name="Owen Officer",
                        email="owen@atom-lab.org")  # fmt: skip
    call = make_call(db, title=call_title)
    proposal = make_proposal(db, call=call, pi=ada, state=ProposalState.SUBMITTED,
                             title="Reasoning in small models")  # fmt: skip
    reviewer = make_user(db, Role.REVIEWER, display_name="Quentin Scorer",
                         email="quentin@reviewers.org")  # fmt: skip
    a = assign(db, proposal, reviewer, actor=officer)
    answer(db, a, "accept", actor=reviewer)
    return proposal, officer, [a]


def test_a_submitted_review_mail_reads_as_expected(
    ctx: Callable[[], AppContext], db: Session
) -> None:
    with ctx():
        _, _, (a,) = _named_proposal(db, "Open Models 2027")
        write_review(db, a, (4, 5))
        (mail,) = mails(db, "reviews/submitted")
        assert mail.to_addr == "owen@atom-lab.org"
        _check("review_submitted", _rendered(mail))


@pytest.mark.parametrize("decision", ["approve", "revise", "decline"])
def test_decision_mails_read_as_expected_and_name_no_reviewer(
    ctx: Callable[[], AppContext], db: Session, decision: str
) -> None:
    with ctx():
        proposal, officer, (a,) = _named_proposal(db, "Open Models 2027")
        write_review(db, a, (4, 5))
        decide_proposal(
            db, proposal, decision, actor=officer,  # type: ignore[arg-type]
            reason=None if decision == "approve" else "The <evaluation> needs baselines.",
            awards={r.call_resource_id: 800 for r in proposal.requests},
        )  # fmt: skip
        (mail,) = mails(db, "proposals/decided")
        assert mail.to_addr == "ada@northlake.edu"
        text = _rendered(mail)
        assert "Quentin" not in text and "quentin@" not in text
        _check(f"proposal_decided_{decision}", text)
