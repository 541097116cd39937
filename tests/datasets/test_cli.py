"""``flask --app portal datasets sweep`` (cron): access past its end date expires, holders hear 30
and 7 days before the end — each notice once per end date — the counts are printed, and a second
run changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.core.models import utcnow
from portal.datasets import services
from portal.datasets.models import AccessTier, Grant, GrantState
from tests.factories import make_dataset, make_grant, make_user
from tests.support.mail import outbox


@pytest.fixture(autouse=True)
def _app_context(app: Flask, db: Session) -> Iterator[None]:
    with app.app_context():
        yield


def sweep(app: Flask) -> Result:
    result = app.test_cli_runner().invoke(args=["datasets", "sweep"])
    assert result.exit_code == 0, result.output
    return result


def ending(db: Session, grant: Grant, days: int) -> Grant:
    """Move the end of ``grant`` to ``days`` from today (negative: in the past)."""
    today = utcnow().date()
    grant.starts_on = min(grant.starts_on, today - dt.timedelta(days=60))
    grant.ends_on = today + dt.timedelta(days=days)
    db.flush()
    return grant


def mails(db: Session) -> list[tuple[str, int | None]]:
    return [
        (m.template, m.recipient_id)
        for kind in ("datasets/access_stopped", "datasets/access_expiring")
        for m in outbox(db, kind)
    ]


def test_the_sweep_expires_past_end_access_and_sends_each_notice_once(
    app: Flask, db: Session
) -> None:
    dataset = make_dataset(db)
    past = ending(db, make_grant(db, dataset=dataset), -1)
    pending_past = ending(db, make_grant(db, dataset=dataset, signed=False), -3)
    in_20 = ending(db, make_grant(db, dataset=dataset), 20)
    in_5 = ending(db, make_grant(db, dataset=dataset), 5)
    today = ending(db, make_grant(db, dataset=dataset), 0)  # its last day: not expired yet
    far = make_grant(db, dataset=dataset, days=120)
    registered = make_dataset(db, tier=AccessTier.REGISTERED)
    terms = ending(
        db,
        services.accept_terms(db, registered, actor=make_user(db, Role.RESEARCHER), accepted=True),
        -1,
    )

    first = sweep(app)

    assert first.output == "expired: 3, ends_30: 1, ends_7: 2\n"
    db.expire_all()
    assert [g.state for g in (past, pending_past, terms)] == [GrantState.EXPIRED] * 3
    assert [g.state for g in (in_20, in_5, today, far)] == [GrantState.ACTIVE] * 4
    # The unsigned agreement of the pending one went with it.
    assert pending_past.agreement is not None and pending_past.agreement.state == "withdrawn"
    sent = mails(db)
    assert sorted(sent) == sorted(
        [
            ("datasets/access_stopped", past.user_id),
            ("datasets/access_stopped", pending_past.user_id),
            ("datasets/access_stopped", terms.user_id),
            ("datasets/access_expiring", in_20.user_id),
            ("datasets/access_expiring", in_5.user_id),
            ("datasets/access_expiring", today.user_id),
        ]
    )
    assert {m.context["days"] for m in outbox(db, "datasets/access_expiring")} == {20, 5, 0}
    (event,) = db.scalars(select(AuditEvent).where(AuditEvent.action == "datasets.sweep"))
    assert event.channel == "cli" and event.actor_id is None
    assert (event.details["expired"], event.details["ends_30"], event.details["ends_7"]) == (
        3,
        1,
        2,
    )

    second = sweep(app)

    assert second.output == "expired: 0, ends_30: 0, ends_7: 0\n"
    assert mails(db) == sent
    # A run that does nothing leaves no trace in the audit log.
    assert (
        len(db.scalars(select(AuditEvent).where(AuditEvent.action == "datasets.sweep")).all()) == 1
    )


def test_the_week_notice_follows_the_month_notice_and_a_new_end_date_re_arms_them(
    app: Flask, db: Session
) -> None:
    grant = ending(db, make_grant(db), 25)
    assert sweep(app).output == "expired: 0, ends_30: 1, ends_7: 0\n"
    ending(db, grant, 6)  # time passes: a week left
    assert sweep(app).output == "expired: 0, ends_30: 0, ends_7: 1\n"
    assert sweep(app).output == "expired: 0, ends_30: 0, ends_7: 0\n"
    # Renewed to another end date that is near again: told again, once.
    ending(db, grant, 28)
    assert sweep(app).output == "expired: 0, ends_30: 1, ends_7: 0\n"
    assert [m.context["days"] for m in outbox(db, "datasets/access_expiring")] == [25, 6, 28]


def test_the_command_says_what_it_does(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["datasets", "sweep", "--help"])
    assert result.exit_code == 0
    assert "Expire access past its end date" in result.output
