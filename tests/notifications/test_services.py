"""Enqueueing and preferences, unsubscribe tokens, retries and scheduled reminders."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.core.errors import (
    InvalidTransitionError,
    PermissionDeniedError,
    ValidationError,
)
from portal.core.models import utcnow
from portal.notifications.models import (
    Delivery,
    NotificationPreference,
    OutboxMessage,
    OutboxState,
    SentReminder,
)
from portal.notifications.reminders import Period, ReminderRule, run_reminders
from portal.notifications.rendering import unsubscribe_token
from portal.notifications.services import (
    current_preferences,
    enqueue_email,
    retry_message,
    set_preferences,
    unsubscribe,
)
from tests.factories import make_affiliation, make_institution, make_user

OPTIONAL = "institutions/affiliation_requested"
MANDATORY = "institutions/affiliation_decided"
CTX = {"name": "X", "has_affiliation": False}


def _rows(db: Session) -> list[OutboxMessage]:
    return list(db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_preferences_decide_immediately_digest_or_nothing(app: Flask, db: Session) -> None:
    now, digest, off = (make_user(db) for _ in range(3))
    set_preferences(db, digest, {OPTIONAL: Delivery.DIGEST})
    set_preferences(db, off, {OPTIONAL: Delivery.OFF})
    with app.app_context():
        enqueue_email(db, OPTIONAL, to=[now, digest, off], context={})
    assert [(m.recipient_id, m.state) for m in _rows(db)] == [
        (now.id, OutboxState.QUEUED),
        (digest.id, OutboxState.HELD),
    ]


def test_mandatory_kinds_ignore_preferences_and_cannot_be_switched_off(
    app: Flask, db: Session
) -> None:
    user = make_user(db)
    with pytest.raises(ValidationError):
        set_preferences(db, user, {MANDATORY: Delivery.OFF})
    with pytest.raises(ValidationError):
        set_preferences(db, user, {"no/such_kind": Delivery.OFF})
    # Even a row put there by hand is ignored for a mandatory kind.
    db.add(NotificationPreference(user_id=user.id, kind=MANDATORY, delivery=Delivery.OFF))
    db.flush()
    with app.app_context():
        enqueue_email(db, MANDATORY, to=user, context={})
    assert [m.state for m in _rows(db)] == [OutboxState.QUEUED]
    assert current_preferences(db, user)[MANDATORY] == Delivery.IMMEDIATELY


def test_enqueue_skips_disabled_and_addressless_users_and_duplicates(
    app: Flask, db: Session
) -> None:
    ok = make_user(db, email="ok@example.org")
    disabled = make_user(db, is_disabled=True)
    no_mail = make_user(db, email=None)
    with app.app_context():
        rows = enqueue_email(db, MANDATORY, to=[ok, disabled, no_mail, "OK@example.org"])
    assert [r.to_addr for r in rows] == ["ok@example.org"]


@pytest.mark.parametrize(
    "bad",
    ["a@b.c\r\nBcc: x@y.org", "two@example.org, three@example.org", "<x@y.org>", "no-at-sign"],
)
def test_enqueue_refuses_anything_but_one_plain_address(app: Flask, db: Session, bad: str) -> None:
    with app.app_context(), pytest.raises(ValidationError):
        enqueue_email(db, "auth/welcome", to=bad, context=CTX)
    assert _rows(db) == []


def test_enqueue_needs_json_context_and_a_registered_kind(app: Flask, db: Session) -> None:
    with app.app_context():
        with pytest.raises(TypeError):
            enqueue_email(db, "auth/welcome", to="a@example.org", context={"when": utcnow()})
        with pytest.raises(LookupError):
            enqueue_email(db, "auth/nope", to="a@example.org", context=CTX)
        (row,) = enqueue_email(db, "auth/welcome", to="a@example.org", context=CTX)
    assert row.message_id.startswith("<") and row.message_id.endswith("@atom-lab.org>")


def test_unsubscribe_token_switches_off_one_kind_once_and_is_audited(
    app: Flask, db: Session
) -> None:
    user = make_user(db)
    with app.app_context():
        token = unsubscribe_token(user.id, OPTIONAL)
        unsubscribe(db, token)
        unsubscribe(db, token)  # idempotent
    assert current_preferences(db, user)[OPTIONAL] == Delivery.OFF
    assert (
        db.scalar(
            select(func.count()).where(
                AuditEvent.action == "notification.unsubscribe", AuditEvent.actor_id == user.id
            )
        )
        == 1
    )


def test_unsubscribe_token_cannot_be_altered_or_used_for_mandatory_kinds(
    app: Flask, db: Session
) -> None:
    me, other = make_user(db), make_user(db)
    with app.app_context():
        mine = unsubscribe_token(me.id, OPTIONAL)
        sig = mine.partition(".")[2]
        forged = unsubscribe_token(other.id, OPTIONAL).partition(".")[0] + "." + sig
        for bad in (forged, mine + "x", "garbage", ""):
            with pytest.raises(ValidationError):
                unsubscribe(db, bad)
        with pytest.raises(ValidationError):
            unsubscribe(db, unsubscribe_token(me.id, MANDATORY))
    assert db.scalar(select(func.count()).select_from(NotificationPreference)) == 0


def test_only_admins_retry_and_only_dead_or_failed_mail(app: Flask, db: Session) -> None:
    admin, officer = make_user(db, Role.ADMIN), make_user(db, Role.PROGRAM_OFFICER)
    with app.app_context():
        (msg,) = enqueue_email(db, "auth/welcome", to="x@example.org", context=CTX)
    with pytest.raises(InvalidTransitionError):
        retry_message(db, msg, actor=admin)
    msg.state, msg.attempts, msg.last_error = OutboxState.DEAD, 8, "550"
    db.flush()
    with pytest.raises(PermissionDeniedError):
        retry_message(db, msg, actor=officer)
    retry_message(db, msg, actor=admin)
    assert (msg.state, msg.attempts) == (OutboxState.QUEUED, 0)
    assert db.scalar(select(func.count()).where(AuditEvent.action == "outbox.retry")) == 1


def test_reminders_are_sent_once_per_period(app: Flask, db: Session) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    old_user, fresh_user = make_user(db), make_user(db)
    old = make_affiliation(
        db, user=old_user, institution=inst, requested_at=utcnow() - dt.timedelta(days=10)
    )
    monday = dt.datetime(2026, 11, 30, 8, tzinfo=dt.UTC)
    fresh = make_affiliation(db, user=fresh_user, institution=inst, requested_at=monday)
    from portal.notifications.reminders import all_rules

    rules = [r for r in all_rules() if r.key == "institutions.affiliation_pending"]
    with app.app_context():
        assert run_reminders(db, now=monday, rules=rules) == {"institutions.affiliation_pending": 1}
        # Again the same week (cron runs hourly): nothing new; the fresh request is not due yet.
        assert run_reminders(db, now=monday + dt.timedelta(days=2), rules=rules) == {
            "institutions.affiliation_pending": 0
        }
        # Next week: both are reminded.
        assert run_reminders(db, now=monday + dt.timedelta(days=7), rules=rules) == {
            "institutions.affiliation_pending": 2
        }
    sent = db.scalars(select(SentReminder).order_by(SentReminder.id)).all()
    assert [(s.object_id, s.period) for s in sent] == [
        (old.id, "2026-W49"),
        (old.id, "2026-W50"),
        (fresh.id, "2026-W50"),
    ]
    assert [m.recipient_id for m in _rows(db)] == [official.id] * 3
    runs = db.scalars(select(AuditEvent).where(AuditEvent.action == "reminders.sent")).all()
    assert [e.details["count"] for e in runs] == [1, 2]


def test_a_reminder_already_recorded_by_another_run_is_not_sent_again(
    app: Flask, db: Session
) -> None:
    """The unique (rule, object, period) row is the lock: a concurrent run's insert fails and
    only its own savepoint (with its mails) is rolled back."""
    user = make_user(db)
    calls: list[int] = []

    def due(session: object, now: dt.datetime) -> list[object]:
        # Simulates the race: another run records the reminder after this run's check.
        db.add(SentReminder(rule="test.race", object_id=user.id, period=Period.DAILY.key(now)))
        db.flush()
        return [user]

    def send(session: object, obj: object) -> None:
        calls.append(1)

    rule = ReminderRule("test.race", Period.DAILY, due, send)
    with app.app_context():
        assert run_reminders(db, rules=[rule]) == {"test.race": 0}
    assert calls == []
    assert db.scalar(select(func.count()).select_from(SentReminder)) == 1


def test_period_keys() -> None:
    t = dt.datetime(2026, 11, 29, 23, 59, tzinfo=dt.UTC)
    assert (Period.DAILY.key(t), Period.WEEKLY.key(t), Period.MONTHLY.key(t)) == (
        "2026-11-29",
        "2026-W48",
        "2026-11",
    )
