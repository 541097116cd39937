"""Every (state, action) pair of the institution lifecycle, allowed and refused."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.core.errors import InvalidTransitionError
from portal.institutions import services
from portal.institutions.models import InstitutionState as S
from portal.institutions.workflow import TRANSITIONS
from tests.factories import make_institution, make_user

ALLOWED = {
    (S.APPLIED, "start_review"): S.UNDER_REVIEW,
    (S.UNDER_REVIEW, "approve"): S.PARTNER,
    (S.PARTNER, "suspend"): S.SUSPENDED,
    (S.SUSPENDED, "reinstate"): S.PARTNER,
    (S.APPLIED, "withdraw"): S.WITHDRAWN,
    (S.UNDER_REVIEW, "withdraw"): S.WITHDRAWN,
    (S.PARTNER, "withdraw"): S.WITHDRAWN,
    (S.SUSPENDED, "withdraw"): S.WITHDRAWN,
}


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("action", list(TRANSITIONS))
def test_institution_transition_table(db: Session, state: S, action: str) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    inst = make_institution(db, state=state)
    if (state, action) in ALLOWED:
        services.transition(db, inst, action, actor=officer, reason="because")
        assert inst.state == ALLOWED[(state, action)]
        ev = db.scalars(select(AuditEvent).where(AuditEvent.object_id == inst.id)).one()
        assert ev.action == f"institution.{action}"
        assert ev.details["frm"] == state.value and ev.details["to"] == inst.state.value
    else:
        with pytest.raises(InvalidTransitionError):
            services.transition(db, inst, action, actor=officer, reason="because")
        assert inst.state == state
