"""The mails about allocations: who gets each (the project's team — not a disabled member, not one
whose address is unverified, not the institution's officials or program staff) and what it says,
compared with the stored expected texts (``tests/notifications/expected/allocation_*.txt``)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementKind, AgreementState
from portal.allocations import services
from portal.allocations.models import SECONDS_PER_HOUR, Allocation
from portal.allocations.workflow import ALLOCATION_WORKFLOW
from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.institutions.models import Institution
from portal.notifications.models import OutboxMessage
from portal.proposals.models import TeamMember, TeamRole
from tests.factories import (
    make_agreement,
    make_call,
    make_institution,
    make_project_allocation,
    make_user,
)
from tests.support.mail import check_expected, outbox, rendered

TITLE = "Reasoning in small models"


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


@pytest.fixture
def institution(db: Session) -> Institution:
    return make_institution(db, name="Northlake University")


@pytest.fixture
def ada(db: Session, institution: Institution) -> User:
    return make_user(
        db,
        Role.RESEARCHER,
        institution=institution,
        display_name="Ada Lovelace",
        email="ada@northlake.edu",
    )


@pytest.fixture
def officer(db: Session) -> User:
    return make_user(
        db, Role.PROGRAM_OFFICER, display_name="Otto Officer", email="otto@atom-lab.org"
    )


def allocation_of(db: Session, pi: User, officer: User, *, usable: bool = True) -> Allocation:
    """1,000 GPU-hours of H100 on the cluster "jupiter" for ``pi``'s project, approved by
    ``officer`` (active at once when ``usable``)."""
    call = make_call(db)
    call.resources[0].resource.cluster = "jupiter"
    db.flush()
    return make_project_allocation(
        db, pi=pi, call=call, officer=officer, title=TITLE, usable=usable
    )


def _check(name: str, msg: OutboxMessage, **dynamic: str) -> None:
    """The rendered mail against ``expected/<name>.txt``, with the allocation's id, the account
    (which names the project's id) and the values that change from run to run (``dynamic``:
    value → placeholder) replaced."""
    text = re.sub(r"/allocations/\d+", "/allocations/<id>", rendered(msg))
    text = re.sub(r"atom-\d+-h100", "atom-<id>-h100", text)
    for value, placeholder in dynamic.items():
        text = text.replace(value, placeholder)
    check_expected(name, text)


def _to(msgs: list[OutboxMessage]) -> set[str]:
    return {m.to_addr for m in msgs}


def _to_ada(msgs: list[OutboxMessage]) -> OutboxMessage:
    (msg,) = [m for m in msgs if m.to_addr == "ada@northlake.edu"]
    return msg


def test_ready_tells_the_team_and_nobody_else_the_account_to_run_jobs_under(
    db: Session, institution: Institution, ada: User, officer: User
) -> None:
    grace = make_user(db, Role.RESEARCHER, institution=institution, email="grace@northlake.edu")
    unverified = make_user(
        db,
        Role.RESEARCHER,
        institution=institution,
        email="unverified@northlake.edu",
        email_verified=False,
    )
    gone = make_user(
        db, Role.RESEARCHER, institution=institution, email="gone@northlake.edu", is_disabled=True
    )
    # Not told: the institution's signing official, a researcher on no team, other staff.
    make_user(db, Role.SIGNING_OFFICIAL, institution=institution, email="sofia@northlake.edu")
    make_user(db, Role.RESEARCHER, institution=institution, email="rita@northlake.edu")
    make_user(db, Role.ADMIN, email="admin@atom-lab.org")
    allocation = allocation_of(db, ada, officer, usable=False)
    for user, role in [
        (grace, TeamRole.CO_PI),
        (unverified, TeamRole.MEMBER),
        (gone, TeamRole.MEMBER),
    ]:
        allocation.proposal.team.append(TeamMember(user=user, role=role))
    db.flush()
    assert outbox(db, "allocations/ready") == []

    # The contribution agreement is signed: the gate opens.
    make_agreement(
        db,
        kind=AgreementKind.CONTRIBUTION,
        proposal=allocation.proposal,
        state=AgreementState.ACTIVE,
    )
    assert services.activate_if_usable(db, allocation, actor=officer)

    ready = outbox(db, "allocations/ready")
    assert _to(ready) == {"ada@northlake.edu", "grace@northlake.edu"}
    _check("allocation_ready", _to_ada(ready))


def test_resuming_tells_the_team_the_hours_are_usable_again(
    db: Session, ada: User, officer: User
) -> None:
    allocation = allocation_of(db, ada, officer)
    services.charge(db, allocation, 250 * SECONDS_PER_HOUR)
    ALLOCATION_WORKFLOW.run(db, allocation, "suspend", actor=officer, reason="Audit.")
    ALLOCATION_WORKFLOW.run(db, allocation, "resume", actor=officer)
    again = [m for m in outbox(db, "allocations/ready") if m.context["again"]]
    assert _to(again) == {"ada@northlake.edu"}
    _check("allocation_ready_again", again[0])


def test_used_up_tells_the_team(db: Session, ada: User, officer: User) -> None:
    allocation = allocation_of(db, ada, officer)
    services.charge(db, allocation, 1000 * SECONDS_PER_HOUR + 1800)
    stopped = outbox(db, "allocations/stopped")
    assert _to(stopped) == {"ada@northlake.edu"}
    _check("allocation_stopped_exhaust", stopped[0])


def test_suspension_tells_the_team_why(db: Session, ada: User, officer: User) -> None:
    allocation = allocation_of(db, ada, officer)
    services.charge(db, allocation, 400 * SECONDS_PER_HOUR)
    ALLOCATION_WORKFLOW.run(
        db,
        allocation,
        "suspend",
        actor=officer,
        reason="Jobs ran <outside> the project's scope & are being reviewed.",
    )
    stopped = outbox(db, "allocations/stopped")
    assert _to(stopped) == {"ada@northlake.edu"}
    _check("allocation_stopped_suspend", stopped[0])
    # The reason is the staff's own text: escaped in the HTML part.
    assert "&lt;outside&gt; the project&#39;s scope &amp; are" in rendered(stopped[0])


def test_the_end_of_the_period_tells_the_team(db: Session, ada: User, officer: User) -> None:
    allocation = allocation_of(db, ada, officer)
    services.charge(db, allocation, 612 * SECONDS_PER_HOUR)
    allocation.starts_on, allocation.ends_on = dt.date(2025, 1, 1), dt.date(2025, 12, 31)
    db.flush()
    services.sweep(db)
    stopped = outbox(db, "allocations/stopped")
    assert _to(stopped) == {"ada@northlake.edu"}
    _check("allocation_stopped_expire", stopped[0])


@pytest.mark.parametrize("what", ["used_80", "used_100", "ends_30", "ends_7"])
def test_each_notice_of_the_sweep(db: Session, ada: User, officer: User, what: str) -> None:
    allocation = allocation_of(db, ada, officer)
    used = {"used_80": 850, "used_100": 1000}.get(what, 120)
    services.charge(db, allocation, used * SECONDS_PER_HOUR)
    dynamic = {}
    if what.startswith("ends"):
        allocation.starts_on = dt.date(2026, 1, 1)
        allocation.ends_on = utcnow().date() + dt.timedelta(days=20 if what == "ends_30" else 5)
        dynamic[allocation.ends_on.strftime("%d %B %Y")] = "<end date>"
    db.flush()

    services.sweep(db)

    (notice,) = outbox(db, "allocations/notice")
    assert notice.context["what"] == what
    assert notice.to_addr == "ada@northlake.edu"
    # An optional kind: the mail says how to switch it off.
    assert "/notifications/unsubscribe/" in rendered(notice)
    _check(f"allocation_notice_{what}", notice, **dynamic)
