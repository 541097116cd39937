"""The audit log is append-only: not through the ORM, not through SQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core import audit
from portal.core.audit import AuditEvent
from portal.core.errors import PermissionDeniedError
from tests.factories import make_institution, make_user


def test_record_keeps_actor_object_origin_and_details(db: Session) -> None:
    actor = make_user(db, Role.ADMIN)
    inst = make_institution(db)
    with audit.origin(audit.Origin(ip="203.0.113.9", channel="web")):
        ev = audit.record(db, "institution.approve", actor=actor, obj=inst, reason="ok")
    db.expire_all()
    stored = db.get(AuditEvent, ev.id)
    assert stored is not None
    assert (stored.actor_id, stored.object_type, stored.object_id) == (
        actor.id,
        "institutions",
        inst.id,
    )
    assert (stored.ip, stored.channel, stored.details) == ("203.0.113.9", "web", {"reason": "ok"})
    assert stored.occurred_at.tzinfo is not None


def test_audit_events_cannot_be_changed_through_the_session(db: Session) -> None:
    ev = audit.record(db, "test.event", actor=None)
    ev.action = "tampered"
    with pytest.raises(PermissionDeniedError, match="append-only"):
        db.flush()


def test_audit_events_cannot_be_deleted_through_the_session(db: Session) -> None:
    ev = audit.record(db, "test.event", actor=None)
    db.delete(ev)
    with pytest.raises(PermissionDeniedError, match="append-only"):
        db.flush()


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_events SET action = 'tampered'", "DELETE FROM audit_events"],
)
def test_the_database_refuses_updates_and_deletes(db: Session, statement: str) -> None:
    audit.record(db, "test.event", actor=None)
    nested = db.begin_nested()
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        db.execute(sa.text(statement))
    nested.rollback()
    assert (
        db.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "test.event")
        )
        == 1
    )
