"""The catalog pages run a fixed number of SQL queries whatever the rows shown (no N+1), at 10 and
at 200 datasets of every tier (the researcher holding access to some and asking for others), and
10 and 200 proposals asking a steward to pre-approve their datasets (each at its own institution,
some decided): the catalog for each kind of visitor (filtered, and as CSV), the pre-approvals
queue (waiting and decided), a proposal's page with its datasets and the page choosing them, and
the dashboard cards."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementKind
from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.datasets import services
from portal.datasets.models import AccessTier, ConsentState, Dataset, ProposalDataset
from portal.proposals.models import ProposalState
from tests.factories import (
    make_access_request,
    make_agreement_template,
    make_call,
    make_dataset,
    make_proposal,
    make_user,
)
from tests.support.app import login

#: Datasets (and proposals asking for pre-approval) on the first count, and on the second.
FEW, MANY = 10, 200
TIERS = (AccessTier.OPEN, AccessTier.REGISTERED, AccessTier.CONTROLLED)


def test_catalog_pages_run_a_fixed_number_of_queries(
    app: Flask,
    client: FlaskClient,
    db: Session,
    count_queries: Callable[[Callable[[], object]], int],
) -> None:
    steward = make_user(db, Role.DATA_STEWARD)
    researcher = make_user(db, Role.RESEARCHER)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    dua = make_agreement_template(db, kind=AgreementKind.DATA_USE)
    stewarded = make_dataset(db, stewards=[steward], name="Stewarded notes")
    call = make_call(db)
    draft_proposal = make_proposal(db, pi=researcher, call=call)
    datasets: list[Dataset] = []
    links: list[ProposalDataset] = []

    def add(n: int) -> None:
        """``n`` more datasets (every tier in turn; the researcher holds the registered ones and
        asks for the controlled ones, each with stewards of its own) and ``n`` more submitted
        proposals asking the steward to pre-approve ``stewarded`` (every third one decided), each
        also planned by the researcher's draft."""
        with app.app_context():
            for _ in range(n):
                i = len(datasets)
                tier = TIERS[i % 3]
                controlled = tier == AccessTier.CONTROLLED
                dataset = make_dataset(
                    db,
                    tier=tier,
                    stewards=[make_user(db, Role.DATA_STEWARD), *([steward] if i % 2 else [])]
                    if controlled
                    else [],
                    size_bytes=i * 10**9,
                    name=f"Corpus {i:03d}",
                    **({"dua_template": dua} if controlled else {}),  # type: ignore[arg-type]
                )
                datasets.append(dataset)
                if tier == AccessTier.REGISTERED:
                    services.accept_terms(db, dataset, actor=researcher, accepted=True)
                elif tier == AccessTier.CONTROLLED:
                    make_access_request(db, dataset=dataset, user=researcher)
                proposal = make_proposal(db, call=call, state=ProposalState.SUBMITTED)
                decided = i % 3 == 0
                link = ProposalDataset(
                    proposal_id=proposal.id,
                    dataset_id=stewarded.id,
                    purpose=f"Purpose {i}",
                    state=ConsentState.CONSENTED if decided else ConsentState.ASKED,
                    asked_at=utcnow(),
                    decided_at=utcnow() if decided else None,
                    decided_by_id=steward.id if decided else None,
                    decision_note="Fine." if decided else None,
                )
                db.add(link)
                links.append(link)
                db.add(
                    ProposalDataset(
                        proposal_id=draft_proposal.id,
                        dataset_id=dataset.id,
                        purpose="Evaluation.",
                        state=ConsentState.ASKED
                        if tier == AccessTier.CONTROLLED
                        else ConsentState.NOT_NEEDED,
                    )
                )
            db.flush()

    add(FEW)
    pages: list[tuple[User | None, str]] = [
        (None, "/datasets/"),
        (None, "/datasets/?q=corpus&tier=open&sort=largest"),
        (researcher, "/datasets/"),
        (researcher, "/datasets/?tier=registered&sort=newest"),
        (researcher, f"/proposals/{draft_proposal.id}"),
        (researcher, f"/datasets/proposals/{draft_proposal.id}"),
        (researcher, "/dashboard"),
        (steward, "/datasets/"),
        (steward, "/datasets/?state=published&q=corpus"),
        (steward, "/datasets/pre-approvals"),
        (steward, "/datasets/pre-approvals?state=consented&sort=newest"),
        (steward, "/dashboard"),
        (officer, "/datasets/"),
        (officer, "/datasets/?format=csv"),
        (officer, f"/proposals/{draft_proposal.id}"),
    ]

    def counts() -> list[int]:
        out = []
        for viewer, url in pages:
            visitor = app.test_client() if viewer is None else login(client, viewer)
            assert visitor.get(url).status_code == 200, url
            out.append(count_queries(lambda: visitor.get(url)))  # noqa: B023 - called at once
        return out

    few = counts()
    add(MANY - FEW)
    many = counts()
    for (viewer, url), a, b in zip(pages, few, many, strict=True):
        who = viewer.display_name if viewer else "anonymous"
        print(f"{url} as {who}: {a} queries at {FEW} rows, {b} at {MANY}")
    assert many == few, [
        (url, a, b) for (_, url), a, b in zip(pages, few, many, strict=True) if a != b
    ]
