"""The access journey in Chromium: a researcher asks for a controlled dataset, its steward approves
it, the researcher signs the data-use agreement, and the storage operator's grants API lists them;
every mail arrives at a real SMTP server."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from flask import Flask

from portal.agreements.models import AgreementKind
from portal.api import services as api_services
from portal.api.models import TokenScope
from portal.auth.models import Role
from portal.datasets.models import AccessRequest, GrantState
from portal.extensions import db
from tests.browser import chromium
from tests.factories import make_agreement_template, make_dataset, make_institution, make_user
from tests.notifications.smtp import SmtpServer, allow_smtp
from tests.support.journey import deliver, page_as
from tests.support.live import live_session

pytestmark = pytest.mark.browser

DATASET = "Clinical Notes Journey Corpus"


def _mails(smtp: SmtpServer) -> list[tuple[str, str]]:
    return [(m.rcpt_tos[0], str(m.message["Subject"])) for m in smtp.received]


def _grants(page: Any, url: str, dataset_id: int, secret: str) -> Any:
    resp = page.request.get(
        f"{url}/api/v1/datasets/{dataset_id}/grants",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert resp.status == 200, resp.text()
    return resp.json()


def test_request_approve_sign_and_the_storage_sees_the_grant(
    portal: tuple[Flask, str], smtp: SmtpServer
) -> None:
    app, url = portal
    allow_smtp(smtp.port)
    with live_session(app) as s:
        inst = make_institution(s, name="Dataset Journey University")
        researcher = make_user(s, Role.RESEARCHER, institution=inst, display_name="Rhea Researcher",
                               email="rhea@journey.edu")  # fmt: skip
        steward = make_user(s, Role.DATA_STEWARD, display_name="Stefan Steward",
                            email="stefan@atom-lab.org")  # fmt: skip
        other = make_user(s, Role.DATA_STEWARD, display_name="Otto Otherdata",
                          email="otto@atom-lab.org")  # fmt: skip
        template = make_agreement_template(s, kind=AgreementKind.DATA_USE, title="Data use")
        dataset = make_dataset(s, name=DATASET, slug="clinical-notes-journey",
                               stewards=[steward], dua_template=template)  # fmt: skip
        make_dataset(s, name="Someone else's corpus", stewards=[other])
        admin = make_user(s, Role.ADMIN)
        _, secret = api_services.create_token(
            s,
            name="Storage",
            scope=TokenScope.DATASET_OPERATOR,
            datasets=[dataset],
            expires_on=dt.date.today() + dt.timedelta(days=30),
            actor=admin,
        )
        ids = researcher.id, steward.id, dataset.id
    researcher_id, steward_id, dataset_id = ids

    with chromium() as browser:
        rhea = page_as(browser, app, url, researcher_id)
        assert _grants(rhea, url, dataset_id, secret)["items"] == []

        # The researcher finds the dataset in the catalog and asks for it.
        rhea.goto(f"{url}/datasets/")
        rhea.get_by_role("link", name=DATASET).click()
        rhea.get_by_role("link", name="Ask for access").click()
        rhea.get_by_role("heading", name=f"Ask for access to {DATASET}").wait_for()
        rhea.get_by_label("Intended use").fill(
            "Training an open clinical summarisation model; no attempt at re-identification."
        )
        rhea.get_by_role("button", name="Send the request").click()
        rhea.wait_for_url(re.compile(r".*/datasets/requests/\d+$"))
        request_url = rhea.url

        deliver(app)
        received = [m for m in _mails(smtp) if m[0] == "stefan@atom-lab.org"]
        assert received and DATASET in received[0][1]
        assert not [m for m in _mails(smtp) if m[0] == "otto@atom-lab.org"]

        # The steward approves it from the request's page.
        stefan = page_as(browser, app, url, steward_id)
        stefan.goto(request_url)
        stefan.get_by_role("heading", name="Your decision").wait_for()
        stefan.get_by_label("Note for the requester (optional)").fill(
            "Keep it on the lab's cluster."
        )
        stefan.get_by_role("button", name="Approve").click()
        stefan.get_by_text("approved", exact=False).first.wait_for()

        deliver(app)
        to_rhea = {subject for to, subject in _mails(smtp) if to == "rhea@journey.edu"}
        assert any(subject.startswith("Please sign:") for subject in to_rhea), to_rhea
        assert any("Approved" in subject or "approved" in subject for subject in to_rhea), to_rhea
        # Approved, but nothing to use until the agreement is signed.
        assert _grants(rhea, url, dataset_id, secret)["items"] == []

        # The researcher signs the data-use agreement from "Agreements to sign".
        rhea.goto(f"{url}/agreements/to-sign")
        rhea.get_by_role("link", name=re.compile(f"^Sign .*{DATASET}")).click()
        rhea.get_by_role("heading", name="The agreement in full").wait_for()
        rhea.get_by_label("Your full name").fill("Rhea Researcher")
        rhea.get_by_label("I have read this agreement and sign it").check()
        rhea.get_by_role("button", name=re.compile("^Sign as")).click()
        rhea.wait_for_url(re.compile(r".*/agreements/\d+$"))

        with app.app_context():
            request = db.session.query(AccessRequest).filter_by(dataset_id=dataset_id).one()
            assert request.grant is not None and request.grant.state == GrantState.ACTIVE
            grant_id = request.grant.id
            db.session.remove()

        listed = _grants(rhea, url, dataset_id, secret)
        assert [(g["id"], g["email"]) for g in listed["items"]] == [(grant_id, "rhea@journey.edu")]

        # Her access page shows where the data is.
        rhea.goto(f"{url}/datasets/access/{grant_id}")
        assert "s3://atom-datasets/" in rhea.content()

    deliver(app)
    to_rhea = {subject for to, subject in _mails(smtp) if to == "rhea@journey.edu"}
    assert any(DATASET in subject and "ready" in subject.lower() for subject in to_rhea), to_rhea
