"""Demo calls and proposals: a GPU catalog, two open calls and a closed one, and proposals in every
state across the demo institutions, with teams, an invitation and PDF attachments — made through
the same services people use, so the history, versions and mails are real too."""

from __future__ import annotations

import datetime as dt
import io

from portal.auth.models import User
from portal.core.models import AnySession, utcnow
from portal.proposals import attachments, services, team
from portal.proposals.attachments import attachment_folder
from portal.proposals.models import AttachmentKind, Call, OutputKind, Proposal, TeamRole
from portal.proposals.services import Criterion, Offer, Output, Request

RUBRIC = [
    Criterion("Scientific merit", "Is the question important and the approach sound?", 3, 5),
    Criterion("Openness", "Will the weights, code and data be released openly?", 2, 5),
    Criterion("Feasibility", "Can the team do it with the hours asked for?", 1, 5),
]

PLAN = (
    "We will train a family of models from 1B to 13B parameters on openly licensed data, "
    "evaluate them on reasoning benchmarks in twelve languages, and release every checkpoint "
    "with its training code and data recipes. Months 1-3: data pipeline and tokenizer; months "
    "4-9: pre-training runs on H100 nodes with careful ablations of the data mixture; months "
    "10-12: instruction tuning, evaluation, a paper and the public release. Risks: data "
    "quality in low-resource languages (mitigated by community review) and compute "
    "efficiency (mitigated by the ablation schedule agreed with the lab's engineers)."
)


def demo_pdf(pages: int = 3) -> bytes:
    """A small, valid PDF (blank pages) to stand for a project description."""
    from pypdf import PdfWriter  # not at import: web workers load this module and never need it

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    writer.add_metadata({"/Title": "Project description (demo)"})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _complete(session: AnySession, proposal: Proposal, pi: User, title: str, hours: int) -> None:
    """Fill in everything the checklist asks for, and attach the project description."""
    call = proposal.call
    services.save_draft(
        session,
        proposal,
        actor=pi,
        title=title,
        abstract=(
            f"{title}. Openly released models need open research on how they learn and where "
            "they fail. This project studies that question with reproducible training runs, "
            "public evaluations and released artefacts, in partnership with the lab."
        ),
        field="Natural language processing",
        plan=PLAN,
        requested_datasets="A filtered multilingual web corpus (CC-BY) and the lab's open eval suite.",
        start_date=(utcnow() + dt.timedelta(days=60)).date(),
        duration_months=12,
        requests=[
            Request(
                call.resources[0].id,
                min(hours, call.resources[0].max_request_hours),
                "Pre-training runs of 1B to 13B parameters with three data-mixture ablations each.",
            )
        ],
        outputs=[
            Output(OutputKind.WEIGHTS, "Apache-2.0", "Every checkpoint, base and tuned"),
            Output(OutputKind.CODE, "Apache-2.0", "Training and evaluation code"),
            Output(OutputKind.PAPER, "CC-BY-4.0", "A preprint with all results"),
        ],
    )
    attachments.add_attachment(
        session,
        proposal,
        actor=pi,
        kind=AttachmentKind.DESCRIPTION,
        filename=f"{title[:40]} - project description.pdf",
        data=demo_pdf(),
        folder=attachment_folder(),
        max_bytes=10 * 1024 * 1024,
    )


def _call(
    session: AnySession,
    staff: User,
    title: str,
    resources: list[tuple[int, int, int]],
    *,
    endorsement: bool,
    closes_in_days: int | None,
) -> Call:
    return services.save_call(
        session,
        None,
        actor=staff,
        title=title,
        description=(
            f"**{title}** offers GPU-hours to partner institutions for open research.\n\n"
            "- Results, weights and code are released under open licences.\n"
            "- Proposals are reviewed by peers without conflicts of interest."
        ),
        eligibility="Faculty and research staff at partner institutions; students as members.",
        opens_at=None,
        closes_at=utcnow() + dt.timedelta(days=closes_in_days) if closes_in_days else None,
        reviews_wanted=2,
        single_blind=True,
        endorsement_required=endorsement,
        page_limit=10,
        offers=[Offer(r, budget, cap) for r, budget, cap in resources],
        criteria=RUBRIC,
    )


def load_proposals(session: AnySession, staff: User, people: dict[str, User]) -> int:
    """The demo's resources, calls and proposals; returns how many proposals."""
    h100 = services.save_resource(
        session, None, actor=staff, cluster="atlas", gpu_class="H100", capacity_hours=2_000_000,
        description="1,024 H100 80 GB in nodes of 8, InfiniBand NDR.",
    )  # fmt: skip
    h200 = services.save_resource(
        session, None, actor=staff, cluster="atlas", gpu_class="H200", capacity_hours=1_000_000,
        description="512 H200 141 GB in nodes of 8.",
    )  # fmt: skip
    b200 = services.save_resource(
        session, None, actor=staff, cluster="borealis", gpu_class="B200", capacity_hours=800_000,
        description="256 B200 in NVL72 racks; for the largest training runs.",
    )  # fmt: skip
    main = _call(
        session, staff, "Open foundation models 2027",
        [(h100.id, 600_000, 80_000), (h200.id, 300_000, 40_000)],
        endorsement=True, closes_in_days=60,
    )  # fmt: skip
    rolling = _call(
        session, staff, "Rolling call: small open-science projects",
        [(h100.id, 100_000, 5_000)], endorsement=False, closes_in_days=None,
    )  # fmt: skip
    past = _call(
        session, staff, "Pilot call 2026",
        [(b200.id, 200_000, 50_000)], endorsement=False, closes_in_days=None,
    )  # fmt: skip
    for call in (main, rolling, past):
        services.run_call(session, call, "open", actor=staff)

    ada, sam, kenji = people["professor"], people["student"], people["keio-prof"]
    olivia, yuki, rafael = people["official"], people["keio-official"], people["reviewer"]

    # Ada's flagship: Sam joins as co-investigator, then it waits for Olivia's endorsement.
    flagship = services.start_proposal(session, main, actor=ada, title="x")
    _complete(session, flagship, ada, "Open multilingual reasoning models", 60_000)
    _, token = team.invite(session, flagship, actor=ada, email=sam.email or "", role=TeamRole.CO_PI)
    invitation = team.invitation_for_token(session, token)
    assert invitation is not None
    team.accept(session, invitation, actor=sam)
    team.invite(
        session, flagship, actor=ada, email="lab.partner@charlotte.edu", role=TeamRole.MEMBER
    )
    services.submit_proposal(session, flagship, actor=ada)

    # Ada's next idea, still a draft with things missing.
    draft = services.start_proposal(session, rolling, actor=ada, title="x")
    services.save_draft(
        session, draft, actor=ada, title="Efficient fine-tuning of open models",
        abstract="Work in progress: the abstract comes after the pilot experiments.",
        field="", plan="", requested_datasets="", start_date=None, duration_months=None,
        requests=[], outputs=[],
    )  # fmt: skip

    # Sam's proposal was returned by Olivia; Sam may change it and submit again.
    returned = services.start_proposal(session, main, actor=sam, title="x")
    _complete(session, returned, sam, "Speech models for classroom accessibility", 20_000)
    services.submit_proposal(session, returned, actor=sam)
    services.decide_endorsement(
        session, returned, "return", actor=olivia,
        reason="Please add the ethics approval for recordings made in classrooms.",
    )  # fmt: skip

    # Kenji's proposal, endorsed by Yuki: submitted, waiting for review.
    endorsed = services.start_proposal(session, main, actor=kenji, title="x")
    _complete(session, endorsed, kenji, "Open vision-language models for Japanese", 70_000)
    services.submit_proposal(session, endorsed, actor=kenji)
    services.decide_endorsement(session, endorsed, "endorse", actor=yuki)

    # Rafael's rolling-call proposal (no endorsement needed), and one he withdrew.
    direct = services.start_proposal(session, rolling, actor=rafael, title="x")
    _complete(session, direct, rafael, "Evaluating open code models on scientific software", 4_000)
    services.submit_proposal(session, direct, actor=rafael)
    gone = services.start_proposal(session, rolling, actor=rafael, title="x")
    _complete(session, gone, rafael, "Tokenizers for chemistry notation", 3_000)
    services.submit_proposal(session, gone, actor=rafael)
    services.withdraw_proposal(
        session, gone, actor=rafael, reason="Merged into the scientific software project."
    )

    # Kenji's second proposal, endorsed too: it will be approved (demo_reviews), and its
    # contribution agreement waits on the program officer's countersignature (demo_agreements).
    legal = services.start_proposal(session, main, actor=kenji, title="x")
    _complete(session, legal, kenji, "Japanese legal-text models with open weights", 50_000)
    services.submit_proposal(session, legal, actor=kenji)
    services.decide_endorsement(session, legal, "endorse", actor=yuki)

    # Rolling-call projects at UNC Charlotte that will be approved: Ada's contribution agreement waits
    # on Ada; Sam's was declined by Olivia once, and its second issue waits on her.
    probes = services.start_proposal(session, rolling, actor=ada, title="x")
    _complete(session, probes, ada, "Interpretability probes for open multilingual models", 5_000)
    services.submit_proposal(session, probes, actor=ada)
    captions = services.start_proposal(session, rolling, actor=sam, title="x")
    _complete(session, captions, sam, "Open speech recognition for lecture captions", 4_000)
    services.submit_proposal(session, captions, actor=sam)

    # Kenji's rolling-call proposal that the program declines (``demo_reviews``): the public pages
    # never show it, though he agreed to be named.
    distil = services.start_proposal(session, rolling, actor=kenji, title="x")
    _complete(session, distil, kenji, "Distilling a commercial chat model into a small one", 4_000)
    services.submit_proposal(session, distil, actor=kenji)

    # The pilot call: two proposals made it in before it closed (both become running projects).
    pilot = services.start_proposal(session, past, actor=kenji, title="x")
    _complete(session, pilot, kenji, "Pilot: scaling laws for open data mixtures", 40_000)
    services.submit_proposal(session, pilot, actor=kenji)
    evals = services.start_proposal(session, past, actor=ada, title="x")
    _complete(session, evals, ada, "Pilot: open evaluation of multilingual reasoning", 30_000)
    services.submit_proposal(session, evals, actor=ada)
    services.run_call(session, past, "close", actor=staff)
    session.flush()
    return 12
