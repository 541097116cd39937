"""Shared helpers of the operator API's tests: allocations made the real way, and tokens."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.allocations.models import Allocation
from portal.api import services
from portal.api.models import ApiToken
from portal.auth.models import Role
from portal.proposals.models import Resource
from tests.factories import make_project_allocation, make_user


@pytest.fixture
def allocate(app: Flask, db: Session) -> Callable[..., Allocation]:
    """``allocate(**kw)``: ``make_project_allocation`` in an app context of its own (the
    approval's mails link to the portal), popped before the test's requests."""

    def make(**kw: Any) -> Allocation:
        with app.app_context():
            return make_project_allocation(db, **kw)

    return make


def make_token(
    db: Session, *resources: Resource, days: int = 30, name: str = "Slurm"
) -> tuple[ApiToken, str]:
    """A resource operator's token for ``resources``, made by a new administrator."""
    admin = make_user(db, Role.ADMIN)
    return services.create_token(
        db,
        name=name,
        resources=list(resources),
        expires_on=dt.date.today() + dt.timedelta(days=days),
        actor=admin,
    )


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
