"""The first events' e-mails: who gets them, and their rendered text compared with stored files.

Set ``UPDATE_EXPECTED=1`` to rewrite ``expected/*.txt`` after a deliberate wording change, then
read the diff before committing it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.emails import welcome
from portal.auth.models import Role, User
from portal.auth.services import send_email_verification
from portal.institutions.emails import (
    affiliation_requested,
    remind_pending_request,
)
from portal.institutions.models import Affiliation, AffiliationSource, AffiliationState
from portal.institutions.services import decide_affiliation, withdraw_affiliation_request
from portal.institutions.workflow import AFFILIATION_WORKFLOW
from portal.notifications.models import Delivery, OutboxMessage, OutboxState
from portal.notifications.rendering import build_message, render_email
from portal.notifications.services import send_digests, set_preferences
from tests.factories import make_affiliation, make_institution, make_user

EXPECTED = Path(__file__).parent / "expected"
TOKEN = re.compile(r"/notifications/unsubscribe/[A-Za-z0-9_.\-]+")
REQUESTED_AT = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)


def _rendered(app: Flask, msg: OutboxMessage) -> str:
    with app.app_context():
        r = render_email(msg)
    text = f"Subject: {r.subject}\n\n--- text/plain ---\n{r.text}\n--- text/html ---\n{r.html}"
    return TOKEN.sub("/notifications/unsubscribe/<token>", text)


def _check(name: str, actual: str) -> None:
    path = EXPECTED / f"{name}.txt"
    if os.environ.get("UPDATE_EXPECTED"):
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} differs from {path}"


def _outbox(db: Session) -> list[OutboxMessage]:
    return list(db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def _request(db: Session) -> tuple[Affiliation, User]:
    """Nia Newcomer's request to join Northlake University, whose signing official is Olivia."""
    inst = make_institution(db, name="Northlake University")
    official = make_user(
        db,
        Role.SIGNING_OFFICIAL,
        institution=inst,
        display_name="Olivia Official",
        email="olivia@northlake.edu",
    )
    requester = make_user(db, display_name="Nia Newcomer", email="nia@gmail.example")
    aff = make_affiliation(
        db, user=requester, institution=inst, title="postdoc", requested_at=REQUESTED_AT
    )
    return aff, official


def test_welcome(app: Flask, db: Session) -> None:
    user = make_user(db, display_name="Ada Lovelace", email="ada@northlake.edu")
    with app.app_context():
        welcome(db, user)
    (msg,) = _outbox(db)
    assert (msg.to_addr, msg.recipient_id, msg.state) == (
        "ada@northlake.edu",
        user.id,
        OutboxState.QUEUED,
    )
    _check("welcome", _rendered(app, msg))
    with app.app_context():
        welcome(db, user)  # a second call (a retried first login) sends nothing more
    assert len(_outbox(db)) == 1


def test_withdrawing_a_request_sends_no_decision_mail(app: Flask, db: Session) -> None:
    aff, _ = _request(db)
    with app.app_context():
        withdraw_affiliation_request(db, aff, actor=aff.user)
    assert _outbox(db) == []


def test_affiliation_request_goes_to_that_institutions_signing_officials_only(
    app: Flask, db: Session
) -> None:
    aff, _ = _request(db)
    second = make_user(
        db, Role.SIGNING_OFFICIAL, institution=aff.institution, email="second@northlake.edu"
    )
    make_user(db, Role.SIGNING_OFFICIAL, institution=aff.institution, is_disabled=True)
    make_user(db, Role.SIGNING_OFFICIAL, email="elsewhere@other.edu")  # another institution
    make_user(db, Role.PROGRAM_OFFICER, email="officer@atom-lab.org")
    with app.app_context():
        affiliation_requested(db, aff)
    msgs = _outbox(db)
    assert sorted(m.to_addr for m in msgs) == ["olivia@northlake.edu", "second@northlake.edu"]
    assert second.id in {m.recipient_id for m in msgs}
    _check("affiliation_requested", _rendered(app, msgs[0]))


def test_affiliation_request_without_signing_official_goes_to_program_officers(
    app: Flask, db: Session
) -> None:
    inst = make_institution(db)
    officer = make_user(db, Role.PROGRAM_OFFICER, email="officer@atom-lab.org")
    aff = make_affiliation(db, user=make_user(db), institution=inst)
    with app.app_context():
        affiliation_requested(db, aff)
    assert [m.recipient_id for m in _outbox(db)] == [officer.id]


@pytest.mark.parametrize(
    ("state", "note", "name"),
    [
        (AffiliationState.ACTIVE, "Welcome to the group!", "affiliation_approved"),
        (
            AffiliationState.REJECTED,
            "We have no record of you in the staff directory.",
            "affiliation_rejected",
        ),
    ],
)
def test_affiliation_decision_goes_back_to_the_person(
    app: Flask, db: Session, state: AffiliationState, note: str, name: str
) -> None:
    aff, official = _request(db)
    with app.app_context():
        decide_affiliation(
            db,
            aff,
            "approve" if state == AffiliationState.ACTIVE else "reject",
            actor=official,
            reason=note,
        )
    (msg,) = _outbox(db)
    assert msg.to_addr == "nia@gmail.example" and msg.recipient_id == aff.user_id
    _check(name, _rendered(app, msg))


def test_pending_request_reminder(app: Flask, db: Session) -> None:
    aff, _ = _request(db)
    with app.app_context():
        remind_pending_request(db, aff)
    (msg,) = _outbox(db)
    assert msg.to_addr == "olivia@northlake.edu"
    _check("affiliation_pending", _rendered(app, msg))


def test_daily_digest_gathers_held_notifications(app: Flask, db: Session) -> None:
    aff, olivia = _request(db)
    set_preferences(db, olivia, {"institutions/affiliation_requested": Delivery.DIGEST})
    with app.app_context():
        affiliation_requested(db, aff)
        remind_pending_request(db, aff)  # still immediate: a different kind
        held = [m for m in _outbox(db) if m.state == OutboxState.HELD]
        assert len(held) == 1
        for m in held:
            m.created_at = REQUESTED_AT
        db.flush()
        assert send_digests(db, now=REQUESTED_AT + dt.timedelta(days=1)) == 1
        assert send_digests(db) == 0, "each notification is in one digest only"
    digest = _outbox(db)[-1]
    assert digest.template == "notifications/digest" and digest.to_addr == "olivia@northlake.edu"
    db.refresh(held[0])
    assert held[0].state == OutboxState.DIGESTED and held[0].digest_id == digest.id
    _check("digest", _rendered(app, digest))


def test_headers_are_safe_from_user_text(app: Flask, db: Session) -> None:
    """A name or institution with CR/LF cannot add headers or recipients."""
    inst = make_institution(db, name="Evil U\r\nBcc: victim@example.org")
    make_user(db, Role.SIGNING_OFFICIAL, institution=inst, email="official@evil.example")
    requester = make_user(
        db,
        display_name="Mallory\r\nBcc: victim@example.org\r\nX-Injected: yes",
        email="mallory@example.org",
    )
    aff = make_affiliation(db, user=requester, institution=inst)
    with app.app_context():
        affiliation_requested(db, aff)
        welcome(db, requester)
        for msg in _outbox(db):
            email = build_message(msg, render_email(msg))
            headers = email.as_bytes().split(b"\n\n", 1)[0]  # the top-level header block
            assert b"\nBcc:" not in headers and b"\nX-Injected" not in headers
            assert email["Bcc"] is None and email["X-Injected"] is None
            assert "\n" not in str(email["Subject"]) and "\r" not in str(email["Subject"])
            # The name stays a quoted display name; the only address is the stored one.
            assert [a.addr_spec for a in email["To"].addresses] == [msg.to_addr]


def test_affiliation_ended_tells_the_person_why(app: Flask, db: Session) -> None:
    inst = make_institution(db, name="Northlake University")
    person = make_user(
        db,
        Role.RESEARCHER,
        institution=inst,
        display_name="Nia Newcomer",
        email="nia@gmail.example",
    )
    (aff,) = person.affiliations
    aff.source = AffiliationSource.IDP_CLAIM
    db.flush()
    reason = (
        "Northlake IdP no longer vouches for your membership of Northlake University "
        "(domains: northlake.edu): your verified address nia@gmail.example is in none of them, "
        "and it sends no eduPersonScopedAffiliation scoped to them."
    )
    with app.app_context():
        AFFILIATION_WORKFLOW.run(db, aff, "end", actor=person, reason=reason)
    (msg,) = _outbox(db)
    assert (msg.to_addr, msg.recipient_id) == ("nia@gmail.example", person.id)
    _check("affiliation_ended", _rendered(app, msg))


def test_affiliation_ended_mails_nobody_whose_address_is_unverified(
    app: Flask, db: Session
) -> None:
    person = make_user(db, Role.RESEARCHER, email="typed@example.org", email_verified=False)
    (aff,) = person.affiliations
    aff.source = AffiliationSource.IDP_CLAIM
    db.flush()
    with app.app_context():
        AFFILIATION_WORKFLOW.run(db, aff, "end", actor=person, reason="gone")
    assert aff.state == AffiliationState.ENDED and _outbox(db) == []


VERIFY_TOKEN = re.compile(r"/auth/verify-email/[A-Za-z0-9_.\-]+")


def test_verify_email_goes_to_the_address_only(app: Flask, db: Session) -> None:
    """The one mail to an unverified address: no name from the identity provider, no account."""
    person = make_user(
        db, display_name="Mallory Typed", email="someone@example.org", email_verified=False
    )
    with app.app_context():
        send_email_verification(db, person)
    (msg,) = _outbox(db)
    assert (msg.to_addr, msg.recipient_id, msg.to_name) == ("someone@example.org", None, None)
    text = VERIFY_TOKEN.sub("/auth/verify-email/<token>", _rendered(app, msg))
    assert "Mallory" not in text
    _check("verify_email", text)
