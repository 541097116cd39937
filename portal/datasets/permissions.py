"""Who may see and change datasets, ask for access, decide on it, and hold it.

Each ``can_*`` rule says who in its docstring; ``visible_*`` are the same rules as list filters,
``stewards_of`` and ``grantee_of`` the same rules as the recipients of the domain's mail — so a
steward is told about the requests they may decide, and every list shows only what its detail
page would show. A steward decides on the datasets they steward, never on another one, and never
on their own request.

Some grant steps follow facts, not a choice: access starts when its data-use agreement is fully
signed, expires after its end date, and ends when its holder leaves the project or the institution
or the agreement is declined (``end_reason``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, exists, false, or_, select
from sqlalchemy.orm import object_session

from portal.agreements.models import Agreement, AgreementKind, AgreementState, SubjectType
from portal.auth.models import Role, RoleGrant, User
from portal.auth.permissions import as_user, is_staff
from portal.core.memo import per_request
from portal.core.models import utcnow
from portal.core.permissions import rule
from portal.core.roles import holds
from portal.datasets.models import (
    AccessRequest,
    AccessTier,
    Dataset,
    DatasetState,
    DatasetSteward,
    Grant,
    GrantState,
    ProposalDataset,
)
from portal.institutions.models import AffiliationState, Institution, InstitutionState
from portal.proposals.models import Proposal, ProposalState, TeamMember
from portal.proposals.permissions import can_edit_proposal, partner_institutions_of

# --- the catalog -------------------------------------------------------------------------------


@per_request
def stewards(user: Any, dataset_id: int | None) -> bool:
    """Whether ``user`` is a steward of the dataset."""
    u = as_user(user)
    if u is None or dataset_id is None:
        return False
    session = object_session(u)
    if session is None:  # pragma: no cover - a logged-in user is always loaded from a session
        return False
    return bool(
        session.scalar(
            select(
                exists().where(
                    DatasetSteward.dataset_id == dataset_id, DatasetSteward.user_id == u.id
                )
            )
        )
    )


def stewarded_ids(user: Any) -> Select[Any]:
    """The ids of the datasets ``user`` stewards (a subquery)."""
    u = as_user(user)
    return select(DatasetSteward.dataset_id).where(
        DatasetSteward.user_id == (u.id if u is not None else -1)
    )


@rule("Only program staff add datasets to the catalog and choose their stewards.")
def can_manage_datasets(user: Any) -> bool:
    """Program staff (program officers and administrators)."""
    return is_staff(user)


@rule("You cannot see this dataset.")
def can_view_dataset(user: Any, dataset: Dataset) -> bool:
    """Listed open and registered datasets to everyone, also anonymously (the public catalog);
    listed controlled datasets to everyone logged in; drafts to program staff and the dataset's
    stewards."""
    if dataset.state != DatasetState.DRAFT:
        return dataset.tier != AccessTier.CONTROLLED or as_user(user) is not None
    return is_staff(user) or stewards(user, dataset.id)


def visible_datasets(user: Any) -> Select[Dataset]:
    """``can_view_dataset`` as a list filter."""
    q = select(Dataset)
    u = as_user(user)
    listed = Dataset.state != DatasetState.DRAFT
    if u is None:
        return q.where(listed, Dataset.tier != AccessTier.CONTROLLED)
    if is_staff(u):
        return q
    return q.where(or_(listed, Dataset.id.in_(stewarded_ids(u))))


@rule("Only program staff and the dataset's stewards change its catalog entry.")
def can_edit_dataset(user: Any, dataset: Dataset) -> bool:
    """Program staff and the dataset's stewards (description, version, terms, publishing and
    retiring)."""
    return is_staff(user) or stewards(user, dataset.id)


def dua_in_force_sql(today: dt.date) -> Any:
    """SQL: the grant's data-use agreement is fully signed and counts today."""
    return exists().where(
        Agreement.kind == AgreementKind.DATA_USE,
        Agreement.subject_type == SubjectType.DATASET_ACCESS,
        Agreement.subject_id == Grant.id,
        Agreement.state == AgreementState.ACTIVE,
        or_(Agreement.reconsent_by.is_(None), Agreement.reconsent_by >= today),
    )


def usable_grants(dataset: Dataset, today: dt.date) -> Select[Grant]:
    """The grants that let their holders use ``dataset`` today, decided from the facts, not only
    from the grant's state: active, within its period, the holder's account enabled and their
    institution a partner in good standing, and — for a controlled dataset — its data-use
    agreement in force (``services.current_grants``, what the operators' API serves)."""
    q = (
        select(Grant)
        .join(Institution, Institution.id == Grant.institution_id)
        .join(User, User.id == Grant.user_id)
        .where(
            Grant.dataset_id == dataset.id,
            Grant.state == GrantState.ACTIVE,
            Grant.starts_on <= today,
            Grant.ends_on >= today,
            Institution.state == InstitutionState.PARTNER,
            User.is_disabled.is_(False),
        )
        .order_by(Grant.id)
    )
    if dataset.tier == AccessTier.CONTROLLED:
        q = q.where(dua_in_force_sql(today))
    return q


def holds_access(user: Any, dataset: Dataset) -> bool:
    """Whether ``user`` may use ``dataset`` now: open to all; otherwise by the same facts as the
    operators' API (``usable_grants``)."""
    if dataset.tier == AccessTier.OPEN:
        return True
    u = as_user(user)
    session = object_session(dataset)
    if u is None or session is None:
        return False
    mine = usable_grants(dataset, utcnow().date()).where(Grant.user_id == u.id)
    return bool(session.scalar(select(mine.exists())))


@rule("Only people with access to this dataset see where it is kept.")
def can_see_location(user: Any, dataset: Dataset) -> bool:
    """Open datasets: everyone; others: people with access now, the dataset's stewards, program
    staff."""
    return holds_access(user, dataset) or can_edit_dataset(user, dataset)


# --- asking for access -------------------------------------------------------------------------


@rule("Only researchers at a partner institution ask for access to a listed controlled dataset.")
def can_request_access(user: Any, dataset: Dataset) -> bool:
    """Researchers with an active affiliation at a partner institution, to a controlled dataset in
    the catalog (not retired)."""
    return (
        dataset.state == DatasetState.PUBLISHED
        and dataset.tier == AccessTier.CONTROLLED
        and bool(partner_institutions_of(user))
    )


@rule("Only researchers at a partner institution accept the terms of a listed registered dataset.")
def can_accept_terms(user: Any, dataset: Dataset) -> bool:
    """Researchers with an active affiliation at a partner institution, for a registered dataset
    in the catalog (not retired)."""
    return (
        dataset.state == DatasetState.PUBLISHED
        and dataset.tier == AccessTier.REGISTERED
        and bool(partner_institutions_of(user))
    )


def _official_of(u: User, institution_id: int) -> bool:
    return institution_id in u.institution_ids_for(Role.SIGNING_OFFICIAL)


@rule("You cannot see this access request.")
def can_view_request(user: Any, request: AccessRequest) -> bool:
    """The requester; the dataset's stewards; program staff; the signing officials of the
    requester's institution."""
    u = as_user(user)
    return u is not None and (
        u.id == request.user_id
        or is_staff(u)
        or stewards(u, request.dataset_id)
        or _official_of(u, request.institution_id)
    )


def _officials_institutions(u: User) -> Select[Any]:
    return select(RoleGrant.institution_id).where(
        RoleGrant.user_id == u.id, RoleGrant.role == Role.SIGNING_OFFICIAL
    )


def visible_requests(user: Any) -> Select[AccessRequest]:
    """``can_view_request`` as a list filter."""
    q = select(AccessRequest)
    u = as_user(user)
    if u is None:
        return q.where(false())
    if is_staff(u):
        return q
    return q.where(
        or_(
            AccessRequest.user_id == u.id,
            AccessRequest.dataset_id.in_(stewarded_ids(u)),
            AccessRequest.institution_id.in_(_officials_institutions(u)),
        )
    )


@rule("Only a steward of this dataset decides on its requests, and never on their own.")
def can_decide_request(user: Any, request: AccessRequest) -> bool:
    """The dataset's stewards, except the requester."""
    u = as_user(user)
    return u is not None and u.id != request.user_id and stewards(u, request.dataset_id)


def decidable_requests(user: Any) -> Select[AccessRequest]:
    """``can_decide_request`` as a list filter (a steward's queue, before the state filter)."""
    u = as_user(user)
    if u is None:
        return select(AccessRequest).where(false())
    return select(AccessRequest).where(
        AccessRequest.dataset_id.in_(stewarded_ids(u)), AccessRequest.user_id != u.id
    )


def stewards_of(dataset_id: int, *, except_user_id: int | None = None) -> Select[User]:
    """The people ``can_decide_request`` lets decide on the dataset's requests: whom a new
    request is sent to (never the requester)."""
    q = (
        select(User)
        .join(DatasetSteward, DatasetSteward.user_id == User.id)
        .where(DatasetSteward.dataset_id == dataset_id, User.is_disabled.is_(False))
        .order_by(User.id)
    )
    if except_user_id is not None:
        q = q.where(User.id != except_user_id)
    return q


@rule("Only the person who asked changes or withdraws this request.")
def can_amend_request(user: Any, request: AccessRequest) -> bool:
    """The requester (answering the steward's questions, or withdrawing)."""
    u = as_user(user)
    return u is not None and u.id == request.user_id


@rule("Only the person who asked withdraws this request.")
def can_withdraw_request(user: Any, request: AccessRequest) -> bool:
    """The requester; and, by itself, the step that revokes or ends the access a renewal asks
    more time on (there is nothing left to renew)."""
    gone = (
        request.is_renewal
        and request.grant is not None
        and request.grant.state in (GrantState.REVOKED, GrantState.ENDED)
    )
    return gone or can_amend_request(user, request)


# --- grants --------------------------------------------------------------------------------------


@rule("You cannot see this access.")
def can_view_grant(user: Any, grant: Grant) -> bool:
    """Its holder; the dataset's stewards; program staff; the signing officials of the holder's
    institution."""
    u = as_user(user)
    return u is not None and (
        u.id == grant.user_id
        or is_staff(u)
        or stewards(u, grant.dataset_id)
        or _official_of(u, grant.institution_id)
    )


def visible_grants(user: Any) -> Select[Grant]:
    """``can_view_grant`` as a list filter."""
    q = select(Grant)
    u = as_user(user)
    if u is None:
        return q.where(false())
    if is_staff(u):
        return q
    return q.where(
        or_(
            Grant.user_id == u.id,
            Grant.dataset_id.in_(stewarded_ids(u)),
            Grant.institution_id.in_(_officials_institutions(u)),
        )
    )


def grantee_of(grant: Grant) -> Select[User]:
    """Whom a grant's mail tells: its holder."""
    return select(User).where(User.id == grant.user_id, User.is_disabled.is_(False))


@rule("Access starts once its data-use agreement is fully signed; nobody starts it by hand.")
def can_activate_grant(user: Any, grant: Grant) -> bool:
    """Whoever takes the step that opens it (the agreement's last signature, a reinstatement):
    anyone logged in, as the workflow's check on the agreement decides."""
    return as_user(user) is not None


@rule("Only program staff suspend and resume access.")
def can_suspend_grant(user: Any, grant: Grant) -> bool:
    """Program staff (suspending and reinstating an institution suspends and resumes its
    people's access)."""
    return is_staff(user)


@rule("Access expires only after its end date.")
def can_expire_grant(user: Any, grant: Grant) -> bool:
    """Nobody by choice: the scheduled sweep, once the end date has passed."""
    return grant.ends_on < utcnow().date()


@rule("Only a steward of this dataset or program staff revoke access.")
def can_revoke_grant(user: Any, grant: Grant) -> bool:
    """The dataset's stewards and program staff, with a reason; at once."""
    return is_staff(user) or stewards(user, grant.dataset_id)


def end_reason(grant: Grant) -> str | None:
    """Why ``grant`` has ended by itself (None: it has not): its holder left the project or the
    institution, the institution left the program, or its data-use agreement was not signed."""
    if grant.proposal is not None and not any(
        m.user_id == grant.user_id for m in grant.proposal.team
    ):
        return f"{grant.user.display_name} is no longer on the project “{grant.proposal.title}”."
    # A member is who may ask (``can_request_access``): an active affiliation there.
    if not any(
        a.institution_id == grant.institution_id and a.state == AffiliationState.ACTIVE
        for a in grant.user.affiliations
    ):
        return f"{grant.user.display_name} is no longer a member of {grant.institution.name}."
    if grant.institution.state == InstitutionState.WITHDRAWN:
        return f"{grant.institution.name} is no longer a partner."
    if grant.agreement is not None and grant.agreement.state in (
        AgreementState.DECLINED,
        AgreementState.WITHDRAWN,
    ):
        return f"The data-use agreement was {grant.agreement.state.label.lower()}."
    return None


@rule("Access ends by itself only when its holder has left, or its agreement was not signed.")
def can_end_grant(user: Any, grant: Grant) -> bool:
    """Nobody by choice: the step that makes it end (the holder removed from the project, their
    affiliation ended, the institution withdrawn, the agreement declined or withdrawn)."""
    return end_reason(grant) is not None


@rule("Only a steward of this dataset renews access (the holder, for a registered dataset).")
def can_renew_grant(user: Any, grant: Grant) -> bool:
    """The dataset's stewards (approving a renewal request); for a registered dataset, its holder
    accepting the terms again."""
    u = as_user(user)
    if u is None:
        return False
    if grant.dataset.tier == AccessTier.REGISTERED and u.id == grant.user_id:
        return True
    return stewards(u, grant.dataset_id) and u.id != grant.user_id


@rule("Only the holder asks for more time on this access.")
def can_request_renewal(user: Any, grant: Grant) -> bool:
    """The holder of access to a controlled dataset, while it is active or after it expired."""
    u = as_user(user)
    return (
        u is not None
        and u.id == grant.user_id
        and grant.dataset.tier == AccessTier.CONTROLLED
        and grant.state in (GrantState.ACTIVE, GrantState.EXPIRED)
    )


# --- datasets a proposal plans to use -----------------------------------------------------------


@rule(
    "Only the proposal's principal investigator and co-investigators choose its datasets, while "
    "they may edit it."
)
def can_pick_datasets(user: Any, proposal: Proposal) -> bool:
    """Whoever may edit the proposal (its PI and co-investigators, while it is a draft or
    returned for changes)."""
    return can_edit_proposal(user, proposal)


@rule("Only a steward of this dataset pre-approves it for a project, and not for their own.")
def can_consent(user: Any, link: ProposalDataset) -> bool:
    """The dataset's stewards who are not on the proposal's team."""
    u = as_user(user)
    return (
        u is not None
        and stewards(u, link.dataset_id)
        and not any(m.user_id == u.id for m in link.proposal.team)
    )


def consentable_links(user: Any) -> Select[ProposalDataset]:
    """``can_consent`` as a list filter (a steward's queue, before the state filter)."""
    u = as_user(user)
    if u is None:
        return select(ProposalDataset).where(false())
    on_team = exists().where(
        TeamMember.proposal_id == ProposalDataset.proposal_id, TeamMember.user_id == u.id
    )
    # A withdrawn or declined proposal asks nothing any more (the workflow refuses it too).
    closed = select(Proposal.id).where(
        Proposal.state.in_((ProposalState.WITHDRAWN, ProposalState.DECLINED))
    )
    return select(ProposalDataset).where(
        ProposalDataset.dataset_id.in_(stewarded_ids(u)),
        ~on_team,
        ProposalDataset.proposal_id.not_in(closed),
    )


# --- who may download the lists, and renew registered access -------------------------------------


@per_request
def stewards_any(user: Any) -> bool:
    """Whether ``user`` stewards at least one dataset."""
    u = as_user(user)
    if u is None:
        return False
    session = object_session(u)
    return session is not None and bool(
        session.scalar(select(exists().where(DatasetSteward.user_id == u.id)))
    )


@rule("Only program staff and data stewards download the access requests.")
def can_export_requests(user: Any) -> bool:
    """Program staff, and the stewards of a dataset (the rows are still those they may see)."""
    return is_staff(user) or stewards_any(user)


@rule("Only program staff, data stewards and signing officials download the access list.")
def can_export_grants(user: Any) -> bool:
    """Program staff, the stewards of a dataset, and signing officials (each sees the rows
    ``permissions.visible_grants`` gives them)."""
    u = as_user(user)
    return u is not None and (
        is_staff(u) or bool(u.institution_ids_for(Role.SIGNING_OFFICIAL)) or stewards_any(u)
    )


@rule("Only the holder renews access to a registered dataset, by accepting its terms again.")
def can_reaccept_terms(user: Any, grant: Grant) -> bool:
    """The holder of access to a registered dataset that is active or has expired, while they
    may accept its terms (a researcher at a partner, the dataset in the catalog)."""
    u = as_user(user)
    return (
        u is not None
        and u.id == grant.user_id
        and grant.state in (GrantState.ACTIVE, GrantState.EXPIRED)
        and can_accept_terms(u, grant.dataset)
    )


def curates_catalog(user: Any) -> bool:
    """Program staff and data stewards: they see drafts (staff all, stewards their own) and the
    catalog's state filter."""
    return can_manage_datasets(user) or holds(user, Role.DATA_STEWARD)


def is_data_steward(user: Any) -> bool:
    """Whoever holds the data steward role (the pre-approvals page is theirs)."""
    return holds(user, Role.DATA_STEWARD)
