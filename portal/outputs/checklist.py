"""What makes a released output's fields valid: a web address, an SPDX licence expression, a DOI,
a release date that is not in the future, and the planned output it checks off (the same project's,
of the same kind, not checked off by another release). The form shows these as field errors; the
services enforce them again for any other caller."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from portal.proposals.checklist import license_problem
from portal.proposals.models import OutputKind, PlannedOutput

__all__ = [
    "date_problem",
    "doi_problem",
    "license_problem",
    "normalize_doi",
    "planned_problem",
    "url_problem",
]

#: A DOI: ``10.`` a registrant code of 4 to 9 digits (with optional sub-codes), ``/`` and a suffix.
_DOI = re.compile(r"10\.\d{4,9}(?:\.\d+)*/\S+")
#: Prefixes a DOI is often pasted with; they are dropped.
_DOI_PREFIXES = ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "doi:")


def url_problem(url: str) -> str | None:
    """Why ``url`` is not an http(s) web address, or None."""
    url = url.strip()
    if not url:
        return "Give the address where the output can be found."
    if any(c.isspace() for c in url):
        return "A web address has no spaces."
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "Give a web address starting with https:// (or http://), e.g. https://github.com/…"
    return None


def normalize_doi(doi: str | None) -> str | None:
    """``doi`` without surrounding blanks and a ``https://doi.org/`` (or ``doi:``) prefix; None
    when blank."""
    text = (doi or "").strip()
    for prefix in _DOI_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :].strip()
            break
    return text or None


def doi_problem(doi: str | None) -> str | None:
    """Why ``doi`` (already normalized) is not a DOI such as ``10.5281/zenodo.1234567``, or None."""
    if doi is None:
        return None
    if not _DOI.fullmatch(doi):
        return "A DOI looks like 10.5281/zenodo.1234567 (you may paste it with https://doi.org/)."
    return None


def date_problem(released_on: dt.date | None, today: dt.date) -> str | None:
    """Why ``released_on`` is not a release date (missing, or after ``today``), or None."""
    if released_on is None:
        return "Give the date it was released."
    if released_on > today:
        return "The release date cannot be in the future: record an output once it is released."
    return None


def planned_problem(
    planned: PlannedOutput | None,
    *,
    proposal_id: int,
    kind: OutputKind,
    taken: Iterable[int],
) -> str | None:
    """Why a release of ``kind`` for project ``proposal_id`` cannot check off ``planned``, or None.
    ``taken``: the planned outputs other releases already check off."""
    if planned is None:
        return None
    if planned.proposal_id != proposal_id:
        return "That planned output is not one of this project's."
    if planned.kind != kind:
        return (
            f"That planned output is {planned.kind.label.lower()}, not "
            f"{kind.label.lower()}: choose one of the same kind, or none."
        )
    if planned.id in set(taken):
        return "Another release already checks off that planned output."
    return None
