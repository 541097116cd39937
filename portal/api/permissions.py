"""Who may manage the operator API's tokens, and what a token may reach (its scope's routes, and
the resources or datasets it names)."""

from __future__ import annotations

from typing import Any

from portal.auth.permissions import is_admin
from portal.core.permissions import rule


@rule("Only administrators manage API tokens.")
def can_manage_tokens(user: Any) -> bool:
    """Administrators."""
    return is_admin(user)


def token_covers(ids: frozenset[int], ident: int) -> bool:
    """A token acts on the resources (or datasets) it names, and on no other."""
    return ident in ids


def scope_allows(scope: Any, needed: Any) -> bool:
    """A token reaches only its own scope's routes: a resource operator's token the allocations
    and usage, a storage operator's token the datasets' grants."""
    return bool(scope == needed)
