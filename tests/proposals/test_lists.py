"""The proposals' lists run a fixed number of SQL queries whatever the rows shown (no N+1), and
the officers' CSV export says what the page says, with formulas neutralised."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.proposals.models import Call, ProposalState
from tests.factories import make_call, make_institution, make_proposal, make_user
from tests.support.app import login

FEW, MANY = 10, 200


def _fill(db: Session, n: int, call: Call, pi: User, state: ProposalState) -> None:
    for _ in range(n):
        make_proposal(db, call=call, pi=pi, state=state, complete=True)


@pytest.mark.parametrize(
    ("who", "state", "url"),
    [
        ("researcher", ProposalState.DRAFT, "/proposals/"),
        ("officer", ProposalState.SUBMITTED, "/calls/{call}/proposals"),
        ("officer", ProposalState.SUBMITTED, "/calls/{call}/proposals?format=csv"),
        ("official", ProposalState.AWAITING_ENDORSEMENT, "/endorsements/"),
        ("anonymous", None, "/calls/"),
        ("researcher", ProposalState.DRAFT, "/dashboard"),
        ("official", ProposalState.AWAITING_ENDORSEMENT, "/dashboard"),
        ("officer", ProposalState.SUBMITTED, "/dashboard"),
    ],
    ids=lambda v: v if isinstance(v, str) else (v.value if v else "calls"),
)
def test_list_pages_run_a_fixed_number_of_queries(
    client: FlaskClient,
    db: Session,
    count_queries: Callable[[Callable[[], object]], int],
    who: str,
    state: ProposalState | None,
    url: str,
) -> None:
    inst = make_institution(db)
    call = make_call(db, resources=2)
    pi = make_user(db, Role.RESEARCHER, institution=inst)
    viewer = {
        "researcher": pi,
        "officer": make_user(db, Role.PROGRAM_OFFICER),
        "official": make_user(db, Role.SIGNING_OFFICIAL, institution=inst),
        "anonymous": None,
    }[who]
    if viewer is not None:
        login(client, viewer)
    path = url.format(call=call.id)

    def add(n: int) -> None:
        if state is None:
            for _ in range(n):
                make_call(db)
        else:
            _fill(db, n, call, pi, state)

    add(FEW)
    first = client.get(path)
    assert first.status_code == 200
    few = count_queries(lambda: client.get(path))
    add(MANY - FEW)
    many = count_queries(lambda: client.get(path))
    print(f"{path} as {who}: {few} queries at {FEW} rows, {many} at {MANY}")
    assert many == few


def test_csv_export_lists_the_filtered_proposals_with_formulas_quoted(
    client: FlaskClient, db: Session
) -> None:
    call = make_call(db)
    evil = make_proposal(
        db, call=call, state=ProposalState.SUBMITTED, title='=HYPERLINK("http://x","click")'
    )
    plain = make_proposal(db, call=call, state=ProposalState.SUBMITTED, title="Plain title")
    make_proposal(db, call=call, title="A draft")
    make_proposal(db, title="Another call's proposal", state=ProposalState.SUBMITTED)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.get(f"/calls/{call.id}/proposals?format=csv&state=submitted&sort=title")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert rows[0][:3] == ["id", "title", "state"]
    by_id = {int(r[0]): r for r in rows[1:]}
    assert set(by_id) == {evil.id, plain.id}
    assert by_id[evil.id][1] == '\'=HYPERLINK("http://x","click")'
    assert by_id[plain.id][1] == "Plain title"
    assert by_id[plain.id][2] == "submitted" and by_id[plain.id][3] == "1"
    assert by_id[plain.id][5] == plain.institution.name
    assert by_id[plain.id][8].endswith(": 1000")


def test_csv_export_is_for_program_staff_only(client: FlaskClient, db: Session) -> None:
    proposal = make_proposal(db, state=ProposalState.SUBMITTED)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)
    login(client, official)
    assert client.get(f"/calls/{proposal.call_id}/proposals?format=csv").status_code == 403
