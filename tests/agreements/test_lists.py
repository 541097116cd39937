"""The agreements' lists run a fixed number of SQL queries whatever the rows shown (no N+1): the
list of agreements (and its CSV), "to sign" with the agreements waiting on others, the templates,
and the dashboard's "Agreements to sign" card."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementKind
from portal.auth.models import Role, User
from portal.institutions.models import Institution
from portal.proposals.models import ProposalState
from tests.factories import (
    make_agreement,
    make_agreement_template,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.app import login

#: More rows than a page holds (``PAGE_SIZE`` is 25) on the second count.
FEW, MANY = 3, 30


def _contribution(db: Session, pi: User, inst: Institution, signed: int) -> None:
    """A project contribution agreement of ``pi``'s active project at ``inst``, its first
    ``signed`` parties signed (0: waiting on the PI; 1: on the institution's signing official;
    2: on the lab's countersignature)."""
    proposal = make_proposal(db, pi=pi, institution=inst, state=ProposalState.ACTIVE)
    make_agreement(db, kind=AgreementKind.CONTRIBUTION, proposal=proposal, signed=signed)


@pytest.mark.parametrize(
    ("who", "url"),
    [
        ("officer", "/agreements/"),
        ("officer", "/agreements/?format=csv"),
        ("officer", "/agreements/?kind=contribution&state=awaiting&q=reason&sort=title"),
        ("official", "/agreements/"),
        ("researcher", "/agreements/"),
        ("official", "/agreements/to-sign"),
        ("researcher", "/agreements/to-sign"),
        ("officer", "/agreements/to-sign"),
        ("officer", "/agreements/templates"),
        ("official", "/dashboard"),
        ("researcher", "/dashboard"),
        ("officer", "/dashboard"),
    ],
)
def test_list_pages_run_a_fixed_number_of_queries(
    client: FlaskClient,
    db: Session,
    count_queries: Callable[[Callable[[], object]], int],
    who: str,
    url: str,
) -> None:
    inst = make_institution(db)
    pi = make_user(db, Role.RESEARCHER, institution=inst)
    viewer = {
        "researcher": pi,
        "official": make_user(db, Role.SIGNING_OFFICIAL, institution=inst),
        "officer": make_user(db, Role.PROGRAM_OFFICER),
    }[who]
    login(client, viewer)

    def add(n: int) -> None:
        for i in range(n):
            if url.startswith("/agreements/templates"):
                make_agreement_template(db)
            else:
                # Waiting on the PI, on the official, then on the lab (a program officer): every
                # list of "to sign" fills up.
                _contribution(db, pi, inst, signed=i % 3)

    add(FEW)
    first = client.get(url)
    assert first.status_code == 200
    few = count_queries(lambda: client.get(url))
    add(MANY - FEW)
    many = count_queries(lambda: client.get(url))
    print(f"{url} as {who}: {few} queries at {FEW} rows, {many} at {MANY}")
    assert many == few
