"""The review journey in Chromium: a program officer assigns two reviewers on the assign page (one
suggestion is skipped for a conflict of interest), both accept and score, the officer approves
with awarded GPU-hours; the PI receives the decision mail at a real SMTP server and sees it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal.auth.models import Role
from portal.extensions import db
from portal.proposals.models import Proposal, ProposalState
from tests.browser import chromium
from tests.factories import make_call, make_institution, make_proposal, make_user
from tests.notifications.smtp import SmtpServer, allow_smtp
from tests.support.journey import deliver, page_as
from tests.support.live import live_session

pytestmark = pytest.mark.browser

COMMENT = "A clear plan with open outputs; please report the baselines in full."


def _score(page: Any, url: str, assignment_id: int, scores: tuple[str, str]) -> None:
    page.goto(f"{url}/reviews/assignments/{assignment_id}")
    page.get_by_role("button", name="Accept").click()
    page.goto(f"{url}/reviews/")
    page.get_by_role("link", name="Review journey proposal").click()
    page.get_by_label("Score: Scientific merit").select_option(scores[0])
    page.get_by_label("Score: Openness").select_option(scores[1])
    page.get_by_label("Comments to the applicants").fill(COMMENT)
    page.get_by_label("Confidential comments to program staff").fill("Fund it.")
    page.get_by_role("button", name="Submit the review").click()
    page.wait_for_url(re.compile(rf".*/reviews/assignments/{assignment_id}/review$"))
    assert "Your review is submitted" in page.content()


def test_assign_score_approve_and_the_pi_is_told(
    portal: tuple[Flask, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    app, url = portal
    allow_smtp(smtp.port)
    with live_session(app) as s:
        inst = make_institution(s, name="Review Journey University")
        pi = make_user(s, Role.RESEARCHER, institution=inst, display_name="Pat Investigator",
                       email="pat@journey.edu")  # fmt: skip
        officer = make_user(s, Role.PROGRAM_OFFICER, display_name="Olga Officer",
                            email="olga@atom-lab.org")  # fmt: skip
        first = make_user(s, Role.REVIEWER, display_name="Alma Reviewer", email="alma@rev.org")
        second = make_user(s, Role.REVIEWER, display_name="Boris Reviewer", email="boris@rev.org")
        # A reviewer at the PI's institution: suggested, but conflicted.
        colleague = make_user(s, Role.REVIEWER, Role.RESEARCHER, institution=inst,
                              display_name="Carl Colleague", email="carl@journey.edu")  # fmt: skip
        call = make_call(s, title="Review journey call", single_blind=True)
        proposal = make_proposal(s, call=call, pi=pi, state=ProposalState.SUBMITTED,
                                 institution=inst, title="Review journey proposal")  # fmt: skip
        ids = proposal.id, pi.id, officer.id, first.id, second.id, colleague.id, call.id
    proposal_id, pi_id, officer_id, first_id, second_id, colleague_id, call_id = ids

    with chromium() as browser:
        staff = page_as(browser, app, url, officer_id)
        staff.goto(f"{url}/reviews/proposals/{proposal_id}/assign")
        conflicted = staff.locator(f'tr[data-reviewer="{colleague_id}"]')
        assert "Conflict of interest" in conflicted.inner_text()
        assert conflicted.get_by_role("button", name="Assign").count() == 0
        for reviewer_id in (first_id, second_id):
            row = staff.locator(f'tr[data-reviewer="{reviewer_id}"]')
            row.get_by_role("button", name="Assign").click()
            staff.wait_for_url(re.compile(rf".*/reviews/proposals/{proposal_id}/assign$"))
        with app.app_context():
            from sqlalchemy import select

            from portal.reviews.models import Assignment

            assignments = dict(
                db.session.execute(
                    select(Assignment.reviewer_id, Assignment.id).where(
                        Assignment.proposal_id == proposal_id
                    )
                ).all()
            )
            db.session.remove()
        assert set(assignments) == {first_id, second_id}

        _score(page_as(browser, app, url, first_id), url, assignments[first_id], ("5", "4"))
        _score(page_as(browser, app, url, second_id), url, assignments[second_id], ("4", "4"))

        # The officer ranks and approves, awarding fewer hours than asked for.
        staff.goto(f"{url}/reviews/calls/{call_id}/ranking")
        assert "Alma Reviewer" in staff.content()
        staff.get_by_role("link", name=re.compile("Decide")).click()
        staff.get_by_label(re.compile("GPU-hours awarded")).fill("750")
        staff.get_by_role("button", name="Approve with these GPU-hours").click()
        staff.wait_for_url(re.compile(rf".*/reviews/calls/{call_id}/ranking$"))
        assert "Approved" in staff.content()

        pi_page = page_as(browser, app, url, pi_id)
        pi_page.goto(f"{url}/proposals/{proposal_id}")
        content = pi_page.content()
        assert "Approved: it is an active project." in content
        assert "750 GPU-hours awarded" in content and COMMENT in content
        assert "Alma" not in content and "Boris" not in content

    deliver(app)
    with app.app_context():
        assert db.session.get(Proposal, proposal_id).state == ProposalState.ACTIVE  # type: ignore[union-attr]
        db.session.remove()
    (decided,) = [
        m for m in smtp.received
        if m.rcpt_tos == ["pat@journey.edu"] and m.message["Subject"].startswith("Approved")
    ]  # fmt: skip
    body = decided.message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "750 GPU-hours" in text and "Alma" not in text and "Boris" not in text
    assert decided.message["Subject"] == "Approved: Review journey proposal"
