"""The declarations of both workflows of this domain. The institution lifecycle's table over every
(state, action) pair — who may take each action, reasons, mails, what declining lets go of, the
partnership gate — is in test_lifecycle_workflow.py; the affiliation table in
test_affiliations.py."""

from __future__ import annotations

import pytest

from portal.core.workflow import Workflow
from portal.institutions.models import InstitutionState as S
from portal.institutions.workflow import AFFILIATION_WORKFLOW, INSTITUTION_WORKFLOW
from tests.support.workflows import assert_declared


@pytest.mark.parametrize(
    "workflow", [INSTITUTION_WORKFLOW, AFFILIATION_WORKFLOW], ids=lambda w: w.name
)
def test_workflow_names_the_same_actions_everywhere(workflow: Workflow[object, S]) -> None:
    assert_declared(workflow)
