"""What the console shows and downloads: only its own institution's rows (never another's, on any
page or CSV), the members' CSV with their roles, the projects' CSV and dashboard with GPU-hours
awarded and used, active dataset access and openness, and totals."""

from __future__ import annotations

import csv
import io

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementKind
from portal.auth.models import Role
from portal.datasets.models import AccessTier
from portal.institutions.models import Institution
from portal.proposals.models import ProposalState
from tests.console.factories import make_mapping, make_project, make_provider
from tests.factories import (
    make_affiliation,
    make_agreement,
    make_call,
    make_dataset,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.app import login


def _csv(client: FlaskClient, url: str) -> list[list[str]]:
    resp = client.get(url)
    assert resp.status_code == 200, url
    assert resp.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(resp.get_data(as_text=True))))


def _populate(db: Session, inst: Institution, tag: str) -> None:
    """A member, a request to join, a proposal awaiting endorsement, an agreement to sign, a
    project and a login of ``inst``, each named with ``tag``."""
    make_user(db, Role.RESEARCHER, institution=inst, display_name=f"{tag} member")
    make_affiliation(db, institution=inst, user=make_user(db, display_name=f"{tag} requester"))
    make_proposal(
        db,
        institution=inst,
        state=ProposalState.AWAITING_ENDORSEMENT,
        title=f"{tag} proposal",
    )
    project = make_project(db, inst, title=f"{tag} project", used_gpu_seconds=3600, grants=1)
    make_agreement(db, kind=AgreementKind.CONTRIBUTION, proposal=project, signed=1)
    make_mapping(
        db,
        # Providers are the portal's, offered to every institution: only the mapping is its own.
        make_provider(db),
        inst,
        entity_id=f"https://idp.{tag.lower()}.example.edu/idp",
    )


PAGES = [
    "",
    "/requests",
    "/members",
    "/members?format=csv",
    "/endorsements",
    "/agreements",
    "/projects",
    "/projects?format=csv",
    "/logins",
]


def test_no_page_or_csv_of_a_console_shows_another_institutions_rows(
    client: FlaskClient, db: Session
) -> None:
    mine = make_institution(db, name="Alpha University")
    theirs = make_institution(db, name="Beta University")
    _populate(db, mine, "Alpha")
    _populate(db, theirs, "Beta")
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=mine)
    login(client, official)
    seen = ""
    for page in PAGES:
        resp = client.get(f"/console/{mine.id}{page}")
        assert resp.status_code == 200, page
        body = resp.get_data(as_text=True)
        assert "Beta" not in body and "beta" not in body, page
        seen += body
    for what in ("Alpha member", "Alpha requester", "Alpha proposal", "Alpha project", "idp.alpha"):
        assert what in seen, what
    for page in PAGES:
        assert client.get(f"/console/{theirs.id}{page}").status_code == 403, page


def test_the_members_csv_lists_each_member_with_their_roles_here(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db)
    elsewhere = make_institution(db)
    official = make_user(
        db,
        Role.SIGNING_OFFICIAL,
        Role.RESEARCHER,
        institution=inst,
        display_name="Olga Official",
        email="olga@uni.example.edu",
    )
    researcher = make_user(
        db, Role.RESEARCHER, institution=inst, display_name="=HYPERLINK(evil)", email=None
    )
    # A signing official elsewhere: that role is not theirs here.
    from portal.auth.models import RoleGrant

    db.add(RoleGrant(user_id=researcher.id, role=Role.SIGNING_OFFICIAL, institution=elsewhere))
    make_affiliation(db, institution=inst, user=make_user(db, display_name="Still asking"))
    db.flush()
    login(client, official)
    rows = _csv(client, f"/console/{inst.id}/members?format=csv")
    assert rows[0] == ["name", "email", "position", "roles", "member since", "how"]
    by_name = {r[0]: r for r in rows[1:]}
    assert set(by_name) == {"Olga Official", "'=HYPERLINK(evil)"}
    assert by_name["Olga Official"][1] == "olga@uni.example.edu"
    assert by_name["Olga Official"][3] == "Researcher; Signing official"
    assert by_name["'=HYPERLINK(evil)"][3] == "Researcher"
    assert by_name["'=HYPERLINK(evil)"][5] == "recorded by lab staff"
    searched = _csv(client, f"/console/{inst.id}/members?format=csv&q=olga")
    assert [r[0] for r in searched[1:]] == ["Olga Official"]


def test_the_projects_csv_and_dashboard_show_hours_grants_openness_and_totals(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    call = make_call(db)
    dataset = make_dataset(db, tier=AccessTier.REGISTERED)
    pi = make_user(db, Role.RESEARCHER, institution=inst, display_name="Pat Investigator")
    open_one = make_project(
        db,
        inst,
        call=call,
        pi=pi,
        title="Open weights",
        used_gpu_seconds=5400,
        grants=2,
        dataset=dataset,
        released_licence="Apache-2.0",
    )
    closed_one = make_project(
        db, inst, call=call, title="Closed weights", released_licence="LicenseRef-proprietary"
    )
    unscored = make_project(db, inst, call=call, title="Nothing yet")
    # Not projects: a declined proposal and another institution's project.
    make_proposal(db, institution=inst, state=ProposalState.DECLINED, title="Declined one")
    make_project(db, make_institution(db), title="Elsewhere", used_gpu_seconds=10**9, grants=3)
    login(client, official)
    rows = _csv(client, f"/console/{inst.id}/projects?format=csv&sort=title")
    assert rows[0][:10] == [
        "id",
        "title",
        "principal investigator",
        "pi email",
        "start",
        "end",
        "awarded GPU-hours",
        "used GPU-hours",
        "active dataset grants",
        "openness",
    ]
    by_title = {r[1]: r for r in rows[1:]}
    assert list(by_title) == ["Closed weights", "Nothing yet", "Open weights"]
    row = by_title["Open weights"]
    assert row[0] == str(open_one.id) and row[2] == "Pat Investigator"
    assert row[4:9] == ["2027-01-01", "2028-01-01", "1000", "1.5", "2"]
    assert row[9] == "100"
    assert by_title["Closed weights"][0] == str(closed_one.id)
    assert by_title["Closed weights"][9] == "50"  # released as planned, under a closed licence
    assert by_title["Nothing yet"][0] == str(unscored.id)
    # Planned, nothing released yet: none of the plan fulfilled.
    assert by_title["Nothing yet"][9] == "0"
    assert "0 of 1 planned released" in by_title["Nothing yet"][10]
    body = client.get(f"/console/{inst.id}/projects").get_data(as_text=True)
    assert "Open weights" in body and "Declined one" not in body and "Elsewhere" not in body
    assert "3,000" in body  # GPU-hours awarded in all
    assert "1.5" in body  # GPU-hours used in all
    assert "2 for these projects" in body
    index = client.get(f"/console/{inst.id}").get_data(as_text=True)
    assert "3,000" in index
