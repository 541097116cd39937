"""The outbox (one row per e-mail and recipient), its delivery attempts, per-user preferences and
the record of scheduled reminders already sent."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.core.models import Base, LabelledEnum, Tone, enum_type, utcnow


class OutboxState(LabelledEnum):
    #: Waiting for the worker (first try, or a retry whose time has come).
    QUEUED = "queued", None, Tone.INFO
    #: The last try failed for a reason that may pass; retried after a back-off.
    FAILED = "failed", None, Tone.WARNING
    #: Handed to the SMTP server.
    SENT = "sent", None, Tone.SUCCESS
    #: Refused permanently (SMTP 5xx) or failed too often; an administrator may retry it.
    DEAD = "dead", None, Tone.DANGER
    #: The recipient wants this kind in the daily digest; waits for ``mail digest``.
    HELD = "held", None, Tone.PENDING
    #: Included in a digest mail (``digest_id``) instead of being sent alone.
    DIGESTED = "digested", None, Tone.NEUTRAL


#: States the worker picks up.
DELIVERABLE = (OutboxState.QUEUED, OutboxState.FAILED)


class Delivery(LabelledEnum):
    """How a person wants one kind of notification."""

    IMMEDIATELY = "immediately"
    DIGEST = "digest", "Daily digest"
    OFF = "off"


class OutboxMessage(Base):
    """One e-mail to one recipient, written in the transaction of the change that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint("(state = 'sent') = (sent_at IS NOT NULL)", name="sent_when_sent"),
        CheckConstraint(
            "(state = 'digested') = (digest_id IS NOT NULL)", name="digested_has_digest"
        ),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        Index("ix_outbox_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: ``<…@…>``, fixed when the mail is enqueued, so a resend after a crash can be recognised.
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    #: Template path under ``templates/emails/`` without extension; also the notification kind.
    template: Mapped[str] = mapped_column(String(100), index=True)
    #: The single envelope recipient (validated when enqueued; never taken from user text later).
    to_addr: Mapped[str] = mapped_column(String(320), index=True)
    to_name: Mapped[str | None] = mapped_column(String(200))
    recipient_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    #: The template variables (JSON only: the worker renders without reading domain objects).
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Filled in by the worker when it first renders the mail, for the admin list and search.
    subject: Mapped[str | None] = mapped_column(String(300))
    state: Mapped[OutboxState] = mapped_column(
        enum_type(OutboxState, "outbox_state"), default=OutboxState.QUEUED
    )
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: A worker holds the row until then (a lease); another worker skips it meanwhile.
    claimed_until: Mapped[dt.datetime | None]
    claim_token: Mapped[str | None] = mapped_column(String(32))
    sent_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(1000))
    digest_id: Mapped[int | None] = mapped_column(
        ForeignKey("outbox.id", ondelete="SET NULL"), index=True
    )

    attempt_log: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="message", order_by="DeliveryAttempt.id", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"<OutboxMessage {self.id} {self.template} {self.state}>"


class DeliveryAttempt(Base):
    """One try to hand a mail to the SMTP server, and what the server said."""

    __tablename__ = "outbox_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ok: Mapped[bool]
    #: The SMTP reply code when there was one (550 …), else None (connection refused, timeout).
    smtp_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(1000))

    message: Mapped[OutboxMessage] = relationship(back_populates="attempt_log")


class NotificationPreference(Base):
    """How one person wants one optional kind of notification (no row: immediately)."""

    __tablename__ = "notification_preferences"
    __table_args__ = (UniqueConstraint("user_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(100))
    delivery: Mapped[Delivery] = mapped_column(enum_type(Delivery, "delivery"))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SentReminder(Base):
    """A scheduled reminder already sent: each (rule, object, period) at most once."""

    __tablename__ = "reminders_sent"
    __table_args__ = (UniqueConstraint("rule", "object_id", "period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(String(100))
    object_id: Mapped[int]
    #: The period's key, e.g. ``2026-11-29`` (daily), ``2026-W48`` (weekly), ``2026-11`` (monthly).
    period: Mapped[str] = mapped_column(String(20))
    sent_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: Kept short on purpose: the mails themselves are in the outbox.
    note: Mapped[str | None] = mapped_column(Text)
