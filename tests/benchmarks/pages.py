"""The pages the benchmark times: the shared catalogue of main pages (tests/support/pages.py, which
the statement-count tests open too), then the pages beyond it that the benchmark adds — more
lists per persona, the signing official's other console tabs, the administrator's audit log, the
allocation page's chart and the operator API's lists.

A page about one thing is found as the catalogue finds it: by following its list's first link as
its visitor, over HTTP, so it is always one that visitor may see. A page that cannot be found in
the data (its list is empty) is reported as not measured, with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sqlalchemy import func, select

from portal.core.models import AnySession
from portal.datasets.models import Grant
from tests.benchmarks.visitors import ADMIN, ANONYMOUS
from tests.support.pages import MAIN_PAGES, Page

#: Visitors of the operator API (by token, not by cookie).
API_ALLOCATIONS, API_GRANTS = "api (resource operator)", "api (storage operator)"
#: Every visitor, in the order the results show them.
VISITORS = (
    "officer",
    "pi",
    "reviewer",
    "official",
    "steward",
    ADMIN,
    ANONYMOUS,
    API_ALLOCATIONS,
    API_GRANTS,
)
#: The page the throughput runs load, and whose size the floor's page has: the program officer's
#: proposal list, a call's proposals. The officer's /proposals/ would not do: it lists the
#: proposals one is on the team of, and the officer is on none.
PROPOSAL_LIST = ("officer", "/calls/<id>/proposals")

DATASET = r"/datasets/(?!requests|access|pre-approvals)[a-z0-9-]+"
#: The benchmark's pages beyond the shared catalogue.
MORE_PAGES = [
    Page("officer", "/datasets/access"),
    Page("officer", "/datasets/requests"),
    Page("officer", "/applications/"),
    Page("pi", "/calls/"),
    Page("pi", "/agreements/"),
    Page("pi", "/datasets/"),
    Page("pi", DATASET, "/datasets/"),
    Page("official", "/agreements/"),
    *(
        Page("official", rf"/console/\d+/{tab}", "/console/")
        for tab in ("projects", "agreements", "requests")
    ),
    Page("steward", "/datasets/access"),
    Page(None, "/"),
    Page(None, r"/program/institutions/\d+", "/program/partners"),
    Page(ADMIN, "/admin/audit"),
]
#: Pages a page's HTML asks the browser for (an image, not a link): timed after the page.
CHARTS = {r"/allocations/\d+": "/burndown.svg"}


@dataclass(frozen=True)
class Timed:
    """A page to time: who opens it, its name in the results, its path."""

    visitor: str
    #: The route with its ids as placeholders ("/proposals/<id>").
    label: str
    path: str


@dataclass(frozen=True)
class Missing:
    visitor: str
    label: str
    reason: str


def label(pattern: str) -> str:
    """A page pattern as a route: ``/proposals/\\d+`` → ``/proposals/<id>``."""
    named = pattern.replace(DATASET, "/datasets/<slug>").replace(r"\d+", "<id>")
    return named.replace("\\", "")


def pages(
    get: Callable[[str | None, str], str], *, api: dict[str, str]
) -> tuple[list[Timed], list[Missing]]:
    """Every page to time, found in the data; ``get(visitor, path)`` returns a page's HTML as
    the visitor (a persona, ADMIN, or None: nobody logged in) sees it. ``api``: the API visitors
    that have a token, and the path each one lists (API_ALLOCATIONS, API_GRANTS)."""
    found: list[Timed] = []
    missing: list[Missing] = []
    for page in [*MAIN_PAGES, *MORE_PAGES]:
        visitor = page.persona or ANONYMOUS
        try:
            path = page.resolve(partial(get, page.persona))
        except LookupError as e:
            missing.append(Missing(visitor, label(page.path), str(e)))
            continue
        found.append(Timed(visitor, label(page.path), path))
        if page.path in CHARTS:
            chart = CHARTS[page.path]
            found.append(Timed(visitor, label(page.path) + chart, path + chart))
    for visitor in (API_ALLOCATIONS, API_GRANTS):
        if visitor in api:
            found.append(Timed(visitor, re.sub(r"/\d+/", "/<id>/", api[visitor]), api[visitor]))
        else:
            missing.append(Missing(visitor, "/api/v1/…", "nothing for its token in the data"))
    found.sort(key=lambda t: VISITORS.index(t.visitor))  # each visitor's pages together
    return found, missing


def busiest_dataset(session: AnySession) -> int | None:
    """The dataset with the most grants (the storage operator's token reads its grants)."""
    found: int | None = session.scalar(
        select(Grant.dataset_id)
        .group_by(Grant.dataset_id)
        .order_by(func.count().desc(), Grant.dataset_id)
        .limit(1)
    )
    return found
