"""The benchmark generator's datasets step (``portal/dev/gen_datasets.py``) writes in bulk, yet
leaves what the services would: access in every state with the fields each state needs, one live
grant and one open request per person and dataset, a data-use agreement in the state its access
implies, contribution agreements signed exactly where a project's GPU-hours are usable, texts
filled in from their template version and bound to their SHA-256, an outbox as the worker leaves
it — and work waiting for the personas.

``check_generated`` is the whole check; it reads the database only, so it can be pointed at a
database made by ``flask demo generate`` too."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    PartyRole,
    SignatureState,
    SubjectType,
    TemplateVersion,
)
from portal.agreements.permissions import signable_signatures
from portal.agreements.services import verify
from portal.agreements.text import fill, project_fields
from portal.allocations.models import Allocation, AllocationState
from portal.auth.models import Identity, Role, RoleGrant, User
from portal.core.dates import add_months
from portal.core.models import utcnow
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
from portal.datasets.permissions import decidable_requests
from portal.dev import datagen, gen_datasets
from portal.dev.datagen import Context, Scale
from portal.institutions.models import Affiliation, AffiliationState, Institution, InstitutionState
from portal.notifications.models import (
    Delivery,
    DeliveryAttempt,
    NotificationPreference,
    OutboxMessage,
    OutboxState,
)
from portal.notifications.rendering import render_email
from portal.proposals.models import Proposal, ProposalState, TeamMember
from tests.factories import make_proposal

SMALL = Scale(
    institutions=8,
    users=400,
    calls=1,
    proposals=1,
    reviews=1,
    allocations=1,
    usage_records=1,
    datasets=40,
    grants=600,
    agreements=260,
    audit_events=1,
    outbox=400,
)


def _context(db: Session, scale: Scale, seed: int = 7) -> Context:
    """The institutions and people ``datagen`` makes first, and a few active projects (made by
    the factories) at partner institutions: one whose allocation is in use, one whose allocation
    waits on its agreement, the rest without allocations."""
    ctx = Context(session=db, rng=random.Random(seed), scale=scale, now=utcnow())
    datagen._people(ctx)
    partners = [
        i["id"]
        for i in ctx.institutions
        if i["state"] == InstitutionState.PARTNER and ctx.members.get(i["id"])
    ]
    for k, inst in enumerate(partners * 2):
        pi = db.get(User, ctx.members[inst][k // len(partners)])
        assert pi is not None
        proposal = make_proposal(
            db, pi=pi, state=ProposalState.ACTIVE, institution=db.get(Institution, inst)
        )
        if k < 2:
            (award,) = proposal.awards
            db.add(
                Allocation(
                    award_id=award.id,
                    proposal_id=proposal.id,
                    call_resource_id=award.call_resource_id,
                    resource_id=award.call_resource.resource_id,
                    institution_id=inst,
                    hours=award.hours,
                    starts_on=ctx.now.date(),
                    ends_on=add_months(ctx.now.date(), 12),
                    cluster=award.call_resource.resource.cluster,
                    account=f"gen-{proposal.id}",
                    state=AllocationState.ACTIVE if k == 0 else AllocationState.PENDING,
                )
            )
    db.flush()
    return ctx


# --- the checks ------------------------------------------------------------------------------------


def _grants(db: Session, today: dt.date) -> Counter[str]:
    """Each grant has what its state needs and keeps the rules its services keep."""
    seen: Counter[str] = Counter()
    members = set(
        db.execute(
            select(Affiliation.user_id, Affiliation.institution_id).where(
                Affiliation.state == AffiliationState.ACTIVE
            )
        )
    )
    teams = set(db.execute(select(TeamMember.proposal_id, TeamMember.user_id)))
    agreements = {a.id: a for a in db.scalars(select(Agreement))}
    duas_of: dict[int, list[Agreement]] = {}
    for a in agreements.values():
        if a.subject_type == SubjectType.DATASET_ACCESS:
            duas_of.setdefault(a.subject_id, []).append(a)
    origins = Counter(
        db.scalars(
            select(AccessRequest.grant_id).where(
                AccessRequest.state == RequestState.APPROVED, AccessRequest.is_renewal.is_(False)
            )
        )
    )
    rows = db.execute(
        select(Grant, Dataset.tier, Institution.state)
        .join(Dataset, Dataset.id == Grant.dataset_id)
        .join(Institution, Institution.id == Grant.institution_id)
    )
    for g, tier, inst_state in rows:
        seen[f"{tier.value} {g.state.value}"] += 1
        assert g.created_at <= g.state_changed_at <= utcnow(), g
        if g.state in LIVE_GRANTS:
            assert g.ends_on >= today, g
            assert (g.user_id, g.institution_id) in members, g
            if g.proposal_id is not None:
                assert (g.proposal_id, g.user_id) in teams, g
        if g.state == GrantState.EXPIRED:
            assert g.ends_on < today, g
        if g.state == GrantState.ACTIVE:
            assert inst_state == InstitutionState.PARTNER and g.starts_on <= today, g
        if g.suspended_with_institution:
            assert g.state == GrantState.SUSPENDED and inst_state == InstitutionState.SUSPENDED
        if tier == AccessTier.REGISTERED:
            assert g.terms_accepted_at is not None and g.agreement_id is None, g
            continue
        assert tier == AccessTier.CONTROLLED and g.terms_accepted_at is None, g
        assert origins[g.id] == 1, f"{g} comes from one approved request"
        dua = agreements[g.agreement_id or 0]
        assert dua.kind == AgreementKind.DATA_USE and dua.subject_id == g.id, g
        assert dua.institution_id == g.institution_id, g
        in_force = [a for a in duas_of[g.id] if a.counts_on(today)]
        if g.state == GrantState.ACTIVE:
            assert in_force, f"{g} is active without its data-use agreement in force"
        if g.state == GrantState.PENDING:
            assert dua.state == AgreementState.AWAITING and not in_force, g
        if g.ended_reason == "The data-use agreement was declined.":
            assert dua.state == AgreementState.DECLINED, g
        if dua.state == AgreementState.WITHDRAWN:
            assert g.state == GrantState.REVOKED, g
        if g.state == GrantState.ENDED and g.proposal_id is not None and dua.counts_on(today):
            assert (g.proposal_id, g.user_id) not in teams, f"{g} ended as its holder left"
    return seen


def _requests(db: Session) -> Counter[str]:
    seen: Counter[str] = Counter()
    stewards = set(db.execute(select(DatasetSteward.dataset_id, DatasetSteward.user_id)))
    consents = set(
        db.execute(
            select(ProposalDataset.proposal_id, ProposalDataset.dataset_id).where(
                ProposalDataset.state == ConsentState.CONSENTED
            )
        )
    )
    rows = db.execute(
        select(AccessRequest, Dataset.state, Institution.state, Grant.dataset_id, Grant.user_id)
        .join(Dataset, Dataset.id == AccessRequest.dataset_id)
        .join(Institution, Institution.id == AccessRequest.institution_id)
        .outerjoin(Grant, Grant.id == AccessRequest.grant_id)
    )
    for r, dataset_state, inst_state, grant_dataset, grant_user in rows:
        seen[("renewal " if r.is_renewal else "") + r.state.value] += 1
        assert r.created_at <= r.state_changed_at <= utcnow(), r
        if r.state == RequestState.APPROVED or r.is_renewal:
            assert (grant_dataset, grant_user) == (r.dataset_id, r.user_id), r
        if r.decided_by_id is not None:
            assert r.decided_by_id != r.user_id, r
            if r.preapproved:
                assert (r.proposal_id, r.dataset_id) in consents, r
            else:
                assert (r.dataset_id, r.decided_by_id) in stewards, r
        if r.state in OPEN_REQUESTS and not r.is_renewal:
            assert dataset_state == DatasetState.PUBLISHED, r
            assert inst_state == InstitutionState.PARTNER, r
    return seen


def _agreements(db: Session, lab: str) -> Counter[str]:
    """Signatures fit their agreement's state, are given by who may give them, in order, on the
    exact text; the text is the version's filled in; re-consent is linked both ways."""
    seen: Counter[str] = Counter()
    officials = set(
        db.execute(
            select(RoleGrant.user_id, RoleGrant.institution_id).where(
                RoleGrant.role == Role.SIGNING_OFFICIAL
            )
        )
    )
    officers = set(
        db.scalars(select(RoleGrant.user_id).where(RoleGrant.role == Role.PROGRAM_OFFICER))
    )
    agreements = db.scalars(
        select(Agreement)
        .where(Agreement.kind != AgreementKind.PARTNERSHIP)
        .options(selectinload(Agreement.signatures))
        .order_by(Agreement.id)
    ).all()
    replaced = {a.replaces_id: a for a in agreements if a.replaces_id is not None}
    for a in agreements:
        seen[f"{a.kind.value} {a.state.value}"] += 1
        states = [s.state for s in a.signatures]
        signed = states.count(SignatureState.SIGNED)
        assert states[:signed] == [SignatureState.SIGNED] * signed, a
        assert verify(a).ok, a
        if a.state in (AgreementState.ACTIVE, AgreementState.SUPERSEDED):
            assert signed == len(states) and a.completed_at is not None, a
        elif a.state == AgreementState.DECLINED:
            assert states[signed] == SignatureState.DECLINED, a
        else:
            assert SignatureState.DECLINED not in states and signed < len(states), a
        times = [s.signed_at for s in a.signatures if s.signed_at is not None]
        assert times == sorted(times) and all(a.created_at <= t for t in times), a
        for s in a.signatures:
            if s.state != SignatureState.SIGNED:
                continue
            if s.user_id is not None:
                assert s.signed_by_id == s.user_id, s
            elif s.role == PartyRole.SIGNING_OFFICIAL:
                assert (s.signed_by_id, a.institution_id) in officials, s
            else:
                assert s.role == PartyRole.PROGRAM and s.signed_by_id in officers, s
        if a.state == AgreementState.SUPERSEDED:
            assert replaced[a.id].state == AgreementState.ACTIVE and a.reconsent_by, a
        if a.replaces_id is not None:
            assert a.version.number == 2, a
        if a.reconsent_by is not None and a.state == AgreementState.ACTIVE:
            assert replaced[a.id].state == AgreementState.AWAITING, a
    for a in agreements[:: max(1, len(agreements) // 60)]:
        today = a.created_at.date()
        if a.kind == AgreementKind.CONTRIBUTION:
            proposal = db.get(Proposal, a.proposal_id)
            assert proposal is not None
            fields = project_fields(proposal, lab=lab, today=today)
        else:
            grant = db.get(Grant, a.subject_id)
            assert grant is not None and grant.origin_request is not None
            fields = {
                "lab": lab,
                "today": f"{today:%d %B %Y}",
                "dataset": grant.dataset.name,
                "researcher": grant.user.display_name,
                "institution": grant.institution.name,
                "purpose": grant.origin_request.intended_use,
                "expires_on": f"{grant.origin_request.ends_on:%d %B %Y}",
            }
        assert a.text == fill(a.version.body, fields), a
    return seen


def _contribution_gate(db: Session, today: dt.date) -> None:
    """A project's allocations are in use exactly where its contribution agreement is in force
    (the generator only adds agreements to projects that have none)."""
    in_force = {
        a.subject_id
        for a in db.scalars(select(Agreement).where(Agreement.kind == AgreementKind.CONTRIBUTION))
        if a.counts_on(today)
    }
    for proposal_id, state in db.execute(select(Allocation.proposal_id, Allocation.state)):
        if state == AllocationState.PENDING:
            assert proposal_id not in in_force, proposal_id
        else:
            assert proposal_id in in_force, proposal_id


def _outbox(db: Session) -> Counter[str]:
    """Each row is as the worker leaves it, and every kind renders."""
    seen: Counter[str] = Counter()
    tries: dict[int, list[DeliveryAttempt]] = {}
    for attempt in db.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)):
        tries.setdefault(attempt.message_id, []).append(attempt)
    digests = dict(db.execute(select(OutboxMessage.id, OutboxMessage.template)).all())
    digest_chosen = set(
        db.execute(
            select(NotificationPreference.user_id, NotificationPreference.kind).where(
                NotificationPreference.delivery == Delivery.DIGEST
            )
        )
    )
    rendered: set[str] = set()
    for m in db.scalars(select(OutboxMessage)):
        seen[m.state.value] += 1
        mine = tries.get(m.id, [])
        assert m.attempts == len(mine), m
        assert (m.state == OutboxState.SENT) == (mine[-1].ok if mine else False), m
        if m.state in (OutboxState.QUEUED, OutboxState.HELD, OutboxState.DIGESTED):
            assert not mine and m.subject is None, m
        else:
            assert mine and m.subject, m
            assert all(t.attempted_at >= m.created_at for t in mine), m
        if m.state in (OutboxState.FAILED, OutboxState.DEAD):
            assert m.last_error and not any(t.ok for t in mine), m
        if m.state == OutboxState.DIGESTED:
            assert digests[m.digest_id or 0] == "notifications/digest", m
        if m.state in (OutboxState.HELD, OutboxState.DIGESTED):
            assert (m.recipient_id, m.template) in digest_chosen, m
        if m.template not in rendered:
            rendered.add(m.template)
            render_email(m)
    return seen


def check_generated(db: Session, personas: dict[str, int], *, lab: str) -> dict[str, Counter[str]]:
    """Every check above; the states seen, by kind of row."""
    today = utcnow().date()
    seen = {
        "grants": _grants(db, today),
        "requests": _requests(db),
        "agreements": _agreements(db, lab),
        "outbox": _outbox(db),
    }
    _contribution_gate(db, today)
    # Work waits for the personas (the program officer's countersignatures depend on how many
    # projects still wait on theirs).
    for name in ("pi", "official"):
        person = db.get(User, personas[name])
        assert db.scalar(select(func.count()).select_from(signable_signatures(person).subquery()))
    steward = db.get(User, personas["steward"])
    waiting = decidable_requests(steward).where(AccessRequest.state == RequestState.SUBMITTED)
    assert db.scalar(select(func.count()).select_from(waiting.subquery())), "steward's queue"
    return seen


# --- the tests ---------------------------------------------------------------------------------


def test_generated_access_agreements_and_mail_keep_the_services_rules(
    app: Flask, db: Session
) -> None:
    with app.app_context():
        ctx = _context(db, SMALL)
        gen_datasets.generate(ctx)
        seen = check_generated(db, ctx.personas, lab=app.config["LAB_NAME"])
    assert ctx.counts["datasets"] == SMALL.datasets
    assert ctx.counts["grants"] == SMALL.grants
    assert ctx.counts["outbox"] == SMALL.outbox
    made = ctx.counts["contribution agreements"] + ctx.counts["data-use agreements"]
    assert made + ctx.counts["partnership agreements"] <= SMALL.agreements
    assert made > SMALL.agreements * 0.8
    assert (
        ctx.counts["contribution agreements"]
        >= 2 * len([i for i in ctx.institutions if i["state"] == InstitutionState.PARTNER]) - 2
    )
    tiers = Counter(db.scalars(select(Dataset.tier)))
    assert set(tiers) == set(AccessTier)
    grants, requests = seen["grants"], seen["requests"]
    assert {k.split()[1] for k in grants} >= {s.value for s in GrantState} - {"suspended"}
    assert grants["controlled active"] > grants["controlled pending"] > 0
    assert grants["registered active"] > grants["registered expired"] > 0
    assert set(requests) >= {s.value for s in RequestState}
    agreements = seen["agreements"]
    for state in ("active", "awaiting", "declined", "withdrawn"):
        assert agreements[f"data_use {state}"], state
    assert agreements["contribution active"] and agreements["contribution awaiting"]
    assert set(seen["outbox"]) == set(OutboxState)
    assert seen["outbox"]["sent"] > SMALL.outbox * 0.8


def test_controlled_grants_before_the_new_version_are_signed_again(app: Flask, db: Session) -> None:
    """The co-signed datasets' second data-use version asked for re-consent: live access given
    before it has its agreement re-issued on it (waiting, or signed and superseding the first)."""
    with app.app_context():
        ctx = _context(db, SMALL)
        gen_datasets.generate(ctx)
    reissued = db.scalars(select(Agreement).where(Agreement.replaces_id.is_not(None))).all()
    assert {a.state for a in reissued} == {AgreementState.ACTIVE, AgreementState.AWAITING}
    for a in reissued:
        assert a.replaces is not None and a.replaces.reconsent_by is not None
        assert a.replaces.version.number == 1 and a.version.number == 2
        grant = db.get(Grant, a.subject_id)
        assert grant is not None and grant.agreement_id == a.replaces_id
        assert grant.state in (GrantState.ACTIVE, GrantState.SUSPENDED)
    version = db.scalar(select(TemplateVersion).where(TemplateVersion.id == reissued[0].version_id))
    assert version is not None and version.reconsent_by is not None


def test_the_same_seed_gives_the_same_catalog_and_access(app: Flask, db: Session) -> None:
    def made() -> list[Any]:
        return [
            *db.execute(select(Dataset.slug, Dataset.tier, Dataset.state).order_by(Dataset.id)),
            *db.execute(select(Grant.dataset_id, Grant.user_id).order_by(Grant.id)),
        ]

    runs = []
    with app.app_context():
        for _ in range(2):
            savepoint = db.begin_nested()
            gen_datasets.generate(_context(db, SMALL, seed=3))
            runs.append(made())
            savepoint.rollback()
    assert runs[0] == runs[1]


def test_the_whole_generator_includes_datasets(app: Flask, db: Session) -> None:
    """End to end, after the proposals and allocations the other steps make."""
    scale = Scale(
        institutions=6,
        users=160,
        calls=2,
        proposals=60,
        reviews=80,
        allocations=80,
        usage_records=400,
        datasets=20,
        grants=300,
        agreements=160,
        audit_events=10,
        outbox=200,
    )
    with app.app_context():
        counts = datagen.generate(db, scale)
        check_generated(db, _personas(db), lab=app.config["LAB_NAME"])
    assert counts["grants"] == scale.grants and counts["outbox"] == scale.outbox


def _personas(db: Session) -> dict[str, int]:
    return {
        name: db.scalars(
            select(Identity.user_id).where(
                Identity.issuer == datagen.PERSONA_ISSUER, Identity.subject == subject
            )
        ).one()
        for name, subject in datagen.PERSONAS.items()
    }
