"""The ROR look-up (``portal.institutions.ror``) over the shipped subset: by name, alias or
acronym, e-mail or web domain, and ROR id; what it refuses; and the data file's licence note."""

from __future__ import annotations

import json

import pytest

from portal.institutions import ror
from tests.factories import make_ror

MIT = "https://ror.org/042nb2s44"
STANFORD = "https://ror.org/00f54p054"


def _ids(query: str, limit: int = 10) -> list[str]:
    return [r.id for r in ror.lookup(query, limit)]


@pytest.mark.parametrize(
    "query",
    ["Massachusetts Institute of Technology", "massachusetts institute", "MASSACHUSETTS  inst"],
)
def test_lookup_by_name_words_ignores_case_and_spacing(query: str) -> None:
    assert _ids(query)[0] == MIT


def test_lookup_by_alias_or_acronym() -> None:
    assert MIT in _ids("MIT")
    assert _ids("Leland Stanford Junior University")[0] == STANFORD


def test_lookup_ignores_accents() -> None:
    assert _ids("zurich") == _ids("Zürich")
    assert any(r.name == "ETH Zurich" for r in ror.lookup("eth zürich"))


@pytest.mark.parametrize(
    "query", ["mit.edu", "someone@mit.edu", "alice@physics.mit.edu", "https://web.mit.edu/about"]
)
def test_lookup_by_domain_finds_the_owner_of_a_parent_domain_too(query: str) -> None:
    assert _ids(query)[0] == MIT


def test_lookup_by_domain_puts_the_most_specific_owner_first() -> None:
    found = [r.name for r in ror.lookup("alice@csail.mit.edu")]
    assert found == [
        "MIT Computer Science and Artificial Intelligence Laboratory",
        "Massachusetts Institute of Technology",
    ]


@pytest.mark.parametrize("query", [MIT, "ror.org/042nb2s44", "042nb2s44", " 042NB2S44 "])
def test_lookup_by_ror_id_in_any_form(query: str) -> None:
    assert _ids(query) == [MIT]


def test_by_id_answers_known_ids_and_none_otherwise() -> None:
    record = ror.by_id("042nb2s44")
    assert record is not None and record.name == "Massachusetts Institute of Technology"
    assert record.country_code == "US" and "mit.edu" in record.domains
    assert record.as_json()["website"] == "https://web.mit.edu"
    # Well formed but not in the subset: a miss (the form falls back to manual entry).
    assert ror.by_id(make_ror(987_654)) is None
    # A wrong checksum, junk, nothing.
    assert ror.by_id("042nb2s45") is None
    assert ror.by_id("not an id") is None
    assert ror.by_id(None) is None


@pytest.mark.parametrize("query", ["", "   ", "%", "_", "'; drop table x; --", "x" * 10_000])
def test_odd_queries_return_nothing_and_never_fail(query: str) -> None:
    assert _ids(query) == []


def test_limit_is_honoured_and_bounded() -> None:
    assert len(ror.lookup("university", limit=3)) == 3
    assert len(ror.lookup("university", limit=10_000)) == ror.MAX_RESULTS
    assert ror.lookup("university", limit=0) == []


def test_the_subset_is_loaded_once_per_process() -> None:
    ror.lookup("stanford")
    first = ror._loaded()
    ror.lookup("oxford")
    assert ror._loaded() is first


def test_the_data_file_ships_with_its_licence_note() -> None:
    records = json.loads(ror.DATA_FILE.read_text(encoding="utf-8"))
    assert len(records) > 9000 and {"id", "name", "domains"} <= set(records[0])
    note = (ror.DATA_FILE.parent / "README.md").read_text(encoding="utf-8")
    assert "CC0 1.0" in note
