"""Every notification route by every role, another user's settings and tokens (IDOR), bad input,
CSRF and the audit trail."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.notifications.forms import field_name
from portal.notifications.kinds import optional_kinds
from portal.notifications.models import Delivery, NotificationPreference, OutboxMessage, OutboxState
from portal.notifications.rendering import unsubscribe_token
from tests.factories import (
    LOGGED_IN,
    ROLE_NAMES,
    make_actor,
    make_institution,
    make_outbox_message,
    make_user,
)
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

ADMIN = {"admin"}
OPTIONAL = "institutions/affiliation_requested"


def _settings_form(**overrides: str) -> dict[str, str]:
    data = {field_name(k.key): Delivery.IMMEDIATELY.value for k in optional_kinds()}
    data.update({field_name(k): v for k, v in overrides.items()})
    return data


def _dead_message(db: Session) -> OutboxMessage:
    return make_outbox_message(
        db,
        message_id="<dead-1@atom-lab.org>",
        template="auth/welcome",
        to_addr="bounce@example.org",
        context={"name": "B", "has_affiliation": False},
        state=OutboxState.DEAD,
        attempts=1,
        last_error="550 5.1.1 No such user here",
    )


@pytest.fixture
def demo_sink(app: Flask, tmp_path: Path) -> Iterator[str]:
    """Demo mode with one message in the sink; yields the message's key."""
    box = mailbox.Maildir(str(tmp_path / "sink"), create=True)
    em = EmailMessage()
    em["Subject"] = "Welcome to the ATOM Partner Portal"
    em["To"] = "ada@northlake.edu"
    em.set_content("Hello Ada,\n")
    em.add_alternative("<p>Hello <script>alert(1)</script>Ada,</p>", subtype="html")
    key = box.add(em)
    saved = {k: app.config[k] for k in ("DEMO_MODE", "MAIL_SINK_DIR")}
    app.config.update(DEMO_MODE=True, MAIL_SINK_DIR=str(tmp_path / "sink"))
    yield key
    app.config.update(saved)


CASES = [
    case("settings page", "GET", "/notifications/settings", LOGGED_IN),
    case(
        "save settings",
        "POST",
        "/notifications/settings",
        LOGGED_IN,
        302,
        _settings_form(**{OPTIONAL: "digest"}),
    ),
    case("outbox", "GET", "/admin/mail/", ADMIN),
    case("outbox search", "GET", "/admin/mail/?state=dead&q=bounce", ADMIN),
    case("outbox mail", "GET", "/admin/mail/{msg}", ADMIN),
    case("retry", "POST", "/admin/mail/{msg}/retry", ADMIN, 302),
    case("demo mailbox", "GET", "/admin/mail/mailbox/", ADMIN),
    case("demo mail", "GET", "/admin/mail/mailbox/{key}", ADMIN),
    case("demo mail html", "GET", "/admin/mail/mailbox/{key}/html", ADMIN),
    # The token is the authority here (it names someone else than the actor): anyone holding it.
    case("unsubscribe page", "GET", "/notifications/unsubscribe/{token}", ROLE_NAMES),
    case(
        "one-click unsubscribe",
        "POST",
        "/notifications/unsubscribe/{token}",
        ROLE_NAMES,
        200,
        {"List-Unsubscribe": "One-Click"},
    ),
]


def _mail_state(db: Session) -> tuple[object, ...]:
    return (
        tuple(db.scalars(select(OutboxMessage.state).order_by(OutboxMessage.id))),
        tuple(
            db.scalars(select(NotificationPreference.delivery).order_by(NotificationPreference.id))
        ),
    )


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_by_role(
    app: Flask, client: FlaskClient, db: Session, demo_sink: str, role: str, case: Case
) -> None:
    own = make_institution(db)
    actor = make_actor(db, role, own)
    msg = _dead_message(db)
    recipient = make_user(db)
    with app.app_context():
        token = unsubscribe_token(recipient.id, OPTIONAL)
    if actor is not None:
        login(client, actor)
    values = {"msg": msg.id, "key": demo_sink, "token": token}
    check_route(
        client, db, role, actor.id if actor else None, case, values, lambda: _mail_state(db)
    )
    if case.name == "retry":
        assert msg.state == (OutboxState.QUEUED if role in case.allowed else OutboxState.DEAD)
    if case.name == "one-click unsubscribe":
        prefs = db.scalars(select(NotificationPreference)).all()
        assert [(p.user_id, p.kind, p.delivery) for p in prefs] == [
            (recipient.id, OPTIONAL, Delivery.OFF)
        ]


def test_outbox_lists_searches_and_pages(client: FlaskClient, db: Session, app: Flask) -> None:
    login(client, make_user(db, Role.ADMIN))
    for i in range(30):
        make_outbox_message(
            db,
            message_id=f"<m{i}@atom-lab.org>",
            template="auth/welcome",
            to_addr=f"user{i:02d}@example.org",
            subject=f"Subject {i:02d}",
            context={},
            state=OutboxState.QUEUED,
        )
    _dead_message(db)
    db.flush()
    page1 = client.get("/admin/mail/").get_data(as_text=True)
    assert "31 in all" in page1 and "bounce@example.org" in page1
    page2 = client.get("/admin/mail/?page=2").get_data(as_text=True)
    assert "user00@example.org" in page2 and "user29@example.org" not in page2
    only = client.get("/admin/mail/?q=user07").get_data(as_text=True)
    assert "user07@example.org" in only and "user08@example.org" not in only
    dead = client.get("/admin/mail/?state=dead").get_data(as_text=True)
    assert "bounce@example.org" in dead and "user01@example.org" not in dead
    # Bad filter input: a clear 400, not a silent "everything".
    assert client.get("/admin/mail/?state=bogus").status_code == 400
    assert client.get("/admin/mail/?q=" + "x" * 300).status_code == 400
    assert client.get("/admin/mail/999999").status_code == 404
    assert client.post("/admin/mail/999999/retry").status_code == 404


def test_retry_of_a_sent_mail_is_refused_and_changes_nothing(
    client: FlaskClient, db: Session
) -> None:
    login(client, make_user(db, Role.ADMIN))
    msg = _dead_message(db)
    msg.state = OutboxState.SENT
    from portal.core.models import utcnow

    msg.sent_at = utcnow()
    db.flush()
    resp = client.post(f"/admin/mail/{msg.id}/retry", follow_redirects=True)
    assert resp.status_code == 200 and b"cannot be retried" in resp.data
    db.expire_all()
    assert msg.state == OutboxState.SENT
    assert db.scalar(select(func.count()).where(AuditEvent.action == "outbox.retry")) == 0


def test_settings_save_is_audited_and_mandatory_kinds_are_not_offered(
    client: FlaskClient, db: Session
) -> None:
    user = make_user(db)
    login(client, user)
    page = client.get("/notifications/settings").get_data(as_text=True)
    assert field_name(OPTIONAL) in page
    assert field_name("institutions/affiliation_decided") not in page
    assert "Decision on your affiliation" in page  # listed as always sent
    resp = client.post("/notifications/settings", data=_settings_form(**{OPTIONAL: "off"}))
    assert resp.status_code == 302
    pref = db.scalar(
        select(NotificationPreference).where(NotificationPreference.user_id == user.id)
    )
    assert pref is not None and pref.delivery == Delivery.OFF
    ev = db.scalar(select(AuditEvent).where(AuditEvent.action == "notification.preferences"))
    assert ev is not None and ev.actor_id == user.id and OPTIONAL in ev.details["changed"]


def test_bad_settings_input_is_a_form_error_and_changes_nothing(
    client: FlaskClient, db: Session
) -> None:
    user = make_user(db)
    login(client, user)
    resp = client.post("/notifications/settings", data=_settings_form(**{OPTIONAL: "sometimes"}))
    assert resp.status_code == 422 and b"Not a valid choice" in resp.data
    # A mandatory kind smuggled into the form is ignored, not stored.
    data = _settings_form()
    data[field_name("institutions/affiliation_decided")] = "off"
    assert client.post("/notifications/settings", data=data).status_code == 302
    assert db.scalar(select(func.count()).select_from(NotificationPreference)) == 0


def test_settings_change_only_your_own(client: FlaskClient, db: Session) -> None:
    """IDOR: the page has no user id; a user_id smuggled into the form changes nobody else."""
    me, other = make_user(db), make_user(db)
    login(client, me)
    data = _settings_form(**{OPTIONAL: "off"}) | {"user_id": str(other.id)}
    assert client.post(f"/notifications/settings?user_id={other.id}", data=data).status_code == 302
    owners = db.scalars(select(NotificationPreference.user_id)).all()
    assert owners == [me.id]


def test_one_click_unsubscribe_needs_no_login_or_csrf_and_is_audited(
    app: Flask, client: FlaskClient, db: Session, csrf_enabled: None
) -> None:
    user = make_user(db)
    with app.app_context():
        token = unsubscribe_token(user.id, OPTIONAL)
    page = client.get(f"/notifications/unsubscribe/{token}")
    assert page.status_code == 200 and b"Affiliation requests to decide" in page.data
    assert db.scalar(select(func.count()).select_from(NotificationPreference)) == 0, (
        "GET changes nothing"
    )
    resp = client.post(
        f"/notifications/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
    )
    assert resp.status_code == 200
    pref = db.scalar(
        select(NotificationPreference).where(NotificationPreference.user_id == user.id)
    )
    assert pref is not None and pref.delivery == Delivery.OFF
    ev = db.scalar(select(AuditEvent).where(AuditEvent.action == "notification.unsubscribe"))
    assert ev is not None and ev.actor_id == user.id


def test_unsubscribe_refuses_altered_tokens_and_other_bodies(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    """IDOR: a token names one person; changing it to name another breaks its signature."""
    me, other = make_user(db), make_user(db)
    login(client, me)
    with app.app_context():
        mine = unsubscribe_token(me.id, OPTIONAL)
        theirs_payload = unsubscribe_token(other.id, OPTIONAL).partition(".")[0]
        mandatory = unsubscribe_token(me.id, "institutions/affiliation_decided")
    forged = theirs_payload + "." + mine.partition(".")[2]
    one_click = {"List-Unsubscribe": "One-Click"}
    assert client.get(f"/notifications/unsubscribe/{forged}").status_code == 400
    assert client.post(f"/notifications/unsubscribe/{forged}", data=one_click).status_code == 422
    assert client.post(f"/notifications/unsubscribe/{mine}x", data=one_click).status_code == 422
    assert client.get(f"/notifications/unsubscribe/{mandatory}").status_code == 400
    assert client.post(f"/notifications/unsubscribe/{mandatory}", data=one_click).status_code == 422
    assert client.post(f"/notifications/unsubscribe/{mine}", data={}).status_code == 400
    assert db.scalar(select(func.count()).select_from(NotificationPreference)) == 0


def test_state_changes_need_the_csrf_token(
    client: FlaskClient, db: Session, csrf_enabled: None
) -> None:
    admin = make_user(db, Role.ADMIN)
    login(client, admin)
    msg = _dead_message(db)
    assert client.post(f"/admin/mail/{msg.id}/retry").status_code == 400
    assert (
        client.post("/notifications/settings", data=_settings_form(**{OPTIONAL: "off"})).status_code
        == 400
    )
    db.expire_all()
    assert msg.state == OutboxState.DEAD
    assert db.scalar(select(func.count()).select_from(NotificationPreference)) == 0


def test_demo_mailbox_exists_only_in_demo_mode(
    client: FlaskClient, db: Session, demo_sink: str, app: Flask
) -> None:
    login(client, make_user(db, Role.ADMIN))
    page = client.get("/admin/mail/mailbox/").get_data(as_text=True)
    assert "Welcome to the ATOM Partner Portal" in page
    msg = client.get(f"/admin/mail/mailbox/{demo_sink}").get_data(as_text=True)
    assert "Hello Ada," in msg
    html = client.get(f"/admin/mail/mailbox/{demo_sink}/html")
    assert html.headers["Content-Security-Policy"].startswith("sandbox;")
    assert client.get("/admin/mail/mailbox/..%2Fsecret").status_code == 404
    assert client.get("/admin/mail/mailbox/nope").status_code == 404
    app.config["DEMO_MODE"] = False
    assert client.get("/admin/mail/mailbox/").status_code == 404
    assert client.get(f"/admin/mail/mailbox/{demo_sink}").status_code == 404
