"""The scale database: generated once by the portal's own commands (``flask --app portal db
upgrade`` and ``flask --app portal demo generate``), kept, and copied for each run.

A SQLite database is kept in ``instance/bench/`` (git-ignored) under a name made of the scale, the
seed and a hash of what decides its contents — the migrations and the generator's code — so that
changing either makes a new one and an unchanged one is reused. With ``BENCH_DATABASE_URL`` the
PostgreSQL database it names is the cache (the same hash is kept in ``instance/bench/``). Every
run works on a copy (a SQLite backup, or a PostgreSQL database made from the cache as its
template) and drops it afterwards: logging in, the API tokens and the usage import write rows.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from portal.config import normalise_database_url
from tests.benchmarks.settings import ROOT, Settings

CACHE = ROOT / "instance" / "bench"
#: What decides the generated data: the schema and the generator's code.
SOURCES = ("portal/migrations/versions/*.py", "portal/dev/datagen.py", "portal/dev/gen_*.py")


@dataclass(frozen=True)
class ScaleDatabase:
    """The kept database of one scale and seed (never benched on directly: see ``working_copy``)."""

    url: str
    kind: str  # "sqlite" or "postgresql"
    key: str
    #: Seconds the generation took in this run; None when an earlier run's database was reused.
    generated_seconds: float | None


def data_key(scale: float, seed: int) -> str:
    """A short hash of the scale, the seed, and every file that decides the generated data."""
    digest = hashlib.sha256(f"{scale:g}|{seed}".encode())
    for pattern in SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def flask(url: str, *args: str, quiet: bool = False) -> None:
    """Run ``flask --app portal ARGS`` on the database at ``url``; its output goes to the
    terminal (``quiet``: only if it fails)."""
    env = {**os.environ, "PORTAL_ENV": "development", "DATABASE_URL": url}
    command = [sys.executable, "-m", "flask", "--app", "portal", *args]
    done = subprocess.run(command, cwd=ROOT, env=env, check=False, capture_output=quiet, text=True)
    if done.returncode:
        raise RuntimeError(
            f"`flask --app portal {' '.join(args)}` failed (exit {done.returncode}):\n"
            + (done.stdout + done.stderr if quiet else "see its output above")
        )


def _generate(url: str, settings: Settings) -> float:
    started = time.perf_counter()
    flask(url, "db", "upgrade", quiet=True)
    flask(url, "demo", "generate", "--scale", f"{settings.scale:g}", "--seed", str(settings.seed))
    return time.perf_counter() - started


def prepare(settings: Settings) -> ScaleDatabase:
    """The database of ``settings``' scale and seed: reused if kept, else generated now."""
    CACHE.mkdir(parents=True, exist_ok=True)
    key = data_key(settings.scale, settings.seed)
    if settings.database_url:
        return _prepare_postgresql(normalise_database_url(settings.database_url), key, settings)
    stem = f"scale-{settings.scale:g}-seed-{settings.seed}"
    path = CACHE / f"{stem}-{key}.sqlite3"
    url = f"sqlite:///{path}"
    if path.exists():
        return ScaleDatabase(url, "sqlite", key, None)
    for stale in CACHE.glob(f"{stem}-*.sqlite3*"):  # older code's data, or a generation cut short
        stale.unlink()
    partial = CACHE / f"{stem}-{key}.partial.sqlite3"
    seconds = _generate(f"sqlite:///{partial}", settings)
    partial.replace(path)
    return ScaleDatabase(url, "sqlite", key, seconds)


def _admin_engine(url: sa.URL) -> sa.Engine:
    return sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")


def _prepare_postgresql(raw: str, key: str, settings: Settings) -> ScaleDatabase:
    """The database ``raw`` names is the cache. The bench makes it if missing; it drops and
    remakes only one it made itself (its key file is in ``instance/bench/``) or an empty one."""
    url = sa.make_url(raw)
    name = url.database
    if not name:
        raise ValueError("BENCH_DATABASE_URL must name a database")
    marker = CACHE / f"postgresql-{name}.key"
    admin = _admin_engine(url)
    try:
        with admin.connect() as c:
            exists = c.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        made_by_bench = marker.exists()
        if exists and made_by_bench and marker.read_text().strip() == key:
            return ScaleDatabase(raw, "postgresql", key, None)
        if exists and not made_by_bench and _has_tables(url):
            raise RuntimeError(
                f"BENCH_DATABASE_URL names the database {name!r}, which holds tables the bench did "
                "not make; name a new (or empty) database: the bench fills it and keeps it."
            )
        marker.unlink(missing_ok=True)
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    seconds = _generate(raw, settings)
    marker.write_text(key + "\n")
    return ScaleDatabase(raw, "postgresql", key, seconds)


def _has_tables(url: sa.URL) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return bool(sa.inspect(c).get_table_names())
    finally:
        engine.dispose()


@contextmanager
def working_copy(database: ScaleDatabase, folder: Path) -> Iterator[str]:
    """The URL of a fresh copy of ``database``, dropped when the block ends."""
    if database.kind == "sqlite":
        source = sa.make_url(database.url).database
        assert source is not None
        target = folder / f"work-{uuid.uuid4().hex[:8]}.sqlite3"
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        src.close()
        dst.close()
        try:
            yield f"sqlite:///{target}"
        finally:
            for path in folder.glob(f"{target.name}*"):  # with its -wal and -shm files
                path.unlink()
        return
    url = sa.make_url(database.url)
    name = f"{url.database}_run_{uuid.uuid4().hex[:8]}"
    admin = _admin_engine(url)
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"'))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def server_version(url: str) -> str:
    """The database's name and version, e.g. "SQLite 3.40.1" or "PostgreSQL 15.8"."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            if engine.dialect.name == "sqlite":
                return f"SQLite {c.scalar(sa.text('SELECT sqlite_version()'))}"
            return f"PostgreSQL {c.scalar(sa.text('SHOW server_version'))}"
    finally:
        engine.dispose()
