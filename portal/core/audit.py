"""The append-only audit log: who did what to which object, when, and from where.

Events are only ever inserted. The ORM refuses to update or delete them (``before_flush``), and the
database refuses too: a trigger on SQLite and PostgreSQL aborts any UPDATE or DELETE on the table.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    delete,
    event,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from portal.core.errors import PermissionDeniedError
from portal.core.models import AnySession, Base, install_after_create, utcnow
from portal.core.requestlog import current_request_id

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
    #: The web or API request that recorded it (its ``X-Request-ID``, also in the request's log line).
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    def __repr__(self) -> str:
        return f"<AuditEvent {self.id} {self.action} {self.object_type}:{self.object_id}>"


#: The one kind of event the retention command may delete (``flask audit prune-refusals``): refused
#: requests, which an attacker can produce at will. Changes are kept for ever.
PRUNABLE_ACTION = "permission.denied"

#: The database's own guard, in every way a row could be lost or rewritten: UPDATE; DELETE (but of
#: old refusals, by the retention command); TRUNCATE (PostgreSQL); and on SQLite ``INSERT OR
#: REPLACE`` over an existing id, which deletes that row without firing DELETE triggers.
#: ``portal/migrations`` installs the same statements (``APPEND_ONLY_DDL``).
APPEND_ONLY_DDL = {
    "sqlite": [
        "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
        f"WHEN OLD.action <> '{PRUNABLE_ACTION}' "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        "CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events "
        "WHEN EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.id) "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$ BEGIN "
        f"IF TG_OP = 'DELETE' AND OLD.action = '{PRUNABLE_ACTION}' THEN RETURN OLD; END IF; "
        "RAISE EXCEPTION 'the audit log is append-only'; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
    ],
}
install_after_create(AuditEvent.__table__, APPEND_ONLY_DDL)


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
        request_id=current_request_id(),
        details=capped(details),
    )
    session.add(ev)
    session.flush()
    return ev


#: The most an event's details may take (JSON); longer texts are shortened, marked ``truncated``.
MAX_DETAILS_BYTES = 4096
MAX_DETAIL_TEXT = 500


def capped(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` as they are when small; otherwise every text shortened to MAX_DETAIL_TEXT
    characters, and if that is still too much, only the keys and ``truncated``."""
    if len(json.dumps(details, default=str)) <= MAX_DETAILS_BYTES:
        return details
    short = {
        k: v[:MAX_DETAIL_TEXT] + "…" if isinstance(v, str) and len(v) > MAX_DETAIL_TEXT else v
        for k, v in details.items()
    }
    short["truncated"] = True
    if len(json.dumps(short, default=str)) <= MAX_DETAILS_BYTES:
        return short
    return {"truncated": True, "keys": sorted(str(k)[:40] for k in details)[:50]}


class RefusalTally(Base):
    """How often one person (or, anonymous, one address) was refused one request in one window.

    The first refusal of a window is an audit event (``permission.denied``); the repeats only count
    here, so a client hammering a forbidden page adds one event a minute, not one a request, and
    beyond ``REFUSAL_LIMIT`` refusals in a window it is answered 429 (``portal.core.web``).
    """

    __tablename__ = "refusal_tallies"
    __table_args__ = (UniqueConstraint("who", "method", "path", "window_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: ``user:<id>``, or ``ip:<address>`` for a visitor who is not logged in.
    who: Mapped[str] = mapped_column(String(60))
    method: Mapped[str] = mapped_column(String(10))
    #: The refused path, or ``*`` for the tally of all refusals of ``who`` in the window.
    path: Mapped[str] = mapped_column(String(500))
    window_start: Mapped[dt.datetime] = mapped_column(index=True)
    count: Mapped[int] = mapped_column(default=1)
    #: The audit event of the window's first refusal (None on the ``*`` tally).
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("audit_events.id", ondelete="CASCADE"), index=True
    )
    last_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


def _bump(
    session: AnySession, who: str, method: str, path: str, window: dt.datetime
) -> tuple[int, int]:
    """Add one to a tally (made if missing) in one statement; returns its id and new count."""
    values = {"who": who, "method": method, "path": path, "window_start": window, "count": 1}
    dialect = session.get_bind().dialect.name
    insert: Any = sqlite_insert if dialect == "sqlite" else postgresql_insert
    stmt = insert(RefusalTally).values(**values, last_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=["who", "method", "path", "window_start"],
        set_={"count": RefusalTally.count + 1, "last_at": stmt.excluded.last_at},
    ).returning(RefusalTally.id, RefusalTally.count)
    tally_id, count = session.execute(stmt).one()
    return int(tally_id), int(count)


def record_refusal(
    session: AnySession,
    *,
    actor: Any,
    ip: str | None,
    method: str,
    path: str,
    window_seconds: int,
    **details: Any,
) -> int:
    """Count one refused request, and write its audit event if it is the first of its kind in
    this window; returns how many refusals ``actor`` (or ``ip``) had in the window so far."""
    start = int(utcnow().timestamp()) // window_seconds * window_seconds
    window = dt.datetime.fromtimestamp(start, dt.UTC)
    who = f"user:{actor.id}" if actor is not None else f"ip:{ip or 'unknown'}"
    path = path[:500]
    tally_id, count = _bump(session, who, method, path, window)
    if count == 1:
        ev = record(session, PRUNABLE_ACTION, actor=actor, method=method, path=path, **details)
        session.execute(
            update(RefusalTally).where(RefusalTally.id == tally_id).values(event_id=ev.id)
        )
    return _bump(session, who, "*", "*", window)[1]


def prune_refusals(session: AnySession, *, older_than: dt.timedelta) -> int:
    """Delete refusal events (and their tallies) older than ``older_than``; returns how many
    events. Changes are never deleted: the database refuses it."""
    cutoff = utcnow() - older_than
    session.execute(delete(RefusalTally).where(RefusalTally.window_start < cutoff))
    result = session.execute(
        delete(AuditEvent).where(
            AuditEvent.action == PRUNABLE_ACTION, AuditEvent.occurred_at < cutoff
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def events_for(obj: Any) -> Select[AuditEvent]:
    """The audit trail of one object, newest first."""
    return (
        select(AuditEvent)
        .where(AuditEvent.object_type == obj.__tablename__, AuditEvent.object_id == obj.id)
        .order_by(AuditEvent.id.desc())
    )
