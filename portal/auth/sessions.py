"""Flask-Login glue: a cookie is worth a user only while its server-side session record lives."""

from __future__ import annotations

import datetime as dt

from flask import current_app, session
from flask_login import current_user

from portal.auth import services
from portal.auth.models import User
from portal.core.database import own_transaction
from portal.core.models import utcnow
from portal.extensions import db

#: The session key holding the token of the server-side login session.
SESSION_TOKEN_KEY = "_sid"  # noqa: S105 - a key name, not a secret


def _timeouts() -> tuple[dt.timedelta, dt.timedelta]:
    """(idle, absolute) session timeouts from the configuration."""
    cfg = current_app.config
    return (
        dt.timedelta(minutes=float(cfg["SESSION_IDLE_MINUTES"])),
        dt.timedelta(hours=float(cfg["SESSION_ABSOLUTE_HOURS"])),
    )


def load_user(user_id: str) -> User | None:
    """Flask-Login's user loader: the user of a live, matching server-side session, or None.

    A logged-out, timed-out or disabled session (a replayed old cookie) is refused.
    """
    token = session.get(SESSION_TOKEN_KEY)
    if not isinstance(token, str) or not user_id.isdigit():
        return None
    idle, absolute = _timeouts()
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


def login_age() -> dt.timedelta | None:
    """How long ago the current login happened: the age of the live server-side session whose
    token is in this browser's cookie, or None when nobody is logged in (no token, or its session
    has ended or timed out, or belongs to someone other than the logged-in user).

    A fresh login (``/auth/login?reauth=1``) starts a new session, so its age starts again from
    zero: pages that need a recent login (signing an agreement) compare this with their limit."""
    token = current_token()
    user = current_user
    if token is None or not getattr(user, "is_authenticated", False):
        return None
    idle, absolute = _timeouts()
    record, _ = services.session_for_token(
        db.session, token, idle=idle, absolute=absolute, read_only=True
    )
    if record is None or str(record.user_id) != user.get_id():
        return None
    return max(utcnow() - record.created_at, dt.timedelta(0))
