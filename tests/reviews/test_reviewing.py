"""Scoring: a reviewer saves a draft with some scores, submits a complete review (and those who
decide hear of it), sees the other reviews only once their own is in where the call says so, and
never reaches an assignment that is not theirs or that a conflict keeps them from."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from flask import Flask
from flask.ctx import AppContext
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.models import utcnow
from portal.institutions.models import AffiliationState
from portal.proposals.models import Proposal, ProposalState
from portal.reviews.conflicts import blocked, blocking_conflicts
from portal.reviews.models import ConflictWaiver, DeclaredConflict, ReviewState
from portal.reviews.permissions import conflict_settings
from tests.factories import make_affiliation, make_call, make_proposal, make_user
from tests.reviews.review_kit import TO_APPLICANT, in_review, mails, write_review
from tests.support.app import login


@pytest.fixture
def ctx(app: Flask) -> Callable[[], AppContext]:
    """An app context for set-up through the services (never around a request: the test client
    would share it, and with it ``g`` and the database session, between requests)."""
    return app.app_context


def _form(criteria: list[int], scores: dict[int, str], **extra: str) -> dict[str, str]:
    data = {f"score_{c}": scores.get(c, "") for c in criteria}
    data.update({f"comment_{c}": "" for c in criteria})
    data.setdefault("to_applicant", "")
    data.setdefault("confidential", "")
    data.update(extra)
    return data


def test_a_draft_keeps_partial_scores(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    with ctx():
        proposal, _, (a, _) = in_review(db)
    c1, c2 = (c.id for c in proposal.call.criteria)
    login(client, a.reviewer)
    page = client.get(f"/reviews/assignments/{a.id}/review")
    assert page.status_code == 200 and "Save draft" in page.get_data(as_text=True)
    resp = client.post(
        f"/reviews/assignments/{a.id}/review",
        data=_form([c1, c2], {c1: "4"}, **{f"comment_{c1}": "Solid."}),
    )
    assert resp.status_code == 302
    db.expire_all()
    (review,) = a.reviews
    assert review.state == ReviewState.DRAFT and review.version == proposal.version
    assert review.scores == {str(c1): 4} and review.comments == {str(c1): "Solid."}
    again = client.get(f"/reviews/assignments/{a.id}/review").get_data(as_text=True)
    assert '<option selected value="4">' in again


def test_a_score_off_the_scale_is_a_form_error(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    with ctx():
        proposal, _, (a, _) = in_review(db)
    c1, c2 = (c.id for c in proposal.call.criteria)
    login(client, a.reviewer)
    resp = client.post(f"/reviews/assignments/{a.id}/review", data=_form([c1, c2], {c1: "9"}))
    assert resp.status_code == 422
    assert "Not a valid choice" in resp.get_data(as_text=True)
    db.expire_all()
    assert a.reviews == []


def test_an_incomplete_review_is_not_submitted(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    with ctx():
        proposal, _, (a, _) = in_review(db)
    c1, c2 = (c.id for c in proposal.call.criteria)
    login(client, a.reviewer)
    resp = client.post(
        f"/reviews/assignments/{a.id}/review/submit",
        data=_form([c1, c2], {c1: "4"}, to_applicant=TO_APPLICANT),
    )
    assert resp.status_code == 422
    assert "Score “Openness” from 1 to 5 before submitting." in resp.get_data(as_text=True)
    db.expire_all()
    assert all(r.state == ReviewState.DRAFT for r in a.reviews)
    assert mails(db, "reviews/submitted") == []


def test_a_complete_review_is_submitted_and_the_deciders_hear_of_it(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    with ctx():
        proposal, officer, (a, _) = in_review(db)
    c1, c2 = (c.id for c in proposal.call.criteria)
    login(client, a.reviewer)
    resp = client.post(
        f"/reviews/assignments/{a.id}/review/submit",
        data=_form([c1, c2], {c1: "4", c2: "5"}, to_applicant=TO_APPLICANT),
    )
    assert resp.status_code == 302
    db.expire_all()
    (review,) = a.reviews
    assert review.state == ReviewState.SUBMITTED and review.submitted_at is not None
    assert review.scores == {str(c1): 4, str(c2): 5}
    (mail,) = mails(db, "reviews/submitted")
    assert mail.to_addr == officer.email
    # Submitted: it no longer changes.
    page = client.get(f"/reviews/assignments/{a.id}/review").get_data(as_text=True)
    assert "Save draft" not in page and TO_APPLICANT in page
    late = client.post(
        f"/reviews/assignments/{a.id}/review",
        data=_form([c1, c2], {c1: "1"}),
        follow_redirects=True,
    )
    assert "no longer changes" in late.get_data(as_text=True)
    db.expire_all()
    assert a.reviews[0].scores == {str(c1): 4, str(c2): 5}


@pytest.mark.parametrize("hidden", [True, False], ids=["hidden_until_own", "always_visible"])
def test_other_reviews_are_shown_as_the_call_says(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session, hidden: bool
) -> None:
    call = make_call(db, reviews_hidden_until_own=hidden)
    with ctx():
        _, _, (first, second) = in_review(db, call=call)
    with ctx():
        write_review(db, first, (5, 4), to_applicant="The first review comment, in full.")
    login(client, second.reviewer)
    page = client.get(f"/reviews/assignments/{second.id}/review").get_data(as_text=True)
    assert ("The first review comment" in page) is not hidden
    assert ('id="others-hidden"' in page) is hidden
    assert "Strong team" not in page  # the confidential comment is for staff only
    with ctx():
        write_review(db, second, (3, 3))
    page = client.get(f"/reviews/assignments/{second.id}/review").get_data(as_text=True)
    assert "The first review comment" in page
    assert first.reviewer.display_name not in page


def test_a_conflicted_reviewer_gets_404_and_an_empty_queue(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    with ctx():
        proposal, _, (a, _) = in_review(db)
    login(client, a.reviewer)
    assert proposal.title in client.get("/reviews/").get_data(as_text=True)
    assert proposal.pi is not None
    db.add(
        DeclaredConflict(reviewer_id=a.reviewer_id, person_id=proposal.pi.id, reason="Co-author")
    )
    db.flush()
    assert client.get(f"/reviews/assignments/{a.id}/review").status_code == 404
    assert client.post(f"/reviews/assignments/{a.id}/review/submit").status_code == 404
    assert proposal.title not in client.get("/reviews/").get_data(as_text=True)


def test_another_reviewers_assignment_is_404(
    ctx: Callable[[], AppContext], app: Flask, client: FlaskClient, db: Session
) -> None:
    with ctx():
        _, _, (mine, theirs) = in_review(db)
    outsider = login(app.test_client(), make_user(db, Role.RESEARCHER))
    login(client, mine.reviewer)
    assert client.get(f"/reviews/assignments/{theirs.id}/review").status_code == 404
    assert client.post(f"/reviews/assignments/{theirs.id}/review", data={}).status_code == 404
    assert client.post(f"/reviews/assignments/{theirs.id}/review/submit").status_code == 404
    assert outsider.get(f"/reviews/assignments/{mine.id}/review").status_code == 404
    assert outsider.get("/reviews/assignments/999999/review").status_code == 404


def test_a_decided_proposal_is_no_longer_reviewed(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    with ctx():
        proposal, officer, (a, b) = in_review(db)
    with ctx():
        write_review(db, a, (5, 5))
    from portal.proposals.services import decide_proposal

    with ctx():
        decide_proposal(
            db, proposal, "decline", actor=officer, reason="Out of scope for this call."
        )
    login(client, b.reviewer)
    assert proposal.title not in client.get("/reviews/").get_data(as_text=True)
    resp = client.post(f"/reviews/assignments/{b.id}/review/submit", data={}, follow_redirects=True)
    assert "not under review" in resp.get_data(as_text=True)
    db.expire_all()
    assert b.reviews == []


def test_the_queue_shows_due_dates_and_review_states(
    ctx: Callable[[], AppContext], client: FlaskClient, db: Session
) -> None:
    with ctx():
        proposal, _, (a, _) = in_review(db)
    login(client, a.reviewer)
    page = client.get("/reviews/").get_data(as_text=True)
    assert proposal.title in page and a.due_at.strftime("%d %b %Y") in page
    assert "Not started" in page
    with ctx():
        write_review(db, a, (4, None), submit=False)
    assert "Draft" in client.get("/reviews/").get_data(as_text=True)


@pytest.mark.parametrize("own_proposal_conflicts", [True, False])
def test_the_queue_filter_agrees_with_the_conflict_rule(
    ctx: Callable[[], AppContext], db: Session, own_proposal_conflicts: bool
) -> None:
    """``blocked`` (the conflict rule in SQL, which the lists filter with) says what
    ``blocking_conflicts`` says (one at a time), over each kind of conflict, affiliations that
    ended recently or long ago, and waivers."""
    reviewer = make_user(db, Role.REVIEWER, Role.RESEARCHER)
    own_inst = reviewer.affiliations[0].institution
    call = make_call(db)
    plain = make_proposal(db, call=make_call(db), state=ProposalState.SUBMITTED)
    same_inst = make_proposal(db, state=ProposalState.SUBMITTED, institution=own_inst)
    declared_person = make_proposal(db, state=ProposalState.SUBMITTED)
    db.add(DeclaredConflict(reviewer_id=reviewer.id, person_id=declared_person.pi.id))  # type: ignore[union-attr]
    declared_inst = make_proposal(db, state=ProposalState.SUBMITTED)
    db.add(DeclaredConflict(reviewer_id=reviewer.id, institution_id=declared_inst.institution_id))
    co_member_elsewhere = make_proposal(db, state=ProposalState.SUBMITTED)
    make_affiliation(
        db,
        user=co_member_elsewhere.pi,
        institution=own_inst,
        state=AffiliationState.ACTIVE,
    )
    own = make_proposal(db, call=call, pi=reviewer, state=ProposalState.SUBMITTED)
    same_call = make_proposal(db, call=call, state=ProposalState.SUBMITTED)
    waived = make_proposal(db, state=ProposalState.SUBMITTED, institution=own_inst)
    db.add(ConflictWaiver(proposal_id=waived.id, reviewer_id=reviewer.id, reason="Different lab"))
    own_waived = make_proposal(db, pi=reviewer, state=ProposalState.SUBMITTED)
    db.add(ConflictWaiver(proposal_id=own_waived.id, reviewer_id=reviewer.id, reason="Never"))
    # A team member who left the reviewer's institution lately, and one who left long ago.
    left_lately, left_long_ago = (make_proposal(db, state=ProposalState.SUBMITTED) for _ in "ab")
    for proposal, years in ((left_lately, 1), (left_long_ago, 10)):
        make_affiliation(
            db,
            user=proposal.pi,
            institution=own_inst,
            state=AffiliationState.ENDED,
            updated_at=utcnow() - dt.timedelta(days=365 * years),
        )
    # A declared institution where a team member (not the proposal) is.
    declared_member_inst = make_proposal(db, state=ProposalState.SUBMITTED)
    elsewhere = make_affiliation(
        db, user=declared_member_inst.pi, state=AffiliationState.ACTIVE
    ).institution
    db.add(DeclaredConflict(reviewer_id=reviewer.id, institution_id=elsewhere.id))
    db.flush()
    every = [
        plain,
        same_inst,
        declared_person,
        declared_inst,
        co_member_elsewhere,
        own,
        same_call,
        waived,
        own_waived,
        left_lately,
        left_long_ago,
        declared_member_inst,
    ]
    with ctx():
        settings = {**conflict_settings(), "own_proposal_conflicts": own_proposal_conflicts}
        expected = {p.id for p in every if blocking_conflicts(reviewer, p, **settings)}
        in_sql = db.scalars(
            select(Proposal.id).where(
                Proposal.id.in_([p.id for p in every]), blocked(reviewer.id, **settings)
            )
        )
        assert set(in_sql) == expected
    not_blocked = {plain.id, waived.id, left_long_ago.id}
    if not own_proposal_conflicts:
        not_blocked |= {same_call.id}
    assert expected == {p.id for p in every} - not_blocked
