"""Which state may follow which, who may take each step, and what each step tells whom.

Institutions: an application (applied ⇄ changes requested, under review) is approved or declined;
an approved one becomes a partner when its partnership agreement is signed by both sides; a
partner is suspended and reinstated, or withdrawn. Affiliations: a request to
join is approved or rejected by the institution's signing official, withdrawn by the person, or
settled by the person's identity provider vouching for them at login; an affiliation that came
from the identity provider's claims ends at a login whose claims no longer support it.
"""

from __future__ import annotations

from sqlalchemy import exists, select

from portal.auth.models import Role, RoleGrant
from portal.core import audit
from portal.core.errors import ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.workflow import Step, Transition, Workflow
from portal.institutions import emails, permissions
from portal.institutions.models import (
    Affiliation,
    DomainState,
    Institution,
    OfficialInvitation,
)
from portal.institutions.models import AffiliationState as A
from portal.institutions.models import InstitutionState as S
from portal.institutions.models import OfficialInvitationState as I

#: An application comes in (``applied``); program staff send it back for changes, review it,
#: approve or decline it; approval issues the partnership agreement, whose last signature makes
#: the institution a partner (``join``, taken by that signer).
TRANSITIONS: dict[str, Transition[S]] = {
    "request_changes": Transition(
        frozenset({S.APPLIED, S.UNDER_REVIEW}),
        S.CHANGES_REQUESTED,
        "Ask for changes",
        needs_reason=True,
        style="warning",
    ),
    "resubmit": Transition(
        frozenset({S.CHANGES_REQUESTED}), S.APPLIED, "Send the application again"
    ),
    "start_review": Transition(frozenset({S.APPLIED}), S.UNDER_REVIEW, "Start review"),
    "approve": Transition(frozenset({S.UNDER_REVIEW}), S.APPROVED, "Approve"),
    "decline": Transition(
        frozenset({S.APPLIED, S.CHANGES_REQUESTED, S.UNDER_REVIEW}),
        S.DECLINED,
        "Decline",
        needs_reason=True,
        style="danger",
    ),
    "join": Transition(frozenset({S.APPROVED}), S.PARTNER, "Become a partner"),
    "suspend": Transition(
        frozenset({S.PARTNER}), S.SUSPENDED, "Suspend", needs_reason=True, style="warning"
    ),
    "reinstate": Transition(frozenset({S.SUSPENDED}), S.PARTNER, "Reinstate"),
    "withdraw": Transition(
        frozenset(
            {S.APPLIED, S.CHANGES_REQUESTED, S.UNDER_REVIEW, S.APPROVED, S.PARTNER, S.SUSPENDED}
        ),
        S.WITHDRAWN,
        "Withdraw",
        needs_reason=True,
        style="danger",
    ),
}

#: Steps manual forms offer; ``join`` follows the partnership agreement's last signature.
AUTOMATIC = frozenset({"join"})


def _needs_ror(step: Step[Institution, S]) -> None:
    if not step.obj.ror_id:
        raise ValidationError("Add the institution's ROR id before approving it.")


def _fields(step: Step[Institution, S]) -> dict[str, object]:
    fields: dict[str, object] = {"state_changed_at": utcnow()}
    if step.reason:
        fields["decision_note"] = step.reason
    if step.action == "join" and step.obj.partner_since is None:
        fields["partner_since"] = utcnow().date()
    return fields


def _closed(session: AnySession, step: Step[Institution, S]) -> None:
    """A declined or withdrawn institution lets go of its unproven domains (another institution
    may claim them) and of the invitations to be its signing official still open; an application
    that ends (never a partner) lets go of its ROR id too, so the university may apply again —
    the id stays in the audit log. A former partner keeps it (program staff reopen it)."""
    institution = step.obj
    if institution.ror_id and step.frm not in (S.PARTNER, S.SUSPENDED):
        audit.record(
            session,
            "institution.ror_released",
            actor=step.actor,
            obj=institution,
            ror_id=institution.ror_id,
        )
        institution.ror_id = None
    for domain in list(institution.all_domains):
        if domain.state == DomainState.PENDING:
            session.delete(domain)
    for invitation in list(institution.official_invitations):
        if invitation.state == I.PENDING:
            OFFICIAL_INVITATION_WORKFLOW.run(session, invitation, "cancel", actor=step.actor)
    session.flush()
    session.expire(institution, ["all_domains", "domains"])


INSTITUTION_WORKFLOW: Workflow[Institution, S] = Workflow(
    name="institution",
    noun="institution",
    model=Institution,
    transitions=TRANSITIONS,
    permissions={
        "request_changes": permissions.can_decide_application,
        "resubmit": permissions.can_resubmit_application,
        "start_review": permissions.can_decide_application,
        "approve": permissions.can_decide_application,
        "decline": permissions.can_decide_application,
        "join": permissions.can_complete_partnership,
        "suspend": permissions.can_suspend_institution,
        "reinstate": permissions.can_suspend_institution,
        "withdraw": permissions.can_withdraw_institution,
    },
    mails={
        "request_changes": emails.application_decided,
        "resubmit": emails.application_received,
        "approve": emails.application_decided,
        "decline": emails.application_decided,
        "join": emails.partnership_started,
        "suspend": emails.partnership_changed,
        "reinstate": emails.partnership_changed,
        "withdraw": emails.partnership_changed,
    },
    # The applicant is told when a decision is taken; starting the review changes nothing for
    # them (the application page shows it).
    silent=frozenset({"start_review"}),
    fields=_fields,
    checks={"approve": _needs_ror},
    effects={"decline": _closed, "withdraw": _closed},
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


def _approved(session: AnySession, step: Step[Affiliation, A]) -> None:
    """The person hears the decision; the institution's other signing officials hear who joined."""
    emails.affiliation_decided(session, step)
    emails.member_joined(session, step)


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
        "approve": _approved,
        "reject": emails.affiliation_decided,
        "confirm_by_idp": emails.member_joined,
        "end": emails.affiliation_ended,
    },
    # The person withdrew it themselves.
    silent=frozenset({"withdraw"}),
    fields=_decision,
    effects={
        "approve": lambda session, step: grant_researcher_role(session, step.obj),
        "confirm_by_idp": lambda session, step: grant_researcher_role(session, step.obj),
        "end": lambda session, step: revoke_researcher_role(session, step.obj),
    },
)


#: An invitation to be an institution's signing official (``portal.institutions.onboarding``): the
#: person with the mailed link accepts or declines it; it is cancelled when the applicant takes the
#: name off the application, when a fresh link replaces an expired one, and when the application is
#: declined or withdrawn.
INVITATION_TRANSITIONS: dict[str, Transition[I]] = {
    "accept": Transition(frozenset({I.PENDING}), I.ACCEPTED, "Accept"),
    "decline": Transition(frozenset({I.PENDING}), I.DECLINED, "Decline"),
    "cancel": Transition(frozenset({I.PENDING}), I.CANCELLED, "Cancel the invitation"),
}


def _answered(step: Step[OfficialInvitation, I]) -> dict[str, object]:
    fields: dict[str, object] = {"decided_at": utcnow()}
    if step.action == "accept":
        fields["accepted_by_id"] = step.actor.id
    return fields


def grant_official_role(session: AnySession, step: Step[OfficialInvitation, I]) -> None:
    """Accepting makes the person a signing official of the institution (once)."""
    invitation, actor = step.obj, step.actor
    held = session.scalar(
        select(RoleGrant.id).where(
            RoleGrant.user_id == actor.id,
            RoleGrant.role == Role.SIGNING_OFFICIAL,
            RoleGrant.institution_id == invitation.institution_id,
        )
    )
    if held is None:
        session.add(
            RoleGrant(
                user_id=actor.id,
                role=Role.SIGNING_OFFICIAL,
                institution_id=invitation.institution_id,
            )
        )
        session.flush()
    session.expire(actor, ["role_grants"])


OFFICIAL_INVITATION_WORKFLOW: Workflow[OfficialInvitation, I] = Workflow(
    name="official_invitation",
    noun="invitation",
    model=OfficialInvitation,
    transitions=INVITATION_TRANSITIONS,
    permissions={
        "accept": permissions.can_answer_invitation,
        "decline": permissions.can_answer_invitation,
        "cancel": permissions.can_cancel_invitation,
    },
    mails={"accept": emails.official_answered, "decline": emails.official_answered},
    # Cancelling is the applicant's (or the program's) own doing, or part of a decision whose mail
    # tells the applicant; a cancelled link says so when it is opened.
    silent=frozenset({"cancel"}),
    fields=_answered,
    effects={"accept": grant_official_role},
)
