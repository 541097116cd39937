"""The roles people hold, and the role predicates every domain's permission rules start from.

They read only ``user.roles`` (Flask-Login's user object or the anonymous visitor), so the shared
kit and the notifications package can ask "is this staff?" without importing a domain.
"""

from __future__ import annotations

from typing import Any

from portal.core.models import LabelledEnum


class Role(LabelledEnum):
    RESEARCHER = "researcher", "Researcher"
    SIGNING_OFFICIAL = "signing_official", "Signing official"
    REVIEWER = "reviewer", "Reviewer"
    DATA_STEWARD = "data_steward", "Data steward"
    PROGRAM_OFFICER = "program_officer", "Program officer"
    ADMIN = "admin", "Administrator"


#: Roles held on behalf of one institution; the others are held lab-wide.
INSTITUTION_ROLES = frozenset({Role.RESEARCHER, Role.SIGNING_OFFICIAL})

#: Lab staff: program officers and administrators.
STAFF_ROLES = frozenset({Role.PROGRAM_OFFICER, Role.ADMIN})


def is_logged_in(user: Any) -> bool:
    """Someone logged in whose account is not disabled."""
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))


def holds(user: Any, *roles: Role) -> bool:
    """Whether a logged-in ``user`` holds any of ``roles`` (anywhere)."""
    return is_logged_in(user) and bool(set(user.roles) & set(roles))


def is_staff(user: Any) -> bool:
    """Lab staff: program officers and administrators."""
    return holds(user, *STAFF_ROLES)


def is_admin(user: Any) -> bool:
    """Administrators of the portal."""
    return holds(user, Role.ADMIN)
