"""The permission rules of allocations agree with their list filter and with whom their mails go
to, for users of every role and allocations in every state at two institutions: the allocation list
never shows an allocation its page would refuse (nor hides one it would show), and an allocation's
mails go to exactly its project's team — who may see it — and to nobody else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask_login import AnonymousUserMixin
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.allocations import services
from portal.allocations.models import SECONDS_PER_HOUR, Allocation, AllocationState
from portal.allocations.permissions import (
    can_view_allocation,
    can_view_resources,
    holders_of,
    visible_allocations,
)
from portal.allocations.workflow import ALLOCATION_WORKFLOW
from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.proposals.models import TeamMember, TeamRole
from tests.factories import make_institution, make_project_allocation, make_user
from tests.support.visibility import disagreements, recipients_disagree


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def _world(db: Session) -> tuple[list[User], list[Allocation]]:
    """Two institutions, each with a PI whose projects hold allocations in every state, a
    co-investigator and a member on those teams (one disabled), a researcher on no team, signing
    officials (one disabled, one also on a team), and people of every other role. Everyone in the
    database is a user to check (the approving officers and the factories' signers too)."""
    allocations: list[Allocation] = []
    officer = make_user(db, Role.PROGRAM_OFFICER)
    for name in ("North", "South"):
        inst = make_institution(db, name=f"{name} University")
        pi = make_user(db, Role.RESEARCHER, institution=inst)
        co = make_user(db, Role.RESEARCHER, institution=inst)
        gone = make_user(db, Role.RESEARCHER, institution=inst, is_disabled=True)
        make_user(db, Role.RESEARCHER, institution=inst)  # on no team
        make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
        make_user(db, Role.SIGNING_OFFICIAL, institution=inst, is_disabled=True)
        on_team = make_user(db, Role.SIGNING_OFFICIAL, Role.RESEARCHER, institution=inst)
        for state in AllocationState:
            allocation = make_project_allocation(
                db, pi=pi, officer=officer, usable=state != AllocationState.PENDING
            )
            team = allocation.proposal.team
            team.append(TeamMember(user=co, role=TeamRole.CO_PI))
            team.append(TeamMember(user=gone, role=TeamRole.MEMBER))
            if state == AllocationState.SUSPENDED:
                team.append(TeamMember(user=on_team, role=TeamRole.MEMBER))
            db.flush()
            _bring_to(db, allocation, state, officer)
            allocations.append(allocation)
    for role in (Role.REVIEWER, Role.DATA_STEWARD, Role.PROGRAM_OFFICER, Role.ADMIN):
        make_user(db, role)
    make_user(db)
    make_user(db, Role.SIGNING_OFFICIAL)  # at a third institution
    make_user(db, Role.PROGRAM_OFFICER, is_disabled=True)
    db.flush()
    users = list(db.scalars(select(User).order_by(User.id)))
    return users, allocations


def _bring_to(db: Session, allocation: Allocation, state: AllocationState, officer: User) -> None:
    if state == AllocationState.EXHAUSTED:
        services.charge(db, allocation, allocation.hours * SECONDS_PER_HOUR)
    elif state == AllocationState.SUSPENDED:
        ALLOCATION_WORKFLOW.run(db, allocation, "suspend", actor=officer, reason="Audit.")
    elif state == AllocationState.EXPIRED:
        allocation.starts_on = utcnow().date().replace(year=2020)
        allocation.ends_on = utcnow().date().replace(year=2021)
        db.flush()
        ALLOCATION_WORKFLOW.run(db, allocation, "expire", actor=None)
    assert allocation.state == state


def test_the_allocation_list_shows_exactly_what_the_allocation_page_allows(db: Session) -> None:
    users, allocations = _world(db)
    everyone: list[object] = [AnonymousUserMixin(), *users]
    assert disagreements(db, visible_allocations, can_view_allocation, everyone, allocations) == []
    # Not vacuous: staff see everything, a team or an institution's officials some, others none.
    seen = {u.id: sum(can_view_allocation(u, a) for a in allocations) for u in users}
    assert max(seen.values()) == len(allocations)
    assert 0 < sorted(set(seen.values()))[1] < len(allocations)
    assert min(seen.values()) == 0


@pytest.mark.parametrize(
    ("who", "sees"),
    [
        ("pi", "own projects"),
        ("co-investigator", "own projects"),
        ("official", "own institution"),
        ("official of another institution", "nothing"),
        ("researcher on no team", "nothing"),
        ("reviewer", "nothing"),
        ("steward", "nothing"),
        ("officer", "everything"),
        ("admin", "everything"),
        ("disabled member", "nothing"),
    ],
)
def test_who_sees_which_allocations(db: Session, who: str, sees: str) -> None:
    """The rule itself, role by role (its docstring: program staff; the project's team; the
    signing officials of its institution)."""
    _, allocations = _world(db)
    north = allocations[0].institution
    north_pi = allocations[0].proposal.pi
    assert north_pi is not None
    team = {m.user_id: m for m in allocations[0].proposal.team}
    user = {
        "pi": lambda: north_pi,
        "co-investigator": lambda: next(m.user for m in team.values() if m.role == TeamRole.CO_PI),
        "official": lambda: make_user(db, Role.SIGNING_OFFICIAL, institution=north),
        "official of another institution": lambda: make_user(db, Role.SIGNING_OFFICIAL),
        "researcher on no team": lambda: make_user(db, Role.RESEARCHER, institution=north),
        "reviewer": lambda: make_user(db, Role.REVIEWER),
        "steward": lambda: make_user(db, Role.DATA_STEWARD),
        "officer": lambda: make_user(db, Role.PROGRAM_OFFICER),
        "admin": lambda: make_user(db, Role.ADMIN),
        "disabled member": lambda: next(m.user for m in team.values() if m.user.is_disabled),
    }[who]()
    expected = {
        "own projects": {a for a in allocations if a.proposal.pi == north_pi},
        "own institution": {a for a in allocations if a.institution == north},
        "nothing": set(),
        "everything": set(allocations),
    }[sees]
    assert {a for a in allocations if can_view_allocation(user, a)} == expected
    assert set(db.scalars(visible_allocations(user))) == expected
    assert can_view_resources(user) == (sees == "everything")


def test_an_allocations_mails_go_to_exactly_its_team(db: Session) -> None:
    users, allocations = _world(db)

    def on_team(user: object, allocation: Allocation) -> bool:
        return (
            isinstance(user, User)
            and not user.is_disabled
            and any(m.user_id == user.id for m in allocation.proposal.team)
        )

    assert recipients_disagree(db, holders_of, on_team, users, allocations) == []
    for allocation in allocations:
        told = list(db.scalars(holders_of(allocation)))
        # Whoever is told may see it; the disabled member is on the team but told nothing.
        assert told and all(can_view_allocation(u, allocation) for u in told)
        disabled = {m.user for m in allocation.proposal.team if m.user.is_disabled}
        assert disabled and not disabled & set(told)


def test_anonymous_visitors_see_no_allocation_and_no_resource(db: Session) -> None:
    _, allocations = _world(db)
    nobody = AnonymousUserMixin()
    assert not any(can_view_allocation(nobody, a) for a in allocations)
    assert db.scalars(visible_allocations(nobody)).all() == []
    assert not can_view_resources(nobody)
