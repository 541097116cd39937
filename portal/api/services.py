"""API tokens (made by administrators, shown once, kept as a hash, expiring, revocable) and what
the operator API does with them: the allocations a scheduler enforces, and the jobs it pushes,
charged through the same service as the file import (``portal.allocations.usage``); who may use a
dataset now, which the storage serving it enforces (``portal.datasets.services.current_grants``).

Each token has one scope and reaches only that scope's routes and objects: a resource operator's
token its resources' allocations and usage, a storage operator's token its datasets' grants."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.orm import contains_eager, selectinload

from portal.allocations.models import Allocation, AllocationState, UsageRecord
from portal.allocations.usage import ImportReport, Job, collector_paused, record_usage
from portal.api.models import MAX_DAYS, ApiToken, TokenScope
from portal.api.permissions import can_manage_tokens, scope_allows, token_covers
from portal.auth.models import User
from portal.core import audit
from portal.core.errors import (
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.datasets.models import AccessTier, Dataset, Grant
from portal.datasets.services import current_grants
from portal.proposals.models import Proposal, Resource

#: Every token starts with this, so that secret scanners and people recognise one.
TOKEN_PREFIX = "atom_"  # noqa: S105 - a public marker, not a secret
#: Characters of a token kept (and shown) to tell tokens apart: the prefix and 7 random ones.
VISIBLE = len(TOKEN_PREFIX) + 7
#: A token's last-used time is written at most this often (not on every request).
TOUCH_EVERY = dt.timedelta(minutes=1)


def digest(token: str) -> str:
    """The SHA-256 (hex) of a token: what the portal keeps and looks tokens up by."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: AnySession,
    *,
    name: str,
    expires_on: dt.date,
    actor: Any,
    scope: TokenScope = TokenScope.RESOURCE_OPERATOR,
    resources: Sequence[Resource] = (),
    datasets: Sequence[Dataset] = (),
) -> tuple[ApiToken, str]:
    """Make a token of ``scope``: a resource operator's for ``resources``, or a storage operator's
    for ``datasets`` (at least one, and nothing of the other scope), valid until the end of
    ``expires_on`` (UTC, at most ``MAX_DAYS`` ahead). Returns the token and its secret, which is
    never stored and so can be shown only now."""
    check(can_manage_tokens, actor)
    today = utcnow().date()
    if not today <= expires_on <= today + dt.timedelta(days=MAX_DAYS):
        raise ValidationError(f"A token expires between today and {MAX_DAYS} days from now.")
    if scope == TokenScope.RESOURCE_OPERATOR:
        if not resources:
            raise ValidationError("A resource operator's token acts on at least one resource.")
        if datasets:
            raise ValidationError(
                "A resource operator's token reads no datasets: make a storage operator's token "
                "for them."
            )
    else:
        if not datasets:
            raise ValidationError("A storage operator's token reads at least one dataset.")
        if resources:
            raise ValidationError(
                "A storage operator's token acts on no resources: make a resource operator's "
                "token for them."
            )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name.strip(),
        scope=scope,
        prefix=secret[:VISIBLE],
        token_sha256=digest(secret),
        expires_at=dt.datetime.combine(expires_on + dt.timedelta(days=1), dt.time(), dt.UTC),
        created_by_id=actor.id,
        resources=list(resources),
        datasets=list(datasets),
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        "api_token.create",
        actor=actor,
        obj=token,
        name=token.name,
        prefix=token.prefix,
        scope=token.scope.value,
        resources=[r.id for r in resources],
        datasets=[d.id for d in datasets],
        expires_at=token.expires_at.isoformat(),
    )
    return token, secret


def revoke_token(session: AnySession, token: ApiToken, *, actor: Any) -> ApiToken:
    """Revoke a token at once; a revoked token stays revoked (a compare-and-set, so two admins
    revoking together leave one revocation)."""
    check(can_manage_tokens, actor)
    now = utcnow()
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.id == token.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now, revoked_by_id=actor.id)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise InvalidTransitionError("This token is revoked already.")
    session.refresh(token)
    audit.record(session, "api_token.revoke", actor=actor, obj=token, prefix=token.prefix)
    return token


def tokens() -> Select[ApiToken]:
    """Every token, newest first, with its resources or datasets and its maker."""
    return (
        select(ApiToken)
        .options(
            selectinload(ApiToken.resources),
            selectinload(ApiToken.datasets),
            selectinload(ApiToken.created_by),
        )
        .order_by(ApiToken.id.desc())
    )


# --- authentication -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Operator:
    """Who is calling the API: a valid token, as plain values (they outlive the session)."""

    token_id: int
    name: str
    scope: TokenScope
    resource_ids: frozenset[int]
    dataset_ids: frozenset[int] = frozenset()


class AuthenticationError(Exception):
    """No valid token: the message says why (safe to show: the caller holds the token)."""


def authenticate(session: AnySession, presented: str) -> Operator:
    """The operator a presented token stands for; AuthenticationError when it is unknown,
    expired or revoked."""
    if not presented.startswith(TOKEN_PREFIX) or len(presented) > 200:
        raise AuthenticationError("The token is not one the portal issues.")
    token = session.scalar(
        select(ApiToken)
        .where(ApiToken.token_sha256 == digest(presented))
        .options(selectinload(ApiToken.resources), selectinload(ApiToken.datasets))
    )
    if token is None:
        raise AuthenticationError("The token is not known.")
    if token.revoked_at is not None:
        raise AuthenticationError("The token has been revoked.")
    if token.is_expired:
        raise AuthenticationError("The token has expired.")
    return Operator(
        token.id,
        token.name,
        token.scope,
        frozenset(r.id for r in token.resources if r.active),
        # Every dataset named, retired ones too: their holders keep access until its end.
        frozenset(d.id for d in token.datasets),
    )


def touch(session: AnySession, operator: Operator) -> None:
    """Record that the token was used now (at most once per ``TOUCH_EVERY``)."""
    now = utcnow()
    session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == operator.token_id,
            (ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < now - TOUCH_EVERY),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


# --- what operators read and push ---------------------------------------------------------------


def _require_scope(operator: Operator, needed: TokenScope) -> None:
    if not scope_allows(operator.scope, needed):
        raise PermissionDeniedError(
            f"This token is a {operator.scope.label.lower()}'s: this route is for a "
            f"{needed.label.lower()}'s token."
        )


#: The most allocations one page of the list holds, and how many by default.
MAX_LIMIT = 500
DEFAULT_LIMIT = 100


def operator_allocations(
    session: AnySession,
    operator: Operator,
    *,
    resource_id: int | None = None,
    state: AllocationState | None = None,
    after: int = 0,
    limit: int = DEFAULT_LIMIT,
) -> tuple[list[Allocation], bool]:
    """The allocations on the operator's resources (one of them, when ``resource_id`` is given:
    refused unless the token covers it), in id order after the id ``after``, at most ``limit``
    (and ``MAX_LIMIT``) of them, and whether more follow; one query."""
    _require_scope(operator, TokenScope.RESOURCE_OPERATOR)
    if resource_id is not None and not token_covers(operator.resource_ids, resource_id):
        raise PermissionDeniedError("This token does not cover that resource.")
    ids = [resource_id] if resource_id is not None else sorted(operator.resource_ids)
    limit = max(1, min(limit, MAX_LIMIT))
    # The page's ids first, from the resources' index alone; then only those rows, with their
    # projects' titles. (Sorting the rows themselves would read every allocation of the
    # resources, and its project, to keep the first ``limit``.)
    page = (
        select(Allocation.id)
        .where(Allocation.resource_id.in_(ids), Allocation.id > after)
        .order_by(Allocation.id)
        .limit(limit + 1)
    )
    if state is not None:
        page = page.where(Allocation.state == state)
    query = (
        select(Allocation)
        .join(Allocation.proposal)
        .options(contains_eager(Allocation.proposal).load_only(Proposal.title))
        .where(Allocation.id.in_(page.correlate(None)))
        .order_by(Allocation.id)
    )
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit


#: Why a pushed job was not charged.
NOT_COVERED = "no allocation on this token's resources has this cluster and account"
OTHER_RESOURCE = "this job is recorded against an allocation this token does not cover"


@dataclass
class PushReport:
    """What a push did: the jobs refused (by their place in the request) and the import's report
    of the others."""

    report: ImportReport
    refused: list[tuple[int, Job, str]] = field(default_factory=list)


@collector_paused()
def push_usage(session: AnySession, operator: Operator, jobs: Sequence[Job]) -> PushReport:
    """Charge the jobs an operator's scheduler reports, through ``record_usage`` (idempotent by
    cluster and job id, as the file import). Only jobs whose (cluster, account) is an allocation
    on the token's resources are charged; the others are refused one by one, never charged (and
    a job already recorded against an allocation the token does not cover is refused too, so a
    token cannot move another resource's jobs). A fixed number of statements per push."""
    _require_scope(operator, TokenScope.RESOURCE_OPERATOR)
    pairs = {(j.cluster, j.account) for j in jobs}
    covered: set[tuple[str, str]] = set()
    if pairs and operator.resource_ids:
        rows = session.execute(
            select(Allocation.cluster, Allocation.account).where(
                Allocation.resource_id.in_(operator.resource_ids),
                Allocation.cluster.in_({c for c, _ in pairs}),
                Allocation.account.in_({a for _, a in pairs}),
            )
        )
        covered = {(row.cluster, row.account) for row in rows} & pairs
    keys = {(j.cluster, j.job_id) for j in jobs if (j.cluster, j.account) in covered}
    foreign: set[tuple[str, str]] = set()
    if keys and _other_resources(session, operator):
        rows = session.execute(
            select(UsageRecord.cluster, UsageRecord.job_id)
            .join(Allocation, Allocation.id == UsageRecord.allocation_id)
            .where(
                UsageRecord.cluster.in_({c for c, _ in keys}),
                UsageRecord.job_id.in_({j for _, j in keys}),
                Allocation.resource_id.not_in(operator.resource_ids),
            )
        )
        foreign = {(row.cluster, row.job_id) for row in rows} & keys
    accepted: list[Job] = []
    out = PushReport(ImportReport(sources=[f"api:token:{operator.token_id}"]))
    for i, job in enumerate(jobs):
        if (job.cluster, job.account) not in covered:
            out.refused.append((i, job, NOT_COVERED))
        elif foreign and (job.cluster, job.job_id) in foreign:
            out.refused.append((i, job, OTHER_RESOURCE))
        else:
            accepted.append(job)
    record_usage(session, accepted, actor=None, report=out.report)
    return out


def _other_resources(session: AnySession, operator: Operator) -> bool:
    """Whether a resource the token does not cover exists (else no job can be recorded against
    another resource's allocation, and a push need not read its jobs' records to know)."""
    return (
        session.scalar(
            select(Resource.id).where(Resource.id.not_in(operator.resource_ids)).limit(1)
        )
        is not None
    )


# --- who may use a dataset now (storage operators) ----------------------------------------------


@dataclass(frozen=True)
class DatasetGrants:
    """Who may use ``dataset`` on ``as_of``: everyone (``open``: an open dataset, no list), or the
    holders of ``grants`` (one page of them, in id order) — and whether more pages follow."""

    dataset: Dataset
    as_of: dt.date
    open: bool
    grants: list[Grant]
    more: bool


def dataset_grants(
    session: AnySession,
    operator: Operator,
    dataset_id: int,
    *,
    after: int = 0,
    limit: int = DEFAULT_LIMIT,
) -> DatasetGrants:
    """Who may use the dataset ``dataset_id`` today, for the storage serving it to enforce: the
    grants ``current_grants`` decides (active, within their period, the holder's institution a
    partner, the data-use agreement in force), with their holders, login identities and
    institutions; pages of ``limit`` (at most ``MAX_LIMIT``) after the grant id ``after``. A
    storage operator's token only, for a dataset it names (NotFoundError for no such dataset,
    PermissionDeniedError for one it does not name). An open dataset lists nobody: everyone may
    use it. A fixed number of queries, whatever the number of grants."""
    _require_scope(operator, TokenScope.DATASET_OPERATOR)
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFoundError(f"There is no dataset {dataset_id}.")
    if not token_covers(operator.dataset_ids, dataset.id):
        raise PermissionDeniedError("This token does not cover that dataset.")
    today = utcnow().date()
    if dataset.tier == AccessTier.OPEN:
        return DatasetGrants(dataset, today, True, [], False)
    limit = max(1, min(limit, MAX_LIMIT))
    query = (
        current_grants(dataset, today)
        .where(Grant.id > after)
        .options(
            contains_eager(Grant.institution),
            contains_eager(Grant.user).selectinload(User.identities),
        )
        .limit(limit + 1)
    )
    rows = list(session.scalars(query))
    return DatasetGrants(dataset, today, False, rows[:limit], len(rows) > limit)
