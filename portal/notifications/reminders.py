"""Scheduled reminders: rules that find what is overdue and remind people once per period.

A domain registers a rule in its ``emails.py``::

    register_rule(ReminderRule(
        key="agreements.unsigned",
        period=Period.WEEKLY,
        due=lambda session, now: session.scalars(select(Agreement).where(...)),
        send=remind_unsigned,          # enqueues the mails for one object
    ))

``flask --app portal mail reminders`` (from cron, as often as you like) calls every rule's ``due``
and, for each object, ``send`` — unless ``reminders_sent`` already has (rule, object, period). The
row is written in the same transaction as the mails, and the unique constraint on it means that two
runs at once cannot both remind: the second one's insert fails and its mails are rolled back.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from portal.core import audit
from portal.core.models import AnySession, utcnow
from portal.notifications.models import SentReminder

log = logging.getLogger(__name__)


class Period(enum.StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"

    def key(self, now: dt.datetime) -> str:
        """The period ``now`` falls in, e.g. ``2026-11-29``, ``2026-W48`` or ``2026-11``."""
        if self is Period.DAILY:
            return now.strftime("%Y-%m-%d")
        if self is Period.WEEKLY:
            year, week, _ = now.isocalendar()
            return f"{year}-W{week:02d}"
        return now.strftime("%Y-%m")


@dataclass(frozen=True)
class ReminderRule:
    #: Stable name, stored in ``reminders_sent``; e.g. ``institutions.affiliation_pending``.
    key: str
    period: Period
    #: The objects (anything with an integer ``id``) that need a reminder at ``now``.
    due: Callable[[AnySession, dt.datetime], Iterable[Any]]
    #: Enqueue the reminder mails for one object (flush only).
    send: Callable[[AnySession, Any], None]
    description: str = ""


_RULES: dict[str, ReminderRule] = {}


def register_rule(rule: ReminderRule) -> ReminderRule:
    _RULES[rule.key] = rule
    return rule


def all_rules() -> list[ReminderRule]:
    return [_RULES[k] for k in sorted(_RULES)]


def run_reminders(
    session: AnySession,
    *,
    now: dt.datetime | None = None,
    rules: Iterable[ReminderRule] | None = None,
) -> dict[str, int]:
    """Send every reminder that is due and not yet sent in its period; returns counts per rule.

    Each reminder is its own savepoint: a concurrent run that already sent it makes only that
    one insert fail. The caller commits.
    """
    now = now or utcnow()
    counts: dict[str, int] = {}
    for rule in rules if rules is not None else all_rules():
        period = rule.period.key(now)
        already = set(
            session.scalars(
                select(SentReminder.object_id).where(
                    SentReminder.rule == rule.key, SentReminder.period == period
                )
            )
        )
        sent = 0
        for obj in list(rule.due(session, now)):
            if obj.id in already:
                continue
            try:
                with session.begin_nested():
                    session.add(SentReminder(rule=rule.key, object_id=obj.id, period=period))
                    session.flush()
                    rule.send(session, obj)
            except IntegrityError:
                log.info(
                    "reminder %s for %s in %s was sent by another run", rule.key, obj.id, period
                )
                continue
            sent += 1
        counts[rule.key] = sent
        if sent:
            audit.record(
                session, "reminders.sent", actor=None, rule=rule.key, period=period, count=sent
            )
    return counts
