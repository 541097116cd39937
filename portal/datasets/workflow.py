"""Which state may follow which for datasets, access requests, grants and a proposal's datasets,
who takes each step, and what each step tells whom.

Dataset: draft → published (in the catalog) ⇄ retired.
Request: submitted → approved / changes requested (→ submitted again) / declined / withdrawn.
Grant: pending (its data-use agreement being signed) → active → suspended (with its institution)
→ active again; active or expired → renewed (active, a later end); any live grant → expired (its end
date), revoked (a steward or program staff, with a reason), ended (its holder left, the agreement
was declined).
Proposal dataset: asked → consented (pre-approved with the project) / refused.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import object_session

from portal.agreements.models import Agreement, AgreementKind, AgreementState, SubjectType
from portal.agreements.workflow import AGREEMENT_WORKFLOW
from portal.core.errors import ConflictError, ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.workflow import Step, Transition, Workflow
from portal.datasets import emails, permissions
from portal.datasets.models import (
    AccessRequest,
    AccessTier,
    ConsentState,
    Dataset,
    Grant,
    ProposalDataset,
)
from portal.datasets.models import DatasetState as D
from portal.datasets.models import GrantState as G
from portal.datasets.models import RequestState as R
from portal.institutions.models import InstitutionState
from portal.proposals.checklist import license_problem
from portal.proposals.models import ProposalState

# --- datasets ----------------------------------------------------------------------------------

DATASET_TRANSITIONS: dict[str, Transition[D]] = {
    "publish": Transition(frozenset({D.DRAFT}), D.PUBLISHED, "Publish in the catalog"),
    "retire": Transition(
        frozenset({D.PUBLISHED}), D.RETIRED, "Retire", needs_reason=True, style="warning"
    ),
    "restore": Transition(frozenset({D.RETIRED}), D.PUBLISHED, "Put back in the catalog"),
}


def _ready_to_list(step: Step[Dataset, D]) -> None:
    """A listed dataset has a valid licence; a controlled one a published data-use agreement and
    a steward to decide on its requests."""
    ds = step.obj
    # Stewards are counted under the dataset's row lock, which removing a steward takes too: a
    # dataset published while its last steward is removed is never listed without one.
    session = object_session(ds)
    assert session is not None
    session.execute(select(Dataset.id).where(Dataset.id == ds.id).with_for_update())
    session.expire(ds, ["stewards"])
    problem = license_problem(ds.licence)
    if problem:
        raise ValidationError(f"The licence: {problem}")
    if ds.tier != AccessTier.CONTROLLED:
        return
    if ds.dua_template is None or ds.dua_template.current is None:
        raise ValidationError(
            "A controlled dataset needs a data-use agreement template with a published version."
        )
    if ds.dua_template.kind != AgreementKind.DATA_USE:
        raise ValidationError("Its agreement template must be a data-use agreement.")
    if not ds.stewards:
        raise ValidationError(
            "A controlled dataset needs at least one steward to decide on requests."
        )


DATASET_WORKFLOW: Workflow[Dataset, D] = Workflow(
    name="dataset",
    noun="dataset",
    model=Dataset,
    transitions=DATASET_TRANSITIONS,
    permissions={
        "publish": permissions.can_edit_dataset,
        "retire": permissions.can_edit_dataset,
        "restore": permissions.can_edit_dataset,
    },
    mails={},
    # The catalog shows it; nobody waits on it. Retiring stops new requests only: the people with
    # access keep it until its end date, and hear nothing new.
    silent=frozenset({"publish", "retire", "restore"}),
    fields=lambda step: {"state_changed_at": utcnow()},
    checks={"publish": _ready_to_list, "restore": _ready_to_list},
)


# --- access requests ---------------------------------------------------------------------------

REQUEST_TRANSITIONS: dict[str, Transition[R]] = {
    "approve": Transition(frozenset({R.SUBMITTED}), R.APPROVED, "Approve"),
    "request_changes": Transition(
        frozenset({R.SUBMITTED}),
        R.CHANGES_REQUESTED,
        "Ask for changes",
        needs_reason=True,
        style="secondary",
    ),
    "resubmit": Transition(frozenset({R.CHANGES_REQUESTED}), R.SUBMITTED, "Send again"),
    "decline": Transition(
        frozenset({R.SUBMITTED, R.CHANGES_REQUESTED}),
        R.DECLINED,
        "Decline",
        needs_reason=True,
        style="danger",
    ),
    "withdraw": Transition(
        frozenset({R.SUBMITTED, R.CHANGES_REQUESTED}), R.WITHDRAWN, "Withdraw", style="secondary"
    ),
}


def _request_fields(step: Step[AccessRequest, R]) -> dict[str, Any]:
    out: dict[str, Any] = {"state_changed_at": utcnow()}
    if step.action in ("approve", "decline"):
        out |= {"decided_by_id": step.actor.id, "decided_at": utcnow()}
    if step.action in ("approve", "decline", "request_changes"):
        out["decision_note"] = step.reason
    return out


def _approvable(step: Step[AccessRequest, R]) -> None:
    """The dataset is still in the catalog and the requester still at a partner institution."""
    request = step.obj
    if request.dataset.state != D.PUBLISHED:
        raise ConflictError(
            f"“{request.dataset.name}” is {request.dataset.state.label.lower()}: it gives no new "
            "access."
        )
    if request.institution.state != InstitutionState.PARTNER:
        raise ConflictError(
            f"{request.institution.name} is {request.institution.state.label.lower()}, not a "
            "partner in good standing: its people get no new access."
        )


REQUEST_WORKFLOW: Workflow[AccessRequest, R] = Workflow(
    name="dataset_request",
    noun="request",
    model=AccessRequest,
    transitions=REQUEST_TRANSITIONS,
    permissions={
        "approve": permissions.can_decide_request,
        "request_changes": permissions.can_decide_request,
        "decline": permissions.can_decide_request,
        "resubmit": permissions.can_amend_request,
        "withdraw": permissions.can_withdraw_request,
    },
    mails={
        "approve": emails.request_decided,
        "request_changes": emails.request_decided,
        "decline": emails.request_decided,
        "resubmit": emails.request_received,
    },
    # The requester withdrew it themselves; it leaves the stewards' queue.
    silent=frozenset({"withdraw"}),
    fields=_request_fields,
    checks={"approve": _approvable},
)


# --- grants --------------------------------------------------------------------------------------

GRANT_TRANSITIONS: dict[str, Transition[G]] = {
    "activate": Transition(frozenset({G.PENDING}), G.ACTIVE, "Start"),
    "suspend": Transition(
        frozenset({G.ACTIVE}), G.SUSPENDED, "Suspend", needs_reason=True, style="warning"
    ),
    "resume": Transition(frozenset({G.SUSPENDED}), G.ACTIVE, "Resume"),
    "renew": Transition(frozenset({G.ACTIVE, G.EXPIRED}), G.ACTIVE, "Renew"),
    "expire": Transition(frozenset({G.PENDING, G.ACTIVE, G.SUSPENDED}), G.EXPIRED, "Expire"),
    "revoke": Transition(
        frozenset({G.PENDING, G.ACTIVE, G.SUSPENDED}),
        G.REVOKED,
        "Revoke",
        needs_reason=True,
        style="danger",
    ),
    "end": Transition(frozenset({G.PENDING, G.ACTIVE, G.SUSPENDED}), G.ENDED, "End"),
}


def _duas(grant: Grant, state: AgreementState) -> Select[Agreement]:
    """The data-use agreements of ``grant`` in ``state`` (read from the models: the workflow layer
    does not call the agreements services)."""
    return select(Agreement).where(
        Agreement.kind == AgreementKind.DATA_USE,
        Agreement.subject_type == SubjectType.DATASET_ACCESS,
        Agreement.subject_id == grant.id,
        Agreement.state == state,
    )


def dua_in_force(grant: Grant) -> bool:
    """Whether the data-use agreement of ``grant`` counts today (fully signed, within any
    re-consent grace): always true for a dataset that needs none."""
    if grant.dataset.tier != AccessTier.CONTROLLED:
        return True
    session = object_session(grant)
    assert session is not None
    today = utcnow().date()
    return any(a.counts_on(today) for a in session.scalars(_duas(grant, AgreementState.ACTIVE)))


def _usable(step: Step[Grant, G]) -> None:
    """Access starts (or resumes, or goes on) only within its period, for a member of a partner in
    good standing, with its data-use agreement in force."""
    grant = step.obj
    # A renewal writes its new end date with the state (the service checked it is after today),
    # so the end date passed is no reason to refuse one: renewing expired access is its point.
    if step.action != "renew" and grant.ends_on < utcnow().date():
        raise ConflictError("This access has passed its end date: it expires instead.")
    # Expired access is not ended when its holder leaves afterwards (only live access is): a
    # renewal must not bring it back for someone who is no longer there.
    gone = permissions.end_reason(grant)
    if gone is not None:
        raise ConflictError(f"{gone} This access cannot start or go on.")
    if grant.institution.state != InstitutionState.PARTNER:
        raise ConflictError(
            f"{grant.institution.name} is {grant.institution.state.label.lower()}, not a partner "
            "in good standing: its people's access is stopped until program staff reinstate it."
        )
    if not dua_in_force(grant):
        raise ConflictError(
            "The data-use agreement for this access is not fully signed and in force: access "
            "starts once it is."
        )


def _lock_agreement(step: Step[Grant, G]) -> None:
    """Before access that may take its unsigned data-use agreement with it changes, take that
    agreement's row lock (PostgreSQL; SQLite serialises writers): signing takes it first too, then
    the access its last signature starts, so a revocation (or expiry, or end) and the last
    signature at the same moment wait for each other in one order instead of deadlocking."""
    session = object_session(step.obj)
    assert session is not None
    session.execute(
        _duas(step.obj, AgreementState.AWAITING).with_only_columns(Agreement.id).with_for_update()
    )


def _grant_fields(step: Step[Grant, G]) -> dict[str, Any]:
    out: dict[str, Any] = {"state_changed_at": utcnow()}
    if step.action == "revoke":
        out |= {"ended_reason": step.reason, "ended_by_id": getattr(step.actor, "id", None)}
    if step.action == "end":
        out["ended_reason"] = permissions.end_reason(step.obj) or step.reason
    return out


def _close_agreement(session: AnySession, step: Step[Grant, G]) -> None:
    """Access that ends before its data-use agreement is signed takes the agreement with it: nobody
    is left asked to sign for access that is gone."""
    agreement = session.scalar(_duas(step.obj, AgreementState.AWAITING))
    if agreement is not None:
        AGREEMENT_WORKFLOW.run(
            session,
            agreement,
            "withdraw",
            actor=step.actor,
            reason=f"The access it was for was {step.transition.to.label.lower()}.",
        )


def _close_stopped(session: AnySession, step: Step[Grant, G]) -> None:
    """Access revoked or ended takes its unsigned agreement with it, and any renewal still asked
    for it: there is nothing left to sign or to renew."""
    _close_agreement(session, step)
    for request in session.scalars(
        select(AccessRequest).where(
            AccessRequest.grant_id == step.obj.id,
            AccessRequest.is_renewal.is_(True),
            AccessRequest.state.in_((R.SUBMITTED, R.CHANGES_REQUESTED)),
        )
    ).all():
        REQUEST_WORKFLOW.run(
            session,
            request,
            "withdraw",
            actor=step.actor,
            reason=f"The access it asked more time on was {step.transition.to.label.lower()}.",
        )


GRANT_WORKFLOW: Workflow[Grant, G] = Workflow(
    name="dataset_grant",
    noun="access",
    model=Grant,
    transitions=GRANT_TRANSITIONS,
    permissions={
        "activate": permissions.can_activate_grant,
        "suspend": permissions.can_suspend_grant,
        "resume": permissions.can_suspend_grant,
        "renew": permissions.can_renew_grant,
        "expire": permissions.can_expire_grant,
        "revoke": permissions.can_revoke_grant,
        "end": permissions.can_end_grant,
    },
    mails={
        "activate": emails.access_ready,
        "resume": emails.access_ready,
        "renew": emails.access_ready,
        "suspend": emails.access_stopped,
        "expire": emails.access_stopped,
        "revoke": emails.access_stopped,
        "end": emails.access_stopped,
    },
    silent=frozenset(),
    fields=_grant_fields,
    checks={
        "activate": _usable,
        "resume": _usable,
        "renew": _usable,
        "expire": _lock_agreement,
        "revoke": _lock_agreement,
        "end": _lock_agreement,
    },
    effects={"expire": _close_agreement, "revoke": _close_stopped, "end": _close_stopped},
)


# --- datasets a proposal plans to use -----------------------------------------------------------

CONSENT_TRANSITIONS: dict[str, Transition[ConsentState]] = {
    "consent": Transition(
        frozenset({ConsentState.ASKED}), ConsentState.CONSENTED, "Pre-approve for this project"
    ),
    "refuse": Transition(
        frozenset({ConsentState.ASKED}),
        ConsentState.REFUSED,
        "Do not pre-approve",
        needs_reason=True,
        style="secondary",
    ),
}


def _consent_fields(step: Step[ProposalDataset, ConsentState]) -> dict[str, Any]:
    return {
        "state_changed_at": utcnow(),
        "decided_by_id": step.actor.id,
        "decided_at": utcnow(),
        "decision_note": step.reason,
    }


def _asked(step: Step[ProposalDataset, ConsentState]) -> None:
    """A steward answers once the proposal was submitted and they were asked, not before."""
    if step.obj.asked_at is None:
        raise ConflictError("The proposal has not been submitted yet: nothing to pre-approve.")
    proposal = step.obj.proposal
    if proposal.state in (ProposalState.WITHDRAWN, ProposalState.DECLINED):
        raise ConflictError(
            f"The proposal is {proposal.state.label.lower()}: there is nothing to pre-approve."
        )


CONSENT_WORKFLOW: Workflow[ProposalDataset, ConsentState] = Workflow(
    name="proposal_dataset",
    noun="dataset request",
    model=ProposalDataset,
    transitions=CONSENT_TRANSITIONS,
    permissions={"consent": permissions.can_consent, "refuse": permissions.can_consent},
    mails={"consent": emails.consent_decided, "refuse": emails.consent_decided},
    silent=frozenset(),
    fields=_consent_fields,
    checks={"consent": _asked, "refuse": _asked},
)
