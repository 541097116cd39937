"""Who the benchmark visits the portal as: the generator's personas logged in over HTTP (without
an identity provider), an administrator the bench adds, and operator API tokens.

A persona is logged in the way the login view leaves a browser: a committed server-side login
session (``start_session``) and its token in Flask's signed session cookie, signed with the
server's ``SECRET_KEY``; the cookie then travels in a ``Cookie`` header.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.api.models import TokenScope
from portal.api.services import create_token
from portal.auth.models import RoleGrant, User
from portal.auth.services import start_session
from portal.auth.sessions import SESSION_TOKEN_KEY
from portal.core.models import AnySession, utcnow
from portal.core.roles import Role
from portal.datasets.models import Dataset
from portal.proposals.models import Resource
from tests.support.pages import persona_ids

USER_AGENT = "portal-bench"
#: Visitors that are not personas: nobody logged in, and the administrator the bench adds.
ANONYMOUS, ADMIN = "anonymous", "admin"


@dataclass(frozen=True)
class Visitor:
    name: str
    user_id: int | None
    display_name: str
    #: What every request of this visitor carries (its session cookie), or nothing.
    headers: dict[str, str]


def personas(session: Session) -> dict[str, User]:
    """The generator's personas (PERSONAS' keys)."""
    return {name: session.get_one(User, uid) for name, uid in persona_ids(session).items()}


def add_admin(session: AnySession) -> User:
    """An administrator of the bench's own (the generator makes none): makes the API tokens,
    and reads the audit log."""
    user = User(
        display_name="Bench administrator",
        email="bench-admin@lab.datagen.example",
        email_verified=True,
    )
    session.add(user)
    session.flush()
    session.add(RoleGrant(user_id=user.id, role=Role.ADMIN))
    session.flush()
    return user


def log_in(app: Flask, session: AnySession, name: str, user: User) -> Visitor:
    """``user`` logged in: a server-side login session (committed by the caller) and the
    session cookie that carries its token."""
    _, token = start_session(session, user, identity=None, ip="127.0.0.1", user_agent=USER_AGENT)
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    assert serializer is not None, "the app has no SECRET_KEY"
    cookie = serializer.dumps(
        {"_user_id": str(user.id), "_fresh": True, SESSION_TOKEN_KEY: token, "_permanent": True}
    )
    return Visitor(
        name,
        user.id,
        user.display_name,
        {"Cookie": f"{app.config['SESSION_COOKIE_NAME']}={cookie}", "User-Agent": USER_AGENT},
    )


def anonymous() -> Visitor:
    return Visitor(ANONYMOUS, None, "", {"User-Agent": USER_AGENT})


def api_token(
    session: AnySession,
    admin: User,
    *,
    resources: Sequence[Resource] = (),
    datasets: Sequence[Dataset] = (),
) -> dict[str, str]:
    """The headers of a new operator API token for ``resources`` (a resource operator's) or
    ``datasets`` (a storage operator's)."""
    _, secret = create_token(
        session,
        name="Benchmark",
        expires_on=utcnow().date() + dt.timedelta(days=7),
        actor=admin,
        scope=TokenScope.RESOURCE_OPERATOR if resources else TokenScope.DATASET_OPERATOR,
        resources=resources,
        datasets=datasets,
    )
    return {"Authorization": f"Bearer {secret}", "User-Agent": USER_AGENT}


def all_resources(session: AnySession) -> list[Resource]:
    return list(session.scalars(select(Resource).order_by(Resource.id)))
