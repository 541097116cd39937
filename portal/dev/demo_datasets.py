"""Demo datasets: the lab's catalog in every tier and state, two data stewards, and the access
people asked for and hold — made through the services the pages use (``portal.datasets.services``),
data-use agreements signed and declined through the agreements' own ``sign`` and ``decline``.

The catalog (created by the program officer, each controlled dataset with the demo's data-use
template and its stewards): two open datasets, two registered ones (terms to accept), four
controlled ones (the clinical notes co-signed by the researcher's institution), one draft being
prepared, and a registered corpus retired when its successor came out. Dana stewards the clinical
notes, the scientific code, the evaluation suite and the retired corpus; Lena the dialect
conversations, the sea-ice scenes, the lecture audio and the draft; both the classroom essays — so
each has requests the other may not decide.

The access, by person:

- Ada (``professor``): the classroom essays for her instruction-data project, ending within the
  month (the 30-day notice went out) with a renewal waiting on Dana or Lena; the clinical notes
  approved, signed by her, waiting on Olivia's signature for UNC Charlotte; the retired 2025 web
  corpus, which she keeps until its end date; her proposal for clinical summarisation asks Dana to
  pre-approve the clinical notes (Dana declined to pre-approve the essays for it).
- Sam (``student``): the dialect conversations approved for his captions project, the data-use
  agreement waiting on him; the clinical notes sent back by Dana for changes; the lecture audio.
- Kenji (``keio-prof``): the dialect conversations for his dialect project (signed, active); the
  clinical notes declined; the classroom essays waiting on Dana or Lena; the lecture audio expired
  (accepted fourteen months ago); his broadcast proposal's dialect data pre-approved by Lena.
- Rafael (``reviewer``): the sea-ice scenes asked for again after he declined the first data-use
  agreement (that access ended), waiting on Lena; the essays approved by Lena in error and revoked
  by Dana before he signed; a withdrawn request for the dialect conversations; the scientific code.
- Katla (University Centre of the Westfjords, no demo login): the sea-ice scenes for her project,
  suspended with her university (``demo.load`` suspends it after this).

Like the rest of the demo, every step happens when the demo is loaded, and the past shows only in
the data: ``demo_allocations`` gives its projects start dates months ago, which the proposal
services accept. The datasets services accept no such date (access starts the day it is given and
ends after it), so the one grant that must be over — Kenji's lecture audio — is made through
``accept_terms`` and then has its period and acceptance time moved fourteen months back, the way
the allocations' tests move an allocation's period (``_moved_back``; the audit log keeps when the
demo made it). It is a registered dataset's, so no signed agreement text names other dates.
``demo.load`` then runs the datasets sweep, which expires it and sends the notices due.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from portal.agreements import services as agreements
from portal.agreements.models import Agreement, AgreementKind, AgreementTemplate
from portal.auth.models import User
from portal.core.dates import add_months
from portal.core.models import AnySession, utcnow
from portal.datasets import services
from portal.datasets.models import (
    AccessRequest,
    AccessTier,
    ConsentState,
    Dataset,
    DatasetState,
    Grant,
    ProposalDataset,
)
from portal.dev.demo_agreements import sign_in_turn
from portal.dev.demo_proposals import PLAN, demo_pdf
from portal.proposals import attachments
from portal.proposals import services as proposals
from portal.proposals.attachments import attachment_folder
from portal.proposals.models import AttachmentKind, Call, OutputKind, Proposal
from portal.proposals.services import Output, Request

GB = 1_000_000_000
TB = 1_000 * GB


@dataclass(frozen=True)
class DemoDataset:
    slug: str
    name: str
    summary: str
    #: Markdown.
    description: str
    version: str
    size_bytes: int
    #: An SPDX licence expression.
    licence: str
    tier: AccessTier
    #: Demo logins of its stewards (``demo.PEOPLE``; they hold the data steward role).
    stewards: tuple[str, ...] = ()
    terms: str = ""
    institution_signs: bool = False
    max_months: int = 12
    #: Published (listed) unless it stays a draft; retired ones are retired later, with a reason.
    draft: bool = False

    @property
    def location(self) -> str:
        return f"s3://atom-datasets/{self.slug}/"


DATASETS = [
    DemoDataset(
        slug="atom-open-eval-suite",
        name="ATOM Open Evaluation Suite",
        summary="Reasoning, code and multilingual benchmarks with fixed prompts and scoring scripts.",
        description=(
            "The lab's held-out evaluation sets, packaged with the exact prompts and scoring code "
            "used in its model cards.\n\n"
            "- **Reasoning**: 12,400 grade-school and competition-style problems in twelve "
            "languages\n"
            "- **Code**: 3,100 function-completion tasks with unit tests\n"
            "- **Multilingual QA**: 48,000 questions written by native speakers\n\n"
            "Each split has a `README.md` with its provenance and a `scores/` folder with "
            "reference results. Report results on the `test` split once per model release."
        ),
        version="3.1",
        size_bytes=1_850_000_000,
        licence="CC-BY-4.0",
        tier=AccessTier.OPEN,
        stewards=("steward",),
    ),
    DemoDataset(
        slug="commons-web-text-2026",
        name="Commons Web Text 2026",
        summary="Openly licensed web pages in 41 languages, deduplicated and quality-filtered.",
        description=(
            "Pages published under open licences (CC-BY, CC-BY-SA, CC0 and public domain), "
            "collected from the 2026 crawls of the demo web archive.\n\n"
            "## Processing\n\n"
            "1. Licence detection from page metadata and footers; pages without a clear open "
            "licence are dropped.\n"
            "2. Exact and near-duplicate removal (MinHash, 5-grams).\n"
            "3. Language identification and a quality classifier per language.\n\n"
            "The per-document licence and source URL are kept in the `meta` field: attribution "
            "travels with the text."
        ),
        version="2026.1",
        size_bytes=4_800 * GB,
        licence="ODC-By-1.0",
        tier=AccessTier.OPEN,
    ),
    DemoDataset(
        slug="lecture-audio-commons",
        name="Lecture Audio Commons",
        summary="2,900 hours of university lectures with aligned transcripts, 14 languages.",
        description=(
            "Recordings of lectures given under open-courseware programmes at demo partner "
            "universities, with human-corrected transcripts aligned at the word level.\n\n"
            "| Split | Hours | Lectures |\n|---|---:|---:|\n"
            "| train | 2,650 | 3,980 |\n| dev | 120 | 180 |\n| test | 130 | 190 |\n\n"
            "Students audible in the recordings agreed to research use; see the terms."
        ),
        version="1.4",
        size_bytes=2_300 * GB,
        licence="CC-BY-NC-4.0",
        tier=AccessTier.REGISTERED,
        stewards=("steward2",),
        terms=(
            "- Non-commercial research only (the licence is CC-BY-NC-4.0).\n"
            "- Do not try to identify the speakers or the students audible in the recordings.\n"
            "- Cite the collection as *Lecture Audio Commons, ATOM Lab (demo), version 1.4*."
        ),
    ),
    DemoDataset(
        slug="scientific-code-problems",
        name="Scientific Code Problems 2026",
        summary="Numerical-library tasks with reference solutions and property-based tests.",
        description=(
            "Tasks drawn from the issue trackers of open numerical libraries (linear algebra, "
            "ODE solvers, FFTs, statistics), each with:\n\n"
            "- a problem statement and the library version it applies to,\n"
            "- a reference patch,\n"
            "- property-based tests that fail before and pass after the patch.\n\n"
            "Built for training and evaluating code models on scientific software."
        ),
        version="2026.2",
        size_bytes=36 * GB,
        licence="CC-BY-SA-4.0",
        tier=AccessTier.REGISTERED,
        stewards=("steward",),
        terms=(
            "- Share derived datasets under CC-BY-SA-4.0.\n"
            "- Do not train on the `test` split of a model you report results for.\n"
            "- Cite the collection in any publication that uses it."
        ),
    ),
    DemoDataset(
        slug="northwind-clinical-notes",
        name="Northwind Clinical Notes (de-identified)",
        summary="1.2 million de-identified discharge summaries and clinic letters (fictional "
        "provider).",
        description=(
            "Discharge summaries and outpatient letters from the (fictional) Northwind Regional "
            "Hospital, 2014 to 2024, de-identified by the hospital's information governance team: "
            "names, dates, places and record numbers replaced by consistent surrogates.\n\n"
            "**Provider's conditions**: clinical NLP research only; no attempt at "
            "re-identification; the researcher's institution co-signs the data-use agreement."
        ),
        version="2.0",
        size_bytes=118 * GB,
        licence="CC-BY-NC-4.0",
        tier=AccessTier.CONTROLLED,
        stewards=("steward",),
        terms="Clinical NLP research only. Your institution's signing official co-signs the "
        "data-use agreement after you.",
        institution_signs=True,
    ),
    DemoDataset(
        slug="dialect-conversations-ja",
        name="Japanese Dialect Conversations",
        summary="Spontaneous conversations in eleven Japanese dialects, 780 speakers, transcribed.",
        description=(
            "Pairs of speakers from the same town talking freely for 20 to 40 minutes, recorded "
            "in eleven regions from Tsugaru to Kagoshima, with orthographic and dialect-faithful "
            "transcripts.\n\n"
            "Speakers consented to research use, **not** to voice cloning or speaker "
            "identification: both are excluded by the data-use agreement."
        ),
        version="1.2",
        size_bytes=640 * GB,
        licence="CC-BY-NC-4.0",
        tier=AccessTier.CONTROLLED,
        stewards=("steward2",),
        terms="No voice cloning, no speaker identification; results by dialect, not by speaker.",
        max_months=24,
    ),
    DemoDataset(
        slug="classroom-essays",
        name="Classroom Essays Corpus",
        summary="86,000 essays by secondary-school pupils with teachers' scores and feedback.",
        description=(
            "Essays written in class by pupils aged 12 to 18 at demo partner schools, with the "
            "teachers' rubric scores and written feedback.\n\n"
            "Collected for **education research**: automated feedback, readability, writing "
            "development. Pupils and parents consented to that use only."
        ),
        version="3.0",
        size_bytes=9_500_000_000,
        licence="CC-BY-NC-4.0",
        tier=AccessTier.CONTROLLED,
        stewards=("steward", "steward2"),
        terms="Education research only. Never publish an essay, or a passage of one.",
    ),
    DemoDataset(
        slug="north-atlantic-sar-ice",
        name="North Atlantic SAR Sea-Ice Scenes",
        summary="Synthetic-aperture radar scenes of sea ice with ice-chart labels, 2015 to 2026.",
        description=(
            "Radar scenes over the Denmark Strait and the Greenland Sea, paired with the ice "
            "charts drawn from them by the (fictional) North Atlantic Ice Service.\n\n"
            "Scenes younger than twelve months are under the provider's embargo: they may be "
            "used on the lab's clusters but neither redistributed nor shown as images."
        ),
        version="4.1",
        size_bytes=12_700 * GB,
        licence="CC-BY-NC-SA-4.0",
        tier=AccessTier.CONTROLLED,
        stewards=("steward2",),
        terms="Embargoed scenes (under twelve months old) are never redistributed or shown.",
        max_months=18,
    ),
    DemoDataset(
        slug="permissive-code-commons-2027",
        name="Permissive Code Commons 2027",
        summary="Source code under permissive licences from the 2027 crawl (in preparation).",
        description=(
            "Being prepared: the licence audit of the 2027 crawl is under way. Listed once the "
            "opt-out requests received by 31 January have been applied."
        ),
        version="0.9",
        size_bytes=7_200 * GB,
        licence="ODC-By-1.0",
        tier=AccessTier.REGISTERED,
        stewards=("steward2",),
        terms="- Keep each file's licence and copyright notice.\n- Honour later opt-outs.",
        draft=True,
    ),
    DemoDataset(
        slug="commons-web-text-2025",
        name="Commons Web Text 2025",
        summary="The 2025 edition of the open web corpus (superseded by the 2026 edition).",
        description=(
            "Openly licensed web pages in 36 languages from the 2025 crawls. Superseded by "
            "**Commons Web Text 2026**, which also removes pages whose owners opted out since."
        ),
        version="2025.3",
        size_bytes=3_900 * GB,
        licence="ODC-By-1.0",
        tier=AccessTier.REGISTERED,
        stewards=("steward",),
        terms="- Honour the opt-out list published with each release.\n- Cite the corpus.",
    ),
]

#: Retired once the 2026 edition was out (its holders keep access until their end date).
RETIRED = {
    "commons-web-text-2025": "Superseded by Commons Web Text 2026, which removes the pages whose "
    "owners opted out since; access already given runs to its end date.",
}


def _proposal(session: AnySession, title: str) -> Proposal:
    return session.scalars(select(Proposal).where(Proposal.title == title)).one()


def _catalog(session: AnySession, staff: User, people: dict[str, User]) -> dict[str, Dataset]:
    """The program officer adds each dataset (a draft) and names its stewards; the stewards (or,
    without one, the officer) publish it."""
    dua = session.scalars(
        select(AgreementTemplate).where(AgreementTemplate.kind == AgreementKind.DATA_USE)
    ).one()
    made = {}
    for d in DATASETS:
        dataset = services.create_dataset(
            session,
            actor=staff,
            slug=d.slug,
            name=d.name,
            summary=d.summary,
            description=d.description,
            version=d.version,
            size_bytes=d.size_bytes,
            licence=d.licence,
            tier=d.tier,
            terms=d.terms,
            dua_template_id=dua.id if d.tier == AccessTier.CONTROLLED else None,
            institution_signs=d.institution_signs,
            max_months=d.max_months,
            location=d.location,
        )
        for login in d.stewards:
            services.add_steward(session, dataset, actor=staff, user=people[login])
        if not d.draft:
            services.publish(session, dataset, actor=people[d.stewards[0]] if d.stewards else staff)
        made[d.slug] = dataset
    return made


def _ask(
    session: AnySession,
    dataset: Dataset,
    who: User,
    use: str,
    project: str | None = None,
) -> AccessRequest:
    return services.request_access(
        session,
        dataset,
        actor=who,
        intended_use=use,
        proposal=_proposal(session, project) if project else None,
    )


def _approved(
    session: AnySession, request: AccessRequest, steward: User, months: int, note: str
) -> Grant:
    """``steward`` approves for ``months``: the grant waits on its data-use agreement."""
    services.approve(
        session,
        request,
        actor=steward,
        ends_on=add_months(utcnow().date(), months),
        note=note,
    )
    assert request.grant is not None
    return request.grant


def _agreement(grant: Grant) -> Agreement:
    """The data-use agreement issued when ``grant``'s request was approved."""
    assert grant.agreement is not None
    return grant.agreement


def _moved_back(grant: Grant, months: int) -> None:
    """The grant's period and acceptance ``months`` earlier (see the module's docstring)."""
    start = add_months(grant.starts_on, -months)
    grant.terms_accepted_at = (grant.terms_accepted_at or utcnow()) - (grant.starts_on - start)
    grant.starts_on, grant.ends_on = start, add_months(grant.ends_on, -months)


def _registered(session: AnySession, ds: dict[str, Dataset], people: dict[str, User]) -> None:
    """Terms accepted: access at once, for the dataset's longest period. Kenji accepted the
    lecture audio's fourteen months ago (it ended two months ago; the sweep expires it); Ada keeps
    the 2025 web corpus after Dana retires it."""
    ada, sam, kenji, rafael = (people[k] for k in ("professor", "student", "keio-prof", "reviewer"))
    for who, slug in [
        (ada, "commons-web-text-2025"),
        (ada, "scientific-code-problems"),
        (sam, "lecture-audio-commons"),
        (rafael, "scientific-code-problems"),
    ]:
        services.accept_terms(session, ds[slug], actor=who, accepted=True)
    old = services.accept_terms(session, ds["lecture-audio-commons"], actor=kenji, accepted=True)
    _moved_back(old, 14)
    for slug, reason in RETIRED.items():
        services.retire(session, ds[slug], actor=people["steward"], reason=reason)
    session.flush()


def _controlled(session: AnySession, ds: dict[str, Dataset], people: dict[str, User]) -> None:
    """Requests for the controlled datasets in every state, and the access they gave."""
    ada, sam, kenji, rafael, katla = (
        people[k] for k in ("professor", "student", "keio-prof", "reviewer", "westfjords-prof")
    )
    dana, lena = people["steward"], people["steward2"]
    notes, dialects = ds["northwind-clinical-notes"], ds["dialect-conversations-ja"]
    essays, ice = ds["classroom-essays"], ds["north-atlantic-sar-ice"]

    # Kenji's dialect project: approved by Lena and signed — active.
    request = _ask(
        session, dialects, kenji,
        "Fine-tuning our open speech models on the Kyushu and Tohoku conversations and reporting "
        "word error rates by dialect; no speaker-level results, no voice synthesis.",
        "Open speech models for Japanese dialects",
    )  # fmt: skip
    grant = _approved(
        session, request, lena, 4,
        "Four months: the project's remaining period with its planned extension.",
    )  # fmt: skip
    sign_in_turn(session, _agreement(grant))
    # Sam's captions: approved by Lena; the data-use agreement waits on Sam.
    request = _ask(
        session, dialects, sam,
        "Testing whether our lecture-caption models hold up on regional accents: evaluation "
        "only, on the dev and test splits, results by dialect.",
        "Open speech recognition for lecture captions",
    )  # fmt: skip
    _approved(session, request, lena, 12, "Evaluation only, as asked: no training on the data.")
    # Rafael asked for the dialect data, then withdrew the request.
    request = _ask(
        session, dialects, rafael,
        "A robustness check of speech front-ends for the scientific-software assistant "
        "(spoken queries), on a few hours of conversation.",
    )  # fmt: skip
    services.withdraw(session, request, actor=rafael)

    # Ada's instruction data: the essays, approved for a short pilot by Dana and signed — it ends
    # within the month, and Ada asks for a renewal (waiting on Dana or Lena).
    request = _ask(
        session, essays, ada,
        "Deriving feedback-style instructions from the teachers' comments (not the essays' "
        "text) for the multilingual instruction data; nothing from an essay is released.",
        "Multilingual instruction data from open sources",
    )  # fmt: skip
    services.approve(
        session, request, actor=dana, ends_on=utcnow().date() + dt.timedelta(days=18),
        note="A short pilot first: ask for a renewal with the pilot's results.",
    )  # fmt: skip
    assert request.grant is not None
    sign_in_turn(session, _agreement(request.grant))
    services.request_renewal(
        session, request.grant, actor=ada,
        intended_use="The pilot worked (2,300 feedback instructions, none quoting an essay): six "
        "more months to derive the full set and release it with the instruction data.",
    )  # fmt: skip
    # Kenji asks for the essays too (waiting on Dana or Lena).
    _ask(
        session, essays, kenji,
        "Evaluating automated feedback in Japanese-English bilingual classrooms: scoring "
        "agreement with teachers, by school year.",
    )  # fmt: skip
    # Rafael's request for the essays, approved by Lena in error and revoked by Dana before he
    # signed (which withdrew its data-use agreement).
    request = _ask(
        session, essays, rafael,
        "Pre-training data for code models: the essays' explanations of algorithms, in the "
        "pupils' own words.",
    )  # fmt: skip
    grant = _approved(session, request, lena, 6, "Approved for six months.")
    services.revoke(
        session, grant, actor=dana,
        reason="Approved in error: the essays are for education research only, and this is for "
        "code models. Nothing was downloaded (the agreement was never signed).",
    )  # fmt: skip

    # The clinical notes (Dana; the researcher's institution co-signs): Ada's is signed by her and
    # waits on Olivia for UNC Charlotte; Sam's came back for changes; Kenji's was declined.
    request = _ask(
        session, notes, ada,
        "Evaluating small open models on summarising discharge letters for patients, against "
        "clinicians' summaries; no re-identification, no text released.",
    )  # fmt: skip
    sign_in_turn(
        session,
        _agreement(_approved(session, request, dana, 6, "Clinical summarisation: as asked.")),
        1,
    )
    request = _ask(
        session, notes, sam,
        "Training a medication-name recogniser for my master's thesis and publishing the model.",
    )  # fmt: skip
    services.request_changes(
        session, request, actor=dana,
        reason="Students need a supervisor on the request: name the faculty member responsible, "
        "and say whether the model is released (a model trained on the notes is not, by default).",
    )  # fmt: skip
    request = _ask(
        session, notes, kenji,
        "Adding the notes to the pre-training mixture of our general-purpose Japanese-English "
        "model, for its medical vocabulary.",
    )  # fmt: skip
    services.decline(
        session, request, actor=dana,
        reason="The provider permits clinical NLP research only; general-purpose pre-training is "
        "outside it. Ask again if the project narrows to a clinical task.",
    )  # fmt: skip

    # The sea-ice scenes (Lena): Katla's project holds them (suspended with the Westfjords later);
    # Rafael declined his first data-use agreement (its access ended) and asked again.
    request = _ask(
        session, ice, katla,
        "Training and evaluating open vision models that segment sea-ice types from radar, "
        "checked against the ice charts; embargoed scenes are used only on the clusters.",
        "Open vision models for North Atlantic sea-ice imagery",
    )  # fmt: skip
    sign_in_turn(session, _agreement(_approved(session, request, lena, 6, "Approved.")))
    request = _ask(
        session, ice, rafael,
        "A benchmark of code models writing radar-processing pipelines, checked on real scenes.",
    )  # fmt: skip
    first = _agreement(_approved(session, request, lena, 6, "Approved for six months."))
    agreements.decline(
        session, first, actor=rafael,
        reason="TUM's legal office cannot accept section 2 for derived benchmark "
        "results as worded; I will ask again for evaluation only.",
    )  # fmt: skip
    _ask(
        session, ice, rafael,
        "Evaluation only: code models write radar-processing pipelines, scored on 200 scenes "
        "older than the embargo; no scene or tile leaves the clusters.",
    )  # fmt: skip


#: New proposals to the rolling call that pick catalog datasets (dataset → what for): their
#: stewards are asked to pre-approve the controlled ones when the proposal is submitted.
PICKING = [
    (
        "keio-prof",
        "Dialect-robust speech recognition for regional broadcasters",
        "Speech and audio",
        {
            "dialect-conversations-ja": "Fine-tuning and testing on the eleven dialects.",
            "atom-open-eval-suite": "The multilingual QA split, spoken, as a control.",
        },
    ),
    (
        "professor",
        "Small open models for clinical note summarisation",
        "Healthcare and medicine",
        {
            "northwind-clinical-notes": "Summaries for patients, scored against clinicians'.",
            "classroom-essays": "Teachers' feedback as a model of plain-language explanation.",
            "commons-web-text-2026": "General pre-training data for the small models.",
        },
    ),
]


def _picking(session: AnySession, ds: dict[str, Dataset], people: dict[str, User]) -> None:
    """The PIs write and submit proposals that pick catalog datasets; Lena pre-approves the
    dialect data for Kenji's; Dana declines to pre-approve the essays for Ada's, whose clinical
    notes wait on her."""
    call = session.scalars(
        select(Call).where(Call.title == "Rolling call: small open-science projects")
    ).one()
    (offer,) = call.resources
    made = {}
    for login, title, field, picks in PICKING:
        pi = people[login]
        proposal = proposals.start_proposal(session, call, actor=pi, title=title)
        proposals.save_draft(
            session,
            proposal,
            actor=pi,
            title=title,
            abstract=(
                f"{title}. Open models need open research on how they learn and where they "
                "fail. This project studies that with reproducible training runs, public "
                "evaluations and released artefacts, using datasets from the lab's catalog."
            ),
            field=field,
            plan=PLAN,
            requested_datasets="From the lab's catalog (listed in the datasets section).",
            start_date=utcnow().date() + dt.timedelta(days=45),
            duration_months=9,
            requests=[
                Request(
                    offer.id,
                    min(4_000, offer.max_request_hours),
                    "Fine-tuning runs of 1B and 3B models with evaluation after each epoch.",
                )
            ],
            outputs=[
                Output(OutputKind.WEIGHTS, "Apache-2.0", "The fine-tuned models"),
                Output(OutputKind.CODE, "Apache-2.0", "Training and evaluation code"),
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
        services.set_proposal_datasets(
            session,
            proposal,
            actor=pi,
            picks={ds[slug].id: purpose for slug, purpose in picks.items()},
        )
        proposals.submit_proposal(session, proposal, actor=pi)
        made[login] = proposal

    def link(login: str, slug: str) -> ProposalDataset:
        return session.scalars(
            select(ProposalDataset).where(
                ProposalDataset.proposal_id == made[login].id,
                ProposalDataset.dataset_id == ds[slug].id,
            )
        ).one()

    services.consent(
        session,
        link("keio-prof", "dialect-conversations-ja"),
        actor=people["steward2"],
        note="Pre-approved for the project's period; the same conditions as Kenji's current access.",
    )
    services.refuse(
        session,
        link("professor", "classroom-essays"),
        actor=people["steward"],
        reason="The essays are for education research only: a clinical project cannot use them.",
    )
    assert link("professor", "northwind-clinical-notes").state == ConsentState.ASKED


def load_datasets(session: AnySession, staff: User, people: dict[str, User]) -> None:
    """The catalog, the access people asked for and hold, and proposals that pick datasets.
    Runs after the projects exist (``demo_allocations``) and before the Westfjords is suspended;
    ``demo.load`` runs the datasets sweep afterwards."""
    ds = _catalog(session, staff, people)
    _registered(session, ds, people)
    _controlled(session, ds, people)
    _picking(session, ds, people)
    assert all(ds[slug].state == DatasetState.RETIRED for slug in RETIRED)
