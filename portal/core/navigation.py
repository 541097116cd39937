"""The main navigation: each domain registers its entries with the rule that decides who sees them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import request

from portal.core.permissions import as_user


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: str
    #: The permission function that decides whether this user sees the entry.
    visible: Callable[[Any], bool]
    order: int = 100


_ITEMS: list[NavItem] = []


def register(item: NavItem) -> None:
    """Add an entry (once; registering the same endpoint again replaces it)."""
    _ITEMS[:] = [i for i in _ITEMS if i.endpoint != item.endpoint] + [item]
    _ITEMS.sort(key=lambda i: (i.order, i.label))


def items_for(user: Any) -> list[tuple[str, str, bool]]:
    """(endpoint, label, is_current_page) for each entry this user may see."""
    if as_user(user) is None:
        return []
    current_bp = request.blueprint
    out = []
    for item in _ITEMS:
        if not item.visible(user):
            continue
        bp = item.endpoint.split(".")[0]
        active = request.endpoint == item.endpoint or (bp != "core" and bp == current_bp)
        out.append((item.endpoint, item.label, active))
    return out
