"""Every console page and CSV runs a fixed number of SQL queries whatever the rows shown (no N+1):
at 10 and at 200 members, requests to join, projects (each with allocations, dataset access and
a released output), proposals awaiting endorsement and agreements to sign — for the institution's
signing official and for a program officer (who decides requests where there is no official)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementKind
from portal.auth.models import Role, User
from portal.datasets.models import AccessTier
from portal.proposals.models import ProposalState
from tests.console.factories import make_mapping, make_project, make_provider
from tests.factories import (
    make_affiliation,
    make_agreement,
    make_agreement_template,
    make_call,
    make_dataset,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.app import login

#: Rows of each kind on the first count, and on the second.
FEW, MANY = 10, 200


def test_console_pages_run_a_fixed_number_of_queries(
    app: Flask,
    client: FlaskClient,
    db: Session,
    count_queries: Callable[[Callable[[], object]], int],
) -> None:
    inst = make_institution(db)
    # An institution without an official: program officers decide its requests (per request,
    # the rule asks whether it has one — the console asks once for the page).
    orphan = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    call = make_call(db, budget_hours=10**9)
    dataset = make_dataset(db, tier=AccessTier.REGISTERED)
    contribution = make_agreement_template(db, kind=AgreementKind.CONTRIBUTION)
    for _ in range(3):
        make_mapping(db, make_provider(db), inst)
    make_provider(db)
    added = 0

    def add(n: int) -> None:
        """``n`` more of each: members (with a title), requests to join (here and at the
        orphan), projects (one dataset access each, every other one a release, every third one
        a contribution agreement waiting on the official), proposals awaiting endorsement."""
        nonlocal added
        with app.app_context():
            for i in range(added, added + n):
                make_user(db, Role.RESEARCHER, institution=inst, display_name=f"Member {i:03d}")
                make_affiliation(db, institution=inst, title="postdoc")
                make_affiliation(db, institution=orphan)
                project = make_project(
                    db,
                    inst,
                    call=call,
                    used_gpu_seconds=i * 3600,
                    grants=1,
                    dataset=dataset,
                    released_licence="MIT" if i % 2 else None,
                    title=f"Project {i:03d}",
                )
                if i % 3 == 0:
                    make_agreement(
                        db,
                        kind=AgreementKind.CONTRIBUTION,
                        proposal=project,
                        signed=1,
                        template=contribution,
                    )
                make_proposal(
                    db, call=call, institution=inst, state=ProposalState.AWAITING_ENDORSEMENT
                )
            db.flush()
        added += n

    add(FEW)
    base = f"/console/{inst.id}"
    pages: list[tuple[User, str]] = [
        (official, "/console/"),
        (officer, "/console/"),
    ]
    for who in (official, officer):
        pages += [
            (who, base),
            (who, f"{base}/requests"),
            (who, f"{base}/requests?q=person&sort=newest"),
            (who, f"{base}/members"),
            (who, f"{base}/members?q=member&sort=newest"),
            (who, f"{base}/members?format=csv"),
            (who, f"{base}/endorsements"),
            (who, f"{base}/agreements"),
            (who, f"{base}/projects"),
            (who, f"{base}/projects?q=project&sort=newest"),
            (who, f"{base}/projects?format=csv"),
            (who, f"{base}/logins"),
        ]
    pages += [(officer, f"/console/{orphan.id}/requests")]

    def counts() -> list[int]:
        out = []
        for viewer, url in pages:
            visitor = login(client, viewer)
            assert visitor.get(url).status_code in (200, 302), url
            out.append(count_queries(lambda: visitor.get(url)))  # noqa: B023 - called at once
        return out

    few = counts()
    add(MANY - FEW)
    many = counts()
    for (viewer, url), a, b in zip(pages, few, many, strict=True):
        print(f"{url} as {viewer.display_name}: {a} queries at {FEW} rows, {b} at {MANY}")
    assert many == few, [
        (viewer.display_name, url, a, b)
        for (viewer, url), a, b in zip(pages, few, many, strict=True)
        if a != b
    ]
