"""The portal's main pages, by who opens them: one catalogue for the statement-count tests
(tests/test_page_statements.py) and the benchmark (tests/benchmarks/).

A page is a path, or — for a page about one thing — a pattern and the list page whose first link
matching it is followed, so the page is always one that person may see. Personas are the
generator's (``portal.dev.datagen.PERSONAS``); ``None`` is an anonymous visitor.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Identity
from portal.dev.datagen import PERSONA_ISSUER, PERSONAS


@dataclass(frozen=True)
class Page:
    persona: str | None
    path: str
    #: For a page about one thing: the list page whose first link matching ``path`` is opened
    #: (or the list page and the patterns of the links to follow from it to get there).
    via: str | tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return f"{self.persona or 'anonymous'} {self.path}"

    def resolve(self, get: Callable[[str], str]) -> str:
        """The path to open; ``get(path)`` returns a page's HTML as this persona sees it."""
        if self.via is None:
            return self.path
        start, *steps = (self.via,) if isinstance(self.via, str) else self.via
        here = start
        for pattern in [*steps, self.path]:
            found = re.search(rf'href="({pattern})"', get(here))
            if found is None:
                raise LookupError(f"{self.name}: no link matching {pattern} on {here}")
            here = found.group(1)
        return here


def _pages(persona: str | None, *pages: str | tuple[str, str | tuple[str, ...]]) -> list[Page]:
    return [Page(persona, *p) if isinstance(p, tuple) else Page(persona, p) for p in pages]


MAIN_PAGES: list[Page] = [
    *_pages(
        "officer",
        "/dashboard",
        "/calls/",
        (r"/calls/\d+", "/calls/"),
        (r"/calls/\d+/proposals", ("/calls/", r"/calls/\d+")),
        (r"/proposals/\d+", ("/calls/", r"/calls/\d+", r"/calls/\d+/proposals")),
        (r"/reviews/calls/\d+/ranking", ("/calls/", r"/calls/\d+")),
        "/allocations/",
        (r"/allocations/\d+", "/allocations/"),
        "/allocations/requests",
        "/resources/",
        "/allocations/resources",
        (r"/allocations/resources/\d+", "/allocations/resources"),
        "/agreements/",
        "/institutions/",
        (r"/institutions/\d+", "/institutions/"),
        "/datasets/",
        "/reports/",
    ),
    *_pages(
        "pi",
        "/dashboard",
        "/proposals/",
        "/proposals/?page=2",
        (r"/proposals/\d+", "/proposals/"),
        "/allocations/",
        (r"/allocations/\d+", "/allocations/"),
        "/agreements/to-sign",
        "/datasets/access",
    ),
    *_pages(
        "reviewer",
        "/dashboard",
        "/reviews/",
        (r"/reviews/assignments/\d+(?:/review)?", "/reviews/"),
    ),
    *_pages(
        "official",
        "/dashboard",
        (r"/console/\d+", "/console/"),
        (r"/console/\d+/endorsements", "/console/"),
        (r"/console/\d+/members", "/console/"),
        (r"/console/\d+/agreements", "/console/"),
        "/affiliations/",
    ),
    *_pages(
        "steward",
        "/dashboard",
        "/datasets/",
        (r"/datasets/(?!requests|access|pre-approvals)[a-z0-9-]+", "/datasets/"),
        "/datasets/requests",
        (r"/datasets/requests/\d+", "/datasets/requests"),
    ),
    *_pages(
        None,
        "/program/",
        "/program/partners",
        "/program/projects",
        (r"/program/projects/\d+", "/program/projects"),
        "/program/calls",
    ),
]


def persona_ids(session: Session) -> dict[str, int]:
    """The generated personas' user ids, by persona name."""
    by_subject = dict(
        session.execute(
            select(Identity.subject, Identity.user_id).where(Identity.issuer == PERSONA_ISSUER)
        ).all()
    )
    return {name: by_subject[subject] for name, subject in PERSONAS.items()}
