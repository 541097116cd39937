"""Who may open an institution's console and change what it offers.

``can_use_console`` is the rule for every console page of one institution; ``consoles_of`` is the
same rule as a list filter (the institutions whose console a person may open). The console's
actions are decided by the rules of the domains that own them (affiliations by
``portal.institutions.permissions.can_decide_affiliation``, endorsements and signatures by
proposals and agreements), except the identity-provider mapping, decided here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, false, select

from portal.auth.models import Role, RoleGrant
from portal.auth.permissions import as_user, is_admin, is_staff
from portal.core.permissions import rule
from portal.institutions.models import Institution


@rule("Only signing officials and program staff have a console.")
def can_open_consoles(user: Any) -> bool:
    """Signing officials (of any institution) and program staff."""
    u = as_user(user)
    return u is not None and (is_staff(u) or bool(u.institution_ids_for(Role.SIGNING_OFFICIAL)))


@rule("Only the institution's signing officials and program staff open its console.")
def can_use_console(user: Any, institution: Institution) -> bool:
    """The institution's own signing officials, and program staff (any institution's)."""
    u = as_user(user)
    return u is not None and (is_staff(u) or u.has_role(Role.SIGNING_OFFICIAL, institution))


def consoles_of(user: Any) -> Select[Institution]:
    """``can_use_console`` as a list filter: the institutions whose console ``user`` may open."""
    q = select(Institution)
    u = as_user(user)
    if u is None:
        return q.where(false())
    if is_staff(u):
        return q
    return q.where(
        Institution.id.in_(
            select(RoleGrant.institution_id).where(
                RoleGrant.user_id == u.id, RoleGrant.role == Role.SIGNING_OFFICIAL
            )
        )
    )


@rule("Only the institution's signing officials and administrators change which login serves it.")
def can_map_login(user: Any, institution: Institution) -> bool:
    """The institution's own signing officials set the campus entity id of its federation logins
    and ask for a new one among the enabled providers; administrators (who manage the providers
    themselves) may too. Program officers see the mapping only."""
    u = as_user(user)
    return u is not None and (is_admin(u) or u.has_role(Role.SIGNING_OFFICIAL, institution))
