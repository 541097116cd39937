"""Flask-Login glue: a cookie is worth a user only while its server-side session record lives."""

from __future__ import annotations

import datetime as dt

from flask import current_app, session

from portal.auth import services
from portal.auth.models import User
from portal.core.database import own_transaction
from portal.extensions import db

#: The session key holding the token of the server-side login session.
SESSION_TOKEN_KEY = "_sid"  # noqa: S105 - a key name, not a secret


def load_user(user_id: str) -> User | None:
    """Flask-Login's user loader: the user of a live, matching server-side session, or None.

    A logged-out, timed-out or disabled session (a replayed old cookie) is refused.
    """
    token = session.get(SESSION_TOKEN_KEY)
    if not isinstance(token, str) or not user_id.isdigit():
        return None
    cfg = current_app.config
    idle = dt.timedelta(minutes=float(cfg["SESSION_IDLE_MINUTES"]))
    absolute = dt.timedelta(hours=float(cfg["SESSION_ABSOLUTE_HOURS"]))
    record, must_write = services.session_for_token(
        db.session, token, idle=idle, absolute=absolute, read_only=True
    )
    if must_write:
        # Most requests only read; this one must write (last seen, or the session ended). Do it
        # again in a write transaction of its own (the loader runs before the view does anything).
        with own_transaction(db.session):
            record, _ = services.session_for_token(db.session, token, idle=idle, absolute=absolute)
    if record is None or record.user_id != int(user_id):
        return None
    user = db.session.get(User, record.user_id)
    return user if user is not None and user.is_active else None


def current_token() -> str | None:
    token = session.get(SESSION_TOKEN_KEY)
    return token if isinstance(token, str) else None
