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
    #: Entries with a group are shown together in a drop-down menu of that name (e.g. "Admin").
    group: str | None = None


_ITEMS: list[NavItem] = []


def register(item: NavItem) -> None:
    """Add an entry (once; registering the same endpoint again replaces it)."""
    _ITEMS[:] = [i for i in _ITEMS if i.endpoint != item.endpoint] + [item]
    _ITEMS.sort(key=lambda i: (i.order, i.label))


@dataclass(frozen=True)
class Entry:
    """What the template draws: a link, or (with ``children``) a drop-down of links."""

    label: str
    endpoint: str | None
    active: bool
    children: tuple[Entry, ...] = ()


def items_for(user: Any) -> list[Entry]:
    """The entries this user may see, in order; grouped entries become one drop-down."""
    if as_user(user) is None:
        return []
    out: list[Entry] = []
    groups: dict[str, list[Entry]] = {}
    for item in _ITEMS:
        if not item.visible(user):
            continue
        bp = item.endpoint.split(".")[0]
        active = request.endpoint == item.endpoint or (bp != "core" and bp == request.blueprint)
        entry = Entry(item.label, item.endpoint, active)
        if item.group is None:
            out.append(entry)
            continue
        if item.group not in groups:
            groups[item.group] = []
            out.append(Entry(item.group, None, False))  # placeholder, filled below
        groups[item.group].append(entry)
    return [
        Entry(e.label, None, any(c.active for c in groups[e.label]), tuple(groups[e.label]))
        if e.endpoint is None
        else e
        for e in out
    ]
