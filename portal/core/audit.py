"""The append-only audit log: who did what to which object, when, and from where.

Events are only ever inserted. The ORM refuses to update or delete them (``before_flush``), and the
database refuses too: a trigger on SQLite and PostgreSQL aborts any UPDATE or DELETE on the table.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import DDL, JSON, ForeignKey, Index, String, event, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from portal.core.errors import PermissionDeniedError
from portal.core.models import AnySession, Base, utcnow

if TYPE_CHECKING:
    from sqlalchemy import Select


@dataclass(frozen=True)
class Origin:
    """Where an action came from: an IP address for web requests, or a channel such as ``cli``."""

    ip: str | None = None
    channel: str = "web"


_origin: contextvars.ContextVar[Origin] = contextvars.ContextVar(
    "audit_origin",
    default=Origin(),  # noqa: B039 - Origin is a frozen dataclass
)


@contextmanager
def origin(value: Origin) -> Iterator[None]:
    """Set where the actions recorded inside this block come from."""
    token = _origin.set(value)
    try:
        yield
    finally:
        _origin.reset(token)


def set_origin(value: Origin) -> None:
    """Set the origin for the rest of this context (a request); reset by the next request."""
    _origin.set(value)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_object", "object_type", "object_id"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: None for the system itself (a worker, a scheduled job) or an anonymous visitor.
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    #: Dotted verb, e.g. ``institution.approve`` or ``permission.denied``.
    action: Mapped[str] = mapped_column(String(80))
    object_type: Mapped[str | None] = mapped_column(String(40))
    object_id: Mapped[int | None]
    ip: Mapped[str | None] = mapped_column(String(45))
    channel: Mapped[str] = mapped_column(String(16), default="web")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    def __repr__(self) -> str:
        return f"<AuditEvent {self.id} {self.action} {self.object_type}:{self.object_id}>"


_APPEND_ONLY_SQLITE = [
    DDL(  # type: ignore[no-untyped-call]
        f"CREATE TRIGGER audit_events_no_{op.lower()} BEFORE {op} ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
    ).execute_if(dialect="sqlite")
    for op in ("UPDATE", "DELETE")
]
_APPEND_ONLY_POSTGRESQL = [
    DDL(  # type: ignore[no-untyped-call]
        "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'the audit log is append-only'; END; $$ LANGUAGE plpgsql"
    ).execute_if(dialect="postgresql"),
    DDL(  # type: ignore[no-untyped-call]
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    ).execute_if(dialect="postgresql"),
]
for _ddl in _APPEND_ONLY_SQLITE + _APPEND_ONLY_POSTGRESQL:
    event.listen(AuditEvent.__table__, "after_create", _ddl)


@event.listens_for(Session, "before_flush")
def _refuse_audit_changes(session: AnySession, flush_context: object, instances: object) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditEvent) and (obj in session.deleted or session.is_modified(obj)):
            raise PermissionDeniedError("The audit log is append-only.")


def record(
    session: AnySession,
    action: str,
    *,
    actor: Any,
    obj: Any = None,
    **details: Any,
) -> AuditEvent:
    """Append an audit event for ``action`` by ``actor`` (a user, or None for the system or an
    anonymous visitor) on ``obj`` (any model with an ``id``)."""
    where = _origin.get()
    ev = AuditEvent(
        action=action,
        actor_id=actor.id if actor is not None else None,
        object_type=obj.__tablename__ if obj is not None else None,
        object_id=obj.id if obj is not None else None,
        ip=where.ip,
        channel=where.channel,
        details=details,
    )
    session.add(ev)
    session.flush()
    return ev


def events_for(obj: Any) -> Select[AuditEvent]:
    """The audit trail of one object, newest first."""
    return (
        select(AuditEvent)
        .where(AuditEvent.object_type == obj.__tablename__, AuditEvent.object_id == obj.id)
        .order_by(AuditEvent.id.desc())
    )
