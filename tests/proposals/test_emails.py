"""The proposals' e-mails: who gets them, and their rendered text compared with stored files
(``tests/notifications/expected/proposal_*.txt``; ``UPDATE_EXPECTED=1`` rewrites them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.notifications.rendering import render_email
from portal.proposals import services
from portal.proposals.models import Proposal, ProposalState, TeamMember, TeamRole
from tests.factories import make_call, make_institution, make_proposal, make_user
from tests.support.mail import check_expected as _check
from tests.support.mail import outbox as _mails
from tests.support.mail import rendered as _rendered


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def _proposal(db: Session, state: ProposalState = ProposalState.DRAFT) -> tuple[Proposal, User]:
    """Ada Lovelace's proposal at Northlake University, with Grace Hopper on the team; Olivia
    Official endorses for Northlake."""
    inst = make_institution(db, name="Northlake University")
    ada = make_user(
        db,
        Role.RESEARCHER,
        institution=inst,
        display_name="Ada Lovelace",
        email="ada@northlake.edu",
    )
    grace = make_user(
        db,
        Role.RESEARCHER,
        institution=inst,
        display_name="Grace Hopper",
        email="grace@northlake.edu",
    )
    official = make_user(
        db,
        Role.SIGNING_OFFICIAL,
        institution=inst,
        display_name="Olivia Official",
        email="olivia@northlake.edu",
    )
    make_user(db, Role.SIGNING_OFFICIAL, email="elsewhere@other.edu")  # another institution
    call = make_call(db, title="Open Models 2027")
    proposal = make_proposal(
        db, call=call, pi=ada, state=state, complete=True, title="Reasoning in small models"
    )
    proposal.team.append(TeamMember(user=grace, role=TeamRole.CO_PI))
    db.flush()
    return proposal, official


def test_submission_asks_the_institutions_officials_to_endorse(db: Session) -> None:
    proposal, _ = _proposal(db)
    services.submit_proposal(db, proposal, actor=proposal.pi)  # type: ignore[arg-type]
    (asked,) = _mails(db, "proposals/endorsement_needed")
    assert asked.to_addr == "olivia@northlake.edu"
    team = _mails(db, "proposals/submitted")
    assert sorted(m.to_addr for m in team) == ["ada@northlake.edu", "grace@northlake.edu"]
    _check("proposal_endorsement_needed", _rendered(asked))
    _check("proposal_submitted", _rendered(team[0]))


def test_return_tells_the_team_the_reason(db: Session) -> None:
    proposal, official = _proposal(db, ProposalState.AWAITING_ENDORSEMENT)
    services.decide_endorsement(
        db, proposal, "return", actor=official, reason="Please add <the> budget letter."
    )
    mails = _mails(db, "proposals/returned")
    assert sorted(m.to_addr for m in mails) == ["ada@northlake.edu", "grace@northlake.edu"]
    _check("proposal_returned", _rendered(mails[0]))


def test_withdrawal_tells_the_team_and_the_officials_who_were_asked(db: Session) -> None:
    proposal, _ = _proposal(db, ProposalState.AWAITING_ENDORSEMENT)
    services.withdraw_proposal(
        db,
        proposal,
        actor=proposal.pi,  # type: ignore[arg-type]
        reason="Funded elsewhere",
    )
    mails = _mails(db, "proposals/withdrawn")
    assert sorted(m.to_addr for m in mails) == [
        "ada@northlake.edu",
        "grace@northlake.edu",
        "olivia@northlake.edu",
    ]
    _check("proposal_withdrawn", _rendered(mails[0]))


def test_endorsement_tells_the_team_it_goes_to_review(db: Session) -> None:
    proposal, official = _proposal(db, ProposalState.AWAITING_ENDORSEMENT)
    services.decide_endorsement(db, proposal, "endorse", actor=official)
    mails = _mails(db, "proposals/submitted")
    assert sorted(m.to_addr for m in mails) == ["ada@northlake.edu", "grace@northlake.edu"]
    assert "waits for review" in render_email(mails[0]).text
