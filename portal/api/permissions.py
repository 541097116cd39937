"""Who may manage the operator API's tokens, and what a token may reach."""

from __future__ import annotations

from typing import Any

from portal.auth.permissions import is_admin
from portal.core.permissions import rule


@rule("Only administrators manage API tokens.")
def can_manage_tokens(user: Any) -> bool:
    """Administrators."""
    return is_admin(user)


def token_covers(resource_ids: frozenset[int], resource_id: int) -> bool:
    """A token acts on the resources it names, and on no other."""
    return resource_id in resource_ids
