"""Factories for the console's tests: identity providers and their mappings, and projects with
GPU-hours used, dataset access and released outputs (built directly, valid by the models' rules,
so hundreds are cheap)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from portal.allocations.models import Allocation, AllocationState
from portal.auth.models import IdentityProvider, ProviderInstitution, ProviderKind, Role, User
from portal.core.models import AnySession, utcnow
from portal.datasets.models import AccessTier, Dataset, Grant, GrantState
from portal.institutions.models import Institution
from portal.outputs.models import ReleasedOutput
from portal.proposals.models import Call, OutputKind, Proposal, ProposalState
from tests.factories import make_dataset, make_proposal, make_user

_seq = itertools.count(1)


def make_provider(
    session: AnySession,
    *,
    kind: ProviderKind = ProviderKind.FEDERATION,
    enabled: bool = True,
    name: str | None = None,
) -> IdentityProvider:
    """An identity provider of ``kind`` (a federation proxy by default)."""
    n = next(_seq)
    provider = IdentityProvider(
        slug=f"idp-{n}",
        name=name or f"Federation {n}",
        kind=kind,
        issuer=f"https://login{n}.example.org",
        client_id=f"client-{n}",
        enabled=enabled,
    )
    session.add(provider)
    session.flush()
    return provider


def make_mapping(
    session: AnySession,
    provider: IdentityProvider,
    institution: Institution,
    entity_id: str | None = None,
) -> ProviderInstitution:
    """``provider`` serves ``institution`` (under ``entity_id``: a new one for a federation)."""
    if entity_id is None and provider.kind == ProviderKind.FEDERATION:
        entity_id = f"https://idp{next(_seq)}.example.edu/idp/shibboleth"
    mapping = ProviderInstitution(
        provider_id=provider.id, institution_id=institution.id, entity_id=entity_id
    )
    session.add(mapping)
    session.flush()
    session.expire(provider, ["served"])
    return mapping


def make_project(
    session: AnySession,
    institution: Institution,
    *,
    call: Call | None = None,
    pi: User | None = None,
    used_gpu_seconds: int = 0,
    grants: int = 0,
    dataset: Dataset | None = None,
    released_licence: str | None = None,
    title: str | None = None,
) -> Proposal:
    """An active project of ``institution`` (its awards from what it asked for: 1000 GPU-hours),
    an active allocation per award with ``used_gpu_seconds`` charged, ``grants`` active dataset
    access given for it (to new researchers of the institution, on ``dataset``: a new registered
    one if not given), and one released output under ``released_licence`` if given."""
    pi = pi or make_user(session, Role.RESEARCHER, institution=institution)
    kw: dict[str, Any] = {"title": title} if title else {}
    project = make_proposal(
        session, call=call, pi=pi, institution=institution, state=ProposalState.ACTIVE, **kw
    )
    today = utcnow().date()
    for award in project.awards:
        n = next(_seq)
        session.add(
            Allocation(
                award_id=award.id,
                proposal_id=project.id,
                call_resource_id=award.call_resource_id,
                resource_id=award.call_resource.resource_id,
                institution_id=institution.id,
                hours=award.hours,
                used_gpu_seconds=used_gpu_seconds,
                starts_on=today,
                ends_on=today + dt.timedelta(days=365),
                cluster=award.call_resource.resource.cluster,
                account=f"acct-{n}",
                state=AllocationState.ACTIVE,
            )
        )
    if grants:
        dataset = dataset or make_dataset(session, tier=AccessTier.REGISTERED)
        for _ in range(grants):
            holder = make_user(session, Role.RESEARCHER, institution=institution)
            session.add(
                Grant(
                    dataset_id=dataset.id,
                    user_id=holder.id,
                    institution_id=institution.id,
                    proposal_id=project.id,
                    terms_accepted_at=utcnow(),
                    starts_on=today,
                    ends_on=today + dt.timedelta(days=180),
                    state=GrantState.ACTIVE,
                )
            )
    if released_licence is not None:
        planned = project.outputs[0] if project.outputs else None
        session.add(
            ReleasedOutput(
                proposal_id=project.id,
                planned_output_id=planned.id if planned else None,
                kind=OutputKind.WEIGHTS,
                title=f"{project.title} weights",
                url="https://example.org/weights",
                license=released_licence,
                released_on=today,
            )
        )
    session.flush()
    return project
