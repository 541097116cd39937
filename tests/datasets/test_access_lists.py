"""The access lists run a fixed number of SQL queries whatever the rows shown (no N+1), at 10 and
at 200 requests and grants (on several datasets, at many institutions, some for projects, in
every state a list shows): the requests list (its tabs, filtered, and as CSV) and the access list
(its tabs, filtered, and as CSV), for a steward, program staff, a signing official and a
researcher."""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.datasets import services
from portal.datasets.models import AccessTier, Dataset, RequestState
from portal.proposals.models import ProposalState
from tests.factories import (
    make_access_request,
    make_dataset,
    make_grant,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.app import login

#: Requests and grants on the first count, and on the second.
FEW, MANY = 10, 200
#: A new controlled dataset (the steward's) every this many rows: the dataset filter grows too.
PER_DATASET = 25
#: The states the requests are made in, in turn (approved ones come with their grant).
STATES = (RequestState.SUBMITTED, RequestState.CHANGES_REQUESTED, RequestState.DECLINED)


def test_access_lists_run_a_fixed_number_of_queries(
    app: Flask,
    client: FlaskClient,
    db: Session,
    count_queries: Callable[[Callable[[], object]], int],
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    researcher = make_user(db, Role.RESEARCHER, institution=inst)
    steward = make_user(db, Role.DATA_STEWARD)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    registered = make_dataset(db, tier=AccessTier.REGISTERED)
    datasets: list[Dataset] = []
    made = 0

    def add(n: int) -> None:
        """``n`` more requests and ``n`` more grants: every other requester at the official's
        institution, the others at new ones (the researcher asks first for each dataset); every third request for the requester's project;
        the grants signed, waiting on their agreement, or from accepting registered terms."""
        nonlocal made
        with app.app_context():
            for _ in range(n):
                i = made
                made += 1
                if i % PER_DATASET == 0:
                    datasets.append(make_dataset(db, stewards=[steward]))
                dataset = datasets[-1]
                at = inst if i % 2 == 0 else make_institution(db)
                person = (
                    researcher
                    if i % PER_DATASET == 0
                    else make_user(db, Role.RESEARCHER, institution=at)
                )
                request = make_access_request(db, dataset=dataset, user=person, state=STATES[i % 3])
                if i % 3 == 0:
                    project = make_proposal(db, pi=person, state=ProposalState.ACTIVE)
                    request.proposal_id = project.id
                holder = make_user(db, Role.RESEARCHER, institution=at)
                if i % 3 == 2:
                    services.accept_terms(db, registered, actor=holder, accepted=True)
                else:
                    make_grant(db, dataset=dataset, user=holder, signed=i % 3 == 0, days=10 + i)
            db.flush()

    add(FEW)
    first = datasets[0]
    pages: list[tuple[User, str]] = [
        (steward, "/datasets/requests"),
        (steward, "/datasets/requests?show=waiting"),
        (steward, f"/datasets/requests?dataset={first.id}&kind=new&sort=oldest"),
        (steward, "/datasets/requests?format=csv"),
        (steward, "/datasets/access?show=stewarded"),
        (steward, "/datasets/access?format=csv"),
        (officer, "/datasets/requests?state=submitted&q=Person"),
        (officer, "/datasets/requests?format=csv&show=all"),
        (officer, "/datasets/access"),
        (officer, "/datasets/access?expiring=y&sort=ending"),
        (officer, "/datasets/access?format=csv"),
        (official, "/datasets/requests"),
        (official, "/datasets/access?state=active"),
        (official, "/datasets/access?format=csv"),
        (researcher, "/datasets/requests?show=mine"),
        (researcher, "/datasets/access?show=mine"),
    ]

    def counts() -> list[int]:
        out = []
        for viewer, url in pages:
            login(client, viewer)
            assert client.get(url).status_code == 200, url
            out.append(count_queries(lambda url=url: client.get(url)))  # type: ignore[misc]
        return out

    few = counts()
    add(MANY - FEW)
    many = counts()
    for (viewer, url), a, b in zip(pages, few, many, strict=True):
        print(f"{url} as {viewer.display_name}: {a} queries at {FEW} rows, {b} at {MANY}")
    assert many == few, [
        (url, a, b) for (_, url), a, b in zip(pages, few, many, strict=True) if a != b
    ]
    # The lists did show the rows (a page of them; all of them in a CSV).
    login(client, officer)
    csv = client.get("/datasets/requests?format=csv").get_data(as_text=True)
    assert len(csv.strip().splitlines()) > MANY


def test_the_lists_search_datasets_and_people_and_sort_by_dataset(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    """The search looks in the dataset's name and the person's (any case); the access list sorts
    by when access ends (the default), by dataset name, or newest first; the requests list by
    when they were sent."""
    officer = make_user(db, Role.PROGRAM_OFFICER)
    zebra = make_dataset(db, name="Zebra sightings")
    aardvark = make_dataset(db, name="Aardvark burrows")
    alice = make_user(db, Role.RESEARCHER, display_name="Alice Quillfeather")
    bob = make_user(db, Role.RESEARCHER, display_name="Bob Stone")
    with app.app_context():
        alices_zebra = make_grant(db, dataset=zebra, user=alice, days=30)
        bobs_aardvark = make_grant(db, dataset=aardvark, user=bob, days=20)
        bobs_zebra = make_grant(db, dataset=zebra, user=bob, days=10)
        asked = make_access_request(db, dataset=aardvark, user=alice)
        db.flush()
    login(client, officer)

    def ids(url: str) -> list[int]:
        resp = client.get(url)
        assert resp.status_code == 200, url
        kind = "access" if url.startswith("/datasets/access") else "requests"
        found = re.findall(rf'href="/datasets/{kind}/(\d+)"', resp.get_data(as_text=True))
        return [int(i) for i in found]

    assert ids("/datasets/access") == [bobs_zebra.id, bobs_aardvark.id, alices_zebra.id]
    assert ids("/datasets/access?sort=dataset") == [
        bobs_aardvark.id,
        *sorted([alices_zebra.id, bobs_zebra.id]),
    ]
    assert ids("/datasets/access?sort=newest") == sorted(
        [alices_zebra.id, bobs_aardvark.id, bobs_zebra.id], reverse=True
    )
    assert ids("/datasets/access?q=AARDVARK") == [bobs_aardvark.id]
    assert ids("/datasets/access?q=quill") == [alices_zebra.id]
    assert ids("/datasets/access?q=nobody") == []

    by_grant = {g.id: g.requests[0].id for g in (alices_zebra, bobs_aardvark, bobs_zebra)}
    assert ids("/datasets/requests?q=quill") == [asked.id, by_grant[alices_zebra.id]]
    assert ids("/datasets/requests?q=aardvark&sort=oldest") == [
        by_grant[bobs_aardvark.id],
        asked.id,
    ]
