"""Helpers shared by every domain's permission functions."""

from __future__ import annotations

from typing import Any

from portal.auth.models import Role, User
from portal.core.errors import PermissionDeniedError


def require(allowed: bool, message: str = "You are not allowed to do this.") -> None:
    """Raise PermissionDeniedError unless ``allowed``; the refusal is audited by the error handler."""
    if not allowed:
        raise PermissionDeniedError(message)


def as_user(user: Any) -> User | None:
    """The logged-in User, or None for an anonymous visitor (Flask-Login's AnonymousUserMixin)."""
    return user if isinstance(user, User) and user.is_active else None


def is_staff(user: Any) -> bool:
    """Lab staff: program officers and administrators."""
    u = as_user(user)
    return u is not None and bool(u.roles & {Role.PROGRAM_OFFICER, Role.ADMIN})


def is_admin(user: Any) -> bool:
    u = as_user(user)
    return u is not None and u.has_role(Role.ADMIN)


def can_view_audit_log(user: Any) -> bool:
    return is_admin(user)
