"""Delivery against a real SMTP server, on a database with real commits (SQLite and PostgreSQL).

Invariant 2: a notification exists if and only if its change committed; SMTP being down loses nothing.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import Counter
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import func, select

from portal.auth.emails import welcome
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.models import utcnow
from portal.dev.sink import free_port
from portal.extensions import db
from portal.institutions.emails import affiliation_requested
from portal.notifications.delivery import backoff, deliver_pending
from portal.notifications.models import DeliveryAttempt, OutboxMessage, OutboxState
from portal.notifications.services import enqueue_email
from tests.factories import make_affiliation, make_institution, make_user
from tests.notifications.smtp import SmtpServer, allow_smtp
from tests.support.app import login

URL = re.compile(r"https?://[^\s<>\"]+")


def _states() -> Counter[str]:
    return Counter(str(s) for s in db.session.scalars(select(OutboxMessage.state)).all())


def test_mail_of_a_rolled_back_change_is_never_sent_and_a_committed_one_is_delivered(
    live: Flask, live_smtp: SmtpServer
) -> None:
    # The change that rolls back: a new user and their welcome mail.
    ghost = make_user(db.session, display_name="Ghost", email="ghost@example.org")
    welcome(db.session, ghost)
    db.session.rollback()

    # The change that commits.
    ada = make_user(db.session, display_name="Ada Lovelace", email="ada.commit@example.org")
    welcome(db.session, ada)
    db.session.commit()
    ada_id = ada.id

    report = deliver_pending(db.session)
    assert report.sent == 1 and report.failed == 0 and not report.dead
    assert len(live_smtp.received) == 1
    got = live_smtp.received[0]
    assert got.rcpt_tos == ["ada.commit@example.org"]
    assert got.mail_from == "noreply@atom-lab.org"
    assert got.message["To"] == "Ada Lovelace <ada.commit@example.org>"
    assert got.message["Subject"] == "Welcome to the ATOM Partner Portal"
    assert got.message.get_content_type() == "multipart/alternative"
    assert "Hello Ada Lovelace," in got.text and "Your dashboard:" in got.text
    assert "<a href=" in got.html and "Hello Ada Lovelace," in got.html
    assert not any("ghost" in r for m in live_smtp.received for r in m.rcpt_tos)

    # Every link in both parts works for the recipient.
    links = set(URL.findall(got.text)) | set(re.findall(r'href="([^"]+)"', got.html))
    assert links, "the mail has links"
    client = live.test_client()
    login(client, db.session.get(User, ada_id))  # type: ignore[arg-type]
    for link in links:
        parts = urlsplit(link)
        assert f"{parts.scheme}://{parts.netloc}" == "http://127.0.0.1:5000"
        assert client.get(parts.path).status_code == 200, link

    row = db.session.scalars(select(OutboxMessage)).one()
    assert row.state == OutboxState.SENT and row.attempts == 1 and row.sent_at is not None
    assert row.message_id == got.message["Message-ID"]
    # Running again sends nothing more.
    assert deliver_pending(db.session).total == 0
    assert len(live_smtp.received) == 1


def test_optional_kind_carries_one_click_unsubscribe_that_works(
    live: Flask, live_smtp: SmtpServer
) -> None:
    inst = make_institution(db.session, name="Northlake University")
    official = make_user(
        db.session, Role.SIGNING_OFFICIAL, institution=inst, email="olivia.live@example.org"
    )
    requester = make_user(db.session, display_name="Nia Newcomer", email="nia.live@example.org")
    aff = make_affiliation(db.session, user=requester, institution=inst, title="postdoc")
    affiliation_requested(db.session, aff)
    db.session.commit()

    assert deliver_pending(db.session).sent == 1
    got = live_smtp.received[0]
    assert got.rcpt_tos == ["olivia.live@example.org"]
    assert got.message["Subject"] == "Nia Newcomer asks to join Northlake University"
    assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = str(got.message["List-Unsubscribe"]).strip("<>")
    assert unsubscribe in got.text and unsubscribe in got.html

    # RFC 8058: the mail client POSTs without cookies or CSRF token.
    live.config["WTF_CSRF_ENABLED"] = True
    resp = live.test_client().post(
        urlsplit(unsubscribe).path, data={"List-Unsubscribe": "One-Click"}
    )
    assert resp.status_code == 200
    # The next request is not mailed to the official any more (off), and nothing is queued.
    aff2 = make_affiliation(
        db.session, user=make_user(db.session, email="second.live@example.org"), institution=inst
    )
    affiliation_requested(db.session, aff2)
    db.session.commit()
    assert deliver_pending(db.session).total == 0
    assert official.id is not None


def test_smtp_down_loses_nothing_and_sends_nothing_twice(live: Flask) -> None:
    port = free_port()
    allow_smtp(port)  # this test knows the port is closed at first
    live.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_TIMEOUT=5)
    for i in range(1000):
        enqueue_email(
            db.session,
            "auth/welcome",
            to=f"person{i:04d}@example.org",
            context={"name": f"Person {i}", "has_affiliation": False},
        )
    db.session.commit()

    down = deliver_pending(db.session)
    assert down.sent == 0 and down.failed > 0 and not down.dead
    failed = db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.state == OutboxState.FAILED)
    ).all()
    assert failed and all("Connection" in (m.last_error or "") for m in failed)
    assert all(m.next_attempt_at > utcnow() for m in failed), "failed mails back off"

    server = SmtpServer(port).start()
    try:
        # Later, once the back-off has passed. (How fast: tests/benchmarks/test_delivery.py.)
        up = deliver_pending(db.session, now=utcnow() + dt.timedelta(hours=1))
    finally:
        server.stop()
    assert up.sent == 1000 and up.failed == 0 and not up.dead
    ids = server.message_ids()
    assert len(ids) == 1000, "0 lost"
    assert len(set(ids)) == 1000, "0 duplicates"
    assert sorted(r.rcpt_tos[0] for r in server.received) == [
        f"person{i:04d}@example.org" for i in range(1000)
    ]
    assert _states() == Counter({"sent": 1000})
    assert set(ids) == set(db.session.scalars(select(OutboxMessage.message_id)))


def test_permanently_refused_address_ends_dead_is_reported_and_admins_can_retry(
    live: Flask, live_smtp: SmtpServer
) -> None:
    enqueue_email(
        db.session,
        "auth/welcome",
        to="bounce@example.org",
        context={"name": "B", "has_affiliation": False},
    )
    enqueue_email(
        db.session,
        "auth/welcome",
        to="fine@example.org",
        context={"name": "F", "has_affiliation": False},
    )
    db.session.commit()

    result = live.test_cli_runner().invoke(args=["mail", "deliver"])
    assert result.exit_code == 0, result.output
    assert "sent 1, will retry 0, dead 1" in result.output
    assert "DEAD" in result.output and "bounce@example.org" in result.output
    assert "550" in result.output

    dead = db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.to_addr == "bounce@example.org")
    ).one()
    assert dead.state == OutboxState.DEAD and dead.attempts == 1
    attempts = db.session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.message_id == dead.id)
    ).all()
    assert [(a.ok, a.smtp_code) for a in attempts] == [(False, 550)]
    assert db.session.scalar(
        select(func.count()).where(
            AuditEvent.action == "outbox.dead", AuditEvent.object_id == dead.id
        )
    )
    assert [r.rcpt_tos for r in live_smtp.received] == [["fine@example.org"]]

    admin = make_user(db.session, Role.ADMIN, email="admin.live@example.org")
    db.session.commit()
    client = login(live.test_client(), admin)
    page = client.get("/admin/mail/?state=dead")
    assert page.status_code == 200
    assert b"bounce@example.org" in page.data and b"550" in page.data
    assert b"fine@example.org" not in page.data
    assert b"Retry" in page.data

    resp = client.post(f"/admin/mail/{dead.id}/retry")
    assert resp.status_code == 302
    db.session.expire_all()
    assert dead.state == OutboxState.QUEUED and dead.attempts == 0
    # The address still bounces: dead again, and still only one mail arrived at all.
    assert deliver_pending(db.session).dead == [dead.id]
    assert len(live_smtp.received) == 1


def test_temporary_failures_back_off_exponentially_then_die(
    live: Flask, live_smtp: SmtpServer
) -> None:
    live.config.update(MAIL_MAX_ATTEMPTS=3, MAIL_RETRY_BASE_SECONDS=60)
    (msg,) = enqueue_email(
        db.session,
        "auth/welcome",
        to="busy@example.org",
        context={"name": "B", "has_affiliation": False},
    )
    db.session.commit()
    t0 = utcnow()
    assert deliver_pending(db.session, now=t0).failed == 1
    db.session.refresh(msg)
    assert msg.state == OutboxState.FAILED and msg.next_attempt_at == t0 + dt.timedelta(seconds=60)
    assert "451" in (msg.last_error or "")
    # Not due yet: nothing happens.
    assert deliver_pending(db.session, now=t0 + dt.timedelta(seconds=30)).total == 0
    t1 = t0 + dt.timedelta(seconds=61)
    assert deliver_pending(db.session, now=t1).failed == 1
    db.session.refresh(msg)
    assert msg.next_attempt_at == t1 + dt.timedelta(seconds=120)
    assert deliver_pending(db.session, now=t1 + dt.timedelta(seconds=121)).dead == [msg.id]
    db.session.refresh(msg)
    assert msg.state == OutboxState.DEAD and msg.attempts == 3
    assert live_smtp.received == []
    assert backoff(10, 60, 3600) == dt.timedelta(hours=1)


def test_two_workers_racing_deliver_each_mail_exactly_once(
    live: Flask, live_smtp: SmtpServer
) -> None:
    """Real threads with their own connections. PostgreSQL: claims with FOR UPDATE SKIP LOCKED.
    SQLite: claims in BEGIN IMMEDIATE transactions (one worker is the recommended set-up there,
    but even two never send a mail twice)."""
    live.config.update(MAIL_BATCH_SIZE=5)
    live_smtp.handler.delay = 0.002
    for i in range(300):
        enqueue_email(
            db.session,
            "auth/welcome",
            to=f"race{i:03d}@example.org",
            context={"name": "R", "has_affiliation": False},
        )
    db.session.commit()
    db.session.remove()

    barrier = threading.Barrier(2)
    reports: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with live.app_context():
                barrier.wait()
                reports.append(deliver_pending(db.session).sent)
                db.session.remove()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    ids = live_smtp.message_ids()
    assert len(ids) == 300 and len(set(ids)) == 300
    assert sum(reports) == 300
    assert min(reports) > 0, f"both workers took part: {reports}"
    assert _states() == Counter({"sent": 300})


def test_resend_after_crash_keeps_the_message_id(live: Flask, live_smtp: SmtpServer) -> None:
    """A worker that dies after sending but before recording leaves the row to be sent again
    once its lease passes — with the same Message-ID, so the receiver can drop the copy."""
    (msg,) = enqueue_email(
        db.session,
        "auth/welcome",
        to="twice@example.org",
        context={"name": "T", "has_affiliation": False},
    )
    db.session.commit()
    from portal.notifications import delivery

    real_finish = delivery._finish
    delivery._finish = lambda *a, **k: None  # the crash
    try:
        deliver_pending(db.session)
    finally:
        delivery._finish = real_finish
    db.session.rollback()
    assert deliver_pending(db.session).total == 0, "leased rows are not taken again early"
    later = utcnow() + dt.timedelta(seconds=live.config["MAIL_CLAIM_SECONDS"] + 1)
    assert deliver_pending(db.session, now=later).sent == 1
    ids = live_smtp.message_ids()
    assert len(ids) == 2 and ids[0] == ids[1] == msg.message_id
