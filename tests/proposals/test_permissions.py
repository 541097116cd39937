"""The permission rules of proposals and calls agree with their list filters and with whom the
mails ask to act, for users of every role and proposals in every state at two institutions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.proposals.models import Call, CallState, Proposal, ProposalState, TeamMember, TeamRole
from portal.proposals.permissions import (
    awaiting_endorsement,
    can_endorse_proposal,
    can_view_call,
    can_view_proposal,
    endorsers_of_proposal,
    visible_calls,
    visible_proposals,
)
from tests.factories import make_call, make_institution, make_proposal, make_user
from tests.support.visibility import disagreements, recipients_disagree


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def _world(db: Session) -> tuple[list[User], list[Proposal], list[Call]]:
    """Two partner institutions, each with researchers and signing officials (one official also
    on a team, one disabled); proposals in every state at both; people of every other role."""
    calls = [make_call(db, state=s) for s in CallState]
    north, south = make_institution(db), make_institution(db)
    users: list[User] = []
    proposals: list[Proposal] = []
    for inst in (north, south):
        pi = make_user(db, Role.RESEARCHER, institution=inst)
        member = make_user(db, Role.RESEARCHER, institution=inst)
        official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
        on_team_official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
        disabled = make_user(db, Role.SIGNING_OFFICIAL, institution=inst, is_disabled=True)
        users += [pi, member, official, on_team_official, disabled]
        for state in ProposalState:
            p = make_proposal(db, call=calls[1], pi=pi, state=state)
            p.team.append(TeamMember(user=member, role=TeamRole.MEMBER))
            p.team.append(TeamMember(user=on_team_official, role=TeamRole.CO_PI))
            proposals.append(p)
    users += [
        make_user(db, Role.REVIEWER),
        make_user(db, Role.DATA_STEWARD),
        make_user(db, Role.PROGRAM_OFFICER),
        make_user(db, Role.ADMIN),
        make_user(db),
        make_user(db, Role.RESEARCHER, Role.SIGNING_OFFICIAL),  # both, at a third institution
    ]
    db.flush()
    return users, proposals, calls


def test_proposal_list_shows_exactly_what_the_detail_page_allows(db: Session) -> None:
    users, proposals, _ = _world(db)
    assert disagreements(db, visible_proposals, can_view_proposal, users, proposals) == []


def test_endorsement_queue_lists_exactly_what_the_official_may_endorse(db: Session) -> None:
    users, proposals, _ = _world(db)
    waiting = [p for p in proposals if p.state == ProposalState.AWAITING_ENDORSEMENT]
    assert len(waiting) == 2
    assert disagreements(db, awaiting_endorsement, can_endorse_proposal, users, waiting) == []


def test_endorsement_mail_asks_exactly_those_who_may_endorse(db: Session) -> None:
    users, proposals, _ = _world(db)
    active = [u for u in users if not u.is_disabled]
    assert (
        recipients_disagree(db, endorsers_of_proposal, can_endorse_proposal, active, proposals)
        == []
    )


def test_call_list_shows_exactly_what_the_call_page_allows(db: Session) -> None:
    from flask_login import AnonymousUserMixin

    users, _, calls = _world(db)
    everyone: list[object] = [AnonymousUserMixin(), *users]
    assert disagreements(db, visible_calls, can_view_call, everyone, calls) == []
