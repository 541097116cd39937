"""Every (state, action) pair of the institution lifecycle, allowed and refused, through the runner;
and the declarations of both workflows of this domain."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementState
from portal.auth.models import Role
from portal.core.workflow import Workflow
from portal.institutions import services
from portal.institutions.models import InstitutionState as S
from portal.institutions.workflow import AFFILIATION_WORKFLOW, INSTITUTION_WORKFLOW
from tests.factories import make_agreement, make_institution, make_user
from tests.support.workflows import assert_declared, assert_step, every_pair

#: The lifecycle as the program describes it (the table in workflow.py must say the same).
EXPECTED = {
    (S.APPLIED, "start_review"): S.UNDER_REVIEW,
    (S.UNDER_REVIEW, "approve"): S.PARTNER,
    (S.PARTNER, "suspend"): S.SUSPENDED,
    (S.SUSPENDED, "reinstate"): S.PARTNER,
    (S.APPLIED, "withdraw"): S.WITHDRAWN,
    (S.UNDER_REVIEW, "withdraw"): S.WITHDRAWN,
    (S.PARTNER, "withdraw"): S.WITHDRAWN,
    (S.SUSPENDED, "withdraw"): S.WITHDRAWN,
}


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Steps write e-mails to the outbox, and a closed gate links to its agreement."""
    with app.app_context():
        yield


@pytest.mark.parametrize(
    "workflow", [INSTITUTION_WORKFLOW, AFFILIATION_WORKFLOW], ids=lambda w: w.name
)
def test_workflow_names_the_same_actions_everywhere(workflow: Workflow[object, S]) -> None:
    assert_declared(workflow)


@pytest.mark.parametrize(("state", "action"), every_pair(S, INSTITUTION_WORKFLOW))
def test_institution_transition_table(db: Session, state: S, action: str) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    inst = make_institution(db, state=state)
    # Approving and reinstating need a signed partnership agreement (that gate has its own tests
    # in tests/agreements/test_gates.py); this table is about the states.
    make_agreement(db, institution=inst, state=AgreementState.ACTIVE)
    assert_step(
        db,
        INSTITUTION_WORKFLOW,
        inst,
        action,
        EXPECTED,
        lambda: services.transition(db, inst, action, actor=officer, reason="because"),
    )
