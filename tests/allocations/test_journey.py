"""The supplement journey in Chromium: a PI asks for more GPU-hours on the allocation's page, a
program officer approves the request, and the burn-down chart now draws the new total; the request
and the decision arrive by mail at a real SMTP server."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from flask import Flask

from portal.allocations.models import Allocation
from portal.allocations.usage import Job, record_usage
from portal.auth.models import Role
from portal.extensions import db
from portal.proposals.models import Call
from tests.browser import chromium
from tests.factories import make_call, make_institution, make_project_allocation, make_user
from tests.notifications.smtp import SmtpServer, allow_smtp
from tests.support.journey import deliver, mails, page_as
from tests.support.live import live_session

pytestmark = pytest.mark.browser

PROJECT = "Burn-down journey project"


def test_a_supplement_asked_approved_and_drawn(portal: tuple[Flask, str], smtp: SmtpServer) -> None:
    app, url = portal
    allow_smtp(smtp.port)
    with live_session(app) as s:
        inst = make_institution(s, name="Burn-down University")
        pi = make_user(s, Role.RESEARCHER, institution=inst, display_name="Pat Investigator",
                       email="pat@burndown.edu")  # fmt: skip
        officer = make_user(s, Role.PROGRAM_OFFICER, display_name="Olga Officer",
                            email="olga@atom-lab.org")  # fmt: skip
        call: Call = make_call(s, budget_hours=10_000, max_request_hours=2_000)
        allocation = make_project_allocation(
            s, pi=pi, call=call, officer=officer, hours=1_000, title=PROJECT
        )
        # 250 GPU-hours used so far: 10 jobs of 4 GPUs for 6 h 15 min.
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        jobs = [
            Job(allocation.cluster, f"journey-{i}", allocation.account, 4, 22_500,
                now - dt.timedelta(hours=8 + i), now - dt.timedelta(hours=1 + i), "COMPLETED")
            for i in range(10)
        ]  # fmt: skip
        record_usage(s, jobs)
        ids = allocation.id, pi.id, officer.id
    allocation_id, pi_id, officer_id = ids
    deliver(app)
    smtp.received.clear()

    with chromium() as browser:
        pi_page = page_as(browser, app, url, pi_id)
        pi_page.goto(f"{url}/allocations/{allocation_id}")
        before = pi_page.locator("img").first.get_attribute("alt")
        assert before is not None and "1,000 GPU-hours from" in before
        pi_page.get_by_role("link", name="Ask for more hours").click()
        pi_page.get_by_label("More GPU-hours").fill("500")
        pi_page.get_by_label("Why the project needs it").fill(
            "The ablations doubled after the first review round; 500 more hours finish them."
        )
        pi_page.get_by_role("button", name="Send the request").click()
        pi_page.wait_for_url(re.compile(r".*/allocations/requests/\d+$"))
        request_url = pi_page.url
        deliver(app)
        assert ("olga@atom-lab.org", f"To decide: more hours for {PROJECT}") in mails(smtp)

        staff = page_as(browser, app, url, officer_id)
        staff.goto(request_url)
        staff.get_by_role("button", name="Approve").click()
        staff.wait_for_url(re.compile(r".*/allocations/requests/\d+$"))
        staff.get_by_text("Request approved").wait_for()

        pi_page.goto(f"{url}/allocations/{allocation_id}")
        alt = pi_page.locator("img").first.get_attribute("alt")
        assert alt is not None and "1,500 GPU-hours from" in alt, alt
        svg = pi_page.request.get(f"{url}/allocations/{allocation_id}/burndown.svg").text()
        assert "1,500 GPU-hours from" in svg and "250 used" in svg

    with app.app_context():
        stored = db.session.get(Allocation, allocation_id)
        assert stored is not None and stored.hours == 1_500
        assert stored.call_resource.allocated_hours == 1_500
        db.session.remove()
    deliver(app)
    assert ("pat@burndown.edu", f"Approved: more hours for {PROJECT}") in mails(smtp)
