"""The whole journey in Chromium: a professor drafts a proposal, invites a co-investigator who
accepts, attaches a PDF and submits; the signing official endorses it; each person's mail arrives
at a real SMTP server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from portal.auth.models import Role
from portal.dev.demo_proposals import demo_pdf
from portal.extensions import db
from portal.proposals.models import Proposal, ProposalState
from tests.browser import chromium
from tests.factories import make_call, make_institution, make_user
from tests.notifications.smtp import SmtpServer, allow_smtp
from tests.support.journey import deliver, page_as
from tests.support.live import live_session

pytestmark = pytest.mark.browser

PLAN = "We will train open models and release them with their code and data. " * 10
ABSTRACT = "Open models for reasoning in many languages, released with weights and code. " * 4


def test_draft_invite_attach_submit_endorse_with_every_mail(
    portal: tuple[Flask, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    app, url = portal
    allow_smtp(smtp.port)
    with live_session(app) as s:
        inst = make_institution(s, name="Journey University")
        prof = make_user(s, Role.RESEARCHER, institution=inst, display_name="Prof Journey",
                         email="prof@journey.edu")  # fmt: skip
        copi = make_user(s, Role.RESEARCHER, institution=inst, display_name="Co Journey",
                         email="copi@journey.edu")  # fmt: skip
        official = make_user(s, Role.SIGNING_OFFICIAL, institution=inst,
                             display_name="Official Journey", email="official@journey.edu")  # fmt: skip
        call = make_call(s, title="Journey call", endorsement_required=True)
        ids = prof.id, copi.id, official.id, call.id
    prof_id, copi_id, official_id, call_id = ids
    pdf = tmp_path / "project description.pdf"
    pdf.write_bytes(demo_pdf())

    with chromium() as browser:
        page = page_as(browser, app, url, prof_id)
        # Discover the call and start a proposal.
        page.goto(f"{url}/calls/{call_id}")
        page.get_by_role("button", name="Start a proposal").click()
        page.wait_for_url(re.compile(r".*/proposals/\d+/edit$"))
        proposal_id = int(page.url.rsplit("/", 2)[-2])
        page.get_by_label("Title").fill("Open reasoning models for twelve languages")
        page.get_by_label("Abstract").fill(ABSTRACT)
        page.get_by_label("Field").select_option("Natural language processing")
        page.get_by_label("Start date").fill("2027-03-01")
        page.get_by_label("Duration").fill("12")
        page.get_by_label("Research plan").fill(PLAN)
        page.get_by_label("GPU-hours").first.fill("5000")
        page.get_by_label("Justification").first.fill(
            "Pre-training runs of three model sizes, each with two data-mixture ablations."
        )
        page.get_by_label("Kind", exact=True).first.select_option("weights")
        page.get_by_label("SPDX licence").first.fill("Apache-2.0")
        page.get_by_role("button", name="Save draft").click()
        page.wait_for_url(f"{url}/proposals/{proposal_id}")
        # Invite the co-investigator.
        page.get_by_label("E-mail address").fill("copi@journey.edu")
        page.get_by_label("Role").select_option("co_pi")
        page.get_by_role("button", name="Send the invitation").click()
        page.wait_for_url(re.compile(rf".*/proposals/{proposal_id}.*"))
        deliver(app)
        (invite,) = [m for m in smtp.received if m.rcpt_tos == ["copi@journey.edu"]]
        text = invite.message.get_body(("plain",))
        assert text is not None
        link = re.search(r"(https?://\S+/invitations/\S+)", text.get_content())
        assert link is not None

        copi_page = page_as(browser, app, url, copi_id)
        copi_page.goto(link.group(1))
        copi_page.get_by_role("button", name=re.compile("Accept")).click()
        copi_page.wait_for_url(re.compile(rf".*/proposals/{proposal_id}\b.*"))
        assert "Co Journey" in copi_page.content()

        # Attach the project description and submit.
        page.goto(f"{url}/proposals/{proposal_id}")
        page.get_by_label("Kind of document").select_option("description")
        page.get_by_label("PDF file").set_input_files(str(pdf))
        page.get_by_role("button", name="Upload").click()
        page.wait_for_url(re.compile(rf".*/proposals/{proposal_id}.*"))
        assert "project description.pdf" in page.content()
        page.get_by_role("button", name="Submit", exact=True).click()
        page.wait_for_url(re.compile(rf".*/proposals/{proposal_id}.*"))
        assert "Awaiting endorsement" in page.content()

        # The signing official finds it in the queue and endorses it.
        official_page = page_as(browser, app, url, official_id)
        official_page.goto(f"{url}/endorsements/")
        official_page.get_by_role("link", name="Open reasoning models for twelve languages").click()
        official_page.get_by_role("button", name="Endorse").click()
        official_page.wait_for_url(re.compile(rf".*/proposals/{proposal_id}.*"))
        assert "Submitted" in official_page.content()

    deliver(app)
    with app.app_context():
        assert db.session.get(Proposal, proposal_id).state == ProposalState.SUBMITTED  # type: ignore[union-attr]
        db.session.remove()
    subjects = sorted((m.rcpt_tos[0], m.message["Subject"]) for m in smtp.received)
    title = "Open reasoning models for twelve languages"
    assert subjects == sorted(
        [
            ("copi@journey.edu", f'Join the proposal "{title}"'),
            ("copi@journey.edu", f"Submitted: {title}"),
            ("copi@journey.edu", f"Submitted: {title}"),
            ("official@journey.edu", f"Endorsement needed: {title}"),
            ("prof@journey.edu", f"Submitted: {title}"),
            ("prof@journey.edu", f"Submitted: {title}"),
        ]
    )
