"""The benchmark generator's datasets, dataset access and the other agreements (see
portal/dev/datagen.py): run after the proposals and allocations generators, from what they left in
the database.

What it makes, at the scale given (``Scale.datasets``, ``grants``, ``agreements``, ``outbox``):

- **The catalog**: datasets in every tier (open, registered, controlled; some controlled ones
  co-signed by the researcher's institution), most listed, a few drafts and retired ones, each with
  one or two stewards — the steward persona stewards every tenth, a few generated researchers are
  given the data steward role for the rest. Proposals pick catalog datasets; the stewards of the
  controlled ones were asked (once the proposal reached review) and pre-approved or refused some.
- **Access**: grants to researchers of partner (and suspended) institutions — most active, many
  expired, some waiting on their data-use agreement, revoked, ended or suspended with their
  institution — and access requests in every state: each controlled grant comes from an approved
  request (a project's pre-approval, for some), others wait on a steward, were sent back, declined
  or withdrawn; some ask for more time on access held. One live grant and one open request per
  person and dataset, as the database demands.
- **Agreements**, up to ``Scale.agreements`` with the partnership agreements ``datagen`` made: a
  project contribution agreement for each active project not yet having one (PI, then the
  institution's signing official, then the program's countersignature) — signed wherever the
  project's allocations are usable, otherwise waiting on the next signature, declined, or withdrawn
  and issued again — and a data-use agreement for each controlled grant (the researcher, then the
  institution where the dataset asks for it), in the state its grant implies. Texts are the
  template version filled in (``portal.agreements.text``), signatures bound to their SHA-256. The
  templates are the database's own (the demo's) where it has them; otherwise they are made here,
  the co-signed datasets' with a second version that asked for re-consent: agreements signed on
  the first are being signed again, and those signed again are superseded.
- **Mail**: ``Scale.outbox`` outbox rows of the domains' real kinds, with the context each kind's
  sender gives, to the generated people — most sent, recent ones queued, failing with retries,
  held for or gathered in a digest, a few dead — with their delivery attempts; and the audit
  events of the decisions made here.

The personas get their load: the PI holds and waits on access and has agreements to sign, the
signing official of the first institution has agreements waiting for their signature, the steward
has requests to decide, the program officer countersignatures to give. Rows are bulk INSERTs; the
same seed gives the same data.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, TypeVar

from flask import current_app
from jinja2 import StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import select

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
from portal.agreements.text import sha256
from portal.allocations.models import Allocation, AllocationState
from portal.auth.models import Role, RoleGrant, User
from portal.core.audit import AuditEvent
from portal.core.dates import add_months
from portal.datasets.models import (
    LIVE_GRANTS,
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
from portal.dev.datagen import Context, Scale
from portal.dev.demo_agreements import CONTRIBUTION_V1, DATA_USE_V1
from portal.institutions.models import InstitutionState
from portal.notifications.kinds import get_kind
from portal.notifications.models import (
    Delivery,
    DeliveryAttempt,
    NotificationPreference,
    OutboxMessage,
    OutboxState,
)
from portal.notifications.rendering import external_url, render_summary
from portal.proposals.models import (
    Award,
    Call,
    CallResource,
    OutputKind,
    PlannedOutput,
    Proposal,
    ProposalState,
    Resource,
    TeamMember,
    TeamRole,
)

_K = TypeVar("_K")

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
#: Where generated signatures say they came from: an RFC 5737 documentation address.
SIGNER_IP = "192.0.2.30"
USER_AGENT = "datagen"
#: The data-use template of the co-signed datasets, whose second version asked for re-consent.
COSIGNED_TITLE = "Sensitive-data use agreement (co-signed)"
COSIGNED_V2 = (
    DATA_USE_V1.replace(
        "## 3. Publication",
        """\
## 3. Security

Work with the data only in the Lab's secure enclave, from a device managed by {{ institution }};
the Lab logs every session.

## 4. Publication""",
    )
    .replace("## 4. Ending", "## 5. Ending")
    .replace("## 5. Signatures", "## 6. Signatures")
)
COSIGNED_V2_NOTE = (
    "Adds section 3, security: the data is used only in the Lab's secure enclave, from a managed "
    "device. Access already given goes on under the first version until the re-consent date."
)
#: How long ago the second co-signed version was published, and the grace it gives.
RECONSENT_AGO = dt.timedelta(days=25)
RECONSENT_GRACE = dt.timedelta(days=65)


# --- what is read from the database ----------------------------------------------------------


@dataclass
class _Project:
    """An active project at a generated institution, as its contribution agreement needs it."""

    id: int
    title: str
    institution_id: int
    decided_at: dt.datetime
    decided_by: int
    pi: int
    #: The placeholders of the contribution template (``text.project_fields``) but ``today``.
    fields: dict[str, str]
    allocations: list[AllocationState] = field(default_factory=list)
    #: when its allocations became usable, where the allocations tell (one still active)
    usable_from: dt.datetime | None = None


@dataclass
class _Proposal:
    id: int
    title: str
    state: ProposalState
    institution_id: int
    call_title: str
    created_at: dt.datetime
    submitted_at: dt.datetime | None
    decided_at: dt.datetime | None
    decision_reason: str | None
    team: list[tuple[int, TeamRole]] = field(default_factory=list)

    @property
    def pi(self) -> int | None:
        return next((u for u, role in self.team if role == TeamRole.PI), None)


@dataclass
class _World:
    """The generated institutions, people and proposals this step builds on."""

    inst_name: dict[int, str]
    inst_state: dict[int, InstitutionState]
    #: researcher -> the partner (or suspended partner) institution they are an active member of
    home: dict[int, int]
    names: dict[int, str]
    emails: dict[int, str]
    joined: dict[int, dt.datetime]
    #: the proposals at generated institutions, by id (in id order)
    proposals: dict[int, _Proposal]
    projects: list[_Project]
    lab: str


def _date(day: dt.date | None) -> str:
    return day.strftime("%d %B %Y") if day else "(not set)"


def _until(moment: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    return min(moment, now) if moment is not None else None


def _read_world(ctx: Context) -> _World:
    session = ctx.session
    inst_name = {i["id"]: str(i["name"]) for i in ctx.institutions}
    inst_state = {i["id"]: InstitutionState(i["state"]) for i in ctx.institutions}
    joinable = (InstitutionState.PARTNER, InstitutionState.SUSPENDED)
    home = {
        uid: inst
        for inst, uids in ctx.members.items()
        if inst_state.get(inst) in joinable
        for uid in uids
    }
    names, emails, joined = {}, {}, {}
    people = User.id.between(ctx.people.start, ctx.people.stop - 1)
    for uid, name, email, created in session.execute(
        select(User.id, User.display_name, User.email, User.created_at).where(people)
    ):
        names[uid], emails[uid], joined[uid] = name, email or "", created
    # The generated institutions are the last ones made.
    generated = Proposal.institution_id >= min(inst_name, default=0)
    calls = dict(session.execute(select(Call.id, Call.title)).all())
    proposals = {
        row.id: _Proposal(
            row.id,
            row.title,
            row.state,
            row.institution_id,
            calls.get(row.call_id, ""),
            min(row.created_at, ctx.now),
            _until(row.submitted_at, ctx.now),
            _until(row.decided_at, ctx.now),
            row.decision_reason,
        )
        for row in session.execute(
            select(
                Proposal.id,
                Proposal.title,
                Proposal.state,
                Proposal.institution_id,
                Proposal.call_id,
                Proposal.created_at,
                Proposal.submitted_at,
                Proposal.decided_at,
                Proposal.decision_reason,
            )
            .where(generated)
            .order_by(Proposal.id)
        )
        if row.institution_id in inst_name
    }
    for pid, uid, role in session.execute(
        select(TeamMember.proposal_id, TeamMember.user_id, TeamMember.role)
        .join(Proposal, Proposal.id == TeamMember.proposal_id)
        .where(generated)
        .order_by(TeamMember.id)
    ):
        if pid in proposals:
            proposals[pid].team.append((uid, role))
    return _World(
        inst_name=inst_name,
        inst_state=inst_state,
        home=home,
        names=names,
        emails=emails,
        joined=joined,
        proposals=proposals,
        projects=_read_projects(ctx, proposals, inst_name, names),
        lab=str(current_app.config["LAB_NAME"]),
    )


def _read_projects(
    ctx: Context,
    proposals: dict[int, _Proposal],
    inst_name: dict[int, str],
    names: dict[int, str],
) -> list[_Project]:
    """The active projects at generated institutions that have no contribution agreement yet,
    with what their agreement's text and state need: awards, outputs, their allocations."""
    session = ctx.session
    covered = set(
        session.scalars(
            select(Agreement.subject_id).where(
                Agreement.kind == AgreementKind.CONTRIBUTION,
                Agreement.subject_type == SubjectType.PROJECT,
            )
        )
    )
    active = {
        pid: p
        for pid, p in proposals.items()
        if p.state == ProposalState.ACTIVE
        and pid not in covered
        and p.pi is not None
        and p.institution_id in ctx.officials
    }
    of_active = select(Proposal.id).where(
        Proposal.state == ProposalState.ACTIVE, Proposal.institution_id >= min(inst_name, default=0)
    )
    extra = {
        row.id: row
        for row in session.execute(
            select(
                Proposal.id,
                Proposal.start_date,
                Proposal.duration_months,
                Proposal.decided_by_id,
            ).where(Proposal.id.in_(of_active))
        )
    }
    awards: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for pid, hours, gpu_class, cluster in session.execute(
        select(Award.proposal_id, Award.hours, Resource.gpu_class, Resource.cluster)
        .join(CallResource, CallResource.id == Award.call_resource_id)
        .join(Resource, Resource.id == CallResource.resource_id)
        .where(Award.proposal_id.in_(of_active))
        .order_by(Award.id)
    ):
        awards[pid].append((f"{gpu_class} on {cluster}", hours))  # Resource.name
    outputs: dict[int, list[str]] = defaultdict(list)
    for pid, kind, licence, description in session.execute(
        select(
            PlannedOutput.proposal_id,
            PlannedOutput.kind,
            PlannedOutput.license,
            PlannedOutput.description,
        )
        .where(PlannedOutput.proposal_id.in_(of_active))
        .order_by(PlannedOutput.id)
    ):
        label = OutputKind(kind).label
        outputs[pid].append(f"{label}: {description or label} ({licence})")
    allocations: dict[int, list[AllocationState]] = defaultdict(list)
    usable_from: dict[int, dt.datetime] = {}
    for pid, state, renewal, changed in session.execute(
        select(
            Allocation.proposal_id,
            Allocation.state,
            Allocation.renewed_from_id,
            Allocation.state_changed_at,
        )
        .where(Allocation.proposal_id.in_(of_active))
        .order_by(Allocation.id)
    ):
        allocations[pid].append(AllocationState(state))
        if state == AllocationState.ACTIVE and renewal is None:
            # Still active since the agreement's last signature made it usable.
            usable_from[pid] = min(changed, usable_from.get(pid, changed))
    projects = []
    for pid, p in active.items():
        assert p.pi is not None
        row = extra[pid]
        given = sorted(awards[pid], key=lambda a: a[0])
        decided = p.decided_at or p.submitted_at or p.created_at
        projects.append(
            _Project(
                id=pid,
                title=p.title,
                institution_id=p.institution_id,
                decided_at=decided,
                decided_by=row.decided_by_id or ctx.officer,
                pi=p.pi,
                fields={
                    "project": p.title,
                    "pi": names.get(p.pi) or "(none)",
                    "institution": inst_name[p.institution_id],
                    "call": p.call_title,
                    "hours": "; ".join(f"{h:,} GPU-hours on {r}" for r, h in given) or "(none)",
                    "total_hours": f"{sum(h for _, h in given):,}",
                    "start_date": _date(row.start_date),
                    "duration_months": str(row.duration_months or "(not set)"),
                    "outputs": "; ".join(outputs[pid]) or "(none)",
                },
                allocations=allocations[pid],
                usable_from=usable_from.get(pid),
            )
        )
    return projects


# --- agreement templates ---------------------------------------------------------------------

#: The sandbox ``portal.agreements.text.fill`` renders in, compiled once per version here (filling
#: thousands of agreements one ``fill`` each would compile the body each time).
_SANDBOX = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass
class _Version:
    id: int
    template_id: int
    template_title: str
    published_at: dt.datetime
    compiled: Template
    reconsent_by: dt.date | None = None

    def fill(self, fields: dict[str, str]) -> str:
        return self.compiled.render(**fields)


def _version(v: TemplateVersion) -> _Version:
    assert v.published_at is not None
    return _Version(
        v.id,
        v.template_id,
        v.template.title,
        v.published_at,
        _SANDBOX.from_string(v.body),
        v.reconsent_by,
    )


def _current(
    ctx: Context,
    kind: AgreementKind,
    *,
    title: str,
    description: str,
    body: str,
    exclude: str | None = None,
) -> _Version:
    """The version agreements of ``kind`` are issued from: the current one of the automatic
    template (the demo's), else of any template of the kind, else of a template made here
    (published three years ago, before any generated agreement)."""
    templates = ctx.session.scalars(
        select(AgreementTemplate)
        .where(AgreementTemplate.kind == kind)
        .order_by(AgreementTemplate.auto_issue.desc(), AgreementTemplate.id)
    ).all()
    for template in templates:
        if template.current is not None and template.title != exclude:
            return _version(template.current)
    published = ctx.now - dt.timedelta(days=365 * 3 + 30)
    version = TemplateVersion(
        number=1,
        body=body,
        state=VersionState.PUBLISHED,
        created_at=published - 2 * DAY,
        published_at=published,
        published_by_id=ctx.officer,
        text_sha256=sha256(body),
    )
    ctx.session.add(
        AgreementTemplate(
            kind=kind,
            title=title,
            description=description,
            auto_issue=kind != AgreementKind.DATA_USE and not any(t.auto_issue for t in templates),
            created_by_id=ctx.officer,
            created_at=published - 2 * DAY,
            updated_at=published,
            versions=[version],
        )
    )
    ctx.session.flush()
    return _version(version)


def _cosigned(ctx: Context, existing: _Version | None) -> tuple[_Version, _Version]:
    """The versions the co-signed datasets' data-use agreements are signed on: the first and the
    second version of a template made here, whose second (published ``RECONSENT_AGO``) asked for
    re-consent — or of the one an earlier run made; on top of a database that has its own
    data-use template (the demo's), that template's current version only (no new template)."""
    template = ctx.session.scalar(
        select(AgreementTemplate).where(
            AgreementTemplate.kind == AgreementKind.DATA_USE,
            AgreementTemplate.title == COSIGNED_TITLE,
        )
    )
    if template is not None and len(template.versions) >= 2 and template.current is not None:
        old = next(v for v in template.versions if v.number == template.current.number - 1)
        return _version(old), _version(template.current)
    if existing is not None:
        return existing, existing
    first = ctx.now - dt.timedelta(days=365 * 3 + 30)
    second = ctx.now - RECONSENT_AGO
    v1 = TemplateVersion(
        number=1,
        body=DATA_USE_V1,
        state=VersionState.SUPERSEDED,
        created_at=first - DAY,
        published_at=first,
        published_by_id=ctx.officer,
        text_sha256=sha256(DATA_USE_V1),
    )
    v2 = TemplateVersion(
        number=2,
        body=COSIGNED_V2,
        change_note=COSIGNED_V2_NOTE,
        state=VersionState.PUBLISHED,
        reconsent_by=(second + RECONSENT_GRACE).date(),
        created_at=second - 7 * DAY,
        published_at=second,
        published_by_id=ctx.officer,
        text_sha256=sha256(COSIGNED_V2),
    )
    ctx.session.add(
        AgreementTemplate(
            kind=AgreementKind.DATA_USE,
            title=COSIGNED_TITLE,
            description="For datasets whose provider wants the researcher's institution to "
            "co-sign; used in the Lab's secure enclave.",
            created_by_id=ctx.officer,
            created_at=first - DAY,
            updated_at=second,
            versions=[v1, v2],
        )
    )
    ctx.session.flush()
    return _version(v1), _version(v2)


@dataclass
class _Templates:
    contribution: _Version
    data_use: _Version
    #: the first and the second version of the co-signed datasets' template (the same one when
    #: no version asked for re-consent)
    cosigned: tuple[_Version, _Version]

    @property
    def reconsent(self) -> bool:
        return self.cosigned[0] is not self.cosigned[1]


def _templates(ctx: Context) -> _Templates:
    contribution = _current(
        ctx,
        AgreementKind.CONTRIBUTION,
        title="Project contribution agreement",
        description="Signed for each approved project before its GPU-hours can be used.",
        body=CONTRIBUTION_V1,
    )
    had_data_use = ctx.session.scalar(
        select(AgreementTemplate.id)
        .where(
            AgreementTemplate.kind == AgreementKind.DATA_USE,
            AgreementTemplate.title != COSIGNED_TITLE,
        )
        .limit(1)
    )
    data_use = _current(
        ctx,
        AgreementKind.DATA_USE,
        title="Controlled-data use agreement",
        description="Signed by each researcher granted access to a controlled dataset.",
        body=DATA_USE_V1,
        exclude=COSIGNED_TITLE,
    )
    cosigned = _cosigned(ctx, data_use if had_data_use is not None else None)
    return _Templates(contribution, data_use, cosigned)


# --- rows, made in memory and inserted in bulk -------------------------------------------------


def _insert(ctx: Context, model: type[Any], rows: Iterable[dict[str, Any]]) -> int:
    """``ctx.bulk`` as a Core INSERT of the model's table: each row gives every column and None is
    inserted as NULL. (The ORM's bulk INSERT leaves None values out so that defaults apply, and
    runs one statement per run of rows leaving out the same columns: one per row, here.)"""
    return ctx.bulk(model.__table__, rows)


@dataclass
class _Mail:
    """A mail some step would have enqueued: when, its kind, to whom, and how to build its context
    (built only for the mails chosen for the outbox)."""

    at: dt.datetime
    kind: str
    to: int
    context: Callable[[], dict[str, Any]]


Parties = Sequence[tuple[PartyRole, int | None, str | None]]


def _given(context: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """A mail context built already (one shared by several mails)."""
    return lambda: context


@dataclass
class _Rows:
    """Everything this step makes, with the ids it will be inserted under, the mails it would have
    sent and the audit events of its decisions."""

    ctx: Context
    world: _World
    next_agreement: int
    next_signature: int
    next_grant: int
    next_request: int
    agreements: list[dict[str, Any]] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)
    grants: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    mails: list[_Mail] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def between(self, start: dt.datetime, end: dt.datetime) -> dt.datetime:
        """A moment from ``start`` to ``end``, never after now (``start`` if the span is empty)."""
        return min(self.ctx.when(start, end), self.ctx.now)

    def event(
        self, at: dt.datetime, actor: int | None, action: str, table: str, obj: int, **details: Any
    ) -> None:
        """An audit event as the workflow runner writes it (a person on the web, or the sweep)."""
        self.audit.append(
            {
                "occurred_at": at,
                "actor_id": actor,
                "action": action,
                "object_type": table,
                "object_id": obj,
                "ip": SIGNER_IP if actor is not None else None,
                "channel": "web" if actor is not None else "cli",
                "details": {k: v for k, v in details.items() if v is not None},
            }
        )

    def mail(
        self, at: dt.datetime, kind: str, to: int, context: Callable[[], dict[str, Any]]
    ) -> None:
        if to in self.world.emails and at <= self.ctx.now:
            self.mails.append(_Mail(at, kind, to, context))

    def signer(self, role: PartyRole, named: int | None, institution: int) -> int:
        """Who fills a slot: the named person; for a slot named by role, the institution's signing
        official or the program officer (``permissions.signers_of``: the one holding the role)."""
        if named is not None:
            return named
        if role == PartyRole.SIGNING_OFFICIAL:
            return self.ctx.officials[institution]
        return self.ctx.officer

    def agreement(
        self,
        *,
        version: _Version,
        kind: AgreementKind,
        name: str,
        subject: tuple[SubjectType, int],
        institution: int,
        proposal: int | None,
        fields: dict[str, str],
        parties: Parties,
        issued_at: dt.datetime,
        issued_by: int,
        state: AgreementState,
        signed: int = 0,
        ended_at: dt.datetime | None = None,
        completed_at: dt.datetime | None = None,
        reason: str | None = None,
        replaces: tuple[int, dt.date] | None = None,
        reconsent_by: dt.date | None = None,
    ) -> int:
        """One agreement of ``version`` filled in with ``fields`` (and the issue date), in
        ``state``: its first ``signed`` parties signed (all of them once completed), the next one
        declined when it was declined. ``ended_at``: when it was completed, declined, withdrawn or
        superseded (``completed_at`` when a superseded one was completed). ``replaces``: the
        agreement it re-issues for re-consent, and that one's re-consent date."""
        now = self.ctx.now
        agreement_id = self.next_agreement
        self.next_agreement += 1
        text = version.fill({"lab": self.world.lab, "today": _date(issued_at.date()), **fields})
        digest = sha256(text)
        done = state in (AgreementState.ACTIVE, AgreementState.SUPERSEDED)
        if done:
            signed = len(parties)
            completed_at = completed_at or ended_at
            assert completed_at is not None
        last = completed_at or ended_at or self.between(issued_at, now)
        times = sorted(self.between(issued_at, last) for _ in range(signed))
        if done:
            times[-1] = last
        title = f"{version.template_title} — {name}"[:300]
        for position, (role, named, behalf) in enumerate(parties, start=1):
            row: dict[str, Any] = {
                "id": self.next_signature,
                "agreement_id": agreement_id,
                "position": position,
                "role": role,
                "user_id": named,
                "on_behalf_of": behalf,
                "state": SignatureState.PENDING,
                "signed_by_id": None,
                "signed_at": None,
                "typed_name": None,
                "ip": None,
                "user_agent": None,
                "text_sha256": None,
                "decline_reason": None,
            }
            self.next_signature += 1
            if position <= signed:
                who = self.signer(role, named, institution)
                row |= {
                    "state": SignatureState.SIGNED,
                    "signed_by_id": who,
                    "signed_at": times[position - 1],
                    "typed_name": self.world.names.get(who, ""),
                    "ip": SIGNER_IP,
                    "user_agent": USER_AGENT,
                    "text_sha256": digest,
                }
                self.event(
                    times[position - 1], who, "signature.sign", "agreement_signatures", row["id"],
                    frm="pending", to="signed", agreement=agreement_id, sha256=digest,
                )  # fmt: skip
            elif position == signed + 1 and state == AgreementState.DECLINED:
                row |= {"state": SignatureState.DECLINED, "decline_reason": reason}
            self.signatures.append(row)
        self.agreements.append(
            {
                "id": agreement_id,
                "version_id": version.id,
                "kind": kind,
                "title": title,
                "subject_type": subject[0],
                "subject_id": subject[1],
                "institution_id": institution,
                "proposal_id": proposal,
                "text": text,
                "text_sha256": digest,
                "state": state,
                "state_changed_at": ended_at or issued_at,
                "issued_by_id": issued_by,
                "completed_at": completed_at if done else None,
                "reason": reason,
                "replaces_id": replaces[0] if replaces else None,
                "reconsent_by": reconsent_by,
                "created_at": issued_at,
                "updated_at": ended_at or last,
            }
        )
        self.counts[kind.value] += 1
        self.counts[f"{kind.value} {state.value}"] += 1
        if state in (AgreementState.DECLINED, AgreementState.WITHDRAWN, AgreementState.ACTIVE):
            action = {"active": "complete", "declined": "decline", "withdrawn": "withdraw"}
            actor = (
                self.signer(*parties[min(signed, len(parties) - 1)][:2], institution)
                if state != AgreementState.WITHDRAWN
                else self.ctx.officer
            )
            self.event(ended_at or last, actor, f"agreement.{action[state.value]}", "agreements",
                       agreement_id, frm="awaiting", to=state.value, reason=reason)  # fmt: skip
        self._mails(
            agreement_id, title, kind, parties, institution, issued_at, issued_by, state, signed,
            times, ended_at, reason, replaces, digest,
        )  # fmt: skip
        return agreement_id

    def _mails(
        self,
        agreement_id: int,
        title: str,
        kind: AgreementKind,
        parties: Parties,
        institution: int,
        issued_at: dt.datetime,
        issued_by: int,
        state: AgreementState,
        signed: int,
        times: list[dt.datetime],
        ended_at: dt.datetime | None,
        reason: str | None,
        replaces: tuple[int, dt.date] | None,
        digest: str,
    ) -> None:
        """What ``portal.agreements.emails`` sends: each party asked in turn (and reminded weekly
        while it waits on them), everyone told of the completion or the refusal."""

        def context(
            slot: int | None = None, done: bool = False, **extra: Any
        ) -> Callable[[], dict[str, Any]]:
            def build() -> dict[str, Any]:
                out = {
                    "title": title,
                    "agreement_kind": kind.label,
                    "url": external_url("agreements.detail", agreement_id=agreement_id),
                    "reconsent": replaces is not None,
                    "reconsent_by": _date(replaces[1]) if replaces else None,
                    "change_note": COSIGNED_V2_NOTE if replaces else "",
                    **extra,
                }
                if slot is not None:
                    out["sign_url"] = external_url("agreements.sign", signature_id=slot)
                if done:
                    out["pdf_url"] = external_url("agreements.pdf", agreement_id=agreement_id)
                    out["verify_url"] = external_url("agreements.verify", agreement_id=agreement_id)
                    out["sha256"] = digest
                return out

            return build

        ask = "agreements/reconsent" if replaces else "agreements/to_sign"
        first_slot = self.next_signature - len(parties)
        asked_at = [issued_at, *times]
        for position in range(1, min(signed + 1, len(parties)) + 1):
            role, named, behalf = parties[position - 1]
            who = self.signer(role, named, institution)
            asking = context(
                first_slot + position - 1, party=role.label + (f" for {behalf}" if behalf else "")
            )
            self.mail(asked_at[position - 1], ask, who, asking)
            if position == signed + 1 and state == AgreementState.AWAITING:
                # Weekly reminders while it waits on them.
                week = asked_at[position - 1] + 3 * DAY + self.ctx.rng.uniform(0, 7) * DAY
                while week <= self.ctx.now:
                    self.mail(week, "agreements/reminder", who, asking)
                    week += 7 * DAY
        told = {self.signer(r, n, institution) for r, n, _ in parties[:signed]}
        told |= {n for _, n, _ in parties if n is not None} | {issued_by}
        if state in (AgreementState.ACTIVE, AgreementState.SUPERSEDED):
            for who in sorted(told):
                self.mail(times[-1], "agreements/signed", who, context(done=True))
        elif state == AgreementState.DECLINED and ended_at is not None:
            role, named, _ = parties[signed]
            decliner = self.signer(role, named, institution)
            declined = context(declined_by=self.world.names.get(decliner, ""), reason=reason)
            for who in sorted(told - {decliner}):
                self.mail(ended_at, "agreements/declined", who, declined)


# --- the catalog -------------------------------------------------------------------------------

#: Subjects of generated datasets: (slug word, name, what it holds).
TOPICS = [
    ("speech", "Speech", "conversations recorded with the speakers' consent, transcribed by hand"),
    ("web", "Web Text", "openly licensed web pages, deduplicated and quality-filtered"),
    ("code", "Source Code", "files under permissive licences with their licence notices"),
    ("math", "Mathematics", "worked problems with step-by-step solutions checked by a solver"),
    ("vision", "Image", "photographs under open licences with human-written captions"),
    ("climate", "Climate Model", "reanalysis fields and model output on a regular grid"),
    ("protein", "Protein Structure", "predicted and solved structures with sequence clusters"),
    ("lectures", "Lecture", "open-courseware lectures with aligned transcripts"),
    ("law", "Legal Text", "court decisions and statutes in the public domain"),
    ("chem", "Chemistry", "reactions and spectra from open laboratory notebooks"),
]
#: Subjects of co-signed controlled datasets (their providers want the institution to sign).
SENSITIVE = [
    ("clinical", "Clinical Notes", "de-identified discharge summaries of a fictional provider"),
    ("essays", "Classroom Essays", "pupils' essays with their teachers' scores and feedback"),
    ("imaging", "Patient Imaging", "de-identified scans with radiologists' reports (fictional)"),
    ("child-speech", "Child Speech", "children reading aloud, recorded at partner schools"),
]
KINDS = [("corpus", "Corpus"), ("benchmark", "Benchmark"), ("collection", "Collection")]
ADJECTIVES = ["Multilingual", "Curated", "Annotated", "Open", "Longitudinal", "Synthetic"]
LICENCES = {
    AccessTier.OPEN: ["CC-BY-4.0", "CC0-1.0", "ODC-By-1.0", "CC-BY-SA-4.0"],
    AccessTier.REGISTERED: ["CC-BY-NC-4.0", "CC-BY-SA-4.0", "ODC-By-1.0", "CDLA-Permissive-2.0"],
    AccessTier.CONTROLLED: ["CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-NC-ND-4.0"],
}
GB = 1_000_000_000


@dataclass
class _Dataset:
    id: int
    slug: str
    name: str
    tier: AccessTier
    state: DatasetState
    max_months: int
    #: co-signed by the researcher's institution, on the co-signed data-use template
    cosigned: bool
    published_at: dt.datetime
    retired_at: dt.datetime | None
    stewards: list[int]
    location: str


def _stewards(ctx: Context, world: _World) -> list[int]:
    """The stewards besides the persona: a few generated researchers given the data steward
    role (lab-wide, as an administrator grants it)."""
    pool = sorted(set(world.home) - set(ctx.personas.values()))
    chosen = sorted(ctx.rng.sample(pool, min(len(pool), max(1, ctx.scale.datasets // 25))))
    _insert(
        ctx,
        RoleGrant,
        (
            {
                "user_id": uid,
                "role": Role.DATA_STEWARD,
                "institution_id": None,
                "granted_by_id": ctx.officer,
                "created_at": ctx.now - 3 * 365 * DAY,
                "updated_at": ctx.now - 3 * 365 * DAY,
            }
            for uid in chosen
        ),
    )
    return chosen


def _catalog(ctx: Context, templates: _Templates, pool: list[int]) -> list[_Dataset]:
    """The datasets and their stewards. The first is controlled and co-signed, the second
    registered, the third open, all three listed; the rest are drawn."""
    rng, now = ctx.rng, ctx.now
    first = ctx.next_id(Dataset)
    persona = ctx.personas.get("steward")
    made: list[_Dataset] = []
    rows: list[dict[str, Any]] = []
    for k in range(ctx.scale.datasets):
        n = first + k
        if k < 3:
            tier, state = list(AccessTier)[2 - k], DatasetState.PUBLISHED
        else:
            tier = rng.choices(list(AccessTier), weights=[3, 4, 3])[0]
            state = rng.choices(list(DatasetState), weights=[4, 90, 6])[0]
        cosigned = tier == AccessTier.CONTROLLED and (k == 0 or rng.random() < 0.3)
        word, topic, holds = rng.choice(SENSITIVE if cosigned else TOPICS)
        kind_slug, kind = rng.choice(KINDS)
        adjective = rng.choice(ADJECTIVES)
        slug = f"dg-{word}-{kind_slug}-{n:04d}"
        name = f"{adjective} {topic} {kind} {n}"
        created = ctx.when(end=now - 200 * DAY)
        published = ctx.when(created + HOUR, created + 20 * DAY)
        retired = ctx.when(published + 180 * DAY, now - 10 * DAY)
        stewards = [persona] if persona is not None and k % 10 == 0 else []
        stewards += rng.sample(pool, min(len(pool), 1 if stewards else rng.choice([1, 1, 2])))
        if not stewards and persona is not None:
            stewards = [persona]
        d = _Dataset(
            n, slug, name, tier, state, rng.choice([6, 12, 12, 12, 18, 24, 36]), cosigned,
            published, retired if state == DatasetState.RETIRED else None, stewards,
            f"s3://atom-datasets/{slug}/",
        )  # fmt: skip
        made.append(d)
        size = int(rng.lognormvariate(4, 1.6) * GB)
        version = f"{k % 5 + 1}.{k % 3}"
        rows.append(
            {
                "id": n,
                "slug": slug,
                "name": name,
                "summary": f"{adjective} {holds} (generated for benchmarks).",
                "description": (
                    f"A generated {kind.lower()} of {holds}, made by the portal's benchmark data "
                    "generator: it describes no real data.\n\n"
                    f"- **Size**: {size / GB:,.1f} GB in {rng.randint(4, 400)} shards\n"
                    "- **Splits**: `train`, `dev` and `test`, fixed by a hash of each record\n"
                    f"- **Version**: {version}\n\n"
                    "Each shard has a `README.md` with its provenance and a checksum file."
                ),
                "version": version,
                "size_bytes": size,
                "licence": rng.choice(LICENCES[tier]),
                "tier": tier,
                "terms": ""
                if tier == AccessTier.OPEN
                else (
                    "- Research use only, as the licence allows.\n"
                    "- Never try to identify a person in the data.\n"
                    f"- Cite the collection as *{name}, ATOM Lab (generated)*."
                ),
                "dua_template_id": None
                if tier != AccessTier.CONTROLLED
                else (templates.cosigned[1] if cosigned else templates.data_use).template_id,
                "institution_signs": cosigned,
                "max_months": d.max_months,
                "location": d.location,
                "state": state,
                "state_changed_at": {
                    DatasetState.DRAFT: created,
                    DatasetState.PUBLISHED: published,
                    DatasetState.RETIRED: retired,
                }[state],
                "created_by_id": ctx.officer,
                "created_at": created,
                "updated_at": created,
            }
        )
    ctx.counts["datasets"] = _insert(ctx, Dataset, rows)
    ctx.counts["dataset stewards"] = _insert(
        ctx,
        DatasetSteward,
        (
            {
                "dataset_id": d.id,
                "user_id": uid,
                "added_at": row["created_at"],
                "added_by_id": ctx.officer,
            }
            for d, row in zip(made, rows, strict=True)
            for uid in d.stewards
        ),
    )
    return made


RETIRE_REASON = "Superseded by a newer edition; access already given runs to its end date."


def _catalog_events(rows: _Rows, datasets: list[_Dataset]) -> None:
    for d in datasets:
        if d.state == DatasetState.DRAFT:
            continue
        rows.event(d.published_at, d.stewards[0], "dataset.publish", "datasets", d.id,
                   frm="draft", to="published")  # fmt: skip
        if d.retired_at is not None:
            rows.event(d.retired_at, rows.ctx.officer, "dataset.retire", "datasets", d.id,
                       frm="published", to="retired", reason=RETIRE_REASON)  # fmt: skip


# --- proposals picking datasets ------------------------------------------------------------------

#: Proposal states in which its stewards have been asked to pre-approve its controlled datasets.
ASKED_STATES = {
    ProposalState.SUBMITTED,
    ProposalState.IN_REVIEW,
    ProposalState.REVISE,
    ProposalState.DECLINED,
    ProposalState.ACTIVE,
}


@dataclass
class _Consent:
    """A controlled dataset pre-approved for an active project (its PI gets access at approval)."""

    proposal: _Proposal
    dataset: _Dataset
    decided_by: int
    note: str
    purpose: str


def _links(ctx: Context, rows: _Rows, datasets: list[_Dataset]) -> list[_Consent]:
    """Catalog datasets about a third of the proposals plan to use, and the stewards' answers for
    the controlled ones (asked once the proposal reached review)."""
    rng, now = ctx.rng, ctx.now
    listed = [d for d in datasets if d.state == DatasetState.PUBLISHED]
    out: list[dict[str, Any]] = []
    consents: list[_Consent] = []
    first = ctx.next_id(ProposalDataset)
    for p in rows.world.proposals.values() if listed else []:
        if rng.random() > 0.35 or p.pi is None:
            continue
        team = {u for u, _ in p.team}
        for d in rng.sample(listed, min(len(listed), rng.choice([1, 1, 2, 3]))):
            if d.published_at > p.created_at:
                continue
            purpose = f"Training and evaluation for “{p.title}”: the dev and test splits."
            link: dict[str, Any] = {
                "id": first + len(out),
                "proposal_id": p.id,
                "dataset_id": d.id,
                "purpose": purpose[:2000],
                "state": ConsentState.NOT_NEEDED,
                "state_changed_at": p.created_at,
                "added_by_id": p.pi,
                "asked_at": None,
                "decided_by_id": None,
                "decided_at": None,
                "decision_note": None,
            }
            out.append(link)
            if d.tier != AccessTier.CONTROLLED:
                continue
            link["state"] = ConsentState.ASKED
            if p.state not in ASKED_STATES or p.submitted_at is None:
                continue
            link["asked_at"] = p.submitted_at
            deciders = [s for s in d.stewards if s not in team]
            for s in deciders:
                rows.mail(p.submitted_at, "datasets/request_received", s,
                          _link_context(rows, d, p, purpose, consent=True))  # fmt: skip
            odds = (0.6, 0.15) if p.state == ProposalState.ACTIVE else (0.3, 0.1)
            draw = rng.random()
            if not deciders or draw > sum(odds):
                continue
            consented = draw < odds[0]
            decided = rows.between(p.submitted_at, p.decided_at or now)
            steward = rng.choice(deciders)
            note = (
                "Pre-approved for the project's period, on the dataset's usual conditions."
                if consented
                else "Not for this purpose: the provider permits research on the data's own "
                "subject only. Ask again with a narrower plan."
            )
            action = "consent" if consented else "refuse"
            link |= {
                "state": ConsentState.CONSENTED if consented else ConsentState.REFUSED,
                "state_changed_at": decided,
                "decided_by_id": steward,
                "decided_at": decided,
                "decision_note": note,
            }
            rows.event(decided, steward, f"proposal_dataset.{action}", "proposal_datasets",
                       link["id"], frm="asked", to=link["state"].value, reason=note)  # fmt: skip
            context = _link_context(
                rows, d, p, purpose, decision=action, note=note,
                decided_by=rows.world.names.get(steward, ""),
            )  # fmt: skip
            for uid, role in p.team:
                if role in (TeamRole.PI, TeamRole.CO_PI):
                    rows.mail(decided, "datasets/consent_decided", uid, context)
            if consented and p.state == ProposalState.ACTIVE:
                consents.append(_Consent(p, d, steward, note, purpose))
    ctx.counts["proposal datasets"] = _insert(ctx, ProposalDataset, out)
    return consents


def _link_context(
    rows: _Rows, d: _Dataset, p: _Proposal, purpose: str, **extra: Any
) -> Callable[[], dict[str, Any]]:
    """``emails.link_context``."""

    def build() -> dict[str, Any]:
        return {
            "dataset": d.name,
            "project": p.title,
            "institution": rows.world.inst_name[p.institution_id],
            "purpose": purpose,
            "url": external_url("proposals.detail", proposal_id=p.id),
            "queue_url": external_url("datasets.consents"),
            **extra,
        }

    return build


# --- access: grants, requests and data-use agreements ---------------------------------------------

CONTROLLED_STATES = {
    GrantState.ACTIVE: 52,
    GrantState.EXPIRED: 22,
    GrantState.PENDING: 9,
    GrantState.REVOKED: 7,
    GrantState.ENDED: 8,
    GrantState.SUSPENDED: 2,
}
REGISTERED_STATES = {
    GrantState.ACTIVE: 60,
    GrantState.EXPIRED: 37,
    GrantState.REVOKED: 3,
    GrantState.SUSPENDED: 0.5,  # by program staff (the rest: with their institution)
}
#: Requests that gave no access, per controlled grant.
OTHER_REQUESTS = {
    RequestState.SUBMITTED: 0.09,
    RequestState.CHANGES_REQUESTED: 0.05,
    RequestState.DECLINED: 0.13,
    RequestState.WITHDRAWN: 0.06,
}
USES = [
    "Fine-tuning open models on the training split and reporting results on the test split, by "
    "subgroup; no record is published.",
    "Evaluating how small open models handle this domain, against human references; only "
    "aggregate scores leave the clusters.",
    "Building a benchmark from the dev split for our open evaluation suite; the benchmark holds "
    "identifiers only, never the data.",
    "Studying data contamination: whether our pre-training mixtures overlap with this "
    "collection, measured on hashed n-grams.",
]
REVOKE_REASONS = [
    "Shared the download link outside the team, against the terms.",
    "The project it was for changed its purpose; ask again for the new one.",
    "Approved in error: the request was for a purpose the provider does not permit.",
]
DECLINE_NOTES = [
    "The provider permits research on the data's own subject only; this purpose is outside it.",
    "Students need a supervisor named on the request; ask again with one.",
    "The intended use would publish records from the data, which the terms forbid.",
]
CHANGE_NOTES = [
    "Say which splits you need and whether any model trained on the data is released.",
    "Name the faculty member responsible, and how long the analysis will take.",
]
DUA_DECLINED = "Our legal office cannot accept the publication clause as worded."


def _draw(rng: random.Random, weights: Mapping[_K, float]) -> _K:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


class _Access:
    """Grants, the requests behind them, their data-use agreements and the mail they sent."""

    def __init__(
        self,
        ctx: Context,
        rows: _Rows,
        datasets: list[_Dataset],
        templates: _Templates,
    ) -> None:
        self.ctx, self.rows, self.templates = ctx, rows, templates
        self.rng, self.now, self.today = ctx.rng, ctx.now, ctx.now.date()
        self.world = world = rows.world
        self.stewards = {u for d in datasets for u in d.stewards}
        #: (dataset, person) pairs that already hold a request or a grant
        self.taken: set[tuple[int, int]] = set()
        listed = [d for d in datasets if d.state != DatasetState.DRAFT]
        self.controlled = [d for d in listed if d.tier == AccessTier.CONTROLLED]
        self.registered = [d for d in listed if d.tier == AccessTier.REGISTERED]
        # Some datasets are asked for far more than others.
        self.weights = {
            AccessTier.CONTROLLED: list(_zipf(len(self.controlled))),
            AccessTier.REGISTERED: list(_zipf(len(self.registered))),
        }
        self.people = sorted(u for u in world.home if u not in self.stewards)
        self.partner_people = [
            u for u in self.people if world.inst_state[world.home[u]] == InstitutionState.PARTNER
        ]
        self.members: dict[int, list[int]] = defaultdict(list)
        for u in self.people:
            self.members[world.home[u]].append(u)
        self.projects: dict[int, list[_Proposal]] = defaultdict(list)
        for p in world.proposals.values():
            if p.state == ProposalState.ACTIVE and world.inst_state.get(p.institution_id) == (
                InstitutionState.PARTNER
            ):
                self.projects[p.institution_id].append(p)
        self.project_institutions = sorted(self.projects)
        reconsent = templates.cosigned[1]
        self.reconsent_at = reconsent.published_at
        self.reconsent_by = reconsent.reconsent_by or self.today

    # -- picking -------------------------------------------------------------------------------

    def pick(self, tier: AccessTier, user: int | None = None) -> tuple[_Dataset, int] | None:
        """A dataset of ``tier`` and a person (``user`` if given) without a request or a grant for
        it yet, who does not steward it."""
        pool = self.controlled if tier == AccessTier.CONTROLLED else self.registered
        if not pool or not self.people:
            return None
        for _ in range(20):
            d = self.rng.choices(pool, cum_weights=self.weights[tier])[0]
            u = user if user is not None else self.rng.choice(self.people)
            if (d.id, u) not in self.taken and u not in d.stewards:
                self.taken.add((d.id, u))
                return d, u
        return None

    def project_member(self, *, leaving: bool) -> tuple[_Proposal, int] | None:
        """An active project and someone at its institution on its team (``leaving``: at its
        institution but no longer on the team — the access they had for it ended)."""
        if not self.project_institutions:
            return None
        inst = self.rng.choice(self.project_institutions)
        project = self.rng.choice(self.projects[inst])
        team = {u for u, _ in project.team}
        if leaving:
            pool = [u for u in self.members[inst] if u not in team]
        else:
            pool = [u for u in sorted(team) if u in self.members[inst]]
        return (project, self.rng.choice(pool)) if pool else None

    def _window(self, d: _Dataset, user: int) -> tuple[dt.datetime, dt.datetime]:
        """When ``user`` could ask for ``d``: while it was listed and they were here."""
        joined = self.world.joined.get(user, d.published_at)
        return max(d.published_at, joined) + HOUR, d.retired_at or self.now

    def _day(self, lo: dt.date, hi: dt.date) -> dt.date:
        return lo + dt.timedelta(days=self.rng.randint(0, max(0, (hi - lo).days)))

    def _before_reconsent(self, d: _Dataset, at: dt.datetime) -> bool:
        """Whether access to ``d`` given at ``at`` was on the version that re-consent replaced."""
        return self.templates.reconsent and d.cosigned and at < self.reconsent_at

    def _swept(self, ends_on: dt.date) -> dt.datetime:
        """When the sweep expired access whose last day was ``ends_on`` (that night)."""
        return min(dt.datetime.combine(ends_on + DAY, dt.time(2, 0), tzinfo=dt.UTC), self.now)

    def _usable_state(self, user: int, state: GrantState) -> GrantState:
        """Active access at a suspended institution is suspended with it (pending access stays
        pending); controlled access is suspended only with its institution."""
        suspended = self.world.inst_state[self.world.home[user]] == InstitutionState.SUSPENDED
        if suspended and state == GrantState.ACTIVE:
            return GrantState.SUSPENDED
        if not suspended and state == GrantState.SUSPENDED:
            return GrantState.ACTIVE
        return state

    # -- controlled ----------------------------------------------------------------------------

    def controlled_grant(
        self,
        d: _Dataset,
        user: int,
        state: GrantState,
        *,
        project: _Proposal | None = None,
        consent: _Consent | None = None,
        signed: int | None = None,
    ) -> bool:
        """Access to controlled ``d`` for ``user`` that ended up in ``state``, from an approved
        request (for ``project``, or pre-approved with it: ``consent``), with its data-use
        agreement in the matching state. A grant ended with a project is for one its holder has
        left. False (nothing made) when the dates cannot fit."""
        rng, now, today = self.rng, self.now, self.today
        state = self._usable_state(user, state)
        live = state in LIVE_GRANTS
        if d.retired_at is not None and state == GrantState.PENDING:
            return False
        lo, hi = self._window(d, user)
        if project is not None and project.decided_at is not None:
            lo = max(lo, project.decided_at + HOUR)
        months = dt.timedelta(days=30 * d.max_months)
        start, end = {
            GrantState.EXPIRED: (lo, min(hi, now - 50 * DAY)),
            GrantState.ACTIVE: (max(lo, now - months + 20 * DAY), min(hi, now - 3 * DAY)),
            GrantState.SUSPENDED: (max(lo, now - months + 20 * DAY), min(hi, now - 3 * DAY)),
            GrantState.PENDING: (max(lo, now - 40 * DAY), min(hi, now - HOUR)),
            GrantState.REVOKED: (lo, min(hi, now - 3 * DAY)),
            GrantState.ENDED: (lo, min(hi, now - 3 * DAY)),
        }[state]
        if consent is not None:
            assert consent.proposal.decided_at is not None
            start = end = consent.proposal.decided_at
        if d.cosigned and not live and self.templates.reconsent:
            # Over before the co-signed template's second version asked for re-consent (which
            # re-issues only for live access), or given on that version.
            if rng.random() < 0.8:
                end = min(end, self.reconsent_at - 40 * DAY)
            else:
                start = max(start, self.reconsent_at + HOUR)
        if start > end:
            return False
        requested = self.ctx.when(start, end)
        approved = (
            requested
            if consent is not None
            else self.rows.between(requested + HOUR, min(requested + 10 * DAY, end + 2 * DAY))
        )
        starts_on = approved.date()
        longest = add_months(starts_on, d.max_months)
        if state == GrantState.EXPIRED:
            top = min(longest, today - DAY)
            if self._before_reconsent(d, approved):
                top = min(top, (self.reconsent_at - 2 * DAY).date())
            if top < starts_on + 30 * DAY:
                return False
            ends_on = self._day(starts_on + 30 * DAY, top)
        elif live:
            if longest <= today:
                return False
            ends_on = self._day(max(today, starts_on + DAY), longest)
        else:
            ends_on = self._day(min(starts_on + 30 * DAY, longest), longest)
        # Events that end access given on the co-signed first version come before re-consent.
        stop_by = self.reconsent_at - DAY if self._before_reconsent(d, approved) else now
        grant_id, request_id = self.rows.next_grant, self.rows.next_request
        self.rows.next_grant += 1
        self.rows.next_request += 1
        steward = consent.decided_by if consent else rng.choice(d.stewards)
        use = consent.purpose if consent else rng.choice(USES)
        proposal = consent.proposal if consent else project
        institution = proposal.institution_id if consent and proposal else self.world.home[user]
        note = consent.note if consent else rng.choice([None, "Approved as asked."])
        self.rows.requests.append(
            _request(
                request_id, d, user, institution, proposal.id if proposal else None, use,
                RequestState.APPROVED, created=requested, changed=approved, decided_by=steward,
                note=note, ends_on=ends_on, grant_id=grant_id, preapproved=consent is not None,
            )
        )  # fmt: skip
        # Pre-approved access is given in the project's approval, by whoever approved it.
        approver = self.ctx.officer if consent else steward
        if consent is None:
            self.request_story(request_id, d, user, institution, proposal, use, requested,
                               decision=("approve", approved, steward, note), ends_on=ends_on)  # fmt: skip
        else:
            self.rows.event(approved, approver, "dataset_request.preapprove", "dataset_requests",
                            request_id, proposal_id=proposal.id if proposal else None,
                            consented_by=steward)  # fmt: skip

        # The data-use agreement, issued at approval, and what became of it.
        first_v, second_v = self.templates.cosigned
        version = self.templates.data_use
        if d.cosigned:
            version = second_v if approved >= self.reconsent_at else first_v
        parties: list[tuple[PartyRole, int | None, str | None]] = [
            (PartyRole.RESEARCHER, user, None)
        ]
        if d.cosigned:
            parties.append((PartyRole.SIGNING_OFFICIAL, None, self.world.inst_name[institution]))
        holder = self.world.names.get(user, "")
        issue: dict[str, Any] = {
            "version": version,
            "kind": AgreementKind.DATA_USE,
            "name": f"{d.name} for {holder}",
            "subject": (SubjectType.DATASET_ACCESS, grant_id),
            "institution": institution,
            "proposal": None,
            "fields": {
                "dataset": d.name,
                "researcher": holder,
                "institution": self.world.inst_name[institution],
                "purpose": use,
                "expires_on": _date(ends_on),
            },
            "parties": parties,
            "issued_at": approved,
            "issued_by": approver,
        }
        sign_by = min(approved + 14 * DAY, stop_by)
        started: dt.datetime | None = None
        changed = approved
        ended_reason: str | None = None
        ended_by: int | None = None
        if state == GrantState.PENDING:
            if signed is None:
                signed = rng.choice([0, 1]) if d.cosigned else 0
            agreement_id = self.rows.agreement(**issue, state=AgreementState.AWAITING,
                                               signed=signed)  # fmt: skip
        elif state == GrantState.ENDED and proposal is None:
            # The researcher (or their institution) declined to sign: the access ended.
            changed = self.rows.between(approved + HOUR, sign_by)
            agreement_id = self.rows.agreement(
                **issue, state=AgreementState.DECLINED, ended_at=changed,
                signed=rng.choice([0, 1]) if d.cosigned else 0, reason=DUA_DECLINED,
            )  # fmt: skip
            ended_reason = "The data-use agreement was declined."
        elif state == GrantState.REVOKED and rng.random() < 0.4:
            # Revoked before it was signed: its agreement was withdrawn with it.
            changed = self.rows.between(approved + HOUR, sign_by)
            agreement_id = self.rows.agreement(
                **issue, state=AgreementState.WITHDRAWN, ended_at=changed,
                reason="The access it was for was revoked.",
            )  # fmt: skip
            ended_reason = rng.choice(REVOKE_REASONS)
            ended_by = rng.choice([steward, self.ctx.officer])
        else:
            started = self.rows.between(approved + HOUR, sign_by)
            agreement_id = self._signed_dua(issue, started, state)
            changed = started
            if state == GrantState.SUSPENDED:
                changed = self.rows.between(started + HOUR, now)
            elif state == GrantState.EXPIRED:
                changed = self._swept(ends_on)
            elif state in (GrantState.REVOKED, GrantState.ENDED):
                changed = self.rows.between(started + HOUR, min(self._swept(ends_on), stop_by))
                if state == GrantState.REVOKED:
                    ended_reason = rng.choice(REVOKE_REASONS)
                    ended_by = rng.choice([steward, self.ctx.officer])
                else:
                    assert proposal is not None
                    ended_reason = f"{holder} is no longer on the project “{proposal.title}”."
        self.rows.grants.append(
            {
                "id": grant_id,
                "dataset_id": d.id,
                "user_id": user,
                "institution_id": institution,
                "proposal_id": proposal.id if proposal else None,
                "agreement_id": agreement_id,
                "terms_accepted_at": None,
                "starts_on": starts_on,
                "ends_on": ends_on,
                "state": state,
                "state_changed_at": changed,
                "suspended_with_institution": state == GrantState.SUSPENDED,
                "ended_reason": ended_reason,
                "ended_by_id": ended_by,
                "created_at": approved,
                "updated_at": changed,
            }
        )
        self.rows.counts[f"controlled {state.value}"] += 1
        self.grant_story(grant_id, d, user, state, approved, started, changed, starts_on,
                         ends_on, ended_reason, ended_by or approver)  # fmt: skip
        if state in (GrantState.ACTIVE, GrantState.EXPIRED) and rng.random() < 0.18:
            self._renewal(grant_id, d, user, institution, proposal, state, changed, ends_on)
        return True

    def _signed_dua(self, issue: dict[str, Any], completed: dt.datetime, state: GrantState) -> int:
        """A fully signed data-use agreement (the grant's). One signed on the co-signed template's
        first version, for access still live when the second asked for re-consent, was re-issued
        then: the new one is being signed, or was signed and superseded it."""
        first_v, second_v = self.templates.cosigned
        if not (
            self.templates.reconsent
            and issue["version"] is first_v
            and completed < self.reconsent_at
            and state in (GrantState.ACTIVE, GrantState.SUSPENDED)
        ):
            return self.rows.agreement(**issue, state=AgreementState.ACTIVE, ended_at=completed)
        reissued = self.reconsent_at + dt.timedelta(seconds=self.rng.randint(1, 600))
        # (All of them signed again once the re-consent date passed: a template an earlier run made.)
        lapsed = self.reconsent_by < self.today
        again = state == GrantState.ACTIVE and (self.rng.random() < 0.45 or lapsed)
        resigned = self.rows.between(reissued + HOUR, self.now) if again else None
        old = self.rows.agreement(
            **issue,
            state=AgreementState.SUPERSEDED if again else AgreementState.ACTIVE,
            completed_at=completed,
            ended_at=resigned or completed,
            reconsent_by=self.reconsent_by,
        )
        self.rows.event(reissued, self.ctx.officer, "agreement.reconsent", "agreements", old,
                        by=self.reconsent_by.isoformat())  # fmt: skip
        self.rows.agreement(
            **(issue | {"version": second_v, "issued_at": reissued, "issued_by": self.ctx.officer}),
            state=AgreementState.ACTIVE if again else AgreementState.AWAITING,
            ended_at=resigned,
            signed=0 if again or state == GrantState.SUSPENDED else self.rng.choice([0, 0, 1]),
            replaces=(old, self.reconsent_by),
        )
        if resigned is not None:
            self.rows.event(resigned, self.ctx.officer, "agreement.supersede", "agreements", old,
                            frm="active", to="superseded")  # fmt: skip
        # The grant keeps naming the agreement issued with it (re-consent does not change it).
        return old

    def grant_story(
        self,
        grant_id: int,
        d: _Dataset,
        user: int,
        state: GrantState,
        created: dt.datetime,
        started: dt.datetime | None,
        changed: dt.datetime,
        starts_on: dt.date,
        ends_on: dt.date,
        reason: str | None,
        actor: int,
    ) -> None:
        """The grant's audit events and mails (``emails.access_ready``, ``access_stopped``,
        ``access_expiring``)."""
        rows, names = self.rows, self.world.names

        def context(**extra: Any) -> Callable[[], dict[str, Any]]:
            def build() -> dict[str, Any]:
                return {
                    "dataset": d.name,
                    "holder": names.get(user, ""),
                    "tier": d.tier.label,
                    "starts_on": _date(starts_on),
                    "ends_on": _date(ends_on),
                    "location": d.location,
                    "url": external_url("datasets.grant_detail", grant_id=grant_id),
                    "dataset_url": external_url("datasets.detail", slug=d.slug),
                    **extra,
                }

            return build

        if started is not None:
            rows.mail(started, "datasets/access_ready", user, context(why="activate"))
        if state == GrantState.ACTIVE:
            for days in (30, 7):
                notice = self._swept(ends_on) - (days + 1) * DAY + 8 * HOUR
                if (started or created) < notice <= self.now:
                    rows.mail(notice, "datasets/access_expiring", user,
                              context(days=days, renewable=d.tier.value))  # fmt: skip
        if state in (GrantState.ACTIVE, GrantState.PENDING):
            return
        why = {
            GrantState.EXPIRED: "expire",
            GrantState.REVOKED: "revoke",
            GrantState.ENDED: "end",
            GrantState.SUSPENDED: "suspend",
        }[state]
        rows.event(changed, None if why == "expire" else actor, f"dataset_grant.{why}",
                   "dataset_grants", grant_id, frm="active" if started else "pending",
                   to=state.value, reason=reason)  # fmt: skip
        rows.mail(changed, "datasets/access_stopped", user, context(why=why, reason=reason))

    def _renewal(
        self,
        grant_id: int,
        d: _Dataset,
        user: int,
        institution: int,
        proposal: _Proposal | None,
        state: GrantState,
        since: dt.datetime,
        ends_on: dt.date,
    ) -> None:
        """A request for more time on the access just made: approved (its end moved later, within
        the dataset's longest period from the decision), waiting, declined or withdrawn."""
        rng, now = self.rng, self.now
        grant = self.rows.grants[-1]
        requested = self.rows.between(max(since, now - 40 * DAY) + HOUR, now - HOUR)
        if requested <= since or requested >= now - HOUR / 2:
            return
        outcome = _draw(
            rng,
            {
                RequestState.APPROVED: 3,
                RequestState.SUBMITTED: 2,
                RequestState.DECLINED: 1,
                RequestState.WITHDRAWN: 1,
            },
        )
        steward = rng.choice(d.stewards)
        decided = self.rows.between(requested + HOUR, requested + 7 * DAY)
        new_end = None
        if outcome == RequestState.APPROVED:
            longest = add_months(decided.date(), d.max_months)
            if state != GrantState.ACTIVE or longest <= ends_on:
                outcome = RequestState.DECLINED
            else:
                new_end = self._day(ends_on + DAY, longest)
                grant |= {"ends_on": new_end, "state_changed_at": decided, "updated_at": decided}
                self.rows.event(decided, steward, "dataset_grant.renew", "dataset_grants",
                                grant_id, frm="active", to="active")  # fmt: skip
        if outcome == RequestState.SUBMITTED:
            decided = requested
        note = {
            RequestState.APPROVED: "More time approved, as asked.",
            RequestState.DECLINED: rng.choice(DECLINE_NOTES),
        }.get(outcome)
        use = "More time to finish the analysis. " + rng.choice(USES)
        request_id = self.rows.next_request
        self.rows.next_request += 1
        self.rows.requests.append(
            _request(
                request_id, d, user, institution, proposal.id if proposal else None, use, outcome,
                created=requested, changed=decided, decided_by=steward, note=note,
                ends_on=new_end, grant_id=grant_id, renewal=True,
            )
        )  # fmt: skip
        decision = None
        if outcome in (RequestState.APPROVED, RequestState.DECLINED):
            decision = ("approve" if new_end else "decline", decided, steward, note)
        self.request_story(request_id, d, user, institution, proposal, use, requested,
                           decision=decision, ends_on=new_end, renewal=True)  # fmt: skip
        if outcome == RequestState.WITHDRAWN:
            self.rows.event(decided, user, "dataset_request.withdraw", "dataset_requests",
                            request_id, frm="submitted", to="withdrawn")  # fmt: skip
        self.rows.counts["renewal requests"] += 1

    # -- requests ------------------------------------------------------------------------------

    def request_story(
        self,
        request_id: int,
        d: _Dataset,
        user: int,
        institution: int,
        proposal: _Proposal | None,
        use: str,
        requested: dt.datetime,
        *,
        decision: tuple[str, dt.datetime, int, str | None] | None,
        ends_on: dt.date | None = None,
        renewal: bool = False,
        again: bool = False,
    ) -> None:
        """``emails.notify_request_received`` to the stewards and ``request_decided`` to the
        requester, and the audit events of the request and its decision."""
        rows, world = self.rows, self.world

        def context(**extra: Any) -> Callable[[], dict[str, Any]]:
            def build() -> dict[str, Any]:
                return {
                    "dataset": d.name,
                    "requester": world.names.get(user, ""),
                    "institution": world.inst_name[institution],
                    "project": proposal.title if proposal else None,
                    "intended_use": use,
                    "renewal": renewal,
                    "ends_on": _date(ends_on) if ends_on else "",
                    "url": external_url("datasets.request_detail", request_id=request_id),
                    **extra,
                }

            return build

        for steward in d.stewards:
            rows.mail(requested, "datasets/request_received", steward, context(again=again))
        if decision is None:
            return
        action, at, steward, note = decision
        to = {"approve": "approved", "decline": "declined", "request_changes": "changes_requested"}
        rows.event(at, steward, f"dataset_request.{action}", "dataset_requests", request_id,
                   frm="submitted", to=to[action], reason=note)  # fmt: skip
        rows.mail(at, "datasets/request_decided", user,
                  context(decision=action, note=note, decided_by=world.names.get(steward, "")))  # fmt: skip

    def other_request(self, state: RequestState, user: int | None = None) -> bool:
        """A request for a controlled dataset that gave no access (yet): waiting on a steward
        (asked within the month), sent back for changes, declined or withdrawn."""
        rng, now = self.rng, self.now
        waiting = state in (RequestState.SUBMITTED, RequestState.CHANGES_REQUESTED)
        pool = self.partner_people if waiting else self.people
        if user is None and pool:
            user = rng.choice(pool)
        if user is None or (waiting and user not in self.partner_people):
            return False
        picked = self.pick(AccessTier.CONTROLLED, user)
        if picked is None or (waiting and picked[0].state != DatasetState.PUBLISHED):
            return False
        d, user = picked
        lo, hi = self._window(d, user)
        start, end = (max(lo, now - 30 * DAY) if waiting else lo), min(hi, now - 2 * HOUR)
        if start > end:
            return False
        requested = self.ctx.when(start, end)
        changed = self.rows.between(requested + HOUR, requested + 12 * DAY)
        steward = rng.choice(d.stewards)
        note: str | None = None
        decision = None
        again = False
        if state == RequestState.SUBMITTED:
            changed = requested
            if rng.random() < 0.2:  # sent again after the steward asked for changes
                note, again = rng.choice(CHANGE_NOTES), True
        elif state == RequestState.CHANGES_REQUESTED:
            note = rng.choice(CHANGE_NOTES)
            decision = ("request_changes", changed, steward, note)
        elif state == RequestState.DECLINED:
            note = rng.choice(DECLINE_NOTES)
            decision = ("decline", changed, steward, note)
        request_id = self.rows.next_request
        self.rows.next_request += 1
        inst = self.world.home[user]
        use = rng.choice(USES)
        self.rows.requests.append(
            _request(request_id, d, user, inst, None, use, state, created=requested,
                     changed=changed, decided_by=steward, note=note)
        )  # fmt: skip
        self.request_story(request_id, d, user, inst, None, use, requested, decision=decision,
                           again=again)  # fmt: skip
        if state == RequestState.WITHDRAWN:
            self.rows.event(changed, user, "dataset_request.withdraw", "dataset_requests",
                            request_id, frm="submitted", to="withdrawn")  # fmt: skip
        self.rows.counts[f"request {state.value}"] += 1
        return True

    # -- registered ----------------------------------------------------------------------------

    def registered_grant(self, state: GrantState, user: int | None = None) -> bool:
        """Access to a registered dataset: its terms accepted, for its longest period (revoked by
        a steward or program staff, suspended with the institution or by program staff)."""
        rng, now, today = self.rng, self.now, self.today
        picked = self.pick(AccessTier.REGISTERED, user)
        if picked is None:
            return False
        d, user = picked
        inst = self.world.home[user]
        at_suspended = self.world.inst_state[inst] == InstitutionState.SUSPENDED
        if state == GrantState.ACTIVE and at_suspended:
            state = GrantState.SUSPENDED
        lo, hi = self._window(d, user)
        recent = dt.datetime.combine(add_months(today, -d.max_months) + DAY, dt.time(), dt.UTC)
        start, end = {
            GrantState.ACTIVE: (max(lo, recent), min(hi, now - HOUR)),
            GrantState.SUSPENDED: (max(lo, recent), min(hi, now - HOUR)),
            GrantState.EXPIRED: (lo, min(hi, recent - 2 * DAY)),
            GrantState.REVOKED: (lo, min(hi, now - 2 * DAY)),
        }[state]
        if start > end:
            return False
        accepted = self.ctx.when(start, end)
        starts_on = accepted.date()
        ends_on = add_months(starts_on, d.max_months)
        if (ends_on < today) != (state == GrantState.EXPIRED) and state != GrantState.REVOKED:
            return False
        changed = accepted
        ended_reason: str | None = None
        ended_by: int | None = None
        if state == GrantState.EXPIRED:
            changed = self._swept(ends_on)
        elif state == GrantState.SUSPENDED:
            changed = self.rows.between(accepted + HOUR, now)
        elif state == GrantState.REVOKED:
            changed = self.rows.between(accepted + HOUR, self._swept(ends_on))
            ended_reason = rng.choice(REVOKE_REASONS)
            ended_by = rng.choice([rng.choice(d.stewards), self.ctx.officer])
        grant_id = self.rows.next_grant
        self.rows.next_grant += 1
        self.rows.grants.append(
            {
                "id": grant_id,
                "dataset_id": d.id,
                "user_id": user,
                "institution_id": inst,
                "proposal_id": None,
                "agreement_id": None,
                "terms_accepted_at": accepted,
                "starts_on": starts_on,
                "ends_on": ends_on,
                "state": state,
                "state_changed_at": changed,
                # With the institution, or (at a partner) by program staff.
                "suspended_with_institution": state == GrantState.SUSPENDED and at_suspended,
                "ended_reason": ended_reason,
                "ended_by_id": ended_by,
                "created_at": accepted,
                "updated_at": changed,
            }
        )
        self.rows.counts[f"registered {state.value}"] += 1
        self.grant_story(grant_id, d, user, state, accepted, accepted, changed, starts_on,
                         ends_on, ended_reason, ended_by or self.ctx.officer)  # fmt: skip
        return True


def _zipf(n: int) -> Iterator[float]:
    """Cumulative weights 1/(k+3) for k < n."""
    return itertools.accumulate(1 / (k + 3) for k in range(n))


def _request(
    request_id: int,
    d: _Dataset,
    user: int,
    institution: int,
    proposal_id: int | None,
    use: str,
    state: RequestState,
    *,
    created: dt.datetime,
    changed: dt.datetime,
    decided_by: int | None = None,
    note: str | None = None,
    ends_on: dt.date | None = None,
    grant_id: int | None = None,
    preapproved: bool = False,
    renewal: bool = False,
) -> dict[str, Any]:
    """An access request row with the fields its state implies."""
    decided = state in (RequestState.APPROVED, RequestState.DECLINED)
    return {
        "id": request_id,
        "dataset_id": d.id,
        "user_id": user,
        "institution_id": institution,
        "proposal_id": proposal_id,
        "intended_use": use,
        "is_renewal": renewal,
        "grant_id": grant_id,
        "preapproved": preapproved,
        "state": state,
        "state_changed_at": changed,
        "decided_by_id": decided_by if decided else None,
        "decided_at": changed if decided else None,
        "decision_note": note,
        "ends_on": ends_on if state == RequestState.APPROVED else None,
        "created_at": created,
        "updated_at": changed,
    }


def _access(
    ctx: Context,
    rows: _Rows,
    datasets: list[_Dataset],
    templates: _Templates,
    consents: list[_Consent],
    budget: int,
) -> None:
    """``Scale.grants`` grants with their requests and data-use agreements: the personas' first,
    then the pre-approved ones, then controlled access (some for a project the holder is on) while
    ``budget`` data-use agreements last (at most half the grants), the requests that gave no
    access, and registered access for the rest."""
    rng, world = ctx.rng, rows.world
    access = _Access(ctx, rows, datasets, templates)
    total = ctx.scale.grants
    heavy = max(2, round(10 * total / Scale().grants))  # the personas' waiting agreements
    made = 0

    def room() -> bool:
        # A co-signed grant may take two agreements (re-consent).
        return made < total and rows.counts[AgreementKind.DATA_USE.value] + 2 <= budget

    # The PI: access in every state, several agreements waiting on their signature, requests.
    pi = ctx.personas.get("pi")
    if pi in world.home:
        wanted = [GrantState.PENDING] * heavy + list(CONTROLLED_STATES) * (heavy // 4 + 1)
        for state in wanted:
            if state != GrantState.ENDED and room():
                picked = access.pick(AccessTier.CONTROLLED, pi)
                if picked is not None:
                    made += access.controlled_grant(picked[0], pi, state, signed=0)
        for request_state in list(OTHER_REQUESTS) * (heavy // 4 + 1):
            access.other_request(request_state, pi)
        for state in list(REGISTERED_STATES) * (heavy // 2 + 1):
            if made < total:
                made += access.registered_grant(state, pi)
    # The first institution's signing official: co-signatures to give.
    cosigned = [d for d in access.controlled if d.cosigned and d.retired_at is None]
    first_inst = ctx.institutions[0]["id"] if ctx.institutions else None
    locals_ = access.members.get(first_inst or 0, []) if cosigned else []
    for k in range(heavy if locals_ else 0):
        d, local = cosigned[k % len(cosigned)], locals_[k % len(locals_)]
        if room() and (d.id, local) not in access.taken and local not in d.stewards:
            access.taken.add((d.id, local))
            made += access.controlled_grant(d, local, GrantState.PENDING, signed=1)
    # Pre-approved with their projects, for the PI.
    for c in consents:
        pi_of = c.proposal.pi
        if not room() or pi_of is None or world.home.get(pi_of) != c.proposal.institution_id:
            continue
        if (c.dataset.id, pi_of) in access.taken or pi_of in c.dataset.stewards:
            continue
        access.taken.add((c.dataset.id, pi_of))
        recent = c.proposal.decided_at is not None and c.proposal.decided_at > ctx.now - 40 * DAY
        states = {GrantState.ACTIVE: 60, GrantState.EXPIRED: 30, GrantState.PENDING: 10 * recent}
        state = _draw(rng, states)
        made += access.controlled_grant(c.dataset, pi_of, state, consent=c)
    # Controlled access while the agreements last.
    misses = 0
    while room() and made < total // 2 and misses < 100:
        state = _draw(rng, CONTROLLED_STATES)
        project: _Proposal | None = None
        user: int | None = None
        if (state == GrantState.ENDED and rng.random() < 0.15) or rng.random() < 0.15:
            found = access.project_member(leaving=state == GrantState.ENDED)
            if found is not None:
                project, user = found
        picked = access.pick(AccessTier.CONTROLLED, user)
        if picked is None or not access.controlled_grant(*picked, state, project=project):
            misses += 1
            continue
        made, misses = made + 1, 0
    controlled = made
    for request_state, share in OTHER_REQUESTS.items():
        for _ in range(max(1, round(share * controlled)) if access.controlled else 0):
            access.other_request(request_state)
    misses = 0
    while made < total and access.registered and misses < 100:
        if access.registered_grant(_draw(rng, REGISTERED_STATES)):
            made, misses = made + 1, 0
        else:
            misses += 1


# --- contribution agreements ---------------------------------------------------------------------

#: What became of a project's contribution agreements, in issue order, by the state of its
#: allocations (whose hours are usable only once one is signed).
USABLE_PLANS = {("active",): 90, ("withdrawn", "active"): 5, ("declined", "active"): 5}
WAITING_PLANS = {("awaiting",): 80, ("declined",): 8, ("withdrawn", "awaiting"): 12}
FREE_PLANS = {
    ("active",): 70,
    ("awaiting",): 18,
    ("declined", "awaiting"): 4,
    ("withdrawn", "active"): 4,
    ("declined",): 4,
}


def _contributions(ctx: Context, rows: _Rows, version: _Version, budget: int) -> None:
    """A contribution agreement for each active project without one (within ``budget``): signed
    where the project's allocations are in use; where they wait, waiting on the PI, the signing
    official or the program's countersignature, or declined; some withdrawn and issued again. The
    first institution's projects wait on its signing official, the PI persona's on them."""
    rng, now, world = ctx.rng, ctx.now, rows.world
    pi_persona = ctx.personas.get("pi")
    first_inst = ctx.institutions[0]["id"] if ctx.institutions else None
    for project in sorted(world.projects, key=lambda p: p.id):
        if rows.counts[AgreementKind.CONTRIBUTION.value] + 2 > budget:
            break
        usable = any(s != AllocationState.PENDING for s in project.allocations)
        if usable:
            plan = _draw(rng, USABLE_PLANS)
        else:
            plan = _draw(rng, WAITING_PLANS if project.allocations else FREE_PLANS)
        turn: int | None = None
        if not usable and project.institution_id == first_inst:
            plan, turn = ("awaiting",), 1
        elif not usable and project.pi == pi_persona:
            plan, turn = ("awaiting",), 0
        parties = [
            (PartyRole.PI, project.pi, None),
            (PartyRole.SIGNING_OFFICIAL, None, world.inst_name[project.institution_id]),
            (PartyRole.PROGRAM, None, world.lab),
        ]
        issue: dict[str, Any] = {
            "version": version,
            "kind": AgreementKind.CONTRIBUTION,
            "name": project.title,
            "subject": (SubjectType.PROJECT, project.id),
            "institution": project.institution_id,
            "proposal": project.id,
            "fields": project.fields,
            "parties": parties,
        }
        issued = min(project.decided_at + MINUTE, now)
        # Signed before the allocations became usable: when they did, where they tell; else
        # within half a day of the approval (the allocations' generator makes them usable from
        # half a day to three weeks after it).
        signed_by = project.usable_from or rows.between(issued + HOUR, issued + 12 * HOUR)
        if signed_by - issued < 2 * HOUR:
            plan = plan[-1:]
        by = project.decided_by
        for k, step in enumerate(plan):
            last = k + 1 == len(plan)
            if step == "active" and last:
                end = (
                    max(signed_by, issued + MINUTE)
                    if usable
                    else rows.between(issued + HOUR, issued + 30 * DAY)
                )
            elif usable:
                end = rows.between(issued + 10 * MINUTE, issued + (signed_by - issued) / 2)
            else:
                end = rows.between(issued + HOUR, issued + 30 * DAY)
            at: dict[str, Any] = {"issued_at": issued, "issued_by": by}
            if step == "active":
                rows.agreement(**issue, **at, state=AgreementState.ACTIVE, ended_at=end)
            elif step == "awaiting":
                signed = turn if turn is not None else rng.choice([0, 1, 2, 2])
                rows.agreement(**issue, **at, state=AgreementState.AWAITING, signed=signed)
            elif step == "declined":
                signed = rng.choice([0, 1])
                reason = (
                    "The hours awarded do not cover the plan; we ask the program to reconsider."
                    if signed == 0
                    else "The research office needs changes to the acknowledgement clause."
                )
                rows.agreement(**issue, **at, state=AgreementState.DECLINED, ended_at=end,
                               signed=signed, reason=reason)  # fmt: skip
            else:
                rows.agreement(**issue, **at, state=AgreementState.WITHDRAWN, ended_at=end,
                               signed=rng.choice([0, 1]),
                               reason="Issued with the wrong start date; a corrected agreement "
                               "follows.")  # fmt: skip
            if not last:
                issued = min(end + MINUTE * rng.randint(2, 30), now)
                by = ctx.officer
        rows.mail(project.decided_at, "proposals/decided", project.pi,
                  _proposal_context(rows, world.proposals[project.id], "approve"))  # fmt: skip


def _proposal_context(
    rows: _Rows, p: _Proposal, decision: str | None = None
) -> Callable[[], dict[str, Any]]:
    """``proposals.emails._context`` for a decision (or, without one, the submission)."""
    world = rows.world

    def build() -> dict[str, Any]:
        out: dict[str, Any] = {
            "proposal_id": p.id,
            "title": p.title,
            "call_title": p.call_title,
            "institution_name": world.inst_name[p.institution_id],
            "pi_name": world.names.get(p.pi or 0),
            "url": external_url("proposals.detail", proposal_id=p.id),
        }
        if decision is None:
            pi_name = world.names.get(p.pi or 0)
            return out | {"state": ProposalState.SUBMITTED.label, "version": 1, "by": pi_name}
        return out | {
            "state": p.state.label,
            "decision": decision,
            "reason": p.decision_reason,
            "awards": [],
        }

    return build


# --- mail ---------------------------------------------------------------------------------------

#: How the generated outbox divides, by state (the rest is sent).
MAIL_STATES = {
    OutboxState.QUEUED: 0.02,
    OutboxState.FAILED: 0.015,
    OutboxState.HELD: 0.01,
    OutboxState.DIGESTED: 0.015,
    OutboxState.DEAD: 0.005,
}
TRANSIENT = [
    (421, "421 4.3.2 Service not available, closing transmission channel"),
    (451, "451 4.7.1 Greylisted, please try again later"),
    (None, "[Errno 111] Connection refused"),
]
PERMANENT = (550, "550 5.1.1 The email account that you tried to reach does not exist")


def _other_mails(rows: _Rows) -> None:
    """Mails of the other domains the generated people had: a welcome each, their proposals'
    submission, and the decline of declined ones."""
    world = rows.world
    for uid, joined in world.joined.items():
        context = {"name": world.names[uid], "has_affiliation": uid in world.home}
        rows.mail(joined + 2 * MINUTE, "auth/welcome", uid, _given(context))
    for p in world.proposals.values():
        if p.pi is None or p.submitted_at is None:
            continue
        rows.mail(p.submitted_at, "proposals/submitted", p.pi, _proposal_context(rows, p))
        if p.state == ProposalState.DECLINED and p.decided_at is not None:
            rows.mail(p.decided_at, "proposals/decided", p.pi,
                      _proposal_context(rows, p, "decline"))  # fmt: skip


@dataclass
class _Delivery:
    """Makes outbox rows and their delivery attempts the way the worker leaves them."""

    ctx: Context
    rows: _Rows
    domain: str
    max_attempts: int
    base: float
    cap: float
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def backoff(self, attempts: int) -> dt.timedelta:
        """``delivery.backoff``: base, 2 x base, 4 x base … never more than the cap."""
        return dt.timedelta(seconds=min(self.cap, self.base * 2 ** max(0, attempts - 1)))

    def message(
        self,
        msg_id: int,
        at: dt.datetime,
        kind: str,
        to: int,
        context: dict[str, Any],
        state: OutboxState,
    ) -> tuple[dict[str, Any], tuple[str, str]]:
        """The row, and its (subject, text) as a digest would show it."""
        rng, now, world = self.ctx.rng, self.ctx.now, self.rows.world
        summary = render_summary(
            OutboxMessage(
                template=kind, to_addr=world.emails[to], to_name=world.names.get(to),
                recipient_id=to, context=context,
            )
        )  # fmt: skip
        row: dict[str, Any] = {
            "id": msg_id,
            "message_id": f"<{rng.getrandbits(128):032x}@{self.domain}>",
            "template": kind,
            "to_addr": world.emails[to],
            "to_name": world.names.get(to),
            "recipient_id": to,
            "context": context,
            "subject": None,
            "state": state,
            "attempts": 0,
            "created_at": at,
            "next_attempt_at": at,
            "claimed_until": None,
            "claim_token": None,
            "sent_at": None,
            "last_error": None,
            "digest_id": None,
        }
        tries: list[tuple[dt.datetime, int | None, str | None]] = []
        when = min(at + dt.timedelta(seconds=rng.uniform(2, 40)), now)
        if state == OutboxState.SENT:
            if rng.random() < 0.06:  # went through on the second try
                tries.append((when, *rng.choice(TRANSIENT)))
                when = min(when + self.backoff(1) + dt.timedelta(seconds=rng.uniform(1, 20)), now)
            tries.append((when, None, None))
            # (A failed try set the next one's time; a success leaves it.)
            row |= {"sent_at": when, "next_attempt_at": tries[-1][0] if len(tries) > 1 else at}
        elif state == OutboxState.FAILED:
            for n in range(rng.randint(1, self.max_attempts - 2)):
                if n and when > now:
                    break
                tries.append((min(when, now), *rng.choice(TRANSIENT)))
                when += self.backoff(n + 1) + dt.timedelta(seconds=rng.uniform(0, 20))
            row["next_attempt_at"] = when
        elif state == OutboxState.DEAD:
            if rng.random() < 0.5:
                tries.append((when, *PERMANENT))
            for n in range(0 if tries else self.max_attempts):
                tries.append((min(when, now), *rng.choice(TRANSIENT)))
                when += self.backoff(n + 1) + dt.timedelta(seconds=rng.uniform(0, 20))
            self.rows.event(tries[-1][0], None, "outbox.dead", "outbox", msg_id,
                            to=row["to_addr"], template=kind, error=tries[-1][2])  # fmt: skip
        if tries:
            row |= {"attempts": len(tries), "subject": summary[0][:300], "last_error": tries[-1][2]}
        self.attempts += [
            {"message_id": msg_id, "attempted_at": t, "ok": e is None, "smtp_code": c, "error": e}
            for t, c, e in tries
        ]
        return row, summary


def _outbox(ctx: Context, rows: _Rows) -> None:
    """``Scale.outbox`` rows chosen among the mails the generated history sent: recent ones
    queued, failing with retries, held for the digest; older ones sent (a few after a retry),
    gathered into a daily digest, or dead."""
    rng, now = ctx.rng, ctx.now
    mails = sorted(rows.mails, key=lambda m: (m.at, m.kind, m.to))
    wanted = min(ctx.scale.outbox, len(mails))
    recent = [k for k, m in enumerate(mails) if m.at >= now - 36 * HOUR]
    older = [k for k, m in enumerate(mails) if m.at < now - 3 * DAY]
    rng.shuffle(recent)
    chosen: dict[int, OutboxState] = {}
    for state in (OutboxState.QUEUED, OutboxState.FAILED, OutboxState.HELD):
        n = round(MAIL_STATES[state] * wanted)
        for k in recent:
            if n <= 0:
                break
            if k not in chosen and (
                state != OutboxState.HELD or not get_kind(mails[k].kind).mandatory
            ):
                chosen[k] = state
                n -= 1
    optional = [k for k in older if not get_kind(mails[k].kind).mandatory]
    n = round(MAIL_STATES[OutboxState.DIGESTED] * wanted)
    digests: dict[tuple[int, dt.date], list[int]] = defaultdict(list)
    for k in sorted(rng.sample(optional, min(len(optional), n))):
        chosen[k] = OutboxState.DIGESTED
        digests[(mails[k].to, mails[k].at.date())].append(k)
    old_rest = [k for k in older if k not in chosen]
    for k in rng.sample(
        old_rest, min(len(old_rest), round(MAIL_STATES[OutboxState.DEAD] * wanted))
    ):
        chosen[k] = OutboxState.DEAD
    rest = [k for k in range(len(mails)) if k not in chosen]
    for k in rng.sample(rest, min(len(rest), max(0, wanted - len(chosen) - len(digests)))):
        chosen[k] = OutboxState.SENT

    # Ids in the order the rows were written; a day's digest goes out at 07:00 the next day.
    digest_at = {
        key: min(dt.datetime.combine(key[1] + DAY, dt.time(7), dt.UTC), now) for key in digests
    }
    order = sorted(
        [(mails[k].at, 0, k) for k in chosen]
        + [(at, 1, n) for n, at in enumerate(digest_at.values())]
    )
    first = ctx.next_id(OutboxMessage)
    ids = {(kind, n): first + i for i, (_, kind, n) in enumerate(order)}
    _, sender = parseaddr(str(current_app.config["MAIL_DEFAULT_SENDER"]))
    config = current_app.config
    delivery = _Delivery(
        ctx, rows, sender.partition("@")[2] or "localhost", int(config["MAIL_MAX_ATTEMPTS"]),
        float(config["MAIL_RETRY_BASE_SECONDS"]), float(config["MAIL_RETRY_MAX_SECONDS"]),
    )  # fmt: skip
    messages: list[dict[str, Any]] = []
    gathered: list[dict[str, Any]] = []
    summaries: dict[int, tuple[str, str]] = {}
    for k, state in sorted(chosen.items()):
        m = mails[k]
        row, summaries[k] = delivery.message(ids[(0, k)], m.at, m.kind, m.to, m.context(), state)
        (gathered if state == OutboxState.DIGESTED else messages).append(row)
    digest_ids = {}
    for n, (key, at) in enumerate(digest_at.items()):
        entries = [
            {
                "subject": summaries[k][0],
                "text": summaries[k][1],
                "at": mails[k].at.strftime("%Y-%m-%d %H:%M"),
            }
            for k in digests[key]
        ]
        context = {"items": entries, "date": at.strftime("%d %B %Y")}
        row, _ = delivery.message(ids[(1, n)], at, "notifications/digest", key[0], context,
                                  OutboxState.SENT)  # fmt: skip
        messages.append(row)
        digest_ids[key] = row["id"]
    for row in gathered:
        row["digest_id"] = digest_ids[(row["recipient_id"], row["created_at"].date())]
    messages.sort(key=lambda r: r["id"])
    # Whoever has mail held for the digest chose the digest for that kind, before it came.
    chose: dict[tuple[int, str], dt.datetime] = {}
    for k, state in chosen.items():
        if state in (OutboxState.HELD, OutboxState.DIGESTED):
            kind = (mails[k].to, mails[k].kind)
            chose[kind] = min(mails[k].at - DAY, chose.get(kind, mails[k].at))
    ctx.counts["notification preferences"] = _insert(
        ctx,
        NotificationPreference,
        (
            {"user_id": to, "kind": kind, "delivery": Delivery.DIGEST, "updated_at": at}
            for (to, kind), at in sorted(chose.items())
        ),
    )
    # The digests first: the mails they gathered refer to them.
    ctx.counts["outbox"] = _insert(ctx, OutboxMessage, messages) + _insert(
        ctx, OutboxMessage, gathered
    )
    ctx.counts["delivery attempts"] = _insert(ctx, DeliveryAttempt, delivery.attempts)


# --- the step -------------------------------------------------------------------------------------


def generate(ctx: Context) -> None:
    """The catalog, the datasets proposals picked, access, the contribution and data-use
    agreements, the outbox and the decisions' audit events (see the module's docstring)."""
    world = _read_world(ctx)
    templates = _templates(ctx)
    rows = _Rows(
        ctx,
        world,
        next_agreement=ctx.next_id(Agreement),
        next_signature=ctx.next_id(Signature),
        next_grant=ctx.next_id(Grant),
        next_request=ctx.next_id(AccessRequest),
    )
    datasets = _catalog(ctx, templates, _stewards(ctx, world))
    _catalog_events(rows, datasets)
    consents = _links(ctx, rows, datasets)
    budget = max(0, ctx.scale.agreements - ctx.counts.get("partnership agreements", 0))
    _contributions(ctx, rows, templates.contribution, budget)
    dua_budget = budget - rows.counts[AgreementKind.CONTRIBUTION.value]
    _access(ctx, rows, datasets, templates, consents, dua_budget)
    _other_mails(rows)

    ctx.counts["contribution agreements"] = _insert(
        ctx, Agreement, (a for a in rows.agreements if a["kind"] == AgreementKind.CONTRIBUTION)
    )
    ctx.counts["data-use agreements"] = _insert(
        ctx, Agreement, (a for a in rows.agreements if a["kind"] == AgreementKind.DATA_USE)
    )
    ctx.counts["signatures"] = _insert(ctx, Signature, rows.signatures)
    ctx.counts["grants"] = _insert(ctx, Grant, rows.grants)
    ctx.counts["access requests"] = _insert(ctx, AccessRequest, rows.requests)
    _outbox(ctx, rows)
    rows.audit.sort(key=lambda e: e["occurred_at"])
    ctx.counts["decision audit events"] = _insert(ctx, AuditEvent, rows.audit)
    ctx.session.flush()
