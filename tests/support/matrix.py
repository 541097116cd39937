"""The route-by-role matrix every domain's view tests use, with one set of invariants:

- an anonymous visitor is sent to the login page and changes nothing;
- a role the case allows gets the expected status, and a POST that changes data leaves the change
  (the snapshot differs) and at least one audit event;
- every other role is refused with 403 (and the refusal is in the audit log, by that person, for
  that path) or 404, and nothing changed.

A domain's test module lists its cases and calls :func:`check_route` from a test parametrized over
``ROLE_NAMES`` and its cases (``matrix_params``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from portal.core.audit import AuditEvent


@dataclass(frozen=True)
class Case:
    """One request, and who may make it. ``path`` and string ``data`` values are templates filled
    with the test's object ids (``/institutions/{own}``)."""

    name: str
    method: str
    path: str
    allowed: frozenset[str]
    status: int = 200
    data: Mapping[str, Any] = field(default_factory=dict)
    #: Whether a successful request changes data (default: every POST does).
    changes: bool | None = None
    #: Another status for some allowed roles (the login page sends a logged-in visitor on: 302).
    statuses: Mapping[str, int] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        return self.method == "POST" if self.changes is None else self.changes


def case(
    name: str,
    method: str,
    path: str,
    allowed: Iterable[str],
    status: int = 200,
    data: Mapping[str, Any] | None = None,
    *,
    changes: bool | None = None,
    statuses: Mapping[str, int] | None = None,
) -> Case:
    return Case(
        name,
        method,
        path,
        frozenset(allowed),
        status,
        dict(data or {}),
        changes,
        dict(statuses or {}),
    )


def matrix_params(cases: Iterable[Case]) -> list[Any]:
    """``pytest.mark.parametrize("case", matrix_params(CASES))`` with readable ids."""
    return [pytest.param(c, id=c.name) for c in cases]


def audit_count(db: Session, action: str | None = None) -> int:
    q = select(func.count()).select_from(AuditEvent)
    if action is not None:
        q = q.where(AuditEvent.action == action)
    return db.scalar(q) or 0


def check_route(
    client: FlaskClient,
    db: Session,
    role: str,
    actor_id: int | None,
    case: Case,
    values: Mapping[str, object],
    snapshot: Callable[[], object],
) -> TestResponse:
    """Make ``case``'s request as ``role`` (already logged in as ``actor_id``) and check the
    matrix's invariants; ``snapshot()`` reads the state the request may change."""
    path = case.path.format(**values)
    data = {k: v.format(**values) if isinstance(v, str) else v for k, v in case.data.items()}
    db.expire_all()
    before = snapshot()
    changes_before = audit_count(db) - audit_count(db, "permission.denied")
    resp = client.open(path, method=case.method, data=data)
    db.expire_all()
    body = resp.get_data(as_text=True)[:1000]
    if role == "anonymous" and role not in case.allowed:
        assert resp.status_code == 302, body
        assert resp.headers["Location"].startswith("/auth/login"), resp.headers["Location"]
        assert snapshot() == before
    elif role in case.allowed:
        assert resp.status_code == case.statuses.get(role, case.status), body
        if case.writes:
            assert snapshot() != before, f"{case.name}: allowed for {role} but nothing changed"
            changes = audit_count(db) - audit_count(db, "permission.denied")
            assert changes > changes_before, f"{case.name}: a change without an audit event"
    else:
        assert resp.status_code in (403, 404), f"{case.name} as {role}: {resp.status_code} {body}"
        assert snapshot() == before, f"{case.name}: refused for {role} but something changed"
        if resp.status_code == 403:
            refusal = db.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "permission.denied")
                .order_by(AuditEvent.id.desc())
            ).first()
            assert refusal is not None and refusal.actor_id == actor_id
            assert refusal.details["path"] == path.partition("?")[0]
    return resp
