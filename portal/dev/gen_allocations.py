"""The benchmark generator's allocations (see portal/dev/datagen.py): every award of an active
project becomes an allocation, renewed period after period; follow-up requests on them; the
allocation reviewers; the clusters' usage, job by job; the projects' released outputs and final
reports; and the audit trail of all of it.

What the services keep, kept here in bulk:

- an allocation starts as its award (``allocate_awards``): the project's start date, its
  duration, the award's hours, account ``dg-<project>-<gpu class>`` on the resource's cluster;
  it is active once the project's contribution agreement is signed (a few recent projects still
  wait: pending; ``gen_datasets`` signs the agreements to match) and its institution a partner (a
  suspended institution's allocations are suspended with it), used up when its usage reaches its
  hours, expired after its end date;
- a renewal is a new allocation linked to the one it renews (``renewed_from_id``, account
  ``…-r1``, ``…-r2``), starting the day its request was approved, for the months asked. There are
  far fewer awards than the reference number of allocations: chains of renewals over the last
  year or so make up the rest, their periods overlapping, so that most allocations are current;
- every request has its decision where it was decided (by the program officer, or an allocation
  reviewer of the resource or call within the ceiling and not on the team); some wait for one;
  approved ones changed their allocation (more hours, a later end, a renewal, hours given back);
- the hours taken from each call's budget on a resource and from each resource's capacity are
  what the allocations take and hold (``portal/allocations/budget.py``), within both limits:
  renewals and supplements share what the awards left of each budget;
- usage records are the rows the usage import writes: one scheduler job each, unique by
  (cluster, job id ``dg-<n>``), charged to the allocation of its (cluster, account) within the
  time it was usable; each allocation's ``used_gpu_seconds`` is the sum of its records' GPUs
  times elapsed seconds — below its hours, but for used-up allocations (the job that used it up
  may pass the hours, as an import charges whole jobs).

The busiest PI's projects renew more often and have more requests waiting; the program officer
decides most requests and has some waiting; the reviewer persona is an allocation reviewer of two
resources. Usage is spread over the allocations in proportion to the GPU-hours they used and
written straight through the driver (see ``insert_usage``), generated as it is written.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update

from portal.allocations.models import (
    HOLDING,
    MAX_EXTENSION_MONTHS,
    SECONDS_PER_HOUR,
    Allocation,
    AllocationReviewer,
    AllocationState,
    FollowUpKind,
    FollowUpRequest,
    FollowUpState,
    UsageRecord,
)
from portal.allocations.usage import RECORD_COLUMNS
from portal.core.audit import AuditEvent
from portal.core.dates import add_months
from portal.dev.datagen import BATCH, YEARS, Context, batched
from portal.institutions.models import Institution, InstitutionState
from portal.outputs.models import FinalReport, ReleasedOutput, ReportState
from portal.proposals.models import (
    Award,
    CallResource,
    OutputKind,
    PlannedOutput,
    Proposal,
    ProposalState,
    Resource,
    TeamMember,
    TeamRole,
)

S = AllocationState
K = FollowUpKind
W = FollowUpState
DAY = dt.timedelta(days=1)
EPOCH = dt.date(1970, 1, 1)

#: The GPUs a job asks for (drawn uniformly: eight-GPU nodes are the common case).
GPUS = (1, 2, 4, 8, 8, 8, 8, 16, 16, 32)
#: The clusters' time limit: a longer share of the hours runs on more GPUs.
LONGEST_JOB = 2 * 24 * 3600
#: How a job ends, by the hundred (Slurm's states).
ENDINGS = ("FAILED",) * 5 + ("TIMEOUT",) * 3 + ("CANCELLED",) * 2 + ("COMPLETED",) * 90
#: Usage is imported this long after a job ends (a nightly import).
IMPORT_LAG = 6 * 3600
#: A renewal follows its predecessor at most this often, in a chain that ran at least this long.
RENEWAL_EVERY_DAYS = 21
FIRST_RENEWAL_DAYS = 45
#: A renewal's period, in intervals between renewals (periods overlap).
RENEWAL_OVERLAP = 6
#: Renewals are approved within this time before now (a first one may renew an expired allocation).
RENEWAL_WINDOW = dt.timedelta(days=400)
#: Shares of the allocations that are used up, or suspended by program staff, among the current.
EXHAUSTED_SHARE = 0.10
SUSPENDED_SHARE = 0.03
#: Shares of allocations with a request of each kind besides renewals.
EXTENSION_SHARE, SUPPLEMENT_SHARE, RETURN_SHARE = 0.10, 0.12, 0.04
#: Among requests that could still wait for a decision, the share that does.
WAITING_SHARE = 0.3
#: Decided requests: approved, declined, withdrawn (by the hundred).
OUTCOMES = (W.APPROVED,) * 60 + (W.DECLINED,) * 25 + (W.WITHDRAWN,) * 15

JUSTIFICATIONS = {
    K.SUPPLEMENT: (
        "The training runs need more GPU-hours than planned: the larger model size turned out "
        "to be the one worth releasing.",
        "An evaluation suite was added at the reviewers' request; its runs need more hours.",
        "The data pipeline produced twice the corpus planned; more hours finish the ablations.",
    ),
    K.EXTENSION: (
        "The data arrived months late; a later end date lets the project use the hours it has.",
        "A team member's visa was delayed: more time, with the same hours, finishes the work.",
    ),
    K.RENEWAL: (
        "The project continues into its next phase: a new period keeps the models training.",
        "The first results are released; the next period trains the larger models planned.",
    ),
    K.RETURN: (
        "The project needs fewer hours than planned: the smaller model suffices.",
        "",
    ),
}
DECLINE_NOTES = (
    "The call's budget on this resource is committed: apply to the next call.",
    "The usage so far does not show the need: ask again with the first results.",
    "Please split the request: the larger part needs the panel's review.",
)
APPROVE_NOTES = (None, None, "Approved.", "Fine: the usage supports it.")
SUMMARIES = (
    "We trained open models on the data this project assembled, evaluated them on public "
    "benchmarks and released the weights, the code and a paper.",
    "The project built an open corpus, trained baselines at three sizes and released every "
    "checkpoint with its training code and evaluation results.",
)
OUTCOME_TEXTS = (
    "The released models match the best earlier open ones at a third of the size; two other "
    "groups build on them. The GPU-hours covered pre-training and the ablations.",
    "Most of what was planned is released; the largest run was cut short, as the report says.",
)
RETURN_NOTES = (
    "The weights are released under a licence the contribution agreement does not allow: "
    "release them under the planned licence, then send the report again.",
    "Please list the released datasets with their DOIs.",
)
#: What a project releases, by kind: (noun, host, the licences it picks from).
RELEASES = {
    OutputKind.WEIGHTS: ("Model weights", "models", ("Apache-2.0", "Apache-2.0", "MIT")),
    OutputKind.CODE: ("Training code", "code", ("Apache-2.0", "MIT", "BSD-3-Clause")),
    OutputKind.DATASET: ("Dataset", "data", ("CC-BY-4.0", "CC-BY-4.0", "CC0-1.0", "CC-BY-NC-4.0")),
    OutputKind.PAPER: ("Paper", "papers", ("CC-BY-4.0",)),
}


@dataclass(slots=True)
class _Award:
    """An award of an active project, as the database has it, with its project's facts."""

    id: int
    proposal_id: int
    call_resource_id: int
    resource_id: int
    call_id: int
    cluster: str
    gpu_class: str
    period_months: int
    max_request: int
    institution_id: int
    hours: int
    start: dt.date
    months: int
    decided: dt.datetime
    #: Who approved the project (whose approval allocated the award).
    approver: int | None


@dataclass(slots=True)
class _Request:
    """A follow-up request being planned (a row of ``allocation_requests`` once ids are known)."""

    kind: FollowUpKind
    state: FollowUpState
    created: dt.datetime
    changed: dt.datetime
    requested_by: int | None
    hours: int | None = None
    ends_on: dt.date | None = None
    months: int | None = None
    decided_by: int | None = None
    note: str | None = None
    #: For an approved renewal: the allocation it made.
    renewal: _Plan | None = None
    id: int = 0


@dataclass(slots=True)
class _Plan:
    """An allocation being planned: what it is now and how it got there."""

    id: int
    award: _Award
    hours: int
    starts_on: dt.date
    #: The end date before any extension, and now.
    ends_first: dt.date
    ends_on: dt.date
    created: dt.datetime
    #: When its hours became usable (None: never — it waits on its gate).
    active_from: dt.datetime | None
    account: str
    renewed_from: int | None = None
    state: AllocationState = S.PENDING
    changed: dt.datetime | None = None
    with_institution: bool = False
    requests: list[_Request] = field(default_factory=list)
    #: Usage: GPU-seconds aimed at, whether it must reach the hours, the jobs' time window
    #: (epoch seconds), how many records.
    target: int = 0
    exhausts: bool = False
    window: tuple[int, int] = (0, 0)
    records: int = 0
    #: True for the last of its chain (not renewed).
    tail: bool = True


# --- reading what the proposals generator made --------------------------------------------------


def _awards(ctx: Context) -> list[_Award]:
    """The awards of active projects that have no allocation yet, in id order."""
    p, cr, r = Proposal, CallResource, Resource
    rows = ctx.session.execute(
        select(
            Award.id,
            Award.proposal_id,
            Award.call_resource_id,
            cr.resource_id,
            cr.call_id,
            r.cluster,
            r.gpu_class,
            r.period_months,
            cr.max_request_hours,
            p.institution_id,
            Award.hours,
            p.start_date,
            p.duration_months,
            p.decided_at,
            p.decided_by_id,
            p.state_changed_at,
        )
        .join(p, p.id == Award.proposal_id)
        .join(cr, cr.id == Award.call_resource_id)
        .join(r, r.id == cr.resource_id)
        .where(
            p.state == ProposalState.ACTIVE,
            ~select(Allocation.id).where(Allocation.award_id == Award.id).exists(),
        )
        .order_by(Award.id)
    ).all()
    awards = []
    for row in rows:
        decided = row.decided_at or row.state_changed_at
        awards.append(
            _Award(
                id=row.id,
                proposal_id=row.proposal_id,
                call_resource_id=row.call_resource_id,
                resource_id=row.resource_id,
                call_id=row.call_id,
                cluster=row.cluster,
                gpu_class=row.gpu_class,
                period_months=row.period_months,
                max_request=row.max_request_hours,
                institution_id=row.institution_id,
                hours=row.hours,
                start=row.start_date or decided.date(),
                months=row.duration_months or row.period_months,
                decided=decided,
                approver=row.decided_by_id,
            )
        )
    return awards


def _teams(ctx: Context, proposal_ids: set[int]) -> dict[int, list[tuple[int, TeamRole]]]:
    """Each project's team: (user id, role), the PI first."""
    teams: dict[int, list[tuple[int, TeamRole]]] = defaultdict(list)
    for proposal_id, user_id, role in ctx.session.execute(
        select(TeamMember.proposal_id, TeamMember.user_id, TeamMember.role)
        .join(Proposal, Proposal.id == TeamMember.proposal_id)
        .where(Proposal.state == ProposalState.ACTIVE)
        .order_by(TeamMember.proposal_id, TeamMember.id)
    ):
        if proposal_id in proposal_ids:
            teams[proposal_id].append((user_id, role))
    for team in teams.values():
        team.sort(key=lambda m: m[1] != TeamRole.PI)
    return teams


# --- spreading a total ---------------------------------------------------------------------------


def spread(total: int, weights: Sequence[float], caps: Sequence[int]) -> list[int]:
    """``total`` split into whole parts in proportion to ``weights``, none above its cap (so the
    parts add up to ``total``, or to the sum of the caps when that is less)."""
    out = [0] * len(weights)
    open_ = [i for i, w in enumerate(weights) if w > 0 and caps[i] > 0]
    left = total
    while left > 0 and open_:
        wsum = sum(weights[i] for i in open_)
        shares = {i: left * weights[i] / wsum for i in open_}
        given = 0
        for i in open_:
            part = min(caps[i] - out[i], int(shares[i]))
            out[i] += part
            given += part
        left -= given
        open_ = [i for i in open_ if out[i] < caps[i]]
        if given == 0:
            # Less than one each: the largest fractions get one.
            open_.sort(key=lambda i: (-(shares[i] % 1), i))
            for i in open_[:left]:
                out[i] += 1
            left -= min(left, len(open_))
            open_ = [i for i in open_ if out[i] < caps[i]]
    return out


# --- the plan ------------------------------------------------------------------------------------


class _Planner:
    """Plans every allocation, request and job count before anything is written."""

    def __init__(self, ctx: Context, awards: list[_Award]) -> None:
        self.ctx = ctx
        self.rng = ctx.rng
        self.now = ctx.now
        self.today = ctx.now.date()
        self.awards = awards
        self.teams = _teams(ctx, {a.proposal_id for a in awards})
        self.next_id = ctx.next_id(Allocation)
        self.plans: list[_Plan] = []
        insts = {i["id"]: i for i in ctx.institutions}
        self.inst_state: dict[int, InstitutionState] = dict(
            ctx.session.execute(
                select(Institution.id, Institution.state).where(
                    Institution.id.in_({a.institution_id for a in awards})
                )
            ).all()
        )
        #: When a stopped (suspended or withdrawn) institution stopped.
        self.stopped: dict[int, dt.datetime] = {}
        for inst_id in sorted(self.inst_state):
            if self.inst_state[inst_id] in (InstitutionState.SUSPENDED, InstitutionState.WITHDRAWN):
                joined = insts.get(inst_id, {}).get("created_at", self.now - 400 * DAY)
                self.stopped[inst_id] = max(
                    joined, self.now - dt.timedelta(days=self.rng.uniform(5, 150))
                )
        self.reviewers: dict[tuple[str, int], list[tuple[int, int | None]]] = defaultdict(list)

    # -- people

    def requester(self, proposal_id: int) -> int | None:
        """The PI, or now and then a co-PI (who may ask too)."""
        team = self.teams.get(proposal_id, [])
        editors = [u for u, role in team if role in (TeamRole.PI, TeamRole.CO_PI)]
        if not editors:
            return None
        if len(editors) > 1 and self.rng.random() < 0.2:
            return editors[1 + int(self.rng.random() * (len(editors) - 1))]
        return editors[0]

    def decider(self, plan: _Plan, hours: int) -> int:
        """The program officer, or (one time in five) an allocation reviewer of the resource or
        call whose ceiling covers ``hours`` and who is not on the team."""
        if self.rng.random() < 0.2:
            team = {u for u, _ in self.teams.get(plan.award.proposal_id, [])}
            able = [
                user
                for scope in (("resource", plan.award.resource_id), ("call", plan.award.call_id))
                for user, ceiling in self.reviewers.get(scope, [])
                if (ceiling is None or hours <= ceiling) and user not in team
            ]
            if able:
                return able[int(self.rng.random() * len(able))]
        return self.ctx.officer

    # -- dates

    def between(self, start: dt.datetime, end: dt.datetime) -> dt.datetime:
        span = max(0.0, (end - start).total_seconds())
        return start + dt.timedelta(seconds=self.rng.uniform(0, span))

    def midnight(self, day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), dt.UTC)

    # -- allocations

    def allocation(self, award: _Award, **kw: Any) -> _Plan:
        plan = _Plan(id=self.next_id, award=award, **kw)
        self.next_id += 1
        self.plans.append(plan)
        return plan

    def plan(self, rooms: dict[int, int]) -> list[_Plan]:
        """Every allocation with its requests and usage aimed at; ``rooms``: the GPU-hours left
        in each call budget (call resource id) after the awards, which renewals and supplements
        take from."""
        gates = self.gates()
        renewals = self.renewal_counts(gates, rooms)
        for award, count in zip(self.awards, renewals, strict=True):
            self.chain(award, gates[award.proposal_id], count)
        for plan in self.plans:
            self.state(plan)
        for plan in self.plans:
            self.follow_ups(plan)
        return self.plans

    def gates(self) -> dict[int, dt.datetime | None]:
        """When each project's allocations became usable: once its contribution agreement was
        signed, a few days to weeks after the approval (None: still unsigned — recent projects
        now and then, older ones still running rarely; or never signed before its institution
        stopped). A project whose allocation ended was signed (``gen_datasets`` signs the
        agreements of projects with an allocation that is not pending)."""
        out: dict[int, dt.datetime | None] = {}
        decided: dict[int, _Award] = {}
        for award in self.awards:
            decided.setdefault(award.proposal_id, award)
        for proposal_id, award in sorted(decided.items()):
            age = (self.now - award.decided).days
            running = add_months(award.start, award.months) >= self.today
            unsigned = running and self.rng.random() < (0.4 if age < 60 else 0.02)
            signed = min(
                award.decided + dt.timedelta(days=self.rng.uniform(0.5, 21)),
                self.now - dt.timedelta(hours=1),
            )
            stopped = self.stopped.get(award.institution_id)
            partner = self.inst_state.get(award.institution_id) == InstitutionState.PARTNER
            if unsigned or (stopped is not None and signed >= stopped):
                out[proposal_id] = None
            elif not partner and stopped is None:
                out[proposal_id] = None  # an institution that never was a partner
            else:
                out[proposal_id] = signed
        return out

    def span(self, award: _Award, usable: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
        """When the award's chain of renewals may be approved: from its first use (at most
        ``RENEWAL_WINDOW`` before the end, so that most of a program's allocations are current)
        until now, or until its institution stopped."""
        if usable is None:
            return self.now, self.now
        end = self.stopped.get(award.institution_id, self.now) - 2 * DAY
        start = max(usable, self.midnight(award.start), end - RENEWAL_WINDOW)
        return start, end

    def renewal_counts(
        self, gates: dict[int, dt.datetime | None], rooms: dict[int, int]
    ) -> list[int]:
        """How many renewals each award's chain has: the allocations beyond the awards spread
        over the awards in proportion to the time they have run, at most one every three weeks,
        and no more on a call budget than it has hours left for."""
        wanted = max(0, self.ctx.scale.allocations - len(self.awards))
        pi = self.ctx.personas.get("pi")
        days, caps = [], []
        for award in self.awards:
            start, end = self.span(award, gates[award.proposal_id])
            length = (end - start).days
            days.append(float(length) if length >= FIRST_RENEWAL_DAYS else 0.0)
            caps.append(length // RENEWAL_EVERY_DAYS if length >= FIRST_RENEWAL_DAYS else 0)
            if pi is not None and any(u == pi for u, _ in self.teams.get(award.proposal_id, [])):
                days[-1] *= 2  # the busiest PI's projects renew more often
        by_budget: dict[int, list[int]] = defaultdict(list)
        for i, award in enumerate(self.awards):
            by_budget[award.call_resource_id].append(i)
        budgets = sorted(by_budget)
        quotas = spread(
            wanted,
            [sum(days[i] for i in by_budget[b]) for b in budgets],
            # at least one GPU-hour each, and room left for supplements
            [min(sum(caps[i] for i in by_budget[b]), rooms[b] // 2) for b in budgets],
        )
        counts = [0] * len(self.awards)
        for budget, quota in zip(budgets, quotas, strict=True):
            members = by_budget[budget]
            for i, n in zip(
                members,
                spread(quota, [days[i] for i in members], [caps[i] for i in members]),
                strict=True,
            ):
                counts[i] = n
        return counts

    def chain(self, award: _Award, usable: dt.datetime | None, renewals: int) -> None:
        """The award's allocation and ``renewals`` renewals, each approved at even intervals over
        the time it has run, for about as many months as the interval."""
        base = f"dg-{award.proposal_id}-" + "".join(
            c for c in award.gpu_class.lower() if c.isalnum()
        )
        first = self.allocation(
            award,
            hours=award.hours,
            starts_on=award.start,
            ends_first=add_months(award.start, award.months),
            ends_on=add_months(award.start, award.months),
            created=award.decided,
            active_from=usable,
            account=base,
        )
        if not renewals:
            return
        start, end = self.span(award, usable)
        every = (end - start) / renewals
        # Each period lasts a few intervals: a project holds several allocations on a resource at
        # once, the older ones expiring as new ones start.
        months = max(1, min(award.period_months, round(RENEWAL_OVERLAP * every.days / 30.44)))
        previous = first
        for j in range(1, renewals + 1):
            approved = start + every * (j - 0.5 + 0.4 * (self.rng.random() - 0.5))
            asked = approved - every * self.rng.uniform(0.1, 0.3)
            m = max(1, min(award.period_months, months + int(self.rng.random() * 3) - 1))
            hours = round(award.hours * m / award.months * self.rng.uniform(0.6, 1.2))
            hours = max(1, min(award.max_request, hours))
            day = approved.date()
            plan = self.allocation(
                award,
                hours=hours,
                starts_on=day,
                ends_first=add_months(day, m),
                ends_on=add_months(day, m),
                created=approved,
                active_from=approved,
                account=f"{base}-r{j}",
                renewed_from=previous.id,
            )
            previous.tail = False
            decider = self.decider(previous, hours)
            previous.requests.append(
                _Request(
                    K.RENEWAL,
                    W.APPROVED,
                    created=asked,
                    changed=approved,
                    requested_by=self.requester(award.proposal_id),
                    hours=hours,
                    months=m,
                    decided_by=decider,
                    note=self.rng.choice(APPROVE_NOTES),
                    renewal=plan,
                )
            )
            previous = plan

    def state(self, plan: _Plan) -> None:
        """Its state now, and since when; extensions first (they move the end)."""
        self.extension(plan)
        award, now, today = plan.award, self.now, self.today
        stopped = self.stopped.get(award.institution_id)
        ended = plan.ends_on < today
        after_end = min(self.midnight(plan.ends_on) + DAY + dt.timedelta(hours=2), now)
        if plan.active_from is None:
            plan.state, plan.changed = (
                (S.EXPIRED, after_end) if ended else (S.PENDING, plan.created)
            )
        elif ended:
            plan.state, plan.changed = S.EXPIRED, after_end
        elif stopped is not None:
            plan.state, plan.changed, plan.with_institution = S.SUSPENDED, stopped, True
        elif plan.starts_on > today:
            plan.state, plan.changed = S.ACTIVE, plan.active_from
        else:
            roll = self.rng.random()
            began = max(plan.active_from, self.midnight(plan.starts_on))
            ran = began < now - 10 * DAY  # long enough to have used it up, or to be stopped
            if ran and roll < EXHAUSTED_SHARE:
                plan.state = S.EXHAUSTED
                plan.changed = self.between(began + 7 * DAY, now - DAY)
            elif ran and roll < EXHAUSTED_SHARE + SUSPENDED_SHARE and plan.tail:
                # Suspended by program staff, after whatever was asked about it was settled.
                settled = max([began + 7 * DAY, *(r.changed for r in plan.requests)])
                plan.state = S.SUSPENDED
                plan.changed = self.between(min(settled, now - DAY), now - dt.timedelta(hours=1))
            else:
                plan.state, plan.changed = S.ACTIVE, plan.active_from

    # -- follow-up requests

    def outcome(self, plan: _Plan, can_wait: bool) -> FollowUpState:
        """How a request ends: waiting (where it ``can_wait``; more often for the busiest PI's
        projects), else approved, declined or withdrawn."""
        waiting_share = WAITING_SHARE
        pi = self.ctx.personas.get("pi")
        if pi is not None and any(u == pi for u, _ in self.teams.get(plan.award.proposal_id, [])):
            waiting_share = 0.6
        if can_wait and self.rng.random() < waiting_share:
            return W.SUBMITTED
        return OUTCOMES[int(self.rng.random() * len(OUTCOMES))]

    def waits(self, plan: _Plan, kind: FollowUpKind) -> bool:
        """Whether a request of ``kind`` could be waiting on ``plan`` now (open to its state and,
        but for a renewal, within its period; a renewed allocation is not renewed again)."""
        open_to = {
            K.SUPPLEMENT: (S.PENDING, S.ACTIVE, S.EXHAUSTED),
            K.EXTENSION: (S.PENDING, S.ACTIVE, S.EXHAUSTED),
            K.RENEWAL: (S.ACTIVE, S.EXHAUSTED, S.EXPIRED),
        }[kind]
        if plan.state not in open_to:
            return False
        if kind == K.RENEWAL:
            return plan.tail and plan.active_from is not None
        return plan.ends_on >= self.today

    def decided(self, plan: _Plan, request: _Request, kind: FollowUpKind, hours: int) -> None:
        """Fill in who decided (or withdrew) ``request``, when and why."""
        if request.state == W.SUBMITTED:
            request.changed = request.created
            return
        if request.state == W.WITHDRAWN:
            return
        request.decided_by = self.decider(plan, hours)
        request.note = (
            self.rng.choice(DECLINE_NOTES)
            if request.state == W.DECLINED
            else self.rng.choice(APPROVE_NOTES)
        )

    def asked_at(
        self, plan: _Plan, until: dt.date, waiting: bool
    ) -> tuple[dt.datetime, dt.datetime] | None:
        """When a request was made and settled: while the allocation was open to it (from its
        activation, or its creation while it waits on its gate, to ``until``); a waiting one in
        the last weeks."""
        opened = plan.active_from or plan.created
        if waiting:
            made = max(opened, self.now - dt.timedelta(days=self.rng.uniform(0.5, 40)))
            return made, made
        closes = min(self.midnight(until) + DAY, self.now) - dt.timedelta(hours=1)
        if plan.state in (S.SUSPENDED, S.EXHAUSTED) and plan.changed is not None:
            closes = min(closes, plan.changed)
        closes = min(closes, self.stopped.get(plan.award.institution_id, closes))
        if closes <= opened + dt.timedelta(hours=2):
            return None
        made = self.between(opened, closes - dt.timedelta(hours=1))
        settled = min(made + dt.timedelta(days=self.rng.uniform(0.1, 10)), closes)
        return made, settled

    def extension(self, plan: _Plan) -> None:
        """Now and then more time was asked for; approved, it moved the end date (at most
        ``MAX_EXTENSION_MONTHS`` later). Decided before the state (which the end decides)."""
        if self.rng.random() >= EXTENSION_SHARE:
            return
        months = 1 + int(self.rng.random() * min(6, MAX_EXTENSION_MONTHS))
        asked = add_months(plan.ends_first, months)
        # Whether it may wait depends on the state, known only with the end: plan it as a
        # decision, and let it wait below (``follow_ups``) if the allocation is still open.
        state = OUTCOMES[int(self.rng.random() * len(OUTCOMES))]
        when = self.asked_at(plan, plan.ends_first, waiting=False)
        if when is None or (plan.active_from is None and state == W.APPROVED):
            return
        request = _Request(
            K.EXTENSION,
            state,
            created=when[0],
            changed=when[1],
            requested_by=self.requester(plan.award.proposal_id),
            ends_on=asked,
        )
        self.decided(plan, request, K.EXTENSION, 0)
        plan.requests.append(request)
        if state == W.APPROVED:
            plan.ends_on = asked

    def follow_ups(self, plan: _Plan) -> None:
        """More hours, hours given back, a waiting extension or renewal, a declined or withdrawn
        renewal: with their decisions; approved ones change the allocation's hours."""
        pid = plan.award.proposal_id
        rng = self.rng
        if rng.random() < SUPPLEMENT_SHARE:
            can_wait = self.waits(plan, K.SUPPLEMENT)
            state = self.outcome(plan, can_wait)
            when = self.asked_at(plan, plan.ends_on, waiting=state == W.SUBMITTED)
            if when is not None:
                hours = max(
                    1, min(plan.award.max_request, round(plan.hours * rng.uniform(0.1, 0.5)))
                )
                request = _Request(
                    K.SUPPLEMENT, state, when[0], when[1], self.requester(pid), hours=hours
                )
                self.decided(plan, request, K.SUPPLEMENT, hours)
                plan.requests.append(request)
        if plan.ends_on >= self.today and self.waits(plan, K.EXTENSION):
            asking = [r for r in plan.requests if r.kind == K.EXTENSION]
            if not asking and rng.random() < EXTENSION_SHARE * WAITING_SHARE:
                made = max(
                    plan.active_from or plan.created,
                    self.now - dt.timedelta(days=rng.uniform(0.5, 40)),
                )
                plan.requests.append(
                    _Request(
                        K.EXTENSION,
                        W.SUBMITTED,
                        made,
                        made,
                        self.requester(pid),
                        ends_on=add_months(plan.ends_on, 1 + int(rng.random() * 6)),
                    )
                )
        if (
            plan.active_from is not None
            and plan.state in (S.ACTIVE, S.SUSPENDED, S.EXPIRED)
            and plan.hours >= 10
            and rng.random() < RETURN_SHARE
        ):
            when = self.asked_at(plan, plan.ends_on, waiting=False)
            if when is not None:
                given = max(1, round(plan.hours * rng.uniform(0.05, 0.3)))
                requester = self.requester(pid)
                plan.requests.append(
                    _Request(
                        K.RETURN,
                        W.APPROVED,
                        when[0],
                        when[0],
                        requester,
                        hours=given,
                        decided_by=requester,
                    )
                )
        if self.waits(plan, K.RENEWAL):
            state = self.outcome(plan, True)
            share = 0.15 if state == W.SUBMITTED else 0.05
            if rng.random() < share:
                self.renewal_request(plan, state)

    def renewal_request(self, plan: _Plan, state: FollowUpState) -> None:
        """A renewal asked for at the end of the chain: waiting, declined or withdrawn (an
        approved one would have made an allocation)."""
        if state == W.APPROVED:
            state = W.DECLINED
        months = max(1, min(plan.award.period_months, 3 + int(self.rng.random() * 10)))
        hours = max(1, min(plan.award.max_request, plan.hours))
        when = self.asked_at(plan, self.today, waiting=state == W.SUBMITTED)
        if when is None:
            return
        request = _Request(
            K.RENEWAL, state, when[0], when[1], self.requester(plan.award.proposal_id),
            hours=hours, months=months,
        )  # fmt: skip
        self.decided(plan, request, K.RENEWAL, hours)
        plan.requests.append(request)


# --- budgets -------------------------------------------------------------------------------------


def _shrink(items: Sequence[_Plan | _Request], room: int, what: str) -> None:
    """Scale the hours of ``items`` down, where they add up to more than ``room``, so that they
    fit it (each keeping at least one GPU-hour)."""
    total = sum(x.hours or 0 for x in items)
    if total <= room:
        return
    factor = max(0, room) / total
    for x in items:
        x.hours = max(1, int((x.hours or 0) * factor))
    excess = sum(x.hours or 0 for x in items) - room
    for x in sorted(items, key=lambda x: -(x.hours or 0)):
        if excess <= 0:
            break
        cut = min(excess, (x.hours or 0) - 1)
        x.hours = (x.hours or 0) - cut
        excess -= cut
    if excess > 0:
        raise RuntimeError(f"{what} leaves no room for one GPU-hour per renewal and supplement")


def _approved(plan: _Plan, kind: FollowUpKind) -> list[_Request]:
    return [r for r in plan.requests if r.kind == kind and r.state == W.APPROVED]


def final_hours(plan: _Plan) -> int:
    """The allocation's hours now: as made, plus approved supplements, less hours given back."""
    return (
        plan.hours
        + sum(r.hours or 0 for r in _approved(plan, K.SUPPLEMENT))
        - sum(r.hours or 0 for r in _approved(plan, K.RETURN))
    )


def fit_budgets(plans: list[_Plan], rooms: dict[int, int], capacity: dict[int, int]) -> None:
    """Make what renewals and approved supplements take fit what the awards left of each call's
    budget on a resource (``rooms``, by call resource) and the hours the allocations hold fit what
    is left of each resource's capacity (``capacity``), scaling them down where they would not;
    then hours given back never leave an allocation with less than one."""
    takers: dict[int, list[_Plan | _Request]] = defaultdict(list)
    for plan in plans:
        if plan.renewed_from is not None:
            takers[plan.award.call_resource_id].append(plan)
        takers[plan.award.call_resource_id] += _approved(plan, K.SUPPLEMENT)
    for budget, items in sorted(takers.items()):
        _shrink(items, rooms[budget], f"Call resource {budget}'s budget")
    held: dict[int, int] = defaultdict(int)
    holders: dict[int, list[_Plan | _Request]] = defaultdict(list)
    for plan in plans:
        if plan.state not in HOLDING:
            continue
        resource = plan.award.resource_id
        held[resource] += final_hours(plan)
        if plan.renewed_from is not None:
            holders[resource].append(plan)
        holders[resource] += _approved(plan, K.SUPPLEMENT)
    for resource, hours in sorted(held.items()):
        if hours > capacity[resource]:
            flexible = sum(x.hours or 0 for x in holders[resource])
            _shrink(
                holders[resource],
                capacity[resource] - (hours - flexible),
                f"Resource {resource}'s capacity",
            )
    for plan in plans:
        for r in _approved(plan, K.RETURN):
            r.hours = min(r.hours or 0, final_hours(plan) + (r.hours or 0) - 1)
        plan.requests = [r for r in plan.requests if r.hours is None or r.hours > 0]


# --- usage ---------------------------------------------------------------------------------------


def _epoch(when: dt.datetime) -> int:
    return int(when.timestamp())


def aim_usage(ctx: Context, plans: list[_Plan], stopped: dict[int, dt.datetime]) -> None:
    """How much each allocation used, over which time, in how many jobs: nothing while it waited
    on its gate; the share of its period gone by (give or take) while active or until suspended;
    all of its hours when used up (and for some that expired used up); most of them when it
    expired otherwise. The usage records (``scale.usage_records``) are spread in proportion to
    the GPU-hours used (a job is at least a GPU-minute)."""
    rng, now = ctx.rng, ctx.now
    last = now - dt.timedelta(seconds=IMPORT_LAG)
    for plan in plans:
        if plan.active_from is None or plan.state == S.PENDING:
            continue
        cap = final_hours(plan) * SECONDS_PER_HOUR
        starts = dt.datetime.combine(plan.starts_on, dt.time(), dt.UTC)
        ends = dt.datetime.combine(plan.ends_on, dt.time(), dt.UTC) + DAY
        begin = max(plan.active_from, starts)
        if plan.state == S.ACTIVE:
            end = now - dt.timedelta(days=rng.uniform(0.5, 3))
        elif plan.state in (S.EXHAUSTED, S.SUSPENDED):
            assert plan.changed is not None
            end = plan.changed
        else:
            end = min(ends, stopped.get(plan.award.institution_id, ends))
        end = min(end, last)
        if end <= begin + dt.timedelta(hours=1):
            continue
        plan.window = (_epoch(begin), _epoch(end))
        if plan.state == S.EXHAUSTED or (plan.state == S.EXPIRED and rng.random() < 0.15):
            plan.target, plan.exhausts = cap, True
            continue
        if plan.state == S.EXPIRED:
            share = rng.uniform(0.3, 0.95)
        else:
            share = min(0.95, (end - starts) / (ends - starts) * rng.uniform(0.6, 1.1))
        plan.target = int(cap * share)
    used = [p for p in plans if p.target > 0]
    # Used-up allocations need a job at least; the rest in proportion to the hours used.
    for p in used:
        p.records = 1 if p.exhausts else 0
    rest = ctx.scale.usage_records - sum(p.records for p in used)
    for p, n in zip(
        used,
        spread(rest, [float(p.target) for p in used], [p.target // 60 - p.records for p in used]),
        strict=True,
    ):
        p.records += n


class _Clock:
    """Epoch seconds as the database driver takes a time, made fast: a day's value plus a
    time-of-day's value, both cached. On SQLite, text as SQLAlchemy stores it (UTC,
    ``YYYY-MM-DD HH:MM:SS.ffffff``; formatting six million datetimes would take most of the
    time); elsewhere an aware datetime plus a timedelta."""

    def __init__(self, dialect: str) -> None:
        self.text = dialect == "sqlite"
        self.days: dict[int, Any] = {}
        self.times: list[Any] = (
            [f" {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.000000" for s in range(86400)]
            if self.text
            else [dt.timedelta(seconds=s) for s in range(86400)]
        )

    def day(self, number: int) -> Any:
        """Day ``number`` since 1970-01-01 (cached)."""
        value = self.days.get(number)
        if value is None:
            date = EPOCH + dt.timedelta(days=number)
            value = self.days[number] = (
                date.isoformat() if self.text else dt.datetime.combine(date, dt.time(), dt.UTC)
            )
        return value


def usage_rows(
    plans: list[_Plan],
    rng: Random,
    dialect: str,
    first_job: int,
    used: dict[int, int],
    imports: dict[tuple[str, int], list[int]],
) -> Iterator[tuple[Any, ...]]:
    """Each allocation's jobs as the usage import records them (``RECORD_COLUMNS``), in allocation
    and time order (so that the indexes grow at their ends), adding each job's GPU-seconds to
    ``used``, and [jobs, GPU-seconds] to ``imports`` by (cluster, day of the import). Job ids are
    ``dg-`` and a ten-digit number from ``first_job``, unique on every cluster. Each job is
    imported ``IMPORT_LAG`` after it ended."""
    clock = _Clock(dialect)
    days, day, times = clock.days, clock.day, clock.times
    r = rng.random
    number = first_job
    gpus_n, endings_n = len(GPUS), len(ENDINGS)
    for plan in plans:
        n = plan.records
        if not n:
            continue
        w0, w1 = plan.window
        span = w1 - w0
        longest = min(LONGEST_JOB, span)
        weights = [0.4 + 1.2 * r() for _ in range(n)]
        scale = plan.target / sum(weights)
        starts = sorted(int(r() * span) for _ in range(n))
        total = 0
        allocation_id, cluster, account = plan.id, plan.award.cluster, plan.account
        for j in range(n):
            share = weights[j] * scale
            gpus = GPUS[int(r() * gpus_n)]
            while share > gpus * longest:
                gpus *= 2
            if j < n - 1:
                elapsed = int(share / gpus) or 1
                start = w0 + starts[j]
                if start + elapsed > w1:
                    start = w1 - elapsed
            else:
                # The last job takes up the rounding: it reaches the hours of an allocation that
                # is used up (ending the moment it was), and stays within them otherwise.
                rest = plan.target - total
                elapsed = max(1, -(-rest // gpus) if plan.exhausts else rest // gpus)
                start = w1 - elapsed
            total += gpus * elapsed
            d1, s1 = divmod(start, 86400)
            d2, s2 = divmod(start + elapsed, 86400)
            d3, s3 = divmod(start + elapsed + IMPORT_LAG, 86400)
            tally = imports.get((cluster, d3))
            if tally is None:
                tally = imports[(cluster, d3)] = [0, 0]
            tally[0] += 1
            tally[1] += gpus * elapsed
            yield (
                allocation_id,
                cluster,
                f"dg-{number:010d}",
                account,
                gpus,
                elapsed,
                (days.get(d1) or day(d1)) + times[s1],
                (days.get(d2) or day(d2)) + times[s2],
                ENDINGS[int(r() * endings_n)],
                (days.get(d3) or day(d3)) + times[s3],
            )
            number += 1
        used[allocation_id] = total


def insert_usage(ctx: Context, rows: Iterator[tuple[Any, ...]]) -> int:
    """Write the usage records, advancing the progress bar every ``BATCH``; returns how many.

    Not through SQLAlchemy's insert (``ctx.bulk``), which processes each row's parameters in
    Python and would double the time of two million rows: on SQLite the driver's executemany, a
    batch at a time; on PostgreSQL a ``COPY`` (its executemany sends a statement a row)."""
    connection = ctx.session.connection()
    table, columns = UsageRecord.__tablename__, ", ".join(RECORD_COLUMNS)
    made = 0
    if connection.dialect.name == "postgresql":
        driver: Any = connection.connection.dbapi_connection
        with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for batch in batched(rows, BATCH):
                for row in batch:
                    copy.write_row(row)
                made += len(batch)
                ctx.progress(len(batch))
        return made
    if connection.dialect.paramstyle != "qmark":
        raise RuntimeError(f"no bulk usage insert for {connection.dialect.name}")
    marks = ", ".join("?" * len(RECORD_COLUMNS))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - constants
    for batch in batched(rows, BATCH):
        connection.exec_driver_sql(sql, list(batch))
        made += len(batch)
        ctx.progress(len(batch))
    return made


# --- writing -------------------------------------------------------------------------------------


def _touched(p: _Plan) -> dt.datetime:
    """When the allocation last changed: its state, or a request that changed it."""
    assert p.changed is not None
    return max([p.changed, *(r.changed for r in p.requests if r.kind != K.RENEWAL)])


def _allocation_rows(plans: list[_Plan]) -> Iterator[dict[str, Any]]:
    for p in plans:
        yield {
            "id": p.id,
            "award_id": p.award.id,
            "proposal_id": p.award.proposal_id,
            "call_resource_id": p.award.call_resource_id,
            "resource_id": p.award.resource_id,
            "institution_id": p.award.institution_id,
            "hours": final_hours(p),
            "used_gpu_seconds": 0,
            "starts_on": p.starts_on,
            "ends_on": p.ends_on,
            "cluster": p.award.cluster,
            "account": p.account,
            "state": p.state,
            "state_changed_at": p.changed,
            "suspended_with_institution": p.with_institution,
            "renewed_from_id": p.renewed_from,
            "created_at": p.created,
            "updated_at": _touched(p),
        }


def _numbered(ctx: Context, plans: list[_Plan]) -> list[tuple[_Plan, _Request]]:
    """The requests with their allocations, numbered in the order they were made."""
    made = sorted(
        ((r.created, p.id, n, p, r) for p in plans for n, r in enumerate(p.requests)),
        key=lambda x: x[:3],
    )
    first = ctx.next_id(FollowUpRequest)
    for k, (*_, r) in enumerate(made):
        r.id = first + k
    return [(plan, r) for *_, plan, r in made]


def _request_rows(requests: list[tuple[_Plan, _Request]]) -> Iterator[dict[str, Any]]:
    for plan, r in requests:
        decided = r.state in (W.APPROVED, W.DECLINED)
        texts = JUSTIFICATIONS[r.kind]
        yield {
            "id": r.id,
            "allocation_id": plan.id,
            "kind": r.kind,
            "state": r.state,
            "state_changed_at": r.changed,
            "requested_by_id": r.requested_by,
            "hours": r.renewal.hours if r.renewal is not None else r.hours,
            "ends_on": r.ends_on,
            "months": r.months,
            "justification": texts[(plan.id + r.id) % len(texts)],
            "decided_by_id": r.decided_by if decided else None,
            "decided_at": r.changed if decided else None,
            "decision_note": r.note if decided else None,
            "renewal_id": r.renewal.id if r.renewal is not None else None,
            "created_at": r.created,
            "updated_at": r.changed,
        }


def _reviewers(ctx: Context, awards: list[_Award], planner: _Planner) -> int:
    """Allocation reviewers: two of the reviewer pool on each resource and one on each of a few
    calls, with ceilings; the reviewer persona on the first two resources. They decide some of
    the requests (``_Planner.decider``)."""
    pool = sorted(set(ctx.reviewers))
    if not pool:
        return 0
    taken: set[tuple[int, int | None, int | None]] = {
        (user, resource, call)
        for user, resource, call in ctx.session.execute(
            select(
                AllocationReviewer.user_id,
                AllocationReviewer.resource_id,
                AllocationReviewer.call_id,
            )
        )
    }
    rows = []
    ceilings = (5_000, 10_000, 20_000, None)
    persona = ctx.personas.get("reviewer")

    def assign(user: int, resource: int | None, call: int | None, ceiling: int | None) -> None:
        if (user, resource, call) in taken:
            return
        taken.add((user, resource, call))
        scope = ("resource", resource) if resource is not None else ("call", call)
        assert scope[1] is not None
        planner.reviewers[(scope[0], scope[1])].append((user, ceiling))
        when = ctx.now - dt.timedelta(days=365 * YEARS - ctx.rng.uniform(0, 30))
        rows.append(
            {
                "user_id": user,
                "resource_id": resource,
                "call_id": call,
                "ceiling_hours": ceiling,
                "assigned_by_id": ctx.officer,
                "created_at": when,
                "updated_at": when,
            }
        )

    for n, resource in enumerate(sorted({a.resource_id for a in awards})):
        if persona is not None and n < 2:
            assign(persona, resource, None, 20_000 if n == 0 else None)
        for user in ctx.rng.sample(pool, min(2, len(pool))):
            assign(user, resource, None, ceilings[int(ctx.rng.random() * len(ceilings))])
    for call in sorted({a.call_id for a in awards})[:3]:
        assign(pool[int(ctx.rng.random() * len(pool))], None, call, None)
    return ctx.bulk(AllocationReviewer.__table__, rows)


def _rooms(ctx: Context, awards: list[_Award]) -> tuple[dict[int, int], dict[int, int]]:
    """What is left of each call resource's budget once the awards are allocated, and of each
    resource's capacity, given the allocations already there."""
    budgets = {a.call_resource_id for a in awards}
    resources = {a.resource_id for a in awards}
    taken = dict(
        ctx.session.execute(
            select(Allocation.call_resource_id, func.sum(Allocation.hours)).group_by(
                Allocation.call_resource_id
            )
        ).all()
    )
    held = dict(
        ctx.session.execute(
            select(Allocation.resource_id, func.sum(Allocation.hours))
            .where(Allocation.state.in_(HOLDING))
            .group_by(Allocation.resource_id)
        ).all()
    )
    rooms = {
        cr_id: budget - int(taken.get(cr_id) or 0)
        for cr_id, budget in ctx.session.execute(
            select(CallResource.id, CallResource.budget_hours)
        ).all()
        if cr_id in budgets
    }
    for a in awards:
        rooms[a.call_resource_id] -= a.hours
    for cr_id, room in sorted(rooms.items()):
        if room < 0:
            raise RuntimeError(f"The awards on call resource {cr_id} exceed its budget.")
    capacity = {
        r_id: capacity - int(held.get(r_id) or 0)
        for r_id, capacity in ctx.session.execute(
            select(Resource.id, Resource.capacity_hours)
        ).all()
        if r_id in resources
    }
    return rooms, capacity


def _recount_budgets(ctx: Context, awards: list[_Award]) -> None:
    """Each call budget's and resource's allocated hours: what its allocations take (every one,
    for the call's budget) and hold (those not expired, for the resource's capacity)."""
    budgets = sorted({a.call_resource_id for a in awards})
    resources = sorted({a.resource_id for a in awards})
    ctx.session.execute(
        update(CallResource)
        .where(CallResource.id.in_(budgets))
        .values(
            allocated_hours=select(func.coalesce(func.sum(Allocation.hours), 0))
            .where(Allocation.call_resource_id == CallResource.id)
            .scalar_subquery()
        )
        .execution_options(synchronize_session=False)
    )
    ctx.session.execute(
        update(Resource)
        .where(Resource.id.in_(resources))
        .values(
            allocated_hours=select(func.coalesce(func.sum(Allocation.hours), 0))
            .where(Allocation.resource_id == Resource.id, Allocation.state.in_(HOLDING))
            .scalar_subquery()
        )
        .execution_options(synchronize_session=False)
    )


def _charge(ctx: Context, plans: list[_Plan], used: dict[int, int]) -> None:
    """Write each allocation's usage (the sum of its records) in one executemany, and as its
    last change the import of its last job where that came later."""
    table = cast(Table, Allocation.__table__)
    ctx.session.execute(
        update(table)
        .where(table.c.id == bindparam("allocation"))
        .values(used_gpu_seconds=bindparam("used"), updated_at=bindparam("touched")),
        [
            {
                "allocation": p.id,
                "used": used[p.id],
                "touched": max(
                    _touched(p),
                    dt.datetime.fromtimestamp(p.window[1] + IMPORT_LAG, dt.UTC),
                ),
            }
            for p in plans
            if p.id in used
        ],
    )


# --- outputs and final reports -------------------------------------------------------------------


def _outputs(ctx: Context, planner: _Planner) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What each project released, checked off against its planned outputs (more the further it
    has run), and its final report (due at its end; for finished projects submitted, accepted or
    sent back, or overdue): the rows, numbered."""
    rng, now, today = ctx.rng, ctx.now, ctx.now.date()
    ours = {a.proposal_id for a in planner.awards}
    ids = sorted(ours)
    with_report = set(ctx.session.scalars(select(FinalReport.proposal_id)))
    taken = set(
        ctx.session.scalars(
            select(ReleasedOutput.planned_output_id).where(
                ReleasedOutput.planned_output_id.is_not(None)
            )
        )
    )
    planned: dict[int, list[tuple[int, OutputKind, str]]] = defaultdict(list)
    for po_id, proposal_id, kind, licence in ctx.session.execute(
        select(
            PlannedOutput.id, PlannedOutput.proposal_id, PlannedOutput.kind, PlannedOutput.license
        )
        .join(Proposal, Proposal.id == PlannedOutput.proposal_id)
        .where(Proposal.state == ProposalState.ACTIVE)
        .order_by(PlannedOutput.id)
    ):
        if po_id not in taken:
            planned[proposal_id].append((po_id, kind, licence))
    projects = {
        row.id: row
        for row in ctx.session.execute(
            select(
                Proposal.id, Proposal.title, Proposal.start_date, Proposal.duration_months,
                Proposal.decided_at, Proposal.state_changed_at,
            ).where(Proposal.state == ProposalState.ACTIVE)
        )
        if row.id in ours
    }  # fmt: skip
    outputs: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    first_output, first_report = ctx.next_id(ReleasedOutput), ctx.next_id(FinalReport)
    for pid in ids:
        p = projects[pid]
        decided = p.decided_at or p.state_changed_at
        start = p.start_date or decided.date()
        months = p.duration_months or 12
        end = add_months(start, months)
        author = planner.requester(pid)
        first = max(start, decided.date())
        if first <= today:
            ran = min(1.0, (today - start).days / max(1, (end - start).days))
            latest = min(today, end + dt.timedelta(days=90))
            n = 0
            kinds = [(po_id, kind, licence) for po_id, kind, licence in planned.get(pid, [])]
            if rng.random() < 0.2 * ran:
                kinds.append((0, list(RELEASES)[int(rng.random() * len(RELEASES))], ""))
            for po_id, kind, licence in kinds:
                if rng.random() >= 0.1 + 0.8 * ran:
                    continue
                n += 1
                noun, host, licences = RELEASES[kind]
                if not licence or rng.random() < 0.1:
                    licence = licences[int(rng.random() * len(licences))]
                on = first + dt.timedelta(days=int(rng.random() * max(0, (latest - first).days)))
                when = max(decided, dt.datetime.combine(on, dt.time(12), dt.UTC))
                doi = (
                    f"10.5072/datagen.{pid}.{n}"
                    if kind in (OutputKind.PAPER, OutputKind.DATASET) and rng.random() < 0.6
                    else None
                )
                outputs.append(
                    {
                        "id": first_output + len(outputs),
                        "proposal_id": pid,
                        "planned_output_id": po_id or None,
                        "kind": kind,
                        "title": f"{noun}: {p.title}"[:300],
                        "url": f"https://{host}.datagen.example/p{pid}/{kind.value}-{n}",
                        "license": licence,
                        "doi": doi,
                        "released_on": min(on, today),
                        "recorded_by_id": author,
                        "created_at": min(when, now),
                        "updated_at": min(when, now),
                    }
                )
        if pid in with_report or p.start_date is None or p.duration_months is None:
            continue
        reports.append(
            _report(ctx, pid, end, decided, author) | {"id": first_report + len(reports)}
        )
    return outputs, reports


def _report(
    ctx: Context, proposal_id: int, due: dt.date, created: dt.datetime, author: int | None
) -> dict[str, Any]:
    """A project's final report: due (reminded 30 and 7 days before, and once overdue), sent in
    early now and then; for a finished project mostly accepted, some waiting for program staff
    (sent in the last weeks), some sent back with the reasons, some overdue."""
    rng, now, today = ctx.rng, ctx.now, ctx.now.date()
    left = (due - today).days
    row: dict[str, Any] = {
        "proposal_id": proposal_id,
        "due_on": due,
        "state": ReportState.DUE,
        "summary": "",
        "outcomes": "",
        "submitted_at": None,
        "submitted_by_id": None,
        "decided_at": None,
        "decided_by_id": None,
        "decision_note": None,
        "last_reminder": "7" if 0 <= left <= 7 else "30" if 0 <= left <= 30 else None,
        "state_changed_at": None,
        "created_at": created,
        "updated_at": created,
    }
    roll = rng.random()
    if left >= 0:
        state = ReportState.SUBMITTED if left <= 30 and roll < 0.2 else ReportState.DUE
    elif roll < 0.5:
        state = ReportState.ACCEPTED
    elif roll < 0.65:
        state = ReportState.SUBMITTED
    elif roll < 0.75:
        state = ReportState.RETURNED
    else:
        state, row["last_reminder"] = ReportState.DUE, "overdue"
    if state == ReportState.DUE:
        return row
    if state == ReportState.SUBMITTED:
        submitted = now - dt.timedelta(days=rng.uniform(1, 30))
    else:
        due_at = dt.datetime.combine(due, dt.time(), dt.UTC)
        submitted = min(due_at + dt.timedelta(days=rng.uniform(-20, 40)), now - 2 * DAY)
    submitted = min(max(submitted, created + DAY), now - dt.timedelta(hours=2))
    row.update(
        state=state,
        summary=SUMMARIES[proposal_id % len(SUMMARIES)],
        outcomes=OUTCOME_TEXTS[proposal_id % len(OUTCOME_TEXTS)],
        submitted_at=submitted,
        submitted_by_id=author,
        state_changed_at=submitted,
        updated_at=submitted,
    )
    if state in (ReportState.ACCEPTED, ReportState.RETURNED):
        decided = min(
            submitted + dt.timedelta(days=rng.uniform(1, 20)), now - dt.timedelta(hours=1)
        )
        row.update(
            decided_at=decided,
            decided_by_id=ctx.officer,
            decision_note=RETURN_NOTES[proposal_id % len(RETURN_NOTES)]
            if state == ReportState.RETURNED
            else None,
            state_changed_at=decided,
            updated_at=decided,
        )
        if state == ReportState.RETURNED:
            row["last_reminder"] = "overdue"
    return row


# --- the audit trail -----------------------------------------------------------------------------


def _event(
    at: dt.datetime,
    actor: int | None,
    action: str,
    table: str | None,
    object_id: int | None,
    **details: Any,
) -> dict[str, Any]:
    """An audit event as ``portal.core.audit.record`` writes it: people act on the web (from a
    documentation address), nobody (the sweep, an import) from the command line."""
    return {
        "occurred_at": at,
        "actor_id": actor,
        "action": action,
        "object_type": table,
        "object_id": object_id,
        "ip": f"192.0.2.{actor % 250 + 1}" if actor is not None else None,
        "channel": "web" if actor is not None else "cli",
        "details": details,
    }


def _transition(
    at: dt.datetime,
    actor: int | None,
    action: str,
    table: str,
    object_id: int,
    frm: str,
    to: str,
    reason: str | None = None,
    **details: Any,
) -> dict[str, Any]:
    """A workflow step's event (``portal.core.workflow``): from, to and the reason."""
    return _event(at, actor, action, table, object_id, frm=frm, to=to, reason=reason, **details)


def _trail(
    ctx: Context,
    plans: list[_Plan],
    requests: list[tuple[_Plan, _Request]],
    outputs: list[dict[str, Any]],
    reports: list[dict[str, Any]],
    imports: dict[tuple[str, int], list[int]],
    stopped: dict[int, dt.datetime],
) -> Iterator[dict[str, Any]]:
    """What the services would have recorded: each allocation made, activated and stopped; each
    request made and settled; the nightly usage imports; each output recorded and each final
    report created, sent in and decided."""
    allocations, requests_table = Allocation.__tablename__, FollowUpRequest.__tablename__
    renewed_by = {r.renewal.id: r for _, r in requests if r.renewal is not None}
    for p in plans:
        renewal = renewed_by.get(p.id)
        maker = renewal.decided_by if renewal is not None else p.award.approver
        yield _event(
            p.created,
            maker,
            "allocation.create",
            allocations,
            p.id,
            hours=renewal.renewal.hours if renewal and renewal.renewal else p.award.hours,
            **({"renews": p.renewed_from} if p.renewed_from is not None else {}),
        )
        if p.active_from is not None:
            # A renewal starts at once; an award once its project's agreement is countersigned.
            by = maker if renewal is not None else ctx.officer
            yield _transition(
                p.active_from,
                by,
                "allocation.activate",
                allocations,
                p.id,
                S.PENDING.value,
                S.ACTIVE.value,
            )
        assert p.changed is not None
        if p.state == S.EXHAUSTED:
            yield _transition(
                p.changed,
                None,
                "allocation.exhaust",
                allocations,
                p.id,
                S.ACTIVE.value,
                S.EXHAUSTED.value,
            )
        elif p.state == S.SUSPENDED:
            why = (
                "The institution was suspended."
                if p.with_institution
                else "Usage outside the project's stated purpose: suspended pending a review."
            )
            yield _transition(
                p.changed,
                ctx.officer,
                "allocation.suspend",
                allocations,
                p.id,
                S.ACTIVE.value,
                S.SUSPENDED.value,
                why,
            )
        elif p.state == S.EXPIRED:
            stop = stopped.get(p.award.institution_id)
            before = (
                S.PENDING
                if p.active_from is None
                else S.SUSPENDED
                if stop is not None and p.active_from < stop < p.changed
                else S.EXHAUSTED
                if p.exhausts
                else S.ACTIVE
            )
            yield _transition(
                p.changed,
                None,
                "allocation.expire",
                allocations,
                p.id,
                before.value,
                S.EXPIRED.value,
            )
    for plan, r in requests:
        hours = r.renewal.hours if r.renewal is not None else r.hours
        yield _event(
            r.created,
            r.requested_by,
            "allocation_request.submit",
            requests_table,
            r.id,
            allocation=plan.id,
            kind=r.kind.value,
            hours=hours,
            ends_on=r.ends_on.isoformat() if r.ends_on else None,
            months=r.months,
        )
        if r.state == W.SUBMITTED:
            continue
        action = {
            W.APPROVED: "give_back" if r.kind == K.RETURN else "approve",
            W.DECLINED: "decline",
            W.WITHDRAWN: "withdraw",
        }[r.state]
        actor = r.requested_by if r.state == W.WITHDRAWN else r.decided_by
        yield _transition(
            r.changed,
            actor,
            f"allocation_request.{action}",
            requests_table,
            r.id,
            W.SUBMITTED.value,
            r.state.value,
            r.note,
        )
    for (cluster, day), (jobs, gpu_seconds) in sorted(imports.items()):
        at = dt.datetime.fromtimestamp(day * 86400 + IMPORT_LAG, dt.UTC)
        yield _event(
            min(at, ctx.now),
            None,
            "usage.import",
            None,
            None,
            sources=[f"{cluster}-{(EPOCH + dt.timedelta(days=day)).isoformat()}.sacct"],
            jobs=jobs,
            new=jobs,
            updated=0,
            unchanged=0,
            gpu_seconds=gpu_seconds,
        )
    for o in outputs:
        yield _event(
            o["created_at"],
            o["recorded_by_id"],
            "output.record",
            ReleasedOutput.__tablename__,
            o["id"],
            proposal=o["proposal_id"],
            kind=o["kind"].value,
            url=o["url"],
        )
    table = FinalReport.__tablename__
    for rep in reports:
        yield _event(
            rep["created_at"],
            None,
            "final_report.create",
            table,
            rep["id"],
            due_on=rep["due_on"].isoformat(),
        )
        if rep["submitted_at"] is None:
            continue
        yield _transition(
            rep["submitted_at"],
            rep["submitted_by_id"],
            "final_report.submit",
            table,
            rep["id"],
            ReportState.DUE.value,
            ReportState.SUBMITTED.value,
        )
        if rep["decided_at"] is not None:
            action = "accept" if rep["state"] == ReportState.ACCEPTED else "return"
            yield _transition(
                rep["decided_at"],
                rep["decided_by_id"],
                f"final_report.{action}",
                table,
                rep["id"],
                ReportState.SUBMITTED.value,
                rep["state"].value,
                rep["decision_note"],
            )


# --- the step ------------------------------------------------------------------------------------


def generate(ctx: Context) -> None:
    """Allocations, follow-up requests, allocation reviewers, usage records, released outputs
    and final reports for the active projects the proposals generator made."""
    awards = _awards(ctx)
    planner = _Planner(ctx, awards)
    ctx.counts["allocation reviewers"] = _reviewers(ctx, awards, planner)
    rooms, capacity = _rooms(ctx, awards)
    plans = planner.plan(rooms)
    fit_budgets(plans, rooms, capacity)
    aim_usage(ctx, plans, planner.stopped)
    ctx.counts["allocations"] = ctx.bulk(Allocation.__table__, _allocation_rows(plans))
    requests = _numbered(ctx, plans)
    ctx.counts["allocation requests"] = ctx.bulk(FollowUpRequest.__table__, _request_rows(requests))
    used: dict[int, int] = {}
    imports: dict[tuple[str, int], list[int]] = {}
    dialect = ctx.session.get_bind().dialect.name
    ctx.counts["usage records"] = insert_usage(
        ctx, usage_rows(plans, ctx.rng, dialect, ctx.next_id(UsageRecord), used, imports)
    )
    if used:
        _charge(ctx, plans, used)
    if awards:
        _recount_budgets(ctx, awards)
    outputs, reports = _outputs(ctx, planner)
    ctx.counts["released outputs"] = ctx.bulk(ReleasedOutput.__table__, outputs)
    ctx.counts["final reports"] = ctx.bulk(FinalReport.__table__, reports)
    ctx.counts["allocation events"] = ctx.bulk(
        AuditEvent.__table__,
        _trail(ctx, plans, requests, outputs, reports, imports, planner.stopped),
    )
