"""Demo open outputs and final reports: what the running and finished projects released, checked
off against the outputs their proposals planned, and each project's final report — made through
the services the outputs pages use (``portal.outputs.services``).

Released (every address is a made-up ``example.org`` / ``example.com`` one, every DOI under the
test prefix ``10.5072``):

- Ada's tokenizer project (ended three months ago): its weights and code, both planned; the paper
  is not out yet, and its final report is overdue;
- Ada's instruction-data project: its code (planned) and an unplanned preview of the data;
- Kenji's dialect project (ending within the month, its report due soon): weights and paper;
- Rafael's code-models project: nothing released yet;
- Katla's sea-ice project: an unplanned labelled subset of the scenes;
- Kenji's OCR project (ended): everything planned and a dataset besides; report accepted;
- Rafael's materials-science project (ended): its weights under a non-commercial licence
  (``CC-BY-NC-4.0``, not open) although it planned Apache-2.0 — its report was returned for that;
- Ada's retrieval project (ended): everything planned; its report waits for program staff.

The other active projects (the pilots, and those approved this year) start later and owe their
report at their end. ``demo.load`` runs the outputs sweep last, which sends the reminders due.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from portal.auth.models import User
from portal.core.models import AnySession, utcnow
from portal.outputs import services
from portal.outputs.models import FinalReport
from portal.proposals.models import OutputKind, Proposal, ProposalState

TOKENIZERS = "Byte-level tokenizers for low-resource languages"
INSTRUCTION = "Multilingual instruction data from open sources"
DIALECTS = "Open speech models for Japanese dialects"
SEA_ICE = "Open vision models for North Atlantic sea-ice imagery"
OCR = "Open OCR models for historical Japanese documents"
MATERIALS = "Language models for materials-science literature"
RETRIEVAL = "Open retrieval models for scientific abstracts"
#: Running for months, nothing released yet.
NOTHING_YET = "Open code models for numerical libraries"


@dataclass(frozen=True)
class DemoOutput:
    project: str
    kind: OutputKind
    title: str
    url: str
    license: str
    #: Released this many days before today.
    days_ago: int
    #: It is the release of the project's planned output of its kind (checked off).
    planned: bool
    doi: str | None = None


OUTPUTS = [
    DemoOutput(
        TOKENIZERS, OutputKind.WEIGHTS, "ByteTok: tokenizers for 40 low-resource languages",
        "https://models.example.org/charlotte/bytetok", "Apache-2.0", 150, True,
    ),
    DemoOutput(
        TOKENIZERS, OutputKind.CODE, "ByteTok training code",
        "https://code.example.org/charlotte/bytetok", "Apache-2.0", 120, True,
    ),
    DemoOutput(
        INSTRUCTION, OutputKind.CODE, "Open instruction-data pipeline",
        "https://code.example.org/charlotte/open-instructions", "Apache-2.0", 60, True,
    ),
    DemoOutput(
        INSTRUCTION, OutputKind.DATASET, "Open instructions: a first 100,000 examples",
        "https://data.example.org/charlotte/open-instructions-preview", "CC-BY-4.0", 40, False,
    ),
    DemoOutput(
        DIALECTS, OutputKind.WEIGHTS, "Hogen-ASR: speech recognition for Japanese dialects",
        "https://models.example.org/keio/hogen-asr", "Apache-2.0", 30, True,
    ),
    DemoOutput(
        DIALECTS, OutputKind.PAPER, "Recognising Japanese dialects with open speech models",
        "https://papers.example.com/keio/hogen-asr", "CC-BY-4.0", 14, True,
        doi="10.5072/atom-demo.hogen-asr",
    ),
    DemoOutput(
        SEA_ICE, OutputKind.DATASET, "Labelled sea-ice radar scenes (open subset)",
        "https://data.example.org/westfjords/sea-ice-labels", "CC-BY-4.0", 45, False,
    ),
    DemoOutput(
        OCR, OutputKind.WEIGHTS, "Kuzushiji OCR models",
        "https://models.example.org/keio/kuzushiji-ocr", "Apache-2.0", 200, True,
    ),
    DemoOutput(
        OCR, OutputKind.CODE, "Kuzushiji OCR training and evaluation code",
        "https://code.example.org/keio/kuzushiji-ocr", "Apache-2.0", 200, True,
    ),
    DemoOutput(
        OCR, OutputKind.PAPER, "Open OCR for historical Japanese documents",
        "https://papers.example.com/keio/kuzushiji-ocr", "CC-BY-4.0", 150, True,
        doi="10.5072/atom-demo.kuzushiji-ocr",
    ),
    DemoOutput(
        OCR, OutputKind.DATASET, "Transcribed page images from Edo-period books",
        "https://data.example.org/keio/edo-pages", "CC-BY-SA-4.0", 130, False,
    ),
    DemoOutput(
        MATERIALS, OutputKind.WEIGHTS, "MatLM: language models for materials science",
        "https://models.example.org/tum/matlm", "CC-BY-NC-4.0", 100, True,
    ),
    DemoOutput(
        MATERIALS, OutputKind.CODE, "MatLM training code",
        "https://code.example.org/tum/matlm", "MIT", 90, True,
    ),
    DemoOutput(
        RETRIEVAL, OutputKind.WEIGHTS, "SciRetrieve embedding models",
        "https://models.example.org/charlotte/sciretrieve", "Apache-2.0", 60, True,
    ),
    DemoOutput(
        RETRIEVAL, OutputKind.CODE, "SciRetrieve training code",
        "https://code.example.org/charlotte/sciretrieve", "Apache-2.0", 60, True,
    ),
    DemoOutput(
        RETRIEVAL, OutputKind.PAPER, "Open retrieval models for scientific abstracts",
        "https://papers.example.com/charlotte/sciretrieve", "CC-BY-4.0", 35, True,
        doi="10.5072/atom-demo.sciretrieve",
    ),
]  # fmt: skip

#: Each finished project's final report: (summary, outcomes, decision, program staff's note).
REPORTS: dict[str, tuple[str, str, str | None, str | None]] = {
    OCR: (
        "We trained OCR models for kuzushiji, the cursive script of Edo-period books, on 40,000 "
        "transcribed pages, and released the models, the code, a paper and the pages.",
        "Character accuracy rose from 81 % to 94 % over the best earlier open model. Three "
        "libraries now use the models to make their collections searchable. The GPU-hours let us "
        "train at a resolution that keeps the small marks that change a character.",
        "accept",
        None,
    ),
    MATERIALS: (
        "We continued pre-training open language models on 2 million materials-science papers "
        "and evaluated them on property extraction; the models and the code are released.",
        "The 7B model extracts synthesis conditions with an F1 of 0.78 (0.61 before). The "
        "GPU-hours covered pre-training and three ablations of the corpus mix.",
        "return",
        "The weights are released under CC-BY-NC-4.0, but the contribution agreement commits "
        "the project to Apache-2.0: release them under Apache-2.0 (or tell us what prevents it), "
        "then send the report again.",
    ),
    RETRIEVAL: (
        "We trained multilingual embedding models for retrieving scientific abstracts and "
        "released the models, the code and a paper.",
        "Recall@10 on our open benchmark of 12 languages is 0.71, against 0.58 for the best "
        "earlier open model; the models run on a laptop.",
        None,
        None,
    ),
}


def _project(session: AnySession, title: str) -> Proposal:
    return session.scalars(select(Proposal).where(Proposal.title == title)).one()


def load_outputs(session: AnySession, staff: User) -> None:
    """Each active project's final report (due at its end), the outputs released, and the
    finished projects' reports submitted and decided. Runs after the projects exist."""
    today = utcnow().date()
    for project in session.scalars(
        select(Proposal).where(Proposal.state == ProposalState.ACTIVE).order_by(Proposal.id)
    ):
        services.ensure_report(session, project)
    for o in OUTPUTS:
        project = _project(session, o.project)
        planned = [p for p in project.outputs if p.kind == o.kind] if o.planned else []
        assert project.pi is not None
        services.record_output(
            session,
            project,
            actor=project.pi,
            kind=o.kind,
            title=o.title,
            url=o.url,
            license=o.license,
            doi=o.doi,
            released_on=today - dt.timedelta(days=o.days_ago),
            planned_output_id=planned[0].id if planned else None,
        )
    for title, (summary, outcomes, decision, note) in REPORTS.items():
        project = _project(session, title)
        assert project.pi is not None
        report = session.scalars(
            select(FinalReport).where(FinalReport.proposal_id == project.id)
        ).one()
        services.submit_report(
            session, report, actor=project.pi, summary=summary, outcomes=outcomes
        )
        if decision is not None:
            services.decide_report(session, report, actor=staff, action=decision, reason=note)
