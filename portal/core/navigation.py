"""The main navigation: each domain registers its entries with the rule that decides who sees them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import request

from portal.core.roles import is_logged_in


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
    if not is_logged_in(user):
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


@dataclass(frozen=True)
class Panel:
    """A card on the dashboard, drawn by ``template`` with what ``context(user)`` returns; a
    context of None hides the card for that user (nothing to show, or not their business)."""

    key: str
    template: str
    context: Callable[[Any], dict[str, Any] | None]
    order: int = 100


@dataclass(frozen=True)
class Stat:
    """A figure on the public start page (``Partner institutions: 42``)."""

    label: str
    value: Callable[[], object]
    order: int = 100


_PANELS: dict[str, Panel] = {}
_STATS: dict[str, Stat] = {}


def register_panel(panel: Panel) -> None:
    """Add a dashboard card (registering the same key again replaces it)."""
    _PANELS[panel.key] = panel


def register_stat(stat: Stat) -> None:
    """Add a figure to the start page (registering the same label again replaces it)."""
    _STATS[stat.label] = stat


def panels_for(user: Any) -> list[tuple[Panel, dict[str, Any]]]:
    """The dashboard cards this user sees, in order, each with its template context."""
    out = []
    for panel in sorted(_PANELS.values(), key=lambda p: (p.order, p.key)):
        ctx = panel.context(user)
        if ctx is not None:
            out.append((panel, ctx))
    return out


def stats() -> list[tuple[str, object]]:
    """The start page's figures, in order."""
    return [(s.label, s.value()) for s in sorted(_STATS.values(), key=lambda s: s.order)]
