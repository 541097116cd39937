"""Which state may follow which, who may take each step, and what each step tells whom.

Institutions: applied → under review → partner → suspended/withdrawn. Affiliations: a request to
join is approved or rejected by the institution's signing official, withdrawn by the person, or
settled by the person's identity provider vouching for them at login; an affiliation that came
from the identity provider's claims ends at a login whose claims no longer support it.
"""

from __future__ import annotations

from sqlalchemy import exists, select

from portal.auth.models import Role, RoleGrant
from portal.core.errors import ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.workflow import Step, Transition, Workflow
from portal.institutions import emails, permissions
from portal.institutions.models import Affiliation, Institution
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


def _needs_ror(step: Step[Institution, S]) -> None:
    if not step.obj.ror_id:
        raise ValidationError("Add the institution's ROR id before approving it as a partner.")


INSTITUTION_WORKFLOW: Workflow[Institution, S] = Workflow(
    name="institution",
    noun="institution",
    model=Institution,
    transitions=TRANSITIONS,
    permissions={
        "start_review": permissions.can_review_institution,
        "approve": permissions.can_review_institution,
        "suspend": permissions.can_suspend_institution,
        "reinstate": permissions.can_suspend_institution,
        "withdraw": permissions.can_withdraw_institution,
    },
    mails={},
    # Lab staff take these steps with the institution's signing official in the loop by other
    # means today; the onboarding issue (partnership agreements) adds the mails with its own kinds.
    silent=frozenset(TRANSITIONS),
    fields=lambda step: {"state_changed_at": utcnow()},
    checks={"approve": _needs_ror},
)


#: A request to join an institution.
AFFILIATION_TRANSITIONS: dict[str, Transition[A]] = {
    "approve": Transition(frozenset({A.REQUESTED}), A.ACTIVE, "Approving"),
    "reject": Transition(frozenset({A.REQUESTED}), A.REJECTED, "Rejecting", needs_reason=True),
    "withdraw": Transition(frozenset({A.REQUESTED}), A.ENDED, "Withdrawing the request"),
    "confirm_by_idp": Transition(frozenset({A.REQUESTED}), A.ACTIVE, "Confirming by login"),
    #: A login whose claims no longer carry the evidence an IdP-claimed affiliation rests on.
    "end": Transition(frozenset({A.ACTIVE}), A.ENDED, "Ending", needs_reason=True),
}


def grant_researcher_role(session: AnySession, aff: Affiliation) -> None:
    """An active affiliation makes the person a researcher at the institution."""
    held = session.scalar(
        select(RoleGrant.id).where(
            RoleGrant.user_id == aff.user_id,
            RoleGrant.role == Role.RESEARCHER,
            RoleGrant.institution_id == aff.institution_id,
        )
    )
    if held is None:
        session.add(
            RoleGrant(user_id=aff.user_id, role=Role.RESEARCHER, institution_id=aff.institution_id)
        )
        session.flush()
    session.expire(aff.user, ["role_grants", "affiliations"])


def revoke_researcher_role(session: AnySession, aff: Affiliation) -> None:
    """An ended affiliation takes the researcher role at the institution with it, unless another
    active affiliation there remains (there is at most one open one, so normally none does)."""
    remaining = session.scalar(
        select(
            exists().where(
                Affiliation.user_id == aff.user_id,
                Affiliation.institution_id == aff.institution_id,
                Affiliation.state == A.ACTIVE,
                Affiliation.id != aff.id,
            )
        )
    )
    if not remaining:
        for grant in session.scalars(
            select(RoleGrant).where(
                RoleGrant.user_id == aff.user_id,
                RoleGrant.role == Role.RESEARCHER,
                RoleGrant.institution_id == aff.institution_id,
            )
        ):
            session.delete(grant)
        session.flush()
    session.expire(aff.user, ["role_grants", "affiliations"])


def _decision(step: Step[Affiliation, A]) -> dict[str, object]:
    return {
        "decided_at": utcnow(),
        "decided_by_id": step.actor.id,
        "decision_note": step.reason,
    }


AFFILIATION_WORKFLOW: Workflow[Affiliation, A] = Workflow(
    name="affiliation",
    noun="request",
    model=Affiliation,
    transitions=AFFILIATION_TRANSITIONS,
    permissions={
        "approve": permissions.can_decide_affiliation,
        "reject": permissions.can_decide_affiliation,
        "withdraw": permissions.can_withdraw_affiliation_request,
        "confirm_by_idp": permissions.can_confirm_affiliation_by_idp,
        "end": permissions.can_end_affiliation_by_idp,
    },
    mails={
        "approve": emails.affiliation_decided,
        "reject": emails.affiliation_decided,
        "end": emails.affiliation_ended,
    },
    # The person withdrew it themselves; a login settled it (the person is the one acting).
    silent=frozenset({"withdraw", "confirm_by_idp"}),
    fields=_decision,
    effects={
        "approve": lambda session, step: grant_researcher_role(session, step.obj),
        "confirm_by_idp": lambda session, step: grant_researcher_role(session, step.obj),
        "end": lambda session, step: revoke_researcher_role(session, step.obj),
    },
)
