"""Factories that build only valid objects, flushed into the test's session."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterable
from typing import Any

from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    PartyRole,
    Signature,
    SignatureState,
    SubjectType,
    TemplateVersion,
    VersionState,
)
from portal.agreements.text import fill, institution_fields, project_fields, sha256
from portal.allocations.models import Allocation
from portal.auth.models import Identity, Role, RoleGrant, User
from portal.core.models import AnySession, utcnow
from portal.datasets.models import (
    AccessRequest,
    AccessTier,
    Dataset,
    DatasetState,
    DatasetSteward,
    Grant,
    RequestState,
)
from portal.institutions.models import (
    Affiliation,
    AffiliationSource,
    AffiliationState,
    DomainProof,
    DomainState,
    Institution,
    InstitutionDomain,
    InstitutionState,
)
from portal.institutions.services import ror_checksum
from portal.notifications.models import OutboxMessage, OutboxState
from portal.proposals.checklist import snapshot
from portal.proposals.models import (
    FIELDS,
    Attachment,
    AttachmentKind,
    Award,
    Call,
    CallResource,
    CallState,
    OutputKind,
    PlannedOutput,
    Proposal,
    ProposalState,
    ProposalVersion,
    Resource,
    ResourceRequest,
    RubricCriterion,
    TeamMember,
    TeamRole,
)
from portal.reviews.models import Assignment, AssignmentState, ReviewerProfile

_seq = itertools.count(1)
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def make_ror(n: int) -> str:
    base = "0" + "".join(_CROCKFORD[(n >> (5 * i)) % 32] for i in range(6))[::-1]
    return f"https://ror.org/{base}{ror_checksum(base):02d}"


def make_institution(
    session: AnySession, *, state: InstitutionState = InstitutionState.PARTNER, **kw: Any
) -> Institution:
    """An institution in ``state``; a partner (or a suspended one) has been one since today
    unless ``partner_since`` says otherwise (the ``join`` step sets it in real life)."""
    n = next(_seq)
    if state in (InstitutionState.PARTNER, InstitutionState.SUSPENDED):
        kw.setdefault("partner_since", utcnow().date())
    inst = Institution(
        name=kw.pop("name", f"University {n}"),
        country=kw.pop("country", "US"),
        ror_id=kw.pop("ror_id", make_ror(n + 1000)),
        state=state,
        **kw,
    )
    inst.all_domains.append(make_domain(f"uni{n}.edu"))
    session.add(inst)
    session.flush()
    return inst


def make_domain(domain: str, *, state: DomainState = DomainState.VERIFIED) -> InstitutionDomain:
    """A claimed e-mail domain, verified (by staff) unless told otherwise; add it to an
    institution's ``all_domains``."""
    if state == DomainState.PENDING:
        return InstitutionDomain(domain=domain, state=state)
    return InstitutionDomain(
        domain=domain, state=state, method=DomainProof.STAFF, verified_at=utcnow()
    )


def make_user(
    session: AnySession,
    *roles: Role,
    institution: Institution | None = None,
    issuer: str = "https://idp.test",
    **kw: Any,
) -> User:
    """A user holding ``roles``; institution roles (researcher, signing official) are held at
    ``institution`` (made if not given), with an active affiliation there."""
    n = next(_seq)
    user = User(
        display_name=kw.pop("display_name", f"Person {n}"),
        email=kw.pop("email", f"person{n}@example.org"),
        email_verified=kw.pop("email_verified", True),
        **kw,
    )
    user.identities.append(Identity(issuer=issuer, subject=f"sub-{n}", email=user.email))
    session.add(user)
    for role in roles:
        scoped = role in (Role.RESEARCHER, Role.SIGNING_OFFICIAL)
        if scoped and institution is None:
            institution = make_institution(session)
        session.add(RoleGrant(user=user, role=role, institution=institution if scoped else None))
        if (
            scoped
            and institution is not None
            and not any(a.institution_id == institution.id for a in user.affiliations)
        ):
            make_affiliation(
                session,
                user=user,
                institution=institution,
                state=AffiliationState.ACTIVE,
                source=AffiliationSource.STAFF,
            )
    session.flush()
    session.refresh(user)
    return user


def make_affiliation(
    session: AnySession,
    *,
    user: User | None = None,
    institution: Institution | None = None,
    state: AffiliationState = AffiliationState.REQUESTED,
    source: AffiliationSource = AffiliationSource.OFFICIAL_APPROVAL,
    **kw: Any,
) -> Affiliation:
    """``user``'s affiliation with ``institution`` (each made if not given); a decided one (any
    state but requested) gets ``decided_at`` now unless given, as the model's CHECK demands."""
    if state != AffiliationState.REQUESTED:
        kw.setdefault("decided_at", utcnow())
    aff = Affiliation(
        user=make_user(session) if user is None else user,
        institution=make_institution(session) if institution is None else institution,
        state=state,
        source=source,
        **kw,
    )
    session.add(aff)
    session.flush()
    return aff


def make_outbox_message(
    session: AnySession, *, state: OutboxState = OutboxState.QUEUED, **kw: Any
) -> OutboxMessage:
    """A welcome mail in the outbox in ``state``, consistent with the model's CHECKs: ``sent_at``
    is set iff sent, ``digest_id`` (a digest mail, made if not given) iff digested, and a message
    that was tried (failed, dead or sent) counts one attempt unless told otherwise."""
    n = next(_seq)
    if state == OutboxState.SENT:
        kw.setdefault("sent_at", utcnow())
    if state == OutboxState.DIGESTED and "digest_id" not in kw:
        digest = make_outbox_message(
            session,
            template="notifications/digest",
            to_addr=kw.get("to_addr", f"person{n}@example.org"),
            context={"items": [], "date": utcnow().strftime("%d %B %Y")},
        )
        kw["digest_id"] = digest.id
    if state in (OutboxState.FAILED, OutboxState.DEAD, OutboxState.SENT):
        kw.setdefault("attempts", 1)
    msg = OutboxMessage(
        message_id=kw.pop("message_id", f"<test-{uuid.uuid4().hex}@atom-lab.org>"),
        template=kw.pop("template", "auth/welcome"),
        to_addr=kw.pop("to_addr", f"person{n}@example.org"),
        context=kw.pop("context", {"name": f"Person {n}", "has_affiliation": False}),
        state=state,
        **kw,
    )
    session.add(msg)
    session.flush()
    return msg


#: The kinds of visitor every route-by-role matrix test covers.
ROLE_NAMES = ["anonymous", "researcher", "official", "reviewer", "steward", "officer", "admin"]
LOGGED_IN = frozenset(ROLE_NAMES) - {"anonymous"}
_ROLE_OF = {
    "researcher": Role.RESEARCHER,
    "official": Role.SIGNING_OFFICIAL,
    "reviewer": Role.REVIEWER,
    "steward": Role.DATA_STEWARD,
    "officer": Role.PROGRAM_OFFICER,
    "admin": Role.ADMIN,
}


def make_actor(session: AnySession, role_name: str, own: Institution) -> User | None:
    """A visitor of kind ``role_name`` (None for anonymous); researchers and signing officials
    belong to ``own``."""
    if role_name == "anonymous":
        return None
    return make_user(session, _ROLE_OF[role_name], institution=own)


# --- Resources, calls and proposals -----------------------------------------------------------

#: Text long enough to satisfy the submit checklist (portal.proposals.checklist).
_ABSTRACT = "We study how open language models learn to reason over long scientific documents. " * 4
_PLAN = "Month 1-3: build the corpus and baselines. Month 4-9: train and evaluate the models. " * 8
_JUSTIFICATION = "Pre-training runs of 1B-parameter models, three seeds each, with ablations."


def make_resource(session: AnySession, **kw: Any) -> Resource:
    """A GPU pool in the catalog (a cluster of its own, so any number may be made)."""
    n = next(_seq)
    resource = Resource(
        cluster=kw.pop("cluster", f"cluster-{n}"),
        gpu_class=kw.pop("gpu_class", "H100"),
        capacity_hours=kw.pop("capacity_hours", 1_000_000),
        period_months=kw.pop("period_months", 12),
        description=kw.pop("description", "Nodes of 8 GPUs with InfiniBand."),
        **kw,
    )
    session.add(resource)
    session.flush()
    return resource


def make_call(
    session: AnySession,
    *,
    state: CallState = CallState.OPEN,
    endorsement_required: bool = True,
    resources: int = 1,
    budget_hours: int = 100_000,
    max_request_hours: int = 10_000,
    **kw: Any,
) -> Call:
    """A call in ``state`` offering ``resources`` new resources (each ``budget_hours``, at most
    ``max_request_hours`` per proposal), with a two-criterion rubric; rolling unless given dates."""
    n = next(_seq)
    call = Call(
        title=kw.pop("title", f"Open models call {n}"),
        description=kw.pop("description", "Compute for **open** research."),
        eligibility=kw.pop("eligibility", "Faculty at partner institutions."),
        state=state,
        endorsement_required=endorsement_required,
        **kw,
    )
    for _ in range(resources):
        call.resources.append(
            CallResource(
                resource=make_resource(session),
                budget_hours=budget_hours,
                max_request_hours=max_request_hours,
            )
        )
    call.criteria = [
        RubricCriterion(position=0, name="Scientific merit", weight=2, scale_max=5),
        RubricCriterion(position=1, name="Openness", weight=1, scale_max=5),
    ]
    session.add(call)
    session.flush()
    return call


def make_proposal(
    session: AnySession,
    *,
    call: Call | None = None,
    pi: User | None = None,
    state: ProposalState = ProposalState.DRAFT,
    complete: bool = False,
    **kw: Any,
) -> Proposal:
    """A proposal by ``pi`` (a researcher at a new partner institution if not given) to ``call``
    (a new open one if not given), in ``state``. ``complete``: everything the checklist asks for
    is filled in (a proposal ever submitted always is). A proposal ever submitted has
    ``submitted_at`` and version 1 with its frozen ``ProposalVersion``; endorsed or returned ones
    name the deciding official only if ``endorsed_by_id`` is given."""
    call = call or make_call(session)
    pi = pi or make_user(session, Role.RESEARCHER)
    institution = kw.pop("institution", None) or next(
        (
            a.institution
            for a in pi.affiliations
            if a.state == AffiliationState.ACTIVE
            and a.institution.state == InstitutionState.PARTNER
        ),
        None,
    )
    if institution is None:
        institution = make_institution(session)
    submitted = state != ProposalState.DRAFT
    complete = complete or submitted
    n = next(_seq)
    proposal = Proposal(
        call=call,
        institution=institution,
        title=kw.pop("title", f"Reasoning in open models {n}"),
        state=ProposalState.DRAFT,
        **kw,
    )
    proposal.team.append(TeamMember(user=pi, role=TeamRole.PI))
    if complete:
        proposal.abstract, proposal.plan = _ABSTRACT, _PLAN
        proposal.field = FIELDS[1]
        proposal.start_date, proposal.duration_months = dt.date(2027, 1, 1), 12
        proposal.requests = [
            ResourceRequest(
                call_resource=cr,
                hours=min(1000, cr.max_request_hours),
                justification=_JUSTIFICATION,
            )
            for cr in call.resources[:1]
        ]
        proposal.outputs = [
            PlannedOutput(kind=OutputKind.WEIGHTS, license="Apache-2.0", description="Weights")
        ]
        proposal.attachments = [
            Attachment(
                kind=AttachmentKind.DESCRIPTION,
                stored_name=uuid.uuid4().hex,
                original_name="description.pdf",
                size_bytes=1234,
                pages=3,
                sha256="0" * 64,
                uploaded_by_id=pi.id,
            )
        ]
    session.add(proposal)
    session.flush()
    if submitted:
        proposal.state = state
        proposal.submitted_at = proposal.state_changed_at = utcnow()
        proposal.version = 1
        session.add(
            ProposalVersion(
                proposal=proposal, number=1, submitted_by_id=pi.id, snapshot=snapshot(proposal)
            )
        )
        if state == ProposalState.RETURNED:
            proposal.decision_note = proposal.decision_note or "Please add the budget letter."
        if state in (ProposalState.REVISE, ProposalState.DECLINED, ProposalState.ACTIVE):
            # Decided after review: when, and (for an active project) the GPU-hours awarded.
            proposal.decided_at = utcnow()
            if state == ProposalState.ACTIVE:
                proposal.awards = [
                    Award(call_resource_id=r.call_resource_id, hours=r.hours)
                    for r in proposal.requests
                ]
        session.flush()
    return proposal


# --- Reviewers and assignments ----------------------------------------------------------------


def make_reviewer(
    session: AnySession,
    *,
    expertise: Iterable[str] = (),
    load_limit: int = 5,
    institution: Institution | None = None,
    **kw: Any,
) -> User:
    """A user in the reviewer pool (the reviewer role) with a ``ReviewerProfile``; when
    ``institution`` is given, also a researcher there (an active affiliation)."""
    roles = (Role.REVIEWER, Role.RESEARCHER) if institution is not None else (Role.REVIEWER,)
    user = make_user(session, *roles, institution=institution, **kw)
    session.add(
        ReviewerProfile(
            user_id=user.id, expertise=sorted({w.lower() for w in expertise}), load_limit=load_limit
        )
    )
    session.flush()
    return user


def make_assignment(
    session: AnySession,
    *,
    proposal: Proposal | None = None,
    reviewer: User | None = None,
    state: AssignmentState = AssignmentState.INVITED,
    **kw: Any,
) -> Assignment:
    """``reviewer`` (a new one if not given) asked to review ``proposal`` (a new one in review if
    not given), in ``state``; an answered one has ``decided_at`` (and a reason where the answer
    needs one). Conflicts are not checked: make the reviewer's facts as the test needs them."""
    proposal = proposal or make_proposal(session, state=ProposalState.IN_REVIEW)
    reviewer = reviewer or make_reviewer(session)
    if state != AssignmentState.INVITED:
        kw.setdefault("decided_at", utcnow())
    if state in (AssignmentState.DECLINED, AssignmentState.CONFLICT):
        kw.setdefault("reason", "I cannot review this one.")
    assignment = Assignment(
        proposal_id=proposal.id,
        reviewer_id=reviewer.id,
        state=state,
        due_at=kw.pop("due_at", utcnow() + dt.timedelta(days=21)),
        **kw,
    )
    session.add(assignment)
    session.flush()
    return assignment


# --- Agreements --------------------------------------------------------------------------------

#: A body using the placeholders of each kind (``portal.agreements.text.FIELDS``).
AGREEMENT_BODIES = {
    AgreementKind.PARTNERSHIP: "# Partnership\n\n{{ institution }} ({{ ror_id }}) and {{ lab }} "
    "agree to work together, from {{ today }}.",
    AgreementKind.CONTRIBUTION: "# Contribution\n\n{{ pi }} of {{ institution }} will release "
    "{{ outputs }} from “{{ project }}”, using {{ total_hours }} GPU-hours ({{ hours }}).",
    AgreementKind.DATA_USE: "# Data use\n\n{{ researcher }} uses {{ dataset }} for {{ purpose }}.",
}


def make_agreement_template(
    session: AnySession,
    *,
    kind: AgreementKind = AgreementKind.PARTNERSHIP,
    state: VersionState = VersionState.PUBLISHED,
    body: str | None = None,
    auto_issue: bool = False,
    **kw: Any,
) -> AgreementTemplate:
    """A template of ``kind`` with one version in ``state`` (published by default)."""
    n = next(_seq)
    template = AgreementTemplate(
        kind=kind, title=kw.pop("title", f"{kind.label} {n}"), auto_issue=auto_issue, **kw
    )
    body = body or AGREEMENT_BODIES[kind]
    published = state != VersionState.DRAFT
    template.versions.append(
        TemplateVersion(
            number=1,
            body=body,
            state=state,
            published_at=utcnow() if published else None,
            text_sha256=sha256(body) if published else None,
        )
    )
    session.add(template)
    session.flush()
    return template


def make_agreement(
    session: AnySession,
    *,
    kind: AgreementKind = AgreementKind.PARTNERSHIP,
    institution: Institution | None = None,
    proposal: Proposal | None = None,
    state: AgreementState = AgreementState.AWAITING,
    signed: int = 0,
    template: AgreementTemplate | None = None,
) -> Agreement:
    """An agreement of ``kind`` (partnership: for ``institution``; contribution: for ``proposal``,
    an active project if not given) in ``state``, its first ``signed`` parties signed (every party,
    when it is active or superseded)."""
    template = template or make_agreement_template(session, kind=kind)
    version = template.versions[-1]
    today = utcnow().date()
    if kind == AgreementKind.CONTRIBUTION:
        proposal = proposal or make_proposal(session, state=ProposalState.ACTIVE)
        institution = proposal.institution
        pi = next(m.user_id for m in proposal.team if m.role == TeamRole.PI)
        parties = [(PartyRole.PI, pi, None), (PartyRole.SIGNING_OFFICIAL, None, institution.name)]
        fields = project_fields(proposal, lab="ATOM Lab", today=today)
        subject = (SubjectType.PROJECT, proposal.id, proposal.title)
    else:
        institution = institution or make_institution(session, state=InstitutionState.UNDER_REVIEW)
        parties = [(PartyRole.SIGNING_OFFICIAL, None, institution.name)]
        fields = institution_fields(institution, lab="ATOM Lab", today=today)
        subject = (SubjectType.INSTITUTION, institution.id, institution.name)
    parties.append((PartyRole.PROGRAM, None, "ATOM Lab"))
    text = fill(version.body, fields)
    done = state in (AgreementState.ACTIVE, AgreementState.SUPERSEDED)
    agreement = Agreement(
        version_id=version.id,
        kind=kind,
        title=f"{template.title} — {subject[2]}",
        subject_type=subject[0],
        subject_id=subject[1],
        institution_id=institution.id,
        proposal_id=proposal.id if proposal else None,
        text=text,
        text_sha256=sha256(text),
        state=state,
        completed_at=utcnow() if done else None,
    )
    for i, (role, user_id, behalf) in enumerate(parties, start=1):
        slot = Signature(position=i, role=role, user_id=user_id, on_behalf_of=behalf)
        if done or i <= signed:
            signer = user_id or _signer_for(session, role, institution).id
            slot.state = SignatureState.SIGNED
            slot.signed_by_id, slot.signed_at = signer, utcnow()
            slot.typed_name, slot.text_sha256 = "Signed in a factory", agreement.text_sha256
            slot.ip, slot.user_agent = "192.0.2.1", "pytest"
        agreement.signatures.append(slot)
    session.add(agreement)
    session.flush()
    return agreement


def _signer_for(session: AnySession, role: PartyRole, institution: Institution) -> User:
    if role == PartyRole.SIGNING_OFFICIAL:
        return make_user(session, Role.SIGNING_OFFICIAL, institution=institution)
    return make_user(session, Role.PROGRAM_OFFICER)


# --- Allocations --------------------------------------------------------------------------------


def make_allocation(session: AnySession, *, hours: int = 1000, usable: bool = True) -> Allocation:
    """An allocation of ``hours`` GPU-hours made the real way: a proposal in review approved by a
    program officer (``decide_proposal``; ``allocate_awards`` takes the hours out of the call's
    budget). ``usable``: the project's contribution agreement is fully signed first, so the
    allocation is active at once; otherwise it is pending. Needs an app context (mail links)."""
    from sqlalchemy import select

    from portal.proposals.services import decide_proposal

    call = make_call(session, budget_hours=max(100_000, hours), max_request_hours=max(1000, hours))
    proposal = make_proposal(session, call=call, state=ProposalState.IN_REVIEW)
    (request,) = proposal.requests
    request.hours = hours
    if usable:
        make_agreement(
            session, kind=AgreementKind.CONTRIBUTION, proposal=proposal, state=AgreementState.ACTIVE
        )
    officer = make_user(session, Role.PROGRAM_OFFICER)
    decide_proposal(
        session, proposal, "approve", actor=officer, awards={request.call_resource_id: hours}
    )
    return session.scalars(select(Allocation).where(Allocation.proposal_id == proposal.id)).one()


def make_project_allocation(
    session: AnySession,
    *,
    pi: User | None = None,
    call: Call | None = None,
    officer: User | None = None,
    hours: int = 1000,
    usable: bool = True,
    title: str | None = None,
) -> Allocation:
    """Like ``make_allocation``, for a project led by ``pi`` (a researcher at a new partner
    institution if not given) in ``call`` (a new one if not given; give one with a big budget to
    make many allocations on one resource), approved by ``officer`` (a new program officer if not
    given). ``title``: the project's title."""
    from sqlalchemy import select

    from portal.proposals.services import decide_proposal

    call = call or make_call(
        session, budget_hours=max(100_000, hours), max_request_hours=max(1000, hours)
    )
    extra: dict[str, Any] = {"title": title} if title is not None else {}
    proposal = make_proposal(session, call=call, pi=pi, state=ProposalState.IN_REVIEW, **extra)
    (request,) = proposal.requests
    request.hours = hours
    if usable:
        make_agreement(
            session, kind=AgreementKind.CONTRIBUTION, proposal=proposal, state=AgreementState.ACTIVE
        )
    decide_proposal(
        session,
        proposal,
        "approve",
        actor=officer or make_user(session, Role.PROGRAM_OFFICER),
        awards={request.call_resource_id: hours},
    )
    return session.scalars(select(Allocation).where(Allocation.proposal_id == proposal.id)).one()


# --- Datasets -----------------------------------------------------------------------------------


def make_dataset(
    session: AnySession,
    *,
    tier: AccessTier = AccessTier.CONTROLLED,
    state: DatasetState = DatasetState.PUBLISHED,
    stewards: Iterable[User] | None = None,
    institution_signs: bool = False,
    **kw: Any,
) -> Dataset:
    """A catalog entry of ``tier`` in ``state`` (listed by default); a controlled one has a
    published data-use agreement template and ``stewards`` (one new data steward if not given)."""
    n = next(_seq)
    template = None
    if tier == AccessTier.CONTROLLED:
        template = kw.pop("dua_template", None) or make_agreement_template(
            session, kind=AgreementKind.DATA_USE
        )
    dataset = Dataset(
        slug=kw.pop("slug", f"dataset-{n}"),
        name=kw.pop("name", f"Dataset {n}"),
        summary=kw.pop("summary", "A corpus for tests."),
        licence=kw.pop("licence", "CC-BY-4.0"),
        tier=tier,
        state=state,
        dua_template_id=template.id if template else None,
        institution_signs=institution_signs,
        location=kw.pop("location", f"s3://atom-datasets/dataset-{n}/"),
        **kw,
    )
    session.add(dataset)
    session.flush()
    if stewards is None:
        stewards = [make_user(session, Role.DATA_STEWARD)] if tier == AccessTier.CONTROLLED else []
    for steward in stewards:
        session.add(DatasetSteward(dataset_id=dataset.id, user_id=steward.id))
    session.flush()
    session.expire(dataset, ["stewards"])
    return dataset


def make_access_request(
    session: AnySession,
    *,
    dataset: Dataset | None = None,
    user: User | None = None,
    state: RequestState = RequestState.SUBMITTED,
) -> AccessRequest:
    """A request by ``user`` (a researcher at a new partner if not given) for ``dataset`` (a new
    controlled one if not given), in ``state`` with what that state implies (an approved one has
    an end date and its decider; no grant is made: use ``make_grant`` for that)."""
    dataset = dataset or make_dataset(session)
    user = user or make_user(session, Role.RESEARCHER)
    (institution_id,) = user.institution_ids_for(Role.RESEARCHER) or {make_institution(session).id}
    decided = state in (RequestState.APPROVED, RequestState.DECLINED)
    request = AccessRequest(
        dataset_id=dataset.id,
        user_id=user.id,
        institution_id=institution_id,
        intended_use="Fine-tuning an open model on it and publishing the evaluation.",
        state=state,
        decided_at=utcnow() if decided else None,
        decision_note="Because." if state != RequestState.SUBMITTED else None,
        ends_on=utcnow().date() + dt.timedelta(days=180)
        if state == RequestState.APPROVED
        else None,
    )
    session.add(request)
    session.flush()
    return request


def make_grant(
    session: AnySession,
    *,
    dataset: Dataset | None = None,
    user: User | None = None,
    signed: bool = True,
    days: int = 180,
) -> Grant:
    """Access made the real way: a request approved by a steward of ``dataset`` (a new controlled
    one if not given) for ``days``; ``signed``: the researcher then signs the data-use agreement,
    so the grant is active (else it is pending). Needs an app context (mail links)."""
    from portal.agreements.services import sign
    from portal.datasets import services

    dataset = dataset or make_dataset(session)
    request = make_access_request(session, dataset=dataset, user=user)
    steward = dataset.stewards[0].user
    services.approve(
        session, request, actor=steward, ends_on=utcnow().date() + dt.timedelta(days=days)
    )
    grant = request.grant
    assert grant is not None
    if signed:
        agreement = grant.agreement
        assert agreement is not None
        for slot in agreement.signatures:
            signer = slot.user or _signer_for(session, slot.role, grant.institution)
            sign(
                session,
                slot,
                actor=signer,
                typed_name=signer.display_name,
                confirmed=True,
                shown_sha256=agreement.text_sha256,
                ip="192.0.2.1",
                user_agent="pytest",
            )
    return grant
