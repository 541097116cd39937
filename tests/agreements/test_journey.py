"""The signing journey in Chromium: approving a project issues its contribution agreement; the PI
signs, the institution's signing official signs on its behalf, a program officer countersigns;
the signed PDF downloads, carries the text, the signatures and the hash, and both verification
pages confirm it; every mail arrives at a real SMTP server."""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

import pytest
from flask import Flask
from pypdf import PdfReader

from portal.agreements.models import Agreement, AgreementKind, AgreementState
from portal.auth.models import Role
from portal.extensions import db
from portal.proposals import services as proposals
from portal.proposals.models import ProposalState
from tests.browser import chromium
from tests.factories import make_agreement_template, make_institution, make_proposal, make_user
from tests.notifications.smtp import SmtpServer, allow_smtp
from tests.support.journey import deliver, mails, page_as
from tests.support.live import live_session

pytestmark = pytest.mark.browser

TITLE = "Contribution — Signing journey project"


def _sign(page: Any, url: str, name: str) -> str:
    """From "Agreements to sign": read the agreement, type the name, confirm, sign; the page of
    the agreement afterwards."""
    page.goto(f"{url}/agreements/to-sign")
    page.get_by_role("link", name=re.compile(f"^Sign {TITLE}")).click()
    # The locator waits for the sign page to arrive (a click does not wait for the navigation).
    page.get_by_role("heading", name="The agreement in full").wait_for()
    page.get_by_label("Your full name").fill(name)
    page.get_by_label("I have read this agreement and sign it").check()
    page.get_by_role("button", name=re.compile("^Sign as")).click()
    page.wait_for_url(re.compile(r".*/agreements/\d+$"))
    return str(page.content())


def test_pi_official_and_officer_sign_and_the_pdf_verifies(
    portal: tuple[Flask, str], smtp: SmtpServer
) -> None:
    app, url = portal
    allow_smtp(smtp.port)
    with live_session(app) as s:
        inst = make_institution(s, name="Signing Journey University")
        pi = make_user(s, Role.RESEARCHER, institution=inst, display_name="Pat Investigator",
                       email="pat@journey.edu")  # fmt: skip
        official = make_user(s, Role.SIGNING_OFFICIAL, institution=inst,
                             display_name="Sofía Núñez", email="sofia@journey.edu")  # fmt: skip
        officer = make_user(s, Role.PROGRAM_OFFICER, display_name="Olga Officer",
                            email="olga@atom-lab.org")  # fmt: skip
        make_agreement_template(s, kind=AgreementKind.CONTRIBUTION, title="Contribution",
                                auto_issue=True)  # fmt: skip
        proposal = make_proposal(s, pi=pi, institution=inst, state=ProposalState.IN_REVIEW,
                                 title="Signing journey project")  # fmt: skip
        awards = {r.call_resource_id: r.hours for r in proposal.requests}
        proposals.decide_proposal(s, proposal, "approve", actor=officer, awards=awards)
        (agreement,) = s.query(Agreement).filter_by(proposal_id=proposal.id).all()
        ids = agreement.id, pi.id, official.id, officer.id
    agreement_id, pi_id, official_id, officer_id = ids

    deliver(app)
    assert ("pat@journey.edu", f"Please sign: {TITLE}") in mails(smtp)

    with chromium() as browser:
        # The project page says the GPU-hours wait for the agreement, and who must sign.
        pi_page = page_as(browser, app, url, pi_id)
        pi_page.goto(f"{url}/proposals/{proposal.id}")
        notice = pi_page.locator(".gate-notice").inner_text()
        assert "waiting on: Principal investigator (Pat Investigator)" in notice

        _sign(pi_page, url, "Pat Investigator")
        deliver(app)
        assert ("sofia@journey.edu", f"Please sign: {TITLE}") in mails(smtp)

        page = _sign(page_as(browser, app, url, official_id), url, "Sofía Núñez")
        assert "Signing official for Signing Journey University" in page
        deliver(app)
        assert ("olga@atom-lab.org", f"Please sign: {TITLE}") in mails(smtp)

        staff = page_as(browser, app, url, officer_id)
        _sign(staff, url, "Olga Officer")
        with staff.expect_download() as download:
            staff.get_by_role("link", name="Download the signed PDF").click()
        pdf = download.value.path().read_bytes()
        text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)

        with app.app_context():
            stored = db.session.get(Agreement, agreement_id)
            assert stored is not None and stored.state == AgreementState.ACTIVE
            digest = stored.text_sha256
            assert digest == hashlib.sha256(stored.text.encode()).hexdigest()
            assert {s.text_sha256 for s in stored.signatures} == {digest}
            db.session.remove()
        flat = re.sub(r"\s+", "", text)
        assert digest in flat
        for name in ("Pat Investigator", "Sofía Núñez", "Olga Officer"):
            assert name.replace(" ", "") in flat

        # Anyone checks the PDF's hash on the public page; the agreement's page hashes again.
        public = browser.new_context().new_page()
        public.goto(f"{url}/agreements/verify")
        public.get_by_label("SHA-256 of the agreement's text").fill(digest)
        public.get_by_role("button", name="Check").click()
        public.wait_for_url(re.compile(r".*sha256="))
        assert TITLE in public.content()
        staff.goto(f"{url}/agreements/{agreement_id}/verify")
        assert "Verified" in staff.content()

        pi_page.goto(f"{url}/proposals/{proposal.id}")
        assert pi_page.locator(".gate-notice").count() == 0

    deliver(app)
    signed = f"Signed by every party: {TITLE}"
    for address in ("pat@journey.edu", "sofia@journey.edu", "olga@atom-lab.org"):
        assert (address, signed) in mails(smtp)
