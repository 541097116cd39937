"""The public lists and the public detail pages follow the same rule: what a list shows, its page
shows, and what a page refuses (404) no list shows — for every visitor, every object."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.core.errors import PermissionDeniedError
from portal.institutions.models import Institution
from portal.proposals.models import Call, Proposal
from portal.public import services
from portal.public.permissions import (
    can_see_public_call,
    can_see_public_institution,
    can_see_public_project,
    can_set_public_name,
    named_publicly,
    public_calls,
    public_institutions,
    public_projects,
)
from tests.factories import make_user
from tests.public.conftest import World
from tests.support.visibility import disagreements


def _visitors(db: Session, world: World) -> list[Any]:
    return [None, world.consenting_pi, world.reviewer, make_user(db, Role.ADMIN)]


def test_lists_and_pages_agree(db: Session, world: World) -> None:
    visitors = _visitors(db, world)
    institutions = db.scalars(select(Institution)).all()
    proposals = db.scalars(select(Proposal)).all()
    calls = db.scalars(select(Call)).all()
    assert not disagreements(
        db, lambda u: public_institutions(), can_see_public_institution, visitors, institutions
    )
    assert not disagreements(
        db, lambda u: public_projects(), can_see_public_project, visitors, proposals
    )
    assert not disagreements(db, lambda u: public_calls(), can_see_public_call, visitors, calls)
    # Exactly the two partners and their two awarded projects.
    assert {i.id for i in institutions if can_see_public_institution(None, i)} == {
        world.partner.id,
        world.other_partner.id,
    }
    assert {p.id for p in proposals if can_see_public_project(None, p)} == {
        world.shown.id,
        world.unnamed.id,
    }


def test_only_consenting_people_are_named(world: World) -> None:
    assert named_publicly(world.consenting_pi)
    assert not named_publicly(world.private_pi)
    assert not named_publicly(None)


def test_only_the_person_decides_their_consent(db: Session, world: World) -> None:
    admin = make_user(db, Role.ADMIN)
    assert can_set_public_name(world.private_pi, world.private_pi)
    for other in (None, admin, world.consenting_pi):
        assert not can_set_public_name(other, world.private_pi)
    with pytest.raises(PermissionDeniedError):
        services.set_public_name(db, world.private_pi, actor=admin, consent=True)
    db.refresh(world.private_pi)
    assert not world.private_pi.public_name
    world.private_pi.is_disabled = True
    assert not can_set_public_name(world.private_pi, world.private_pi)


def test_consent_is_audited(db: Session, world: World) -> None:
    services.set_public_name(db, world.private_pi, actor=world.private_pi, consent=True)
    services.set_public_name(db, world.private_pi, actor=world.private_pi, consent=True)
    services.set_public_name(db, world.private_pi, actor=world.private_pi, consent=False)
    events = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "user.public_name", AuditEvent.object_id == world.private_pi.id)
        .order_by(AuditEvent.id)
    ).all()
    assert [e.details for e in events] == [{"consent": True}, {"consent": False}]
    assert all(e.actor_id == world.private_pi.id and e.object_type == "users" for e in events)
