"""Demo compute: last year's main call, whose projects were approved with start dates months ago,
so that their allocations are in every state, with the clusters' usage job by job over the months
they ran — the burn-down charts draw real curves. Made through the services people and clusters
use: proposals submitted, reviewed and approved (approval allocates the hours out of the call's
budget), contribution agreements signed (which activates them), usage recorded the way an import
records it (``portal.allocations.usage.record_usage``), the sweep run (``demo.load`` runs it last).

With the projects of ``demo_reviews`` the allocations are:

- pending: "Japanese legal-text models with open weights" (its contribution agreement waits on the
  program officer), "Interpretability probes for open multilingual models" (on Ada, its PI), "Open
  speech recognition for lecture captions" (on Olivia, UNC Charlotte's signing official);
- active, not started yet: the two pilot projects (they start in two months);
- active with usage: Ada's instruction-data project (81 % used: the 80 % notice went out) and
  Kenji's speech project (77 % used, ending within the month: the 30-day notice went out);
- exhausted: Rafael's code-models project, used up twelve days ago;
- expired: Ada's tokenizer project, whose period ended three months ago, and three projects
  whose period ended one to four months ago (their final reports are in, ``demo_outputs``) — the
  sweep expired them;
- suspended: Katla's sea-ice project at the University Centre of the Westfjords, suspended with its
  institution (``demo.load`` suspends it after these projects ran).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import select

from portal.agreements import services as agreements
from portal.agreements.models import AgreementKind, SubjectType
from portal.allocations import followups
from portal.allocations.models import SECONDS_PER_HOUR, Allocation, AllocationState, FollowUpKind
from portal.allocations.usage import Job, record_usage
from portal.auth.models import User
from portal.core.dates import add_months
from portal.core.models import AnySession, utcnow
from portal.dev.demo_agreements import sign_in_turn
from portal.dev.demo_proposals import PLAN, RUBRIC, demo_pdf
from portal.dev.demo_reviews import approve
from portal.proposals import attachments, services, team
from portal.proposals.attachments import attachment_folder
from portal.proposals.models import (
    AttachmentKind,
    Call,
    OutputKind,
    Proposal,
    Resource,
    TeamRole,
)
from portal.proposals.services import Offer, Output, Request

#: Last year's main call: closed, its projects running (or run).
CALL_TITLE = "Open foundation models 2026"
#: What it offered: (cluster, GPU class, budget, most one proposal may ask for).
OFFERS = [("atlas", "H100", 300_000, 60_000), ("atlas", "H200", 150_000, 40_000)]

#: The longest a demo job runs before more GPUs are given to it (the clusters' time limit).
LONGEST_JOB = 24 * 3600
#: Slurm job states, with how often each ends a demo job (the rest complete).
ENDINGS = (("FAILED", 0.05), ("TIMEOUT", 0.03), ("CANCELLED", 0.02))


@dataclass(frozen=True)
class DemoProject:
    #: The PI's demo login (``demo.PEOPLE``, or a person who is no demo login).
    pi: str
    title: str
    field: str
    #: The call resource it asks for, by GPU class (``OFFERS``).
    gpu_class: str
    requested: int
    awarded: int
    #: It started this many months, and days more, before today …
    months_ago: int
    days_ago: int
    #: … for this many months.
    months: int
    #: The share of its GPU-hours its jobs have used (1.0: used up).
    used: float
    #: Its last job ran this many days before today (or just before its end, if that came first).
    idle_days: int
    #: Why it was approved.
    reason: str
    #: Demo logins on its team besides the PI (as members).
    members: tuple[str, ...] = ()


PROJECTS = [
    DemoProject(
        pi="professor",
        title="Multilingual instruction data from open sources",
        field="Natural language processing",
        gpu_class="H100",
        requested=48_000,
        awarded=40_000,
        months_ago=8,
        days_ago=0,
        months=12,
        used=0.81,
        idle_days=2,
        reason="Ranked first by the panel; the data pipeline is ready.",
        members=("student",),
    ),
    DemoProject(
        pi="professor",
        title="Byte-level tokenizers for low-resource languages",
        field="Natural language processing",
        gpu_class="H100",
        requested=12_000,
        awarded=12_000,
        months_ago=15,
        days_ago=0,
        months=12,
        used=0.88,
        idle_days=2,
        reason="Small and sound; it feeds the multilingual models.",
    ),
    DemoProject(
        pi="keio-prof",
        title="Open speech models for Japanese dialects",
        field="Speech and audio",
        gpu_class="H200",
        requested=36_000,
        awarded=30_000,
        months_ago=11,
        days_ago=10,
        months=12,
        used=0.77,
        idle_days=2,
        reason="Strong team; recordings already licensed openly.",
    ),
    DemoProject(
        pi="reviewer",
        title="Open code models for numerical libraries",
        field="Scientific machine learning",
        gpu_class="H100",
        requested=8_000,
        awarded=6_000,
        months_ago=5,
        days_ago=0,
        months=12,
        used=1.0,
        idle_days=12,
        reason="Useful to every lab that writes numerical code.",
    ),
    DemoProject(
        pi="westfjords-prof",
        title="Open vision models for North Atlantic sea-ice imagery",
        field="Climate and earth science",
        gpu_class="H200",
        requested=12_000,
        awarded=10_000,
        months_ago=6,
        days_ago=0,
        months=12,
        used=0.35,
        idle_days=2,
        reason="Unique open data; a small, well-planned project.",
    ),
    # Projects whose period is over (the sweep expired their allocations); their final reports
    # are accepted, sent back for changes and waiting for a decision (``demo_outputs``).
    DemoProject(
        pi="keio-prof",
        title="Open OCR models for historical Japanese documents",
        field="Computer vision",
        gpu_class="H200",
        requested=20_000,
        awarded=16_000,
        months_ago=16,
        days_ago=0,
        months=12,
        used=0.93,
        idle_days=2,
        reason="Digitised archives waiting for it; the team released a strong baseline.",
    ),
    DemoProject(
        pi="reviewer",
        title="Language models for materials-science literature",
        field="Scientific machine learning",
        gpu_class="H100",
        requested=12_000,
        awarded=10_000,
        months_ago=14,
        days_ago=0,
        months=12,
        used=0.96,
        idle_days=2,
        reason="A clear use; the corpus is openly licensed.",
    ),
    DemoProject(
        pi="professor",
        title="Open retrieval models for scientific abstracts",
        field="Natural language processing",
        gpu_class="H100",
        requested=8_000,
        awarded=8_000,
        months_ago=13,
        days_ago=0,
        months=12,
        used=0.9,
        idle_days=2,
        reason="Small and useful; it completes the multilingual work.",
    ),
]


def starts_on(project: DemoProject, today: dt.date) -> dt.date:
    return add_months(today, -project.months_ago) - dt.timedelta(days=project.days_ago)


def _offers(session: AnySession) -> list[Offer]:
    offers = []
    for cluster, gpu_class, budget, cap in OFFERS:
        resource = session.scalars(
            select(Resource).where(Resource.cluster == cluster, Resource.gpu_class == gpu_class)
        ).one()
        offers.append(Offer(resource.id, budget, cap))
    return offers


def _call(session: AnySession, staff: User) -> Call:
    return services.save_call(
        session,
        None,
        actor=staff,
        title=CALL_TITLE,
        description=(
            f"**{CALL_TITLE}** offered GPU-hours on H100 and H200 nodes to partner institutions "
            "for open research on foundation models.\n\n"
            "- Results, weights and code are released under open licences.\n"
            "- Proposals were reviewed by peers without conflicts of interest."
        ),
        eligibility="Faculty and research staff at partner institutions; students as members.",
        opens_at=None,
        closes_at=None,
        reviews_wanted=1,
        single_blind=True,
        endorsement_required=False,
        page_limit=10,
        offers=_offers(session),
        criteria=RUBRIC,
    )


def _propose(
    session: AnySession, call: Call, project: DemoProject, people: dict[str, User]
) -> Proposal:
    """The PI writes the proposal, with its start date months ago, invites the members (who
    accept), and submits it."""
    pi = people[project.pi]
    (offer,) = [cr for cr in call.resources if cr.resource.gpu_class == project.gpu_class]
    proposal = services.start_proposal(session, call, actor=pi, title=project.title)
    services.save_draft(
        session,
        proposal,
        actor=pi,
        title=project.title,
        abstract=(
            f"{project.title}. Open models need open research on how they learn and where they "
            "fail. This project studies that with reproducible training runs, public evaluations "
            "and released artefacts, in partnership with the lab."
        ),
        field=project.field,
        plan=PLAN,
        requested_datasets="The lab's open evaluation suite, and the project's own open data.",
        start_date=starts_on(project, utcnow().date()),
        duration_months=project.months,
        requests=[
            Request(
                offer.id,
                project.requested,
                "Training runs at three model sizes, with ablations of the data mixture.",
            )
        ],
        outputs=[
            Output(OutputKind.WEIGHTS, "Apache-2.0", "Every checkpoint"),
            Output(OutputKind.CODE, "Apache-2.0", "Training and evaluation code"),
            Output(OutputKind.PAPER, "CC-BY-4.0", "A preprint with all results"),
        ],
    )
    attachments.add_attachment(
        session,
        proposal,
        actor=pi,
        kind=AttachmentKind.DESCRIPTION,
        filename=f"{project.title[:40]} - project description.pdf",
        data=demo_pdf(),
        folder=attachment_folder(),
        max_bytes=10 * 1024 * 1024,
    )
    for login in project.members:
        member = people[login]
        _, token = team.invite(
            session, proposal, actor=pi, email=member.email or "", role=TeamRole.MEMBER
        )
        invitation = team.invitation_for_token(session, token)
        assert invitation is not None
        team.accept(session, invitation, actor=member)
    services.submit_proposal(session, proposal, actor=pi)
    return proposal


class _Run(NamedTuple):
    started_at: dt.datetime
    cluster: str
    account: str
    gpus: int
    elapsed_seconds: int
    state: str


def _runs(
    allocation: Allocation, project: DemoProject, today: dt.date, rng: random.Random
) -> list[_Run]:
    """The project's jobs, day by day from its start: a month of ramping up, quieter weekends,
    some days without jobs, a few failed or timed-out runs — adding up to exactly ``used`` of its
    hours (every job has a multiple of 8 GPUs, as the hours' GPU-seconds are: the last 8-GPU job
    takes the rounding)."""
    last = min(
        today - dt.timedelta(days=project.idle_days),
        allocation.ends_on - dt.timedelta(days=2),
    )
    target = round(project.used * allocation.hours * SECONDS_PER_HOUR / 8) * 8
    planned: list[tuple[dt.date, float]] = []
    day = allocation.starts_on
    while day <= last:
        ramp = min(1.0, ((day - allocation.starts_on).days + 5) / 35)
        weekend = 0.5 if day.weekday() >= 5 else 1.0
        for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
            planned.append((day, ramp * weekend * rng.uniform(0.4, 1.6)))
        day += dt.timedelta(days=1)
    total = sum(weight for _, weight in planned)
    runs = []
    for day, weight in planned:
        share = target * weight / total
        gpus = rng.choice((8, 8, 16, 32))
        while share / gpus > LONGEST_JOB:
            gpus *= 2
        roll, state = rng.random(), "COMPLETED"
        for ending, chance in ENDINGS:
            if roll < chance:
                state = ending
                break
            roll -= chance
        start = dt.datetime.combine(
            day, dt.time(rng.randint(0, 19), rng.randint(0, 59), rng.randint(0, 59)), dt.UTC
        )
        runs.append(
            _Run(
                start,
                allocation.cluster,
                allocation.account,
                gpus,
                max(60, int(share // gpus)),
                state,
            )
        )
    rest = target - sum(r.gpus * r.elapsed_seconds for r in runs)
    k = max(i for i, r in enumerate(runs) if r.gpus == 8)
    runs[k] = runs[k]._replace(elapsed_seconds=runs[k].elapsed_seconds + rest // 8)
    assert sum(r.gpus * r.elapsed_seconds for r in runs) == target
    return runs


def jobs(runs: list[_Run]) -> Iterator[Job]:
    """The runs as the clusters report them: job ids numbered per cluster in the order the jobs
    started (``demo-000001`` …: no real scheduler's ids)."""
    numbers: dict[str, int] = {}
    for run in sorted(runs):
        numbers[run.cluster] = n = numbers.get(run.cluster, 0) + 1
        yield Job(
            cluster=run.cluster,
            job_id=f"demo-{n:06d}",
            account=run.account,
            gpus=run.gpus,
            elapsed_seconds=run.elapsed_seconds,
            started_at=run.started_at,
            ended_at=run.started_at + dt.timedelta(seconds=run.elapsed_seconds),
            state=run.state,
        )


def allocation_of(session: AnySession, proposal: Proposal) -> Allocation:
    return session.scalars(select(Allocation).where(Allocation.proposal_id == proposal.id)).one()


def load_allocations(session: AnySession, staff: User, people: dict[str, User]) -> None:
    """Last year's call and its projects: proposed with start dates months ago, approved (their
    hours allocated out of the call's budget), their contribution agreements fully signed (which
    activates the allocations), and the clusters' usage of them recorded. Suspending the
    Westfjords and the sweep (which expires the allocation whose period is over) come after
    (``demo.load``)."""
    call = _call(session, staff)
    services.run_call(session, call, "open", actor=staff)
    proposals = [(_propose(session, call, p, people), p) for p in PROJECTS]
    services.run_call(session, call, "close", actor=staff)
    runs: list[_Run] = []
    for n, (proposal, project) in enumerate(proposals):
        (request,) = proposal.requests
        approve(
            session,
            proposal,
            people["reviewer2"],  # Rafael has a proposal in this call: a conflict
            staff,
            reason=project.reason,
            awards={request.call_resource_id: project.awarded},
        )
        agreement = agreements.standing(
            session, AgreementKind.CONTRIBUTION, SubjectType.PROJECT, proposal.id
        )
        assert agreement is not None
        sign_in_turn(session, agreement)
        allocation = allocation_of(session, proposal)
        assert allocation.state == AllocationState.ACTIVE, allocation
        rng = random.Random(f"demo usage {n}")  # noqa: S311 - reproducible sample data
        runs += _runs(allocation, project, utcnow().date(), rng)
    report = record_usage(session, jobs(runs))
    assert not report.unknown and report.new == len(runs), report.counts()


def _allocation_titled(session: AnySession, title: str) -> Allocation:
    return session.scalars(
        select(Allocation)
        .join(Proposal)
        .where(Proposal.title == title, Allocation.renewed_from_id.is_(None))
    ).one()


def load_follow_ups(session: AnySession, staff: User, people: dict[str, User]) -> None:
    """Follow-up requests in every state, and an allocation reviewer: Ines decides requests on the
    H100 pool up to 20,000 GPU-hours. Ada asks for more hours for her instruction data (waiting on
    Ines or a program officer) and took back a request for more time; Kenji got three more months
    for his dialects; Rafael's request for more hours after using his up was declined; a pilot
    project gave back hours it will not use. (``demo.load`` runs this after the sweep.)"""
    h100 = session.scalars(
        select(Resource).where(Resource.cluster == "atlas", Resource.gpu_class == "H100")
    ).one()
    followups.assign_reviewer(
        session, actor=staff, user=people["reviewer2"], resource=h100, ceiling_hours=20_000
    )
    ada, kenji, rafael = people["professor"], people["keio-prof"], people["reviewer"]
    instruction = _allocation_titled(session, PROJECTS[0].title)
    followups.submit_request(
        session, instruction, FollowUpKind.SUPPLEMENT, actor=ada, hours=12_000,
        justification="The filtered corpus came out twice as large as planned; 12,000 more "
        "GPU-hours finish the deduplication and the two release checkpoints.",
    )  # fmt: skip
    longer = followups.submit_request(
        session, instruction, FollowUpKind.EXTENSION, actor=ada,
        ends_on=add_months(instruction.ends_on, 2),
        justification="Two months more for the second release, if the extra hours come late.",
    )  # fmt: skip
    followups.withdraw_request(session, longer, actor=ada)
    dialects = _allocation_titled(session, PROJECTS[2].title)
    extension = followups.submit_request(
        session, dialects, FollowUpKind.EXTENSION, actor=kenji,
        ends_on=add_months(dialects.ends_on, 3),
        justification="The dialect recordings from Kagoshima arrive in January; three more "
        "months let us train on them with the hours left.",
    )  # fmt: skip
    followups.decide_request(
        session, extension, "approve", actor=staff, note="Fine: the hours are the same."
    )
    code = _allocation_titled(session, PROJECTS[3].title)
    more = followups.submit_request(
        session, code, FollowUpKind.SUPPLEMENT, actor=rafael, hours=20_000,
        justification="The benchmark suite grew; 20,000 GPU-hours would rerun all baselines.",
    )  # fmt: skip
    followups.decide_request(
        session, more, "decline", actor=staff,
        note="The call's H100 budget is committed; apply to the spring call with the new suite.",
    )  # fmt: skip
    pilot = session.scalars(
        select(Allocation)
        .where(Allocation.state == AllocationState.ACTIVE, Allocation.used_gpu_seconds == 0)
        .order_by(Allocation.id)
    ).first()
    if pilot is not None and pilot.proposal.pi is not None:
        followups.submit_request(
            session, pilot, FollowUpKind.RETURN, actor=pilot.proposal.pi,
            hours=min(500, pilot.hours // 4),
            justification="The pilot needs fewer hours than planned: the smaller model suffices.",
        )  # fmt: skip
