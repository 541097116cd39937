"""Every (state, action) pair of the institution lifecycle, allowed and refused, through the runner;
and the declarations of both workflows of this domain."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.workflow import Workflow
from portal.institutions import services
from portal.institutions.models import InstitutionState as S
from portal.institutions.workflow import AFFILIATION_WORKFLOW, INSTITUTION_WORKFLOW
from tests.factories import make_institution, make_user
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


@pytest.mark.parametrize(
    "workflow", [INSTITUTION_WORKFLOW, AFFILIATION_WORKFLOW], ids=lambda w: w.name
)
def test_workflow_names_the_same_actions_everywhere(workflow: Workflow[object, S]) -> None:
    assert_declared(workflow)


@pytest.mark.parametrize(("state", "action"), every_pair(S, INSTITUTION_WORKFLOW))
def test_institution_transition_table(db: Session, state: S, action: str) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    inst = make_institution(db, state=state)
    assert_step(
        db,
        INSTITUTION_WORKFLOW,
        inst,
        action,
        EXPECTED,
        lambda: services.transition(db, inst, action, actor=officer, reason="because"),
    )
