"""The shared workflow runner: declarations are checked, and a decision taken on a stale read
changes nothing (the compare-and-set), writes no audit event and sends no mail."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.core.errors import PermissionDeniedError, ValidationError
from portal.core.permissions import rule
from portal.core.workflow import StaleStateError, Transition, Workflow
from portal.institutions.models import Institution
from portal.institutions.models import InstitutionState as S
from portal.institutions.workflow import INSTITUTION_WORKFLOW, TRANSITIONS
from portal.notifications.models import OutboxMessage
from tests.factories import make_institution, make_user


@rule("nobody")
def _anyone(user: object, obj: object) -> bool:
    """Everyone."""
    return True


@pytest.mark.parametrize(
    ("permissions", "mails", "silent", "problem"),
    [
        ({}, {}, {"go"}, "actions without permissions: ['go']"),
        ({"go": _anyone}, {}, set(), "actions without mails or silent: ['go']"),
        ({"go": _anyone, "stop": _anyone}, {}, {"go"}, "permissions name unknown actions"),
        (
            {"go": _anyone},
            {"go": lambda s, step: None},
            {"go"},
            "both mailed and silent: ['go']",
        ),
    ],
)
def test_a_workflow_whose_parts_name_different_actions_is_refused(
    permissions: dict[str, object], mails: dict[str, object], silent: set[str], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        Workflow(
            name="thing",
            noun="thing",
            model=Institution,
            transitions={"go": Transition(frozenset({S.APPLIED}), S.PARTNER, "Go")},
            permissions=permissions,  # type: ignore[arg-type]
            mails=mails,  # type: ignore[arg-type]
            silent=frozenset(silent),
        )


def test_decision_on_a_stale_read_changes_nothing_and_says_so(app: Flask, db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    inst = make_institution(db, state=S.PARTNER)
    # Someone else suspends it after this request read it (bypassing this session's identity map).
    db.execute(
        update(Institution)
        .where(Institution.id == inst.id)
        .values(state=S.SUSPENDED)
        .execution_options(synchronize_session=False)
    )
    assert inst.state == S.PARTNER  # what this request still believes
    events = db.scalar(select(func.count()).select_from(AuditEvent))
    mails = db.scalar(select(func.count()).select_from(OutboxMessage))
    with app.app_context(), pytest.raises(StaleStateError, match="already changed"):
        INSTITUTION_WORKFLOW.run(db, inst, "withdraw", actor=officer, reason="left")
    assert db.scalar(select(Institution.state).where(Institution.id == inst.id)) == S.SUSPENDED
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == events
    assert db.scalar(select(func.count()).select_from(OutboxMessage)) == mails


def test_refusals_come_before_any_change(db: Session) -> None:
    inst = make_institution(db, state=S.PARTNER)
    researcher = make_user(db, Role.RESEARCHER)
    with pytest.raises(PermissionDeniedError, match="Only program staff suspend"):
        INSTITUTION_WORKFLOW.run(db, inst, "suspend", actor=researcher, reason="x")
    with pytest.raises(ValidationError, match="please give a reason"):
        INSTITUTION_WORKFLOW.run(db, inst, "suspend", actor=make_user(db, Role.ADMIN))
    db.expire(inst)
    assert inst.state == S.PARTNER


def test_available_lists_what_the_user_may_do_now_in_table_order(db: Session) -> None:
    inst = make_institution(db, state=S.PARTNER)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    assert [a for a, _ in INSTITUTION_WORKFLOW.available(officer, inst)] == ["suspend", "withdraw"]
    assert [a for a, _ in INSTITUTION_WORKFLOW.available(official, inst)] == ["withdraw"]
    assert INSTITUTION_WORKFLOW.available(make_user(db, Role.REVIEWER), inst) == []
    assert list(TRANSITIONS) == list(INSTITUTION_WORKFLOW.transitions)
