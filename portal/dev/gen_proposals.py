"""The benchmark generator's calls, proposals and reviews (see portal/dev/datagen.py).

Calls span three years: most are closed (or archived) and decided, the last one closed is still
being reviewed, a few are open (one of them rolling, open since the start), and one or two are
drafts that open later. Each offers GPU resources — the catalog's, else a few made here — with a
budget, a rubric and an allocation committee; some calls let that committee decide.

Proposals go to the calls' windows from the members of partner institutions (suspended ones only
in calls decided long ago) and end in the states a live program shows, each with the fields its
history leaves, as the workflow writes them (``portal/proposals/workflow.py``): every submission
froze a version (its snapshot as ``checklist.snapshot`` makes it); an endorsement or a return
names the institution's signing official; a decision names who took it (program staff, or a member
of the call's committee where it decides); an approved (active) project has its awards, each at
most what was asked for, and all awards on a call's resource fit in the call's budget there.
Awards on a resource, over all calls, fit in what its capacity has free, so that allocating them
(``gen_allocations``, which also moves the budget counters) never over-spends. Attachments are rows
only: their files are not written (a download answers 404).

Reviewers are assigned without conflicts (``portal/reviews/conflicts.py``): never on the team, never
from an institution of the team, never with a proposal of their own in the call, never against what
they declared. About three reviews a reviewed version, per criterion on its scale.

Personas: the busiest PI leads every 20th proposal and is on the team of every 50th; the busiest
reviewer gets every 10th assignment (conflicts allowing) and sits on several committees, among them
those of the call under review and of an open call, both deciding; the first institution's signing
official has proposals to endorse.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from portal.auth.models import User
from portal.core.audit import AuditEvent
from portal.dev.datagen import Context
from portal.institutions.models import Affiliation, InstitutionState
from portal.proposals.checklist import MIN_PLAN
from portal.proposals.models import (
    FIELDS,
    Attachment,
    AttachmentKind,
    Award,
    Call,
    CallResource,
    CallState,
    CommitteeMember,
    Invitation,
    InvitationState,
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
from portal.reviews.models import (
    EXPERTISE,
    Assignment,
    AssignmentState,
    DeclaredConflict,
    Review,
    ReviewerProfile,
    ReviewState,
)

P = ProposalState
A = AssignmentState
DAY = dt.timedelta(days=1)

#: Share of a resource's free capacity the generated calls offer as budgets, and the most of a
#: call's budget its awards take (the rest is headroom for supplements and renewals).
BUDGET_SHARE = 0.75
AWARDED_SHARE = 0.8
#: A catalog resource with less free capacity than this is not offered.
MIN_FREE_HOURS = 100_000
#: Most reviews of one version of a proposal.
MAX_REVIEWS = 6

#: Resources made when the catalog is empty: (cluster, GPU class, capacity, description).
NEW_RESOURCES = (
    ("datagen-atlas", "H100", 8_000_000, "H100 cluster (datagen): 1,024 H100 80 GB in nodes of 8."),
    ("datagen-atlas", "H200", 4_000_000, "H200 cluster (datagen): 512 H200 141 GB in nodes of 8."),
    ("datagen-borealis", "B200", 3_000_000, "B200 cluster (datagen): 384 B200 in NVL72 racks."),
    (
        "datagen-cirrus",
        "A100",
        2_000_000,
        "A100 cluster (datagen): 256 A100 80 GB, for smaller runs.",
    ),
)

#: Final states, by the phase of the proposal's call (relative weights).
STATE_WEIGHTS: dict[str, dict[P, int]] = {
    "open": {
        P.DRAFT: 30, P.AWAITING_ENDORSEMENT: 15, P.RETURNED: 4, P.SUBMITTED: 20,
        P.IN_REVIEW: 15, P.WITHDRAWN: 4,
    },
    "rolling": {
        P.DRAFT: 10, P.AWAITING_ENDORSEMENT: 6, P.RETURNED: 2, P.SUBMITTED: 8, P.IN_REVIEW: 14,
        P.REVISE: 4, P.WITHDRAWN: 5, P.DECLINED: 18, P.ACTIVE: 33,
    },
    "reviewing": {
        P.DRAFT: 8, P.AWAITING_ENDORSEMENT: 2, P.RETURNED: 2, P.SUBMITTED: 8, P.IN_REVIEW: 50,
        P.REVISE: 4, P.WITHDRAWN: 5, P.DECLINED: 8, P.ACTIVE: 13,
    },
    "decided": {
        P.DRAFT: 8, P.RETURNED: 2, P.WITHDRAWN: 6, P.REVISE: 2, P.DECLINED: 34, P.ACTIVE: 48,
    },
}  # fmt: skip
#: The state a withdrawn proposal was withdrawn from (relative weights).
WITHDRAWN_FROM = {
    P.DRAFT: 20, P.AWAITING_ENDORSEMENT: 15, P.RETURNED: 10, P.SUBMITTED: 20, P.IN_REVIEW: 30,
    P.REVISE: 5,
}  # fmt: skip
NEEDS_ENDORSEMENT = (P.AWAITING_ENDORSEMENT, P.RETURNED)

THEMES = (
    "Open foundation models",
    "Open science with open models",
    "Multilingual and low-resource AI",
    "AI for science",
    "Safety and evaluation of open models",
    "Efficient training at scale",
    "Small grants for open research",
)
RUBRIC = (
    ("Scientific merit", "Is the question important and the approach sound?"),
    ("Openness", "Will the weights, code and data be released under open licences?"),
    ("Feasibility", "Can the team do it with the hours asked for, in the time planned?"),
    ("Team", "Has the team the experience the plan needs?"),
    ("Broader impact", "Who else benefits from the results?"),
)
ADJECTIVES = (
    "Open", "Efficient", "Multilingual", "Robust", "Interpretable", "Sparse", "Long-context",
    "Reproducible", "Data-efficient", "Small", "Trustworthy", "Compute-optimal",
)  # fmt: skip
SUBJECTS: dict[str, tuple[str, ...]] = {
    "Computer vision": ("vision-language models", "video understanding", "3D scene models"),
    "Natural language processing": ("language models", "reasoning models", "retrieval models"),
    "Speech and audio": ("speech recognition", "speech synthesis", "audio tokenizers"),
    "Robotics": ("robot foundation models", "manipulation policies", "world models"),
    "Reinforcement learning": ("agents", "reward models", "offline RL policies"),
    "Machine learning theory": ("scaling laws", "optimiser dynamics", "generalisation bounds"),
    "AI safety and alignment": (
        "alignment methods",
        "red-teaming suites",
        "interpretability probes",
    ),
    "Scientific machine learning": ("PDE surrogates", "materials models", "weather emulators"),
    "Computational biology": ("protein language models", "single-cell models", "genomics models"),
    "Climate and earth science": ("climate emulators", "flood forecasting", "satellite models"),
    "Healthcare and medicine": ("clinical text models", "medical imaging models", "triage models"),
    "Other": ("education models", "legal-text models", "code models"),
}
PURPOSES = (
    "for low-resource languages", "for scientific discovery", "on openly licensed data",
    "at the edge", "for education", "for public-interest research", "with released checkpoints",
    "for long documents", "for accessibility", "across twelve languages",
)  # fmt: skip
ABSTRACT_SENTENCES = (
    "Openly released models need open research on how they learn and where they fail.",
    "We study this question with reproducible training runs and public evaluations.",
    "Every checkpoint, the training code and the data recipes will be released.",
    "The project builds on two years of pilot work in our group and a shared benchmark.",
    "Results will be compared against the strongest open baselines at every scale.",
    "The work is done with partners in three countries and a community of contributors.",
)
PLAN_SENTENCES = (
    "Months 1-3: the data pipeline, deduplication, licence filtering and the tokenizer.",
    "Months 4-9: training runs at three scales with careful ablations of the data mixture.",
    "Months 10-12: instruction tuning, evaluation on public benchmarks and the release.",
    "Each run is checkpointed hourly so that a failed node costs minutes, not days.",
    "Risks: data quality (mitigated by community review) and compute efficiency (mitigated by "
    "profiling with the lab's engineers before the large runs).",
    "Every result goes into a preprint; the weights and code are released with it.",
    "We evaluate in the open: the harness, prompts and raw outputs are published.",
)
DATASETS = (
    "",
    "The lab's open evaluation suite.",
    "A filtered multilingual web corpus (CC-BY) and the lab's open evaluation suite.",
    "A CC0 speech corpus of read and spontaneous speech.",
    "Public scientific articles (CC-BY) and their figures.",
)
LICENCES = {
    OutputKind.WEIGHTS: ("Apache-2.0", "MIT", "Apache-2.0 OR MIT"),
    OutputKind.CODE: ("Apache-2.0", "MIT", "BSD-3-Clause"),
    OutputKind.DATASET: ("CC-BY-4.0", "CC0-1.0", "ODC-By-1.0"),
    OutputKind.PAPER: ("CC-BY-4.0",),
}
OUTPUT_TEXT = {
    OutputKind.WEIGHTS: "Every checkpoint, base and tuned",
    OutputKind.CODE: "Training and evaluation code",
    OutputKind.DATASET: "The cleaned training data and its recipe",
    OutputKind.PAPER: "A preprint with all results",
}
RETURN_NOTES = (
    "Please attach the letter of support from the head of department.",
    "The budget section names the wrong cost centre; please correct it and resubmit.",
    "Please add the ethics approval for the human-subject data.",
)
DECLINE_REASONS = (
    "The panel ranked it below the funding line this round; we hope to see it again.",
    "The plan does not say how the weights would be released openly.",
    "The hours asked for are far beyond what the plan needs; a smaller scope would be welcome.",
)
REVISE_REASONS = (
    "Please narrow the scope to what the hours can support, and say how the data is released.",
    "The reviewers ask for a clearer evaluation plan and a risk section.",
)
APPROVE_REASONS = (
    "Ranked in the top third by the panel.",
    "A sound plan from a strong team.",
    "Useful, well scoped and fully open.",
)
WITHDRAW_REASONS = (
    "Merged into another project of the group.",
    "The student leading the work has left.",
    None,
)
DECLINE_ASSIGNMENT = (
    "I am travelling for most of the review period.",
    "Outside my expertise, sorry.",
    "Too many reviews this month.",
)
CONFLICT_ASSIGNMENT = (
    "I co-authored a paper with the PI last year.",
    "A former student of mine is on the team.",
)
TO_APPLICANT = (
    "A strong plan; please say more about how the data mixture is chosen.",
    "Clear goals and a credible team. The evaluation section needs more detail.",
    "The hours asked for match the plan. The release plan is exemplary.",
    "Interesting question, but the baselines are weak and the risks are understated.",
)
COMMENTS = (
    "Clear and well argued.",
    "Convincing, with minor gaps.",
    "Not enough detail to judge.",
    "Excellent.",
)


@dataclass(slots=True)
class _Offer:
    id: int
    resource_id: int
    resource_name: str
    #: Budget share planned for this offer, and what a proposal may ask for at most.
    pool: int = 0
    max_request: int = 1
    budget: int = 1
    requests: int = 0
    approved: int = 0


@dataclass(slots=True)
class _Criterion:
    id: int
    scale_max: int
    weight: int


@dataclass(slots=True)
class _Call:
    id: int
    index: int
    state: CallState
    phase: str
    opens_at: dt.datetime
    closes_at: dt.datetime | None
    reviews_due_at: dt.datetime | None
    panel_at: dt.datetime | None
    endorsement: bool
    committee_decides: bool
    reviews_wanted: int
    page_limit: int
    offers: list[_Offer] = field(default_factory=list)
    criteria: list[_Criterion] = field(default_factory=list)
    committee: list[int] = field(default_factory=list)
    #: Everyone on a team of a proposal to this call (they may not review in it).
    applicants: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Event:
    action: str
    actor: int
    at: dt.datetime = dt.datetime.min
    reason: str | None = None


@dataclass(slots=True)
class _Request:
    offer: _Offer
    fraction: float
    hours: int = 0
    award: int = 0


@dataclass(slots=True)
class _Proposal:
    id: int
    call: _Call
    institution: int
    pi: int
    team: list[tuple[int, TeamRole]]
    state: P
    quality: float
    complete: bool
    created_at: dt.datetime
    events: list[_Event] = field(default_factory=list)
    requests: list[_Request] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)


class _Ids:
    """The next free id of each model (rows are inserted with explicit ids)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.next: dict[Any, int] = {}

    def __call__(self, model: Any) -> int:
        if model not in self.next:
            self.next[model] = self.ctx.next_id(model)
        n = self.next[model]
        self.next[model] = n + 1
        return n


def generate(ctx: Context) -> None:
    """Calls with their offers, rubric and committee; proposals with their teams, requests,
    planned outputs, attachments, versions, invitations and awards; reviewer profiles, declared
    conflicts, assignments and reviews; and the proposals' audit trail."""
    ids = _Ids(ctx)
    resources = _resources(ctx, ids)
    calls = _calls(ctx, ids, resources)
    ctx.counts["calls"] = len(calls)
    facts = _ReviewerFacts.load(ctx)
    proposals = _proposals(ctx, ids, calls)
    _budgets(ctx, resources, calls, proposals)
    _insert_calls(ctx, ids, calls)
    people = _people(ctx, proposals)
    _insert_proposals(ctx, ids, proposals, people)
    facts.insert(ctx, ids)
    _reviews(ctx, ids, proposals, facts)
    _audit(ctx, proposals)


# --- resources and calls -------------------------------------------------------------------------


def _resources(ctx: Context, ids: _Ids) -> list[tuple[int, str, int]]:
    """(id, name, hours the calls may offer) of each resource offered: the catalog's active ones
    with enough free capacity, else new ones."""
    rows = ctx.session.execute(
        select(
            Resource.id,
            Resource.gpu_class,
            Resource.cluster,
            Resource.capacity_hours - Resource.allocated_hours,
        )
        .where(Resource.active.is_(True))
        .order_by(Resource.id)
    ).all()
    usable = [
        (rid, f"{gpu} on {cluster}", int(BUDGET_SHARE * free))
        for rid, gpu, cluster, free in rows
        if free >= MIN_FREE_HOURS
    ]
    if usable:
        return usable
    made = []
    new_rows = []
    created = ctx.now - dt.timedelta(days=365 * 3 + 60)
    for cluster, gpu, capacity, description in NEW_RESOURCES:
        rid = ids(Resource)
        new_rows.append(
            {
                "id": rid,
                "cluster": cluster,
                "gpu_class": gpu,
                "capacity_hours": capacity,
                "allocated_hours": 0,
                "period_months": 12,
                "description": description,
                "active": True,
                "created_at": created,
                "updated_at": created,
            }
        )
        made.append((rid, f"{gpu} on {cluster}", int(BUDGET_SHARE * capacity)))
    ctx.counts["resources"] = ctx.bulk(Resource, new_rows)
    return made


def _calls(ctx: Context, ids: _Ids, resources: list[tuple[int, str, int]]) -> list[_Call]:
    """The calls' plan: dates, state and phase, flags, offers, rubric, committee."""
    rng, now, n = ctx.rng, ctx.now, ctx.scale.calls
    start = now - dt.timedelta(days=365 * 3)
    drafts = n // 20
    opened = max(1, n // 10) if n > 1 else 1
    past = n - drafts - opened
    reviewer = ctx.personas.get("reviewer")
    pool = [r for r in ctx.reviewers if r != reviewer]
    calls: list[_Call] = []
    for k in range(n):
        closes_at: dt.datetime | None
        if k < past:
            if k == past - 1:
                # The last call closed a month ago: its panel meets soon.
                opens_at = now - dt.timedelta(days=rng.uniform(100, 130))
                closes_at = now - dt.timedelta(days=rng.uniform(20, 40))
            else:
                span = (now - dt.timedelta(days=200) - start).total_seconds()
                opens_at = start + dt.timedelta(seconds=span * k / max(past - 1, 1))
                opens_at += dt.timedelta(days=rng.uniform(0, 10))
                closes_at = opens_at + dt.timedelta(days=rng.uniform(45, 100))
            state = (
                CallState.ARCHIVED if closes_at < now - dt.timedelta(days=400) else CallState.CLOSED
            )
        elif k == past:
            # The rolling call, open since the start of the program.
            opens_at = start + dt.timedelta(days=rng.uniform(20, 60))
            closes_at, state = None, CallState.OPEN
        elif k < past + opened:
            opens_at = now - dt.timedelta(days=rng.uniform(20, 100))
            closes_at, state = now + dt.timedelta(days=rng.uniform(20, 80)), CallState.OPEN
        else:
            opens_at = now + dt.timedelta(days=rng.uniform(20, 90))
            closes_at, state = opens_at + dt.timedelta(days=60), CallState.DRAFT
        due = closes_at + dt.timedelta(days=28) if closes_at else None
        panel = closes_at + dt.timedelta(days=56) if closes_at else None
        if state == CallState.DRAFT:
            phase = "upcoming"
        elif state == CallState.OPEN:
            phase = "open" if closes_at else "rolling"
        else:
            phase = "reviewing" if panel and panel > now else "decided"
        # The committee decides where its call is under review, in one open call, and in every
        # third call; the busiest reviewer sits on those and on every fourth.
        forced = k == past - 1 or k == past + 1
        call = _Call(
            id=ids(Call),
            index=k,
            state=state,
            phase=phase,
            opens_at=opens_at,
            closes_at=closes_at,
            reviews_due_at=due,
            panel_at=panel,
            endorsement=closes_at is not None and rng.random() < 0.75,
            committee_decides=bool(pool) and (forced or k % 3 == 0),
            reviews_wanted=rng.choice((2, 3, 3)),
            page_limit=rng.choice((10, 10, 15, 20)),
        )
        if pool:
            call.committee = rng.sample(pool, min(len(pool), rng.randint(3, 5)))
        if reviewer is not None and (forced or k % 4 == 1):
            call.committee.append(reviewer)
        if not call.committee:
            call.committee_decides = False
        chosen = rng.sample(resources, rng.randint(1, min(3, len(resources))))
        for rid, name, _ in sorted(chosen):
            call.offers.append(_Offer(id=ids(CallResource), resource_id=rid, resource_name=name))
        for _ in RUBRIC[: rng.randint(3, len(RUBRIC))]:
            call.criteria.append(
                _Criterion(id=ids(RubricCriterion), scale_max=rng.choice((5, 5, 5, 7, 10)),
                           weight=rng.randint(1, 3))
            )  # fmt: skip
        calls.append(call)
    return calls


def _insert_calls(ctx: Context, ids: _Ids, calls: list[_Call]) -> None:
    rng = ctx.rng

    def rows() -> Iterator[dict[str, Any]]:
        for c in calls:
            created = min(c.opens_at, ctx.now) - dt.timedelta(days=rng.uniform(10, 40))
            theme = THEMES[c.index % len(THEMES)]
            title = (
                f"Rolling call: {theme.lower()}"
                if c.closes_at is None
                else f"{theme}, {'spring' if c.opens_at.month <= 6 else 'autumn'} {c.opens_at.year}"
            )
            yield {
                "id": c.id,
                "title": title,
                "description": (
                    f"**{title}** offers GPU-hours to partner institutions for open research.\n\n"
                    "- Results, weights and code are released under open licences.\n"
                    "- Proposals are reviewed by peers without conflicts of interest."
                ),
                "eligibility": "Faculty and research staff at partner institutions; students as "
                "members of a team.",
                "opens_at": c.opens_at,
                "closes_at": c.closes_at,
                "state": c.state,
                "reviews_wanted": c.reviews_wanted,
                "single_blind": c.index % 5 != 0,
                "endorsement_required": c.endorsement,
                "page_limit": c.page_limit,
                "reviews_hidden_until_own": c.index % 7 != 0,
                "committee_decides": c.committee_decides,
                "reviews_due_at": c.reviews_due_at,
                "panel_at": c.panel_at,
                "created_at": created,
                "updated_at": created,
            }

    ctx.counts["calls"] = ctx.bulk(Call, rows())
    ctx.bulk(
        CallResource,
        (
            {
                "id": o.id,
                "call_id": c.id,
                "resource_id": o.resource_id,
                "budget_hours": o.budget,
                "max_request_hours": o.max_request,
                # Moved by the allocations made from the awards (gen_allocations).
                "allocated_hours": 0,
            }
            for c in calls
            for o in c.offers
        ),
    )
    ctx.bulk(
        RubricCriterion,
        (
            {
                "id": cr.id,
                "call_id": c.id,
                "position": i,
                "name": RUBRIC[i][0],
                "description": RUBRIC[i][1],
                "weight": cr.weight,
                "scale_max": cr.scale_max,
            }
            for c in calls
            for i, cr in enumerate(c.criteria)
        ),
    )
    ctx.counts["committee members"] = ctx.bulk(
        CommitteeMember,
        (
            {"id": ids(CommitteeMember), "call_id": c.id, "user_id": uid}
            for c in calls
            for uid in c.committee
        ),
    )


# --- reviewers' facts ----------------------------------------------------------------------------


@dataclass
class _ReviewerFacts:
    """What decides a reviewer's conflicts: their institutions (every affiliation, whatever its
    state: stricter than the rule), and what they declared."""

    reviewers: list[int]
    institutions: dict[int, set[int]]
    declared_institutions: dict[int, set[int]] = field(default_factory=dict)
    declared_people: dict[int, set[int]] = field(default_factory=dict)
    declared_rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, ctx: Context) -> _ReviewerFacts:
        reviewers = list(ctx.reviewers)
        institutions: dict[int, set[int]] = {r: set() for r in reviewers}
        for chunk in _chunks(reviewers, 5000):
            for uid, inst in ctx.session.execute(
                select(Affiliation.user_id, Affiliation.institution_id).where(
                    Affiliation.user_id.in_(chunk)
                )
            ):
                institutions[uid].add(inst)
        facts = cls(reviewers, institutions)
        # One reviewer in ten declares an institution, one in twenty a person.
        insts = [i["id"] for i in ctx.institutions if i["state"] == InstitutionState.PARTNER]
        people = [u for inst in sorted(ctx.members) for u in ctx.members[inst]]
        for r in reviewers:
            roll = ctx.rng.random()
            if roll < 0.1 and insts:
                inst = ctx.rng.choice(insts)
                facts.declared_institutions.setdefault(r, set()).add(inst)
                facts.declared_rows.append(
                    {"reviewer_id": r, "person_id": None, "institution_id": inst,
                     "reason": "I hold a visiting position there."}
                )  # fmt: skip
            elif roll < 0.15 and people:
                person = ctx.rng.choice(people)
                if person == r:
                    continue
                facts.declared_people.setdefault(r, set()).add(person)
                facts.declared_rows.append(
                    {"reviewer_id": r, "person_id": person, "institution_id": None,
                     "reason": "A close collaborator of mine."}
                )  # fmt: skip
        return facts

    def free(self, p: _Proposal, team_insts: set[int]) -> list[int]:
        """The reviewers without a conflict with ``p``: not on its team, without a proposal of
        their own in its call, not from an institution of its team, nothing declared against it."""
        team = {u for u, _ in p.team}
        empty: set[int] = set()
        return [
            r
            for r in self.reviewers
            if r not in p.call.applicants
            and self.institutions[r].isdisjoint(team_insts)
            and self.declared_institutions.get(r, empty).isdisjoint(team_insts)
            and self.declared_people.get(r, empty).isdisjoint(team)
        ]

    def insert(self, ctx: Context, ids: _Ids) -> None:
        """The reviewers' profiles (for those without one) and declared conflicts."""
        had: set[int] = set()
        for chunk in _chunks(self.reviewers, 5000):
            had.update(
                ctx.session.scalars(
                    select(ReviewerProfile.user_id).where(ReviewerProfile.user_id.in_(chunk))
                )
            )
        busiest = ctx.personas.get("reviewer")
        rng, now = ctx.rng, ctx.now
        ctx.bulk(
            ReviewerProfile,
            (
                {
                    "id": ids(ReviewerProfile),
                    "user_id": r,
                    "expertise": sorted(rng.sample(EXPERTISE, rng.randint(2, 5))),
                    "load_limit": 50 if r == busiest else rng.randint(3, 12),
                    "created_at": now - dt.timedelta(days=365 * 3),
                    "updated_at": now - dt.timedelta(days=365 * 3),
                }
                for r in self.reviewers
                if r not in had
            ),
        )
        ctx.counts["declared conflicts"] = ctx.bulk(
            DeclaredConflict,
            (
                {
                    "id": ids(DeclaredConflict),
                    **row,
                    "declared_at": now - dt.timedelta(days=365 * 3),
                }
                for row in self.declared_rows
            ),
        )


# --- proposals -----------------------------------------------------------------------------------


def _proposals(ctx: Context, ids: _Ids, calls: list[_Call]) -> list[_Proposal]:
    """Each proposal's call, institution, team, final state and history, and requests."""
    rng = ctx.rng
    insts = {i["id"]: i for i in ctx.institutions}
    # Those with researchers, and a signing official to endorse their proposals.
    able = [i for i in sorted(ctx.members) if ctx.members[i] and i in ctx.officials and i in insts]
    partners = [i for i in able if insts[i]["state"] == InstitutionState.PARTNER]
    suspended = [i for i in able if insts[i]["state"] == InstitutionState.SUSPENDED]
    member_of = {u: i for i in sorted(ctx.members) for u in ctx.members[i]}
    open_calls = [c for c in calls if c.phase != "upcoming"]
    if not partners or not open_calls:
        ctx.counts["proposals"] = 0
        return []
    weight_of = {i: rng.uniform(0.3, 2.5) for i in partners + suspended}
    call_weights = [(4.0 if c.phase == "rolling" else rng.uniform(0.6, 1.4)) for c in open_calls]
    first_inst = ctx.institutions[0]["id"] if ctx.institutions else None
    busiest = ctx.personas.get("pi")
    if busiest is None or first_inst not in partners or member_of.get(busiest) != first_inst:
        busiest = None
    out: list[_Proposal] = []
    current = [c for c in open_calls if c.phase in ("open", "rolling")]
    for n in range(ctx.scale.proposals):
        lead_busiest = busiest is not None and n % 20 == 0
        # The busiest PI is busy now: half their proposals go to the calls open today.
        calls_now = lead_busiest and rng.random() < 0.5
        call = rng.choice(current) if calls_now else rng.choices(open_calls, call_weights)[0]
        pool = partners + suspended if call.phase == "decided" else partners
        lead_busiest = lead_busiest and busiest not in call.committee
        if lead_busiest:
            inst, pi = first_inst, busiest
        else:
            inst = rng.choices(pool, [weight_of[i] for i in pool])[0]
            candidates = [u for u in ctx.members[inst] if u not in call.committee]
            if not candidates:
                continue
            pi = rng.choice(candidates)
        assert inst is not None and pi is not None
        team = _team(ctx, inst, pi, call, partners, n, busiest)
        state = _state(ctx, call, inst == first_inst)
        p = _Proposal(
            id=ids(Proposal),
            call=call,
            institution=inst,
            pi=pi,
            team=team,
            state=state,
            quality=_quality(ctx, state),
            complete=state != P.DRAFT or rng.random() < 0.4,
            created_at=ctx.now,
        )
        _history(ctx, p)
        _plan_requests(ctx, p)
        call.applicants.update(u for u, _ in team)
        out.append(p)
    # Who decides needs the final teams: a committee member deciding is never on the team.
    for p in out:
        _deciders(ctx, p)
    ctx.counts["proposals"] = len(out)
    return out


def _team(
    ctx: Context,
    inst: int,
    pi: int,
    call: _Call,
    partners: list[int],
    n: int,
    busiest: int | None,
) -> list[tuple[int, TeamRole]]:
    """The PI and one to four others, from the same institution mostly."""
    rng = ctx.rng
    team = [(pi, TeamRole.PI)]
    taken = {pi, *call.committee}
    if busiest is not None and n % 50 == 5 and busiest not in taken:
        team.append((busiest, TeamRole.CO_PI))
        taken.add(busiest)
    size = rng.choice((2, 2, 3, 3, 3, 4, 4, 5))
    for _ in range(size * 3):
        if len(team) >= size:
            break
        where = inst if rng.random() < 0.7 else rng.choice(partners)
        uid = rng.choice(ctx.members[where])
        if uid in taken:
            continue
        taken.add(uid)
        role = TeamRole.CO_PI if len(team) == 1 or rng.random() < 0.4 else TeamRole.MEMBER
        team.append((uid, role))
    return team


def _state(ctx: Context, call: _Call, first_inst: bool) -> P:
    weights = dict(STATE_WEIGHTS[call.phase])
    if not call.endorsement:
        weights[P.SUBMITTED] = weights.get(P.SUBMITTED, 0) + weights.pop(P.AWAITING_ENDORSEMENT, 0)
        weights.pop(P.RETURNED, None)
    elif first_inst and call.phase in ("open", "rolling"):
        # The first institution's signing official has a full endorsement queue.
        weights[P.AWAITING_ENDORSEMENT] *= 8
    states = list(weights)
    return ctx.rng.choices(states, [weights[s] for s in states])[0]


def _quality(ctx: Context, state: P) -> float:
    rng = ctx.rng
    if state == P.ACTIVE:
        return rng.uniform(0.55, 1.0)
    if state == P.DECLINED:
        return rng.uniform(0.0, 0.6)
    if state == P.REVISE:
        return rng.uniform(0.3, 0.7)
    return rng.uniform(0.0, 1.0)


def _history(ctx: Context, p: _Proposal) -> None:
    """The transitions that led ``p`` to its state, with their times, actors and reasons; and the
    proposal's row fields that follow from them."""
    rng, call, now = ctx.rng, p.call, ctx.now
    official = ctx.officials[p.institution]
    officer = ctx.officer
    submit = "submit_for_endorsement" if call.endorsement else "submit"
    final = p.state
    before = rng.choices(list(WITHDRAWN_FROM), list(WITHDRAWN_FROM.values()))[0] if (
        final == P.WITHDRAWN
    ) else final  # fmt: skip
    if before in NEEDS_ENDORSEMENT and not call.endorsement:
        before = P.SUBMITTED
    rounds = 0 if before == P.DRAFT else rng.choices((1, 2, 3), (75, 20, 5))[0]
    pre: list[_Event] = []  # up to the last submission: while the call takes submissions
    post: list[_Event] = []
    for r in range(1, rounds + 1):
        pre.append(_Event(submit, p.pi))
        last = r == rounds
        if not last:
            if call.endorsement and rng.random() < 0.5:
                pre.append(_Event("return", official, reason=rng.choice(RETURN_NOTES)))
            else:
                if call.endorsement:
                    pre.append(_Event("endorse", official))
                pre += [
                    _Event("start_review", officer),
                    _Event("revise", 0, reason=rng.choice(REVISE_REASONS)),
                ]
            continue
        if before == P.AWAITING_ENDORSEMENT:
            break
        if before == P.RETURNED:
            post.append(_Event("return", official, reason=rng.choice(RETURN_NOTES)))
            break
        if call.endorsement:
            post.append(_Event("endorse", official))
        if before == P.SUBMITTED:
            break
        post.append(_Event("start_review", officer))
        if before == P.REVISE:
            post.append(_Event("revise", 0, reason=rng.choice(REVISE_REASONS)))
        elif before == P.DECLINED:
            post.append(_Event("decline", 0, reason=rng.choice(DECLINE_REASONS)))
        elif before == P.ACTIVE:
            post.append(_Event("approve", 0, reason=rng.choice(APPROVE_REASONS)))
    if final == P.WITHDRAWN:
        post.append(_Event("withdraw", p.pi, reason=rng.choice(WITHDRAW_REASONS)))

    # Times: everything up to the last submission while the call took submissions; what follows
    # before the panel (for a decided call) or now.
    if call.closes_at is None:
        created = ctx.when(call.opens_at, now - DAY)
        end = min(now, created + dt.timedelta(days=rng.uniform(60, 240)))
        ends = (end, end)
    else:
        close = min(call.closes_at, now)
        created = ctx.when(call.opens_at, close - DAY)
        limit = now
        if call.phase == "decided" and call.panel_at is not None:
            limit = min(now, call.panel_at + dt.timedelta(days=rng.uniform(0, 21)))
        ends = (close, limit)
    p.created_at = created
    t = created
    for group, end in ((pre, ends[0]), (post, ends[1])):
        moments = sorted(ctx.when(t, end) for _ in group)
        for ev, at in zip(group, moments, strict=True):
            ev.at = at
        if moments:
            t = moments[-1]
    p.events = pre + post


def _deciders(ctx: Context, p: _Proposal) -> None:
    """Who took each review decision: program staff, or a member of the call's committee (not on
    the team) where the committee decides."""
    team = {u for u, _ in p.team}
    deciders = [u for u in p.call.committee if u not in team] if p.call.committee_decides else []
    for ev in p.events:
        if ev.action in ("approve", "revise", "decline"):
            ev.actor = ctx.rng.choice(deciders) if deciders else ctx.officer


def _plan_requests(ctx: Context, p: _Proposal) -> None:
    """Which offers the proposal asks for (the hours follow once the budgets are known)."""
    rng = ctx.rng
    if not p.complete and rng.random() < 0.5:
        return
    offers = p.call.offers
    k = rng.choices(range(1, len(offers) + 1), [3, 2, 1][: len(offers)])[0]
    for offer in rng.sample(offers, k):
        offer.requests += 1
        if p.state == P.ACTIVE:
            offer.approved += 1
        p.requests.append(_Request(offer, rng.uniform(0.08, 1.0)))


def _budgets(
    ctx: Context,
    resources: list[tuple[int, str, int]],
    calls: list[_Call],
    proposals: list[_Proposal],
) -> None:
    """Each offer's budget (a share of its resource's free capacity, by demand), the most a
    proposal may ask for, the hours asked for, and the awards (scaled down where they would take
    more than ``AWARDED_SHARE`` of the budget)."""
    rng = ctx.rng
    free = {rid: hours for rid, _, hours in resources}
    demand: dict[int, int] = defaultdict(int)
    for c in calls:
        for o in c.offers:
            demand[o.resource_id] += o.requests + 1
    for c in calls:
        for o in c.offers:
            o.pool = max(1000, free[o.resource_id] * (o.requests + 1) // demand[o.resource_id])
            expected = max(o.approved, math.ceil(0.4 * o.requests), 1)
            cap = int(1.6 * AWARDED_SHARE * o.pool / expected)
            cap = cap // 100 * 100 if cap >= 1000 else cap
            o.max_request = max(1, min(cap, o.pool))
            o.budget = max(o.max_request, math.ceil(o.pool / 1000) * 1000)
    awarded: dict[int, list[_Request]] = defaultdict(list)
    for p in proposals:
        for r in p.requests:
            top = r.offer.max_request
            hours = int(r.fraction * top)
            if top >= 1000:
                hours = max(100, hours // 100 * 100)
            r.hours = max(1, min(hours, top))
            if p.state == P.ACTIVE:
                r.award = max(1, int(r.hours * rng.uniform(0.5, 1.0)))
                awarded[r.offer.id].append(r)
    for c in calls:
        for o in c.offers:
            given = awarded.get(o.id, [])
            total = sum(r.award for r in given)
            cap = int(AWARDED_SHARE * o.pool)
            if total > cap:
                factor = cap / total
                for r in given:
                    r.award = max(1, int(r.award * factor))
                total = sum(r.award for r in given)
            # Never over the budget, even where every award is one hour.
            o.budget = max(o.budget, total)


# --- rows ----------------------------------------------------------------------------------------


@dataclass
class _People:
    names: dict[int, str]
    emails: dict[int, str]


def _people(ctx: Context, proposals: list[_Proposal]) -> _People:
    """Names (for the versions' snapshots) and addresses (for invitations) of the team members."""
    users = sorted({u for p in proposals for u, _ in p.team})
    names: dict[int, str] = {}
    emails: dict[int, str] = {}
    for chunk in _chunks(users, 5000):
        for uid, name, email in ctx.session.execute(
            select(User.id, User.display_name, User.email).where(User.id.in_(chunk))
        ):
            names[uid], emails[uid] = name, email or f"p{uid}@datagen.example"
    return _People(names, emails)


def _text(ctx: Context, p: _Proposal) -> dict[str, Any]:
    rng = ctx.rng
    fld = rng.choice(FIELDS)
    title = (
        f"{rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS[fld])} {rng.choice(PURPOSES)}"
    ).capitalize()
    abstract = f"{title}. " + " ".join(rng.sample(ABSTRACT_SENTENCES, 4))
    # Sentences until the plan is long enough to submit (the checklist's MIN_PLAN).
    sentences = rng.sample(PLAN_SENTENCES, len(PLAN_SENTENCES))
    plan = ""
    while sentences and len(plan) < MIN_PLAN:
        plan = f"{plan} {sentences.pop()}".strip()
    if not p.complete:
        return {
            "title": title,
            "abstract": abstract[: rng.choice((0, 80, len(abstract)))],
            "field": rng.choice((fld, "")),
            "plan": rng.choice(("", plan[:200])),
            "requested_datasets": "",
            "start_date": None,
            "duration_months": None,
        }
    decided = next((e.at for e in p.events if e.action == "approve"), None)
    first = next((e.at for e in p.events if e.action.startswith("submit")), p.created_at)
    start = (decided or first) + dt.timedelta(days=rng.uniform(10, 90))
    return {
        "title": title,
        "abstract": abstract,
        "field": fld,
        "plan": plan,
        "requested_datasets": rng.choice(DATASETS),
        "start_date": start.date(),
        "duration_months": rng.choice((6, 9, 12, 12, 12, 18, 24)),
    }


def _insert_proposals(ctx: Context, ids: _Ids, proposals: list[_Proposal], people: _People) -> None:
    """Proposals and everything that hangs off them but the reviews."""
    rng = ctx.rng
    teams: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    attachments: list[dict[str, Any]] = []
    versions: list[dict[str, Any]] = []
    invitations: list[dict[str, Any]] = []
    awards: list[dict[str, Any]] = []
    for p in proposals:
        text = _text(ctx, p)
        submissions = [e for e in p.events if e.action.startswith("submit")]
        first_submit = submissions[0].at if submissions else None
        p.row = _proposal_row(p, text)
        # Team: the others joined (accepting an invitation) before the first submission.
        for uid, role in p.team:
            joined = p.created_at
            if role != TeamRole.PI:
                joined = ctx.when(
                    p.created_at, first_submit or min(ctx.now, p.created_at + dt.timedelta(days=5))
                )
                if rng.random() < 0.4:
                    invitations.append(
                        _invitation(ids, p, people.emails[uid], role, joined, accepted_by=uid)
                    )
            teams.append(
                {"id": ids(TeamMember), "proposal_id": p.id, "user_id": uid, "role": role,
                 "joined_at": joined}
            )  # fmt: skip
        if p.state in (P.DRAFT, P.RETURNED, P.REVISE) and rng.random() < 0.15:
            at = p.events[-1].at if p.events else p.created_at
            invitations.append(
                _invitation(ids, p, f"invitee{p.id}@datagen.example", TeamRole.MEMBER, at, None)
            )
        req_rows = []
        for r in p.requests:
            req_rows.append(
                {
                    "id": ids(ResourceRequest),
                    "proposal_id": p.id,
                    "call_resource_id": r.offer.id,
                    "hours": r.hours,
                    "justification": f"Training and ablation runs on {r.offer.resource_name}: "
                    f"{max(1, r.hours // 800)} runs of about 100 node-hours each, checkpointed.",
                }
            )
            if r.award:
                awards.append(
                    {"id": ids(Award), "proposal_id": p.id, "call_resource_id": r.offer.id,
                     "hours": r.award}
                )  # fmt: skip
        requests += req_rows
        kinds = [OutputKind.WEIGHTS, OutputKind.CODE, OutputKind.PAPER, OutputKind.DATASET]
        out_rows = [
            {
                "id": ids(PlannedOutput),
                "proposal_id": p.id,
                "kind": kind,
                "license": rng.choice(LICENCES[kind]),
                "description": OUTPUT_TEXT[kind],
            }
            for kind in (kinds[: rng.randint(1, 4)] if p.complete else [])
        ]
        outputs += out_rows
        att_rows = []
        if p.complete:
            uploaded = ctx.when(p.created_at, first_submit) if first_submit else p.created_at
            att_rows.append(_attachment(ctx, ids, p, AttachmentKind.DESCRIPTION, uploaded))
            if rng.random() < 0.25:
                att_rows.append(_attachment(ctx, ids, p, AttachmentKind.SUPPORT_LETTER, uploaded))
        attachments += att_rows
        for number, ev in enumerate(submissions, start=1):
            versions.append(
                {
                    "id": ids(ProposalVersion),
                    "proposal_id": p.id,
                    "number": number,
                    "submitted_at": ev.at,
                    "submitted_by_id": ev.actor,
                    "snapshot": _snapshot(
                        text,
                        p,
                        req_rows,
                        out_rows,
                        att_rows,
                        people,
                        older=number < len(submissions),
                    ),
                }
            )
    ctx.bulk(Proposal, (p.row for p in proposals))
    ctx.counts["team members"] = ctx.bulk(TeamMember, teams)
    ctx.counts["resource requests"] = ctx.bulk(ResourceRequest, requests)
    ctx.counts["planned outputs"] = ctx.bulk(PlannedOutput, outputs)
    ctx.counts["attachments"] = ctx.bulk(Attachment, attachments)
    ctx.counts["proposal versions"] = ctx.bulk(ProposalVersion, versions)
    ctx.counts["invitations"] = ctx.bulk(Invitation, invitations)
    ctx.counts["awards"] = ctx.bulk(Award, awards)


def _proposal_row(p: _Proposal, text: dict[str, Any]) -> dict[str, Any]:
    """The proposal's row as the workflow leaves it after its history."""
    row: dict[str, Any] = {
        "id": p.id,
        "call_id": p.call.id,
        "institution_id": p.institution,
        **text,
        "state": p.state,
        "state_changed_at": p.events[-1].at if p.events else p.created_at,
        "version": 0,
        "submitted_at": None,
        "endorsed_by_id": None,
        "endorsed_at": None,
        "decision_note": None,
        "decided_by_id": None,
        "decided_at": None,
        "decision_reason": None,
        "created_at": p.created_at,
        "updated_at": p.events[-1].at if p.events else p.created_at,
    }
    for ev in p.events:
        if ev.action.startswith("submit"):
            row["version"] += 1
            row["submitted_at"] = ev.at
        elif ev.action in ("endorse", "return"):
            row.update(endorsed_by_id=ev.actor, endorsed_at=ev.at, decision_note=ev.reason)
        elif ev.action in ("approve", "revise", "decline"):
            row.update(decided_by_id=ev.actor, decided_at=ev.at, decision_reason=ev.reason)
    return row


def _attachment(
    ctx: Context, ids: _Ids, p: _Proposal, kind: AttachmentKind, at: dt.datetime
) -> dict[str, Any]:
    aid = ids(Attachment)
    name = (
        "Project description.pdf" if kind == AttachmentKind.DESCRIPTION else "Letter of support.pdf"
    )
    return {
        "id": aid,
        "proposal_id": p.id,
        "kind": kind,
        # Random but unique: the id comes first.
        "stored_name": f"{aid:012x}{ctx.rng.getrandbits(80):020x}",
        "original_name": name,
        "size_bytes": ctx.rng.randint(80_000, 4_000_000),
        "pages": ctx.rng.randint(1, p.call.page_limit),
        "sha256": f"{ctx.rng.getrandbits(256):064x}",
        "uploaded_by_id": p.pi,
        "uploaded_at": at,
    }


def _invitation(
    ids: _Ids,
    p: _Proposal,
    email: str,
    role: TeamRole,
    at: dt.datetime,
    accepted_by: int | None,
) -> dict[str, Any]:
    iid = ids(Invitation)
    return {
        "id": iid,
        "proposal_id": p.id,
        "email": email,
        "role": role,
        "token_hash": hashlib.sha256(f"datagen-invitation-{iid}-{p.id}".encode()).hexdigest(),
        "expires_at": at + dt.timedelta(days=14),
        "state": InvitationState.ACCEPTED if accepted_by else InvitationState.PENDING,
        "invited_by_id": p.pi,
        "accepted_by_id": accepted_by,
        "decided_at": at if accepted_by else None,
        "created_at": at,
        "updated_at": at,
    }


def _snapshot(
    text: dict[str, Any],
    p: _Proposal,
    requests: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    attachments: list[dict[str, Any]],
    people: _People,
    *,
    older: bool,
) -> dict[str, Any]:
    """What ``checklist.snapshot`` freezes; an older version asked for a little more."""
    names = {r.offer.id: r.offer.resource_name for r in p.requests}
    limits = {r.offer.id: r.offer.max_request for r in p.requests}
    return {
        "title": text["title"],
        "abstract": text["abstract"],
        "field": text["field"],
        "plan": text["plan"],
        "requested_datasets": text["requested_datasets"],
        "start_date": text["start_date"].isoformat() if text["start_date"] else None,
        "duration_months": text["duration_months"],
        "requests": [
            {
                "resource": names[r["call_resource_id"]],
                "call_resource_id": r["call_resource_id"],
                "hours": min(limits[r["call_resource_id"]], r["hours"] * 5 // 4)
                if older
                else r["hours"],
                "justification": r["justification"],
            }
            for r in requests
        ],
        "outputs": [
            {"kind": o["kind"].value, "license": o["license"], "description": o["description"]}
            for o in outputs
        ],
        "team": [
            {"user_id": uid, "name": people.names.get(uid, ""), "role": role.value}
            for uid, role in p.team
        ],
        "attachments": [
            {"id": a["id"], "kind": a["kind"].value, "name": a["original_name"],
             "sha256": a["sha256"]}
            for a in attachments
        ],
    }  # fmt: skip


# --- reviews -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Round:
    """One reviewed version: from the start of its review to its decision (or withdrawal, or now)."""

    proposal: _Proposal
    version: int
    start: dt.datetime
    end: dt.datetime
    #: ``decided`` (revise, approve, decline), ``withdrawn`` or ``open`` (still in review).
    outcome: str
    reviews: int = 0


def _rounds(ctx: Context, proposals: list[_Proposal]) -> list[_Round]:
    out = []
    for p in proposals:
        version = 0
        for i, ev in enumerate(p.events):
            if ev.action.startswith("submit"):
                version += 1
            if ev.action != "start_review":
                continue
            after = p.events[i + 1] if i + 1 < len(p.events) else None
            if after is None:
                out.append(_Round(p, version, ev.at, ctx.now, "open"))
            elif after.action == "withdraw":
                out.append(_Round(p, version, ev.at, after.at, "withdrawn"))
            else:
                out.append(_Round(p, version, ev.at, after.at, "decided"))
    return out


def _reviews(ctx: Context, ids: _Ids, proposals: list[_Proposal], facts: _ReviewerFacts) -> None:
    """Assignments without conflicts and about ``scale.reviews`` reviews over the reviewed
    versions; every tenth assignment goes to the busiest reviewer where they are free."""
    rng = ctx.rng
    rounds = _rounds(ctx, proposals)
    if rounds:
        base, extra = divmod(ctx.scale.reviews, len(rounds))
        lucky = set(rng.sample(range(len(rounds)), extra))
        for i, r in enumerate(rounds):
            r.reviews = min(MAX_REVIEWS, base + (i in lucky))
    member_of = {u: i for i in sorted(ctx.members) for u in ctx.members[i]}
    busiest = ctx.personas.get("reviewer")
    state = _AssignState(counter=0)
    assignments: list[dict[str, Any]] = []
    reviews: list[dict[str, Any]] = []
    by_proposal: dict[int, list[_Round]] = defaultdict(list)
    for r in rounds:
        by_proposal[r.proposal.id].append(r)
    for p in proposals:
        mine = by_proposal.get(p.id)
        if not mine:
            continue
        team_insts = {p.institution} | {member_of[u] for u, _ in p.team if u in member_of}
        free = facts.free(p, team_insts)
        if not free:
            continue
        accepted: list[dict[str, Any]] = []
        taken: set[int] = set()
        for rnd in mine:
            want = min(rnd.reviews, len(free))
            # Reviewers of an earlier version review the next one; new ones fill the rest.
            while len(accepted) < want:
                a = _assign(ctx, ids, rnd, free, taken, busiest, state, A.ACCEPTED)
                if a is None:
                    break
                accepted.append(a)
                assignments.append(a)
            writers = accepted[:want]
            for a in writers:
                reviews.append(_review(ctx, ids, a, rnd))
            # Some asked decline, declare a conflict, or are taken off again.
            if rnd is mine[0] and rng.random() < 0.25:
                other = rng.choice((A.DECLINED, A.DECLINED, A.CONFLICT, A.REMOVED))
                a = _assign(ctx, ids, rnd, free, taken, busiest, state, other)
                if a is not None:
                    assignments.append(a)
            if rnd.outcome == "open":
                # Still in review: some accepted and not started, some not answered yet.
                for st in (A.ACCEPTED, A.INVITED):
                    if rng.random() < 0.4:
                        a = _assign(ctx, ids, rnd, free, taken, busiest, state, st)
                        if a is not None:
                            assignments.append(a)
    ctx.counts["assignments"] = ctx.bulk(Assignment, assignments)
    ctx.counts["reviews"] = ctx.bulk(Review, reviews)


@dataclass
class _AssignState:
    counter: int


def _assign(
    ctx: Context,
    ids: _Ids,
    rnd: _Round,
    free: list[int],
    taken: set[int],
    busiest: int | None,
    counter: _AssignState,
    state: AssignmentState,
) -> dict[str, Any] | None:
    """An assignment of a free reviewer not yet asked; the busiest reviewer on every tenth."""
    rng = ctx.rng
    reviewer = None
    if (
        busiest is not None
        and counter.counter % 10 == 0
        and busiest in free
        and busiest not in taken
    ):
        reviewer = busiest
    else:
        for _ in range(20):
            candidate = rng.choice(free)
            if candidate not in taken:
                reviewer = candidate
                break
        else:
            left = [r for r in free if r not in taken]
            reviewer = rng.choice(left) if left else None
    if reviewer is None:
        return None
    counter.counter += 1
    taken.add(reviewer)
    call = rnd.proposal.call
    created = ctx.when(rnd.start, rnd.start + min(2 * DAY, (rnd.end - rnd.start) / 4))
    due = (
        call.reviews_due_at
        if call.reviews_due_at is not None and call.reviews_due_at > created
        else created + dt.timedelta(days=21)
    )
    answered = None
    if state != A.INVITED:
        answered = ctx.when(created, created + min(5 * DAY, (rnd.end - created) / 3))
    reason = None
    if state == A.DECLINED:
        reason = rng.choice(DECLINE_ASSIGNMENT)
    elif state == A.CONFLICT:
        reason = rng.choice(CONFLICT_ASSIGNMENT)
    return {
        "id": ids(Assignment),
        "proposal_id": rnd.proposal.id,
        "reviewer_id": reviewer,
        "state": state,
        "due_at": due,
        "assigned_by_id": ctx.officer,
        "decided_at": answered,
        "reason": reason,
        "created_at": created,
        "updated_at": answered or created,
    }


def _review(ctx: Context, ids: _Ids, a: dict[str, Any], rnd: _Round) -> dict[str, Any]:
    """The review of ``rnd``'s version by ``a``'s reviewer: submitted where the version was
    decided (but a few abandoned drafts), half-way where it is still in review."""
    rng = ctx.rng
    call = rnd.proposal.call
    begun = max(a["decided_at"], rnd.start)
    submitted = rng.random() < (0.95 if rnd.outcome == "decided" else 0.55)
    q = rnd.proposal.quality
    scores: dict[str, int] = {}
    comments: dict[str, str] = {}
    for c in call.criteria:
        if not submitted and rng.random() < 0.4:
            continue
        value = q + rng.gauss(0, 0.15)
        scores[str(c.id)] = max(1, min(c.scale_max, 1 + round(value * (c.scale_max - 1))))
        if rng.random() < 0.6:
            comments[str(c.id)] = rng.choice(COMMENTS)
    at = ctx.when(begun, rnd.end)
    return {
        "id": ids(Review),
        "assignment_id": a["id"],
        "version": rnd.version,
        "state": ReviewState.SUBMITTED if submitted else ReviewState.DRAFT,
        "scores": scores,
        "comments": comments,
        "to_applicant": rng.choice(TO_APPLICANT) if submitted or rng.random() < 0.5 else "",
        "confidential": rng.choice(("", "", "Fund it.", "Borderline; the team is strong.")),
        "submitted_at": at if submitted else None,
        "created_at": ctx.when(begun, at),
        "updated_at": at,
    }


# --- audit ---------------------------------------------------------------------------------------

#: The state each proposal action leads to.
_TO = {
    "submit": P.SUBMITTED,
    "submit_for_endorsement": P.AWAITING_ENDORSEMENT,
    "endorse": P.SUBMITTED,
    "return": P.RETURNED,
    "start_review": P.IN_REVIEW,
    "approve": P.ACTIVE,
    "revise": P.REVISE,
    "decline": P.DECLINED,
    "withdraw": P.WITHDRAWN,
}


def _audit(ctx: Context, proposals: list[_Proposal]) -> None:
    """The proposals' trail as the workflow records it: their creation and each transition."""

    def rows() -> Iterator[dict[str, Any]]:
        for p in proposals:
            yield _event(p, "proposal.create", p.pi, p.created_at, {"call_id": p.call.id})
            frm = P.DRAFT
            for ev in p.events:
                to = _TO[ev.action]
                details = {"frm": frm.value, "to": to.value, "reason": ev.reason}
                yield _event(p, f"proposal.{ev.action}", ev.actor, ev.at, details)
                frm = to

    ctx.counts["proposal events"] = ctx.bulk(AuditEvent, rows())


def _event(
    p: _Proposal, action: str, actor: int, at: dt.datetime, details: dict[str, Any]
) -> dict[str, Any]:
    return {
        "occurred_at": at,
        "actor_id": actor,
        "action": action,
        "object_type": "proposals",
        "object_id": p.id,
        "ip": f"192.0.2.{p.id % 250 + 1}",
        "channel": "web",
        "details": details,
    }


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
