"""The catalog, asking for access, deciding, granting, renewing, revoking; the data-use agreement
(agreements engine); the follow-ups of other domains' steps; the scheduled sweep; and who may use
a dataset now (what the operators' API tells the storage). The acting user is passed in (None for
the sweep: nobody); services flush, the caller commits."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, exists, select
from sqlalchemy.exc import IntegrityError

from portal.agreements.models import (
    AgreementKind,
    AgreementTemplate,
    PartyRole,
    SubjectType,
)
from portal.agreements.services import Party, Subject, issue_in_step, lab_name
from portal.auth.models import Role, User
from portal.core import audit
from portal.core.dates import add_months
from portal.core.errors import ConflictError, NotFoundError, ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.datasets import emails, permissions
from portal.datasets.models import (
    LIVE_GRANTS,
    OPEN_REQUESTS,
    AccessRequest,
    AccessTier,
    ConsentState,
    Dataset,
    DatasetState,
    DatasetSteward,
    Grant,
    GrantState,
    ProposalDataset,
    RequestState,
)
from portal.datasets.workflow import (
    CONSENT_WORKFLOW,
    DATASET_WORKFLOW,
    GRANT_WORKFLOW,
    REQUEST_WORKFLOW,
)
from portal.institutions.models import Institution
from portal.notifications.models import SentReminder
from portal.proposals.checklist import license_problem
from portal.proposals.models import Proposal, ProposalState, TeamRole
from portal.proposals.permissions import partner_institutions_of

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
#: Short names the catalog's own pages use (``/datasets/requests`` …).
RESERVED_SLUGS = frozenset({"new", "requests", "access", "pre-approvals", "proposals"})

# --- the catalog -------------------------------------------------------------------------------


def _check_entry(
    session: AnySession,
    *,
    slug: str,
    licence: str,
    tier: AccessTier,
    dua_template_id: int | None,
    max_months: int,
    dataset_id: int | None = None,
) -> None:
    if not _SLUG.match(slug) or len(slug) > 80:
        raise ValidationError(
            "The short name is lowercase letters, digits and single hyphens, e.g. web-corpus-2026."
        )
    if slug in RESERVED_SLUGS:
        raise ValidationError(f"{slug!r} is taken by the catalog's own pages: choose another.")
    taken = session.scalar(
        select(Dataset.id).where(Dataset.slug == slug, Dataset.id != (dataset_id or -1))
    )
    if taken is not None:
        raise ConflictError(f"Another dataset already has the short name {slug!r}.")
    problem = license_problem(licence)
    if problem:
        raise ValidationError(f"The licence: {problem}")
    if not 1 <= max_months <= 60:
        raise ValidationError("Access lasts between 1 and 60 months.")
    if tier == AccessTier.CONTROLLED:
        template = session.get(AgreementTemplate, dua_template_id) if dua_template_id else None
        if template is None or template.kind != AgreementKind.DATA_USE:
            raise ValidationError(
                "A controlled dataset needs a data-use agreement template: choose one."
            )


#: The catalog fields a form edits.
ENTRY_FIELDS = (
    "slug",
    "name",
    "summary",
    "description",
    "version",
    "size_bytes",
    "licence",
    "tier",
    "terms",
    "dua_template_id",
    "institution_signs",
    "max_months",
    "location",
)


def create_dataset(session: AnySession, *, actor: User, **fields: Any) -> Dataset:
    """A new catalog entry, as a draft (not listed until it is published)."""
    check(permissions.can_manage_datasets, actor)
    fields = _clean(fields)
    _check_entry(
        session,
        slug=fields["slug"],
        licence=fields["licence"],
        tier=fields["tier"],
        dua_template_id=fields.get("dua_template_id"),
        max_months=fields.get("max_months", 12),
    )
    dataset = Dataset(created_by_id=actor.id, **fields)
    session.add(dataset)
    session.flush()
    audit.record(session, "dataset.create", actor=actor, obj=dataset, tier=dataset.tier.value)
    return dataset


def update_dataset(session: AnySession, dataset: Dataset, *, actor: User, **fields: Any) -> Dataset:
    """Change a catalog entry (its stewards and program staff). The access tier of a dataset
    people already hold access to does not change (their terms were another tier's)."""
    check(permissions.can_edit_dataset, actor, dataset)
    fields = _clean(fields)
    merged = {k: fields.get(k, getattr(dataset, k)) for k in ENTRY_FIELDS}
    _check_entry(
        session,
        slug=merged["slug"],
        licence=merged["licence"],
        tier=merged["tier"],
        dua_template_id=merged["dua_template_id"],
        max_months=merged["max_months"],
        dataset_id=dataset.id,
    )
    if merged["tier"] != dataset.tier and session.scalar(
        select(exists().where(Grant.dataset_id == dataset.id))
    ):
        raise ConflictError(
            "People have held access to this dataset under its present tier: it cannot change. "
            "Retire it and add a new entry instead."
        )
    changed = sorted(k for k in ENTRY_FIELDS if merged[k] != getattr(dataset, k))
    for key in changed:
        setattr(dataset, key, merged[key])
    session.flush()
    audit.record(session, "dataset.update", actor=actor, obj=dataset, changed=changed)
    return dataset


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(ENTRY_FIELDS)
    if unknown:
        raise ValueError(f"unknown dataset fields {sorted(unknown)}")
    out = dict(fields)
    for key in ("slug", "name", "summary", "version", "licence", "location"):
        if key in out and isinstance(out[key], str):
            out[key] = out[key].strip()
    if "name" in out and not out["name"]:
        raise ValidationError("Give the dataset a name.")
    return out


def publish(session: AnySession, dataset: Dataset, *, actor: User) -> Dataset:
    return DATASET_WORKFLOW.run(session, dataset, "publish", actor=actor)


def retire(session: AnySession, dataset: Dataset, *, actor: User, reason: str) -> Dataset:
    return DATASET_WORKFLOW.run(session, dataset, "retire", actor=actor, reason=reason)


def restore(session: AnySession, dataset: Dataset, *, actor: User) -> Dataset:
    return DATASET_WORKFLOW.run(session, dataset, "restore", actor=actor)


def add_steward(
    session: AnySession, dataset: Dataset, *, actor: User, user: User
) -> DatasetSteward:
    """Program staff make someone holding the data steward role a steward of ``dataset``."""
    check(permissions.can_manage_datasets, actor)
    if not user.has_role(Role.DATA_STEWARD):
        raise ValidationError(
            f"{user.display_name} does not hold the data steward role: an administrator grants "
            "it first."
        )
    if any(s.user_id == user.id for s in dataset.stewards):
        raise ConflictError(f"{user.display_name} already stewards this dataset.")
    steward = DatasetSteward(dataset_id=dataset.id, user_id=user.id, added_by_id=actor.id)
    session.add(steward)
    session.flush()
    session.expire(dataset, ["stewards"])
    audit.record(session, "dataset.add_steward", actor=actor, obj=dataset, user_id=user.id)
    return steward


def remove_steward(
    session: AnySession, dataset: Dataset, *, actor: User, steward_id: int
) -> DatasetSteward:
    """Program staff remove a steward; a listed controlled dataset keeps at least one."""
    check(permissions.can_manage_datasets, actor)
    # Under the dataset's row lock (publishing takes it too), read afresh: of two stewards removed
    # at once, or a removal and the publication, the second sees the first.
    session.execute(select(Dataset.id).where(Dataset.id == dataset.id).with_for_update())
    session.refresh(dataset, ["state", "tier"])
    session.expire(dataset, ["stewards"])
    steward = next((s for s in dataset.stewards if s.id == steward_id), None)
    if steward is None:
        raise NotFoundError("That person does not steward this dataset.")
    if (
        dataset.tier == AccessTier.CONTROLLED
        and dataset.state == DatasetState.PUBLISHED
        and len(dataset.stewards) == 1
    ):
        raise ConflictError(
            "A controlled dataset in the catalog needs a steward to decide on its requests: add "
            "another steward first."
        )
    session.delete(steward)
    session.flush()
    session.expire(dataset, ["stewards"])
    audit.record(
        session, "dataset.remove_steward", actor=actor, obj=dataset, user_id=steward.user_id
    )
    return steward


# --- asking for access -------------------------------------------------------------------------


def live_grant(session: AnySession, dataset_id: int, user_id: int) -> Grant | None:
    """The person's grant of the dataset that is pending, active or suspended (one at most)."""
    return session.scalar(
        select(Grant).where(
            Grant.dataset_id == dataset_id, Grant.user_id == user_id, Grant.state.in_(LIVE_GRANTS)
        )
    )


def open_request(session: AnySession, dataset_id: int, user_id: int) -> AccessRequest | None:
    return session.scalar(
        select(AccessRequest).where(
            AccessRequest.dataset_id == dataset_id,
            AccessRequest.user_id == user_id,
            AccessRequest.state.in_(OPEN_REQUESTS),
        )
    )


def _institution_for(actor: User, proposal: Proposal | None) -> Institution:
    partners = partner_institutions_of(actor)
    if proposal is not None:
        if not any(m.user_id == actor.id for m in proposal.team):
            raise ValidationError("You can ask for a dataset only for a project you are on.")
        if proposal.state != ProposalState.ACTIVE:
            raise ValidationError("Ask for a dataset for an approved, active project.")
        match = next((i for i in partners if i.id == proposal.institution_id), None)
        if match is not None:
            return match
    if not partners:
        raise ValidationError("Only researchers at a partner institution ask for access.")
    return partners[0]


def _use(intended_use: str) -> str:
    text = (intended_use or "").strip()
    if len(text) < 30:
        raise ValidationError(
            "Say what you will do with the data (at least 30 characters): the steward decides on it."
        )
    return text[:5000]


def request_access(
    session: AnySession,
    dataset: Dataset,
    *,
    actor: User,
    intended_use: str,
    proposal: Proposal | None = None,
) -> AccessRequest:
    """Ask for access to a controlled dataset, for a project or on one's own; the dataset's
    stewards are told."""
    check(permissions.can_request_access, actor, dataset)
    use = _use(intended_use)
    institution = _institution_for(actor, proposal)
    held = live_grant(session, dataset.id, actor.id)
    if held is not None:
        raise ConflictError(
            f"You already have access to “{dataset.name}” ({held.state.label.lower()}, until "
            f"{held.ends_on:%d %B %Y}); ask for more time from that page."
        )
    if open_request(session, dataset.id, actor.id) is not None:
        raise ConflictError(f"You have already asked for “{dataset.name}”: your request is open.")
    request = AccessRequest(
        dataset_id=dataset.id,
        user_id=actor.id,
        institution_id=institution.id,
        proposal_id=proposal.id if proposal else None,
        intended_use=use,
    )
    return _submit(session, request, actor)


def _submit(session: AnySession, request: AccessRequest, actor: User) -> AccessRequest:
    try:
        with session.begin_nested():
            session.add(request)
            session.flush()
    except IntegrityError:
        raise ConflictError("You have already asked: your request is open.") from None
    audit.record(
        session,
        "dataset_request.submit",
        actor=actor,
        obj=request,
        dataset_id=request.dataset_id,
        renewal=request.is_renewal,
    )
    emails.notify_request_received(session, request)
    return request


def request_renewal(
    session: AnySession, grant: Grant, *, actor: User, intended_use: str
) -> AccessRequest:
    """The holder of access to a controlled dataset asks its stewards for more time."""
    check(permissions.can_request_renewal, actor, grant)
    gone = permissions.end_reason(grant)
    if gone is not None:
        raise ConflictError(f"{gone} Ask for new access instead.")
    if open_request(session, grant.dataset_id, actor.id) is not None:
        raise ConflictError("You have already asked: your request is open.")
    held = live_grant(session, grant.dataset_id, actor.id)
    if held is not None and held.id != grant.id:
        # Renewing expired access next to newer live access would give two live accesses to
        # one dataset (the database refuses it, at the steward's approval).
        raise ConflictError(
            f"You already have access to “{grant.dataset.name}” ({held.state.label.lower()}, "
            f"until {held.ends_on:%d %B %Y}): ask for more time on that one."
        )
    request = AccessRequest(
        dataset_id=grant.dataset_id,
        user_id=actor.id,
        institution_id=grant.institution_id,
        proposal_id=grant.proposal_id,
        intended_use=_use(intended_use),
        is_renewal=True,
        grant_id=grant.id,
    )
    return _submit(session, request, actor)


def resubmit(
    session: AnySession, request: AccessRequest, *, actor: User, intended_use: str
) -> AccessRequest:
    return REQUEST_WORKFLOW.run(
        session, request, "resubmit", actor=actor, values={"intended_use": _use(intended_use)}
    )


def longest_end(dataset: Dataset, today: dt.date | None = None) -> dt.date:
    return add_months(today or utcnow().date(), dataset.max_months)


def _check_end(dataset: Dataset, ends_on: dt.date | None) -> dt.date:
    today = utcnow().date()
    if ends_on is None or ends_on <= today:
        raise ValidationError("Give the last day of access, after today.")
    if ends_on > longest_end(dataset, today):
        raise ValidationError(
            f"Access to “{dataset.name}” lasts at most {dataset.max_months} months: until "
            f"{longest_end(dataset, today):%d %B %Y} at the latest."
        )
    return ends_on


def approve(
    session: AnySession,
    request: AccessRequest,
    *,
    actor: User,
    ends_on: dt.date | None,
    note: str | None = None,
) -> AccessRequest:
    """A steward approves, until ``ends_on``: new access waits on its data-use agreement (issued
    now, to the requester); a renewal moves the end of the access held."""
    ends_on = _check_end(request.dataset, ends_on)
    if request.is_renewal and request.grant is not None and request.grant.ends_on >= ends_on:
        raise ValidationError(
            f"A renewal ends after the present end ({request.grant.ends_on:%d %B %Y})."
        )
    REQUEST_WORKFLOW.run(
        session, request, "approve", actor=actor, reason=note, values={"ends_on": ends_on}
    )
    if request.is_renewal:
        assert request.grant is not None
        GRANT_WORKFLOW.run(
            session, request.grant, "renew", actor=actor, values={"ends_on": ends_on}
        )
    else:
        _grant(session, request, actor=actor)
    return request


def _grant(session: AnySession, request: AccessRequest, *, actor: Any) -> Grant:
    """The access an approved request gives, pending until its data-use agreement is signed."""
    if live_grant(session, request.dataset_id, request.user_id) is not None:
        raise ConflictError(
            f"{request.user.display_name} already has access to “{request.dataset.name}”."
        )
    assert request.ends_on is not None
    grant = Grant(
        dataset_id=request.dataset_id,
        user_id=request.user_id,
        institution_id=request.institution_id,
        proposal_id=request.proposal_id,
        starts_on=utcnow().date(),
        ends_on=request.ends_on,
        state=GrantState.PENDING,
    )
    session.add(grant)
    session.flush()
    request.grant_id = grant.id
    audit.record(session, "dataset_grant.create", actor=actor, obj=grant, request_id=request.id)
    template = request.dataset.dua_template
    if template is None:  # pragma: no cover - a CHECK keeps controlled datasets with one
        raise ValidationError("This dataset has no data-use agreement template.")
    grant.agreement_id = issue_in_step(session, template, grant_subject(grant), actor=actor).id
    session.flush()
    return grant


def request_changes(
    session: AnySession, request: AccessRequest, *, actor: User, reason: str
) -> AccessRequest:
    return REQUEST_WORKFLOW.run(session, request, "request_changes", actor=actor, reason=reason)


def decline(
    session: AnySession, request: AccessRequest, *, actor: User, reason: str
) -> AccessRequest:
    return REQUEST_WORKFLOW.run(session, request, "decline", actor=actor, reason=reason)


def withdraw(session: AnySession, request: AccessRequest, *, actor: User) -> AccessRequest:
    return REQUEST_WORKFLOW.run(session, request, "withdraw", actor=actor)


# --- the data-use agreement ----------------------------------------------------------------------


def grant_subject(grant: Grant) -> Subject:
    """A grant as the subject of its data-use agreement: the researcher signs for themselves,
    then — where the dataset asks for it — a signing official for their institution."""
    origin = grant.origin_request
    parties = [Party(1, PartyRole.RESEARCHER, user_id=grant.user_id)]
    if grant.dataset.institution_signs:
        parties.append(Party(2, PartyRole.SIGNING_OFFICIAL, on_behalf_of=grant.institution.name))
    return Subject(
        SubjectType.DATASET_ACCESS,
        grant.id,
        f"{grant.dataset.name} for {grant.user.display_name}",
        {
            "lab": lab_name(),
            "today": f"{utcnow():%d %B %Y}",
            "dataset": grant.dataset.name,
            "researcher": grant.user.display_name,
            "institution": grant.institution.name,
            "purpose": origin.intended_use if origin is not None else "",
            "expires_on": f"{grant.ends_on:%d %B %Y}",
        },
        parties,
        institution=grant.institution,
    )


def load_grant_subject(session: AnySession, grant_id: int) -> Subject:
    grant = session.get(Grant, grant_id)
    if grant is None:
        raise NotFoundError("The agreement's subject no longer exists.")
    return grant_subject(grant)


def grant_ended(session: AnySession, grant_id: int) -> bool:
    """Whether the access a data-use agreement is for is over (re-consent skips it)."""
    state = session.scalar(select(Grant.state).where(Grant.id == grant_id))
    return state is None or state not in LIVE_GRANTS


def _grant_of(session: AnySession, agreement: Any) -> Grant | None:
    if getattr(agreement, "subject_type", None) != SubjectType.DATASET_ACCESS:
        return None
    return session.get(Grant, agreement.subject_id)


def on_agreement_complete(session: AnySession, step: Any) -> None:
    """``agreement.complete``: a fully signed data-use agreement starts its access."""
    grant = _grant_of(session, step.obj)
    if grant is not None and grant.state == GrantState.PENDING:
        GRANT_WORKFLOW.run(session, grant, "activate", actor=step.actor, agreement=step.obj.id)


def on_agreement_refused(session: AnySession, step: Any) -> None:
    """``agreement.decline`` / ``agreement.withdraw``: access waiting on that agreement ends."""
    grant = _grant_of(session, step.obj)
    if grant is not None and grant.state in LIVE_GRANTS and grant.agreement_id == step.obj.id:
        GRANT_WORKFLOW.run(session, grant, "end", actor=step.actor)


# --- holding access ------------------------------------------------------------------------------


def accept_terms(session: AnySession, dataset: Dataset, *, actor: User, accepted: bool) -> Grant:
    """Registered tier: a researcher at a partner accepts the terms and has access at once, for
    the dataset's longest period; accepting again later renews it."""
    check(permissions.can_accept_terms, actor, dataset)
    if not accepted:
        raise ValidationError("Tick the box to accept the terms of use.")
    ends_on = longest_end(dataset)
    now = utcnow()
    live = live_grant(session, dataset.id, actor.id)
    if live is not None and live.state != GrantState.ACTIVE:
        raise ConflictError(f"Your access to “{dataset.name}” is {live.state.label.lower()}.")
    # Expired access is renewed where it was held, if the person is still a member there;
    # someone who moved to another partner starts afresh through their new institution.
    members_of = [i.id for i in partner_institutions_of(actor)]
    held = live or session.scalar(
        select(Grant)
        .where(
            Grant.dataset_id == dataset.id,
            Grant.user_id == actor.id,
            Grant.state == GrantState.EXPIRED,
            Grant.institution_id.in_(members_of),
        )
        .order_by(Grant.id.desc())
    )
    if held is not None:
        if held.ends_on >= ends_on:
            raise ConflictError(f"Your access already runs until {held.ends_on:%d %B %Y}.")
        return GRANT_WORKFLOW.run(
            session,
            held,
            "renew",
            actor=actor,
            values={"ends_on": ends_on, "terms_accepted_at": now},
        )
    institution = _institution_for(actor, None)
    grant = Grant(
        dataset_id=dataset.id,
        user_id=actor.id,
        institution_id=institution.id,
        starts_on=now.date(),
        ends_on=ends_on,
        terms_accepted_at=now,
    )
    try:
        with session.begin_nested():
            session.add(grant)
            session.flush()
    except IntegrityError:
        raise ConflictError(f"You already have access to “{dataset.name}”.") from None
    audit.record(session, "dataset_grant.create", actor=actor, obj=grant, terms=True)
    return GRANT_WORKFLOW.run(session, grant, "activate", actor=actor)


def revoke(session: AnySession, grant: Grant, *, actor: User, reason: str) -> Grant:
    return GRANT_WORKFLOW.run(session, grant, "revoke", actor=actor, reason=reason)


def _live_of(session: AnySession, *where: Any) -> Sequence[Grant]:
    return session.scalars(
        select(Grant).where(Grant.state.in_(LIVE_GRANTS), *where).order_by(Grant.id)
    ).all()


def on_institution_suspended(session: AnySession, step: Any) -> None:
    """``institution.suspend``: its people's active access is suspended with it."""
    for grant in _live_of(session, Grant.institution_id == step.obj.id):
        if grant.state == GrantState.ACTIVE:
            GRANT_WORKFLOW.run(
                session,
                grant,
                "suspend",
                actor=step.actor,
                reason=f"{step.obj.name} was suspended: {step.reason}",
                values={"suspended_with_institution": True},
            )


def on_institution_withdrawn(session: AnySession, step: Any) -> None:
    """``institution.withdraw``: its people's access ends."""
    for grant in _live_of(session, Grant.institution_id == step.obj.id):
        GRANT_WORKFLOW.run(session, grant, "end", actor=step.actor)


def on_institution_reinstated(session: AnySession, step: Any) -> None:
    """``institution.reinstate``: access suspended with it resumes where its period and agreement
    allow (the rest stays suspended; the sweep expires it at its end)."""
    today = utcnow().date()
    for grant in _live_of(session, Grant.institution_id == step.obj.id):
        if (
            grant.state == GrantState.SUSPENDED
            and grant.suspended_with_institution
            and grant.ends_on >= today
            and GRANT_WORKFLOW.may(step.actor, grant, "resume")
        ):
            try:
                with session.begin_nested():
                    GRANT_WORKFLOW.run(
                        session,
                        grant,
                        "resume",
                        actor=step.actor,
                        values={"suspended_with_institution": False},
                    )
            except ConflictError:
                continue  # its agreement lapsed meanwhile: it stays suspended


def on_affiliation_ended(session: AnySession, step: Any) -> None:
    """``affiliation.end``: the person's access through that institution ends."""
    affiliation = step.obj
    for grant in _live_of(
        session,
        Grant.user_id == affiliation.user_id,
        Grant.institution_id == affiliation.institution_id,
    ):
        if permissions.end_reason(grant) is not None:
            GRANT_WORKFLOW.run(session, grant, "end", actor=step.actor)


def on_member_removed(session: AnySession, step: Any) -> None:
    """``proposal.remove_member``: their access for that project ends."""
    for grant in _live_of(
        session, Grant.proposal_id == step.obj.id, Grant.user_id == step.member.user_id
    ):
        session.expire(step.obj, ["team"])
        if permissions.end_reason(grant) is not None:
            GRANT_WORKFLOW.run(session, grant, "end", actor=step.actor)


# --- datasets a proposal plans to use -----------------------------------------------------------


def set_proposal_datasets(
    session: AnySession,
    proposal: Proposal,
    *,
    actor: User,
    picks: dict[int, str],
) -> list[ProposalDataset]:
    """The catalog datasets ``proposal`` plans to use (dataset id → what for), replacing the
    earlier choice: a controlled one asks its stewards for pre-approval once the proposal is
    submitted."""
    check(permissions.can_pick_datasets, actor, proposal)
    datasets = {
        d.id: d
        for d in session.scalars(
            permissions.visible_datasets(actor).where(
                Dataset.id.in_(picks), Dataset.state == DatasetState.PUBLISHED
            )
        )
    }
    missing = set(picks) - set(datasets)
    if missing:
        raise ValidationError("Choose datasets from the catalog (retired ones cannot be chosen).")
    existing = {
        link.dataset_id: link
        for link in session.scalars(
            select(ProposalDataset).where(ProposalDataset.proposal_id == proposal.id)
        )
    }
    for dataset_id, old in existing.items():
        if dataset_id not in picks:
            session.delete(old)
    out = []
    for dataset_id, purpose in picks.items():
        found = existing.get(dataset_id)
        if found is not None:
            link = found
        else:
            controlled = datasets[dataset_id].tier == AccessTier.CONTROLLED
            link = ProposalDataset(
                proposal_id=proposal.id,
                dataset_id=dataset_id,
                added_by_id=actor.id,
                state=ConsentState.ASKED if controlled else ConsentState.NOT_NEEDED,
            )
            session.add(link)
        link.purpose = (purpose or "").strip()[:2000]
        out.append(link)
    session.flush()
    audit.record(
        session,
        "proposal.datasets",
        actor=actor,
        obj=proposal,
        datasets=sorted(picks),
    )
    return out


def proposal_links(session: AnySession, proposal_id: int) -> Sequence[ProposalDataset]:
    return session.scalars(
        select(ProposalDataset)
        .where(ProposalDataset.proposal_id == proposal_id)
        .order_by(ProposalDataset.id)
    ).all()


def consent(
    session: AnySession, link: ProposalDataset, *, actor: User, note: str | None = None
) -> ProposalDataset:
    return CONSENT_WORKFLOW.run(session, link, "consent", actor=actor, reason=note)


def refuse(
    session: AnySession, link: ProposalDataset, *, actor: User, reason: str
) -> ProposalDataset:
    return CONSENT_WORKFLOW.run(session, link, "refuse", actor=actor, reason=reason)


def on_proposal_submitted(session: AnySession, step: Any) -> None:
    """``proposal.submit`` / ``proposal.endorse``: once a proposal reaches review, the stewards of
    its controlled datasets are asked to pre-approve them (once per proposal and dataset)."""
    if step.obj.state != ProposalState.SUBMITTED:
        return
    for link in proposal_links(session, step.obj.id):
        if link.state == ConsentState.ASKED and link.asked_at is None:
            link.asked_at = utcnow()
            emails.consent_asked(session, link)
    session.flush()


def on_proposal_approved(session: AnySession, step: Any) -> None:
    """``proposal.approve``: each controlled dataset its stewards pre-approved is approved for the
    project's PI at once (the data-use agreement goes out to sign); the rest of the team asks."""
    proposal = step.obj
    if proposal.state != ProposalState.ACTIVE:
        return
    pi = next((m.user for m in proposal.team if m.role == TeamRole.PI), None)
    if pi is None:
        return
    for link in proposal_links(session, proposal.id):
        dataset = link.dataset
        if (
            link.state != ConsentState.CONSENTED
            or dataset.state != DatasetState.PUBLISHED
            or live_grant(session, dataset.id, pi.id) is not None
            or open_request(session, dataset.id, pi.id) is not None
        ):
            continue
        ends_on = longest_end(dataset)
        if proposal.start_date and proposal.duration_months:
            ends_on = min(ends_on, add_months(proposal.start_date, proposal.duration_months))
        if ends_on <= utcnow().date():
            continue
        request = AccessRequest(
            dataset_id=dataset.id,
            user_id=pi.id,
            institution_id=proposal.institution_id,
            proposal_id=proposal.id,
            intended_use=link.purpose or f"For the project “{proposal.title}”.",
            preapproved=True,
            state=RequestState.APPROVED,
            decided_by_id=link.decided_by_id,
            decided_at=utcnow(),
            decision_note=link.decision_note,
            ends_on=ends_on,
        )
        session.add(request)
        session.flush()
        audit.record(
            session,
            "dataset_request.preapprove",
            actor=step.actor,
            obj=request,
            proposal_id=proposal.id,
            consented_by=link.decided_by_id,
        )
        _grant(session, request, actor=step.actor)


# --- who may use a dataset now -------------------------------------------------------------------


def dua_in_force_sql(today: dt.date) -> Any:
    """SQL: the grant's data-use agreement is fully signed and counts today."""
    return permissions.dua_in_force_sql(today)


def current_grants(dataset: Dataset, today: dt.date | None = None) -> Select[Grant]:
    """The grants that let their holders use ``dataset`` today, decided from the facts, not only
    from the grant's state: active, within its period, the holder's institution a partner in good
    standing, and — for a controlled dataset — its data-use agreement in force. (An expiry or a
    revocation takes effect here at once, before any sweep.) The same facts decide who sees where
    the data is (``permissions.holds_access``)."""
    return permissions.usable_grants(dataset, today or utcnow().date())


# --- the scheduled sweep -------------------------------------------------------------------------

#: Days before the end at which the holder is told (each once per end date).
NOTICE_DAYS = (30, 7)


def sweep(session: AnySession) -> dict[str, int]:
    """Expire access past its end date; tell holders 30 and 7 days before the end (once per end
    date: a renewal re-arms them). Idempotent: run it from cron as often as you like."""
    today = utcnow().date()
    counts = {"expired": 0, **{f"ends_{d}": 0 for d in NOTICE_DAYS}}
    for grant in _live_of(session, Grant.ends_on < today):
        GRANT_WORKFLOW.run(session, grant, "expire", actor=None)
        counts["expired"] += 1
    horizon = today + dt.timedelta(days=max(NOTICE_DAYS))
    for grant in _live_of(
        session,
        Grant.state == GrantState.ACTIVE,
        and_(Grant.ends_on >= today, Grant.ends_on <= horizon),
    ):
        left = grant.days_left(today)
        days = min(d for d in NOTICE_DAYS if left <= d)
        try:
            with session.begin_nested():
                session.add(
                    SentReminder(
                        rule=f"datasets.ends_{days}",
                        object_id=grant.id,
                        period=grant.ends_on.isoformat(),
                    )
                )
                session.flush()
                emails.access_expiring(session, grant, left)
        except IntegrityError:
            continue
        counts[f"ends_{days}"] += 1
    if any(counts.values()):
        audit.record(session, "datasets.sweep", actor=None, **counts)
    return counts
