"""Who may manage identity providers, users, and login identities."""

from __future__ import annotations

from typing import Any

from portal.auth.models import Identity, User
from portal.core.permissions import as_user, is_admin


def can_manage_identity_providers(user: Any) -> bool:
    return is_admin(user)


def can_manage_users(user: Any) -> bool:
    return is_admin(user)


def can_disable_user(user: Any, target: User) -> bool:
    """Admins disable other people (never themselves, so there is always a way back in)."""
    u = as_user(user)
    return u is not None and is_admin(u) and u.id != target.id


def can_unlink_identity(user: Any, identity: Identity) -> bool:
    """People unlink their own login identities only (the last one is kept: see services)."""
    u = as_user(user)
    return u is not None and identity.user_id == u.id
