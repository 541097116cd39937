"""Who someone is (the logged-in user, staff, administrator) and who may manage identity
providers, users, login identities and the audit log. Every other domain builds on these."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from portal.auth.models import Identity, Role, RoleGrant, User
from portal.core.permissions import rule
from portal.core.roles import is_admin as is_admin
from portal.core.roles import is_staff as is_staff


def as_user(user: Any) -> User | None:
    """The logged-in User, or None for an anonymous visitor (Flask-Login's AnonymousUserMixin)."""
    return user if isinstance(user, User) and user.is_active else None


def holders_of(*roles: Role) -> Select[User]:
    """Active users who hold any of ``roles`` lab-wide (the recipients' side of ``is_staff`` …)."""
    return (
        select(User)
        .where(
            User.is_disabled.is_(False),
            User.id.in_(select(RoleGrant.user_id).where(RoleGrant.role.in_(roles))),
        )
        .order_by(User.id)
    )


@rule("Only administrators manage identity providers.")
def can_manage_identity_providers(user: Any) -> bool:
    """Administrators."""
    return is_admin(user)


@rule("Only administrators manage users.")
def can_manage_users(user: Any) -> bool:
    """Administrators."""
    return is_admin(user)


@rule("Only administrators can read the audit log.")
def can_view_audit_log(user: Any) -> bool:
    """Administrators."""
    return is_admin(user)


@rule("Only administrators can disable other users.")
def can_disable_user(user: Any, target: User) -> bool:
    """Admins disable other people (never themselves, so there is always a way back in)."""
    u = as_user(user)
    return u is not None and is_admin(u) and u.id != target.id


@rule("You can only change your own name.")
def can_rename_user(user: Any, target: User) -> bool:
    """People set the name shown for themselves."""
    u = as_user(user)
    return u is not None and u.id == target.id


@rule("That login is not yours.")
def can_unlink_identity(user: Any, identity: Identity) -> bool:
    """People unlink their own login identities only (the last one is kept: see services)."""
    u = as_user(user)
    return u is not None and identity.user_id == u.id
