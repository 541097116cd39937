"""The benchmark's shared fixtures: its settings, the scale database, and the results that every
benchmark adds to and that are written at the end (``make bench``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import pytest
import sqlalchemy as sa

from tests.benchmarks.database import ScaleDatabase, prepare, server_version
from tests.benchmarks.report import Results, load_average, machine, markdown
from tests.benchmarks.settings import ROOT, Settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_environment()


@pytest.fixture(scope="session")
def results(settings: Settings) -> Iterator[Results]:
    """What the run measured. Written to BENCH_OUTPUT when the page benchmark ran (a run of the
    import or delivery benchmark alone only prints)."""
    shown = asdict(settings)
    if settings.database_url:
        shown["database_url"] = sa.make_url(settings.database_url).render_as_string()
    shown["output"] = (
        settings.output.relative_to(ROOT).as_posix()
        if settings.output.is_relative_to(ROOT)
        else str(settings.output)
    )
    found = Results(settings=shown, machine=machine())
    yield found
    found.machine["load_end"] = load_average()
    print("\n" + markdown(found))
    if found.pages:
        found.write(settings.output)
        print(f"Written to {shown['output']}/ (results.md, results.json, latency.png).")


@pytest.fixture(scope="session")
def scale_database(settings: Settings, results: Results) -> ScaleDatabase:
    """The scale database of BENCH_SCALE and BENCH_SEED, generated or reused."""
    database = prepare(settings)
    results.database = {
        "kind": database.kind,
        "version": server_version(database.url),
        "key": database.key,
        "generated_seconds": database.generated_seconds,
    }
    return database
