"""Becoming a partner, in Chromium: a person finds their university in the ROR lookup and applies;
the proposed signing official accepts the invitation from the mail; a program officer starts the
review and approves; the official signs the partnership agreement, the program countersigns, and
the university is a partner — listed in the public directory for anyone. Every mail arrives at a
real SMTP server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from portal.agreements.models import AgreementKind
from portal.auth.models import Role
from portal.extensions import db
from portal.institutions.models import Institution, InstitutionState
from tests.browser import chromium
from tests.factories import make_agreement_template, make_user
from tests.notifications.smtp import SmtpServer, allow_smtp
from tests.support.journey import deliver, mails, page_as
from tests.support.live import live_session

pytestmark = pytest.mark.browser

#: A real record of the shipped ROR subset (portal/institutions/data), not used by the demo.
UNIVERSITY = "University of Aveiro"
ROR_ID = "https://ror.org/00nt41z93"
AGREEMENT = f"Partnership — {UNIVERSITY}"


def _body_to(smtp: SmtpServer, address: str, subject_part: str) -> str:
    for m in smtp.received:
        if m.rcpt_tos[0] == address and subject_part in str(m.message["Subject"]):
            part = m.message.get_body(preferencelist=("plain",))
            assert part is not None
            return str(part.get_content())
    raise AssertionError(f"no mail to {address} about {subject_part!r}: {mails(smtp)}")


def _sign(page: Any, url: str, name: str) -> None:
    page.goto(f"{url}/agreements/to-sign")
    page.get_by_role("link", name=re.compile(f"^Sign {AGREEMENT}")).click()
    page.get_by_role("heading", name="The agreement in full").wait_for()
    page.get_by_label("Your full name").fill(name)
    page.get_by_label("I have read this agreement and sign it").check()
    page.get_by_role("button", name=re.compile("^Sign as")).click()
    page.wait_for_url(re.compile(r".*/agreements/\d+$"))


def test_a_university_applies_is_approved_signs_and_appears_in_the_directory(
    portal: tuple[Flask, str], smtp: SmtpServer
) -> None:
    app, url = portal
    app.config["PUBLIC_CACHE_SECONDS"] = 0
    allow_smtp(smtp.port)
    with live_session(app) as s:
        applicant = make_user(s, display_name="Inês Applicant", email="ines@ua.pt")
        official = make_user(s, display_name="Rui Official", email="rui@ua.pt")
        officer = make_user(s, Role.PROGRAM_OFFICER, display_name="Olga Officer",
                            email="olga@atom-lab.org")  # fmt: skip
        make_agreement_template(s, kind=AgreementKind.PARTNERSHIP, title="Partnership",
                                auto_issue=True)  # fmt: skip
        ids = applicant.id, official.id, officer.id
    applicant_id, official_id, officer_id = ids

    with chromium() as browser:
        # The applicant finds the university in the ROR lookup; choosing it fills in the form.
        page = page_as(browser, app, url, applicant_id)
        page.goto(f"{url}/apply")
        page.get_by_role("textbox", name="Find your institution").fill("Aveiro")
        page.locator("#ror-search").get_by_role("button", name="Search").click()
        page.get_by_role("button", name=UNIVERSITY).click()  # the live look-up's result
        page.get_by_text(f"Filled in from ROR: {UNIVERSITY}").wait_for()
        assert page.get_by_label("ROR id").input_value() == ROR_ID
        assert page.get_by_label("Institution's name").input_value() == UNIVERSITY
        assert page.get_by_label("Country").input_value() == "PT"
        assert "ua.pt" in page.get_by_label("E-mail domains").input_value()
        page.get_by_label("Why the institution wants to join").fill(
            "Our machine learning group trains open Portuguese language models and would share "
            "the weights, code and evaluation data under open licences."
        )
        page.get_by_label("Proposed signing officials").fill("rui@ua.pt")
        page.get_by_label("Technical contact", exact=True).fill("Inês Applicant")
        page.get_by_label("Technical contact's e-mail").fill("ines@ua.pt")
        page.get_by_role("button", name="Send the application").click()
        page.wait_for_url(re.compile(r".*/applications/\d+$"))
        assert UNIVERSITY in page.content()

        with app.app_context():
            inst = db.session.scalars(select(Institution).where(Institution.ror_id == ROR_ID)).one()
            assert inst.state == InstitutionState.APPLIED
            institution_id = inst.id
            db.session.remove()

        deliver(app)
        received = mails(smtp)
        assert ("ines@ua.pt", f"We received the application of {UNIVERSITY}") in received
        assert ("olga@atom-lab.org", f"New application: {UNIVERSITY} (PT) wants to become a partner") in received  # fmt: skip
        invitation = _body_to(smtp, "rui@ua.pt", "Will you sign for")
        link = re.search(r"https?://\S+/applications/invitations/\S+", invitation)
        assert link is not None, invitation

        # The proposed official follows the link from the mail and accepts.
        official_page = page_as(browser, app, url, official_id)
        official_page.goto(link.group(0))
        official_page.get_by_role("button", name=f"Accept: I sign for {UNIVERSITY}").click()
        official_page.wait_for_load_state()

        # A program officer works the onboarding queue: start the review, then approve.
        staff = page_as(browser, app, url, officer_id)
        staff.goto(f"{url}/applications/")
        staff.get_by_role("link", name=UNIVERSITY).click()
        staff.get_by_role("button", name="Start review").click()
        staff.get_by_role("button", name="Approve").wait_for()
        staff.get_by_role("button", name="Approve").click()
        staff.get_by_role("button", name="Approve").wait_for(state="detached")

        deliver(app)
        received = mails(smtp)
        assert (
            "ines@ua.pt",
            f"Approved: {UNIVERSITY}'s application to become a partner",
        ) in received
        assert ("rui@ua.pt", f"Please sign: {AGREEMENT}") in received

        # The official signs for the university; the program countersigns.
        _sign(official_page, url, "Rui Official")
        deliver(app)
        assert ("olga@atom-lab.org", f"Please sign: {AGREEMENT}") in mails(smtp)
        _sign(staff, url, "Olga Officer")

        with app.app_context():
            partner = db.session.get(Institution, institution_id)
            assert partner is not None and partner.state == InstitutionState.PARTNER
            assert partner.partner_since is not None
            db.session.remove()

        # Anyone (not logged in) finds it in the public partner directory.
        public = browser.new_context().new_page()
        public.goto(f"{url}/program/partners")
        assert public.get_by_role("link", name=UNIVERSITY).count() == 1

    deliver(app)
    received = mails(smtp)
    for address in ("ines@ua.pt", "rui@ua.pt"):
        assert (address, f"{UNIVERSITY} is now a partner") in received
    assert ("rui@ua.pt", f"Signed by every party: {AGREEMENT}") in received
