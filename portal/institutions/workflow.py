"""Which institution state may follow which: applied → under review → partner → suspended/withdrawn."""

from __future__ import annotations

from portal.core.workflow import Transition
from portal.institutions.models import AffiliationState as A
from portal.institutions.models import InstitutionState as S

TRANSITIONS: dict[str, Transition[S]] = {
    "start_review": Transition(frozenset({S.APPLIED}), S.UNDER_REVIEW, "Start review"),
    "approve": Transition(frozenset({S.UNDER_REVIEW}), S.PARTNER, "Approve as partner"),
    "suspend": Transition(
        frozenset({S.PARTNER}), S.SUSPENDED, "Suspend", needs_reason=True, style="warning"
    ),
    "reinstate": Transition(frozenset({S.SUSPENDED}), S.PARTNER, "Reinstate"),
    "withdraw": Transition(
        frozenset({S.APPLIED, S.UNDER_REVIEW, S.PARTNER, S.SUSPENDED}),
        S.WITHDRAWN,
        "Withdraw",
        needs_reason=True,
        style="danger",
    ),
}


#: A request to join an institution: decided by its signing official, or taken back by the person.
AFFILIATION_TRANSITIONS: dict[str, Transition[A]] = {
    "approve": Transition(frozenset({A.REQUESTED}), A.ACTIVE, "Approving"),
    "reject": Transition(frozenset({A.REQUESTED}), A.REJECTED, "Rejecting", needs_reason=True),
    "withdraw": Transition(frozenset({A.REQUESTED}), A.ENDED, "Withdrawing the request"),
}
