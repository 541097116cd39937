"""``flask --app portal backup create DEST`` and ``backup restore SOURCE``: the database and the
uploaded files (proposals' PDF attachments) in one backup, taken while the portal runs.

A backup is a directory, or the same as one ``.tar.gz`` file, holding:

- ``database.sqlite3`` — SQLite: a copy made with SQLite's online backup API
  (``sqlite3.Connection.backup``, in one step: one read transaction, so one consistent moment,
  while the app goes on writing in WAL mode); or ``database.pgdump`` — PostgreSQL: ``pg_dump
  --format=custom`` (which must be on PATH, of the server's major version or newer) run in a
  snapshot exported by a read-only REPEATABLE READ transaction;
- ``attachments/`` — the files of the attachment folder (``ATTACHMENT_FOLDER``);
- ``manifest.json`` — the database kind, its migration revision, when, the rows per table and
  the attachments the database refers to, read in the same snapshot as the copy (so a restore
  can check that it has them all).

**The order is the point.** The database is copied first and the files after: an attachment's
file is written before its row commits and deleted only after its removal commits
(portal/proposals/attachments.py), so every row in the snapshot has its file in the folder when
the files are copied — unless it was removed in between. Files of uploads that committed after
the snapshot (or never) are copied too and are harmless: no row refers to them. Each file the
snapshot refers to is checked against its SHA-256; one that is missing although its row is still
in the live database was lost before the backup, and ``create`` fails (exit status 1) saying which.

``restore`` replaces the configured database (``DATABASE_URL``) with the backup — SQLite with the
backup API again, PostgreSQL with ``pg_restore --clean --if-exists --no-owner --no-acl
--single-transaction`` — and copies the files into the attachment folder, then checks the rows
per table and every attachment's file against the manifest. Stop the app and the mail worker
first, and run ``flask --app portal db upgrade`` after (a backup of an older release is migrated
then). Passwords are never printed, nor put on a command line: ``pg_dump`` and ``pg_restore``
get the password in their environment (``PGPASSWORD``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import Connection, bindparam, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from portal.extensions import db

backup_cli = AppGroup("backup", help="Back up and restore the database and the uploaded files.")

#: Bumped when the layout changes; ``restore`` refuses a format it does not know.
FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite3"
POSTGRES_FILE = "database.pgdump"
FILES = "attachments"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
#: How long the SQLite copy waits for a lock (a checkpoint, a writer of a non-WAL database).
SQLITE_TIMEOUT_SECONDS = 60
_CHUNK = 1024 * 1024


class BackupError(click.ClickException):
    """Bad input or a failed step: click prints the message (no traceback), exit status 1."""


@dataclass
class Snapshot:
    """What the copied database holds, read in the same snapshot as the copy."""

    revision: list[str]
    tables: dict[str, int]
    #: stored name → SHA-256 of every attachment row.
    attachments: dict[str, str]


@dataclass
class Report:
    """What a backup holds, and what was wrong with the files (``manifest.json``)."""

    path: Path
    manifest: dict[str, Any]
    #: Files the database refers to that are gone although their rows are still live: lost.
    lost: list[str] = field(default_factory=list)
    #: Files whose content is not what their row's SHA-256 says.
    damaged: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.damaged


# --- the commands --------------------------------------------------------------------------------


@backup_cli.command("create")
@click.argument("dest", type=click.Path(path_type=Path))
def create_command(dest: Path) -> None:
    """Back up the database and the attachment folder into DEST: a new directory, or a single
    file if DEST ends in .tar.gz. Safe while the portal runs."""
    with database_errors():
        report = create_backup(dest)
    m = report.manifest
    files = m["attachments"]
    click.echo(
        f"Backed up the {m['database']} database {m['url']} at revision "
        f"{', '.join(m['revision']) or '(none)'}: {sum(m['tables'].values()):,} rows in "
        f"{len(m['tables'])} tables; {files['files']:,} files ({files['bytes']:,} bytes) from "
        f"{files['folder']}. Written to {report.path}."
    )
    if files["removed_during_backup"]:
        click.echo(
            f"Note: {len(files['removed_during_backup'])} attachment(s) were removed while the "
            "backup ran; the backup's database still lists them, without their file."
        )
    if not report.ok:
        for name in report.lost:
            click.echo(
                f"Error: attachment file {name} is missing from {files['folder']} although the "
                "database refers to it.",
                err=True,
            )
        for name in report.damaged:
            click.echo(f"Error: attachment file {name} does not match its SHA-256.", err=True)
        raise click.exceptions.Exit(1)


@backup_cli.command("restore")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask before replacing the database.")
def restore_command(source: Path, yes: bool) -> None:
    """Replace the database (DATABASE_URL) with the backup in SOURCE (a directory or a .tar.gz
    made by `backup create`) and copy its files into the attachment folder. Stop the portal and
    the mail worker first; run `flask --app portal db upgrade` after."""
    with unpacked(source) as folder:
        manifest = read_manifest(folder)
        check_restorable(manifest)
        if not yes:
            click.confirm(
                f"Replace the {manifest['database']} database {safe_url()} with the backup of "
                f"{manifest['created_at']} and copy its files into {attachment_folder()}?",
                abort=True,
            )
        with database_errors():
            missing = restore_backup(folder, manifest)
    files = manifest["attachments"]
    click.echo(
        f"Restored the backup of {manifest['created_at']} into {safe_url()}: "
        f"{sum(manifest['tables'].values()):,} rows in {len(manifest['tables'])} tables, as the "
        f"manifest says; {files['files']:,} files into {attachment_folder()}."
    )
    if missing:
        click.echo(
            f"Note: {len(missing)} attachment(s) have no good file in the backup (removed while "
            f"it ran, or lost before: see its manifest): {', '.join(missing)}."
        )
    click.echo("Now run: flask --app portal db upgrade")


@contextmanager
def database_errors() -> Iterator[None]:
    """A database that cannot be reached (or refuses) is a message naming it, not a traceback."""
    try:
        yield
    except SQLAlchemyError as e:
        said = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        password = _url().password
        if password:
            said = said.replace(str(password), "***")
        raise BackupError(f"The database {safe_url()} failed: {said}") from None


# --- create --------------------------------------------------------------------------------------


def create_backup(dest: Path, *, after_snapshot: Callable[[], None] | None = None) -> Report:
    """Copy the database, then the attachment folder, into ``dest`` (in an app context).

    ``after_snapshot`` runs between the two (tests use it to change files at that moment)."""
    dest = dest.absolute()
    if dest.exists() or dest.is_symlink():
        raise BackupError(f"{dest} exists already; give a new path.")
    if not dest.parent.is_dir():
        raise BackupError(f"The folder {dest.parent} does not exist.")
    kind = _kind()
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))  # owner-only
    try:
        created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        snapshot = (
            _snapshot_sqlite(work / SQLITE_FILE)
            if kind == "sqlite"
            else _snapshot_postgres(work / POSTGRES_FILE)
        )
        if after_snapshot is not None:
            after_snapshot()
        folder = attachment_folder()
        copied = _copy_files(folder, work / FILES)
        lost, damaged, removed = _check_files(snapshot.attachments, copied)
        manifest = {
            "format": FORMAT,
            "database": kind,
            "url": safe_url(),
            "revision": snapshot.revision,
            "created_at": created_at,
            "tables": snapshot.tables,
            "attachments": {
                "folder": str(folder),
                "files": len(copied),
                "bytes": sum((work / FILES / name).stat().st_size for name in copied),
                "referenced": len(snapshot.attachments),
                "removed_during_backup": removed,
                "lost": lost,
                "damaged": damaged,
            },
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _finish(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Report(dest, manifest, lost, damaged)


def _snapshot_sqlite(target: Path) -> Snapshot:
    """The online backup API in one step: a read transaction for the whole copy (one consistent
    moment; in WAL mode writers go on meanwhile), into a file without a journal of its own."""
    path = _sqlite_path()
    if not path.is_file():
        raise BackupError(f"There is no SQLite database at {path}.")
    source = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_SECONDS, isolation_level=None)
    copy = sqlite3.connect(target, isolation_level=None)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")
        problems = [row[0] for row in copy.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise BackupError(f"The copy of the database fails its check: {problems[:5]}")
        tables = [
            r[0]
            for r in copy.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]

        def rows(sql: str) -> list[Any]:
            return list(copy.execute(sql))

        snapshot = Snapshot(
            revision=_revision(tables, rows),
            tables={t: int(rows(_count_sql(t))[0][0]) for t in tables},
            attachments=_attachments(tables, rows),
        )
    except sqlite3.Error as e:
        raise BackupError(f"Copying the SQLite database failed: {e}") from None
    finally:
        copy.close()
        source.close()
    os.chmod(target, 0o600)
    return snapshot


def _snapshot_postgres(target: Path) -> Snapshot:
    """``pg_dump --format=custom`` in a snapshot this transaction exports and holds: the dump,
    the row counts and the attachment list all see the same moment."""
    pg_dump = _client("pg_dump")
    with db.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        snapshot_id = conn.scalar(text("SELECT pg_export_snapshot()"))
        _run(
            [pg_dump, "--format=custom", f"--snapshot={snapshot_id}", f"--file={target}"],
            what="pg_dump",
        )
        tables = list(
            conn.scalars(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "ORDER BY tablename"
                )
            )
        )

        def rows(sql: str) -> list[Any]:
            return list(conn.execute(text(sql)))

        snapshot = Snapshot(
            revision=_revision(tables, rows),
            tables={t: int(rows(_count_sql(t))[0][0]) for t in tables},
            attachments=_attachments(tables, rows),
        )
        conn.rollback()
    os.chmod(target, 0o600)
    return snapshot


def _revision(tables: list[str], rows: Callable[[str], list[Any]]) -> list[str]:
    if "alembic_version" not in tables:
        return []
    return sorted(str(r[0]) for r in rows("SELECT version_num FROM alembic_version"))


def _attachments(tables: list[str], rows: Callable[[str], list[Any]]) -> dict[str, str]:
    if "attachments" not in tables:
        return {}
    return {str(r[0]): str(r[1]) for r in rows("SELECT stored_name, sha256 FROM attachments")}


def _copy_files(folder: Path, target: Path) -> dict[str, str]:
    """Copy the regular files of ``folder`` (not uploads still being written: ``.*.part``) into
    ``target``; their names (relative, POSIX) → SHA-256."""
    target.mkdir(mode=0o700)
    copied: dict[str, str] = {}
    if not folder.is_dir():
        return copied
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_symlink() or not path.is_file() or _partial(path):
            continue
        out = target / rel
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            copied[rel.as_posix()] = _copy(path, out)
        except FileNotFoundError:  # removed since it was listed: its removal committed
            continue
    return copied


def _partial(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".part")


def _copy(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` (owner-only), returning its SHA-256."""
    digest = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with src.open("rb") as f, os.fdopen(fd, "wb") as out:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _check_files(
    referenced: Mapping[str, str], copied: Mapping[str, str]
) -> tuple[list[str], list[str], list[str]]:
    """(lost, damaged, removed during the backup): a referenced file that was not copied is
    ``removed`` if the live database no longer has its row (its removal committed after the
    snapshot), else ``lost``."""
    damaged = sorted(n for n, sha in referenced.items() if n in copied and copied[n] != sha)
    missing = sorted(n for n in referenced if n not in copied)
    still_live: set[str] = set()
    if missing:
        with db.engine.connect() as conn:
            still_live = set(
                conn.scalars(
                    text(
                        "SELECT stored_name FROM attachments WHERE stored_name IN :names"
                    ).bindparams(bindparam("names", expanding=True)),
                    {"names": missing},
                )
            )
    lost = [n for n in missing if n in still_live]
    removed = [n for n in missing if n not in still_live]
    return lost, damaged, removed


def _finish(work: Path, dest: Path) -> None:
    """Move the finished backup to ``dest`` in one rename (a half-written backup never has the
    name), as a directory or packed into one .tar.gz."""
    if not dest.name.endswith(ARCHIVE_SUFFIXES):
        os.rename(work, dest)
        return
    partial = dest.with_name(f".{dest.name}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
            for path in sorted(work.iterdir()):
                tar.add(path, arcname=path.name)
        os.rename(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


# --- restore -------------------------------------------------------------------------------------


@contextmanager
def unpacked(source: Path) -> Iterator[Path]:
    """The backup's folder: ``source`` itself, or a .tar.gz unpacked into a temporary folder."""
    if source.is_dir():
        yield source
        return
    if not source.is_file():
        raise BackupError(f"There is no backup at {source}.")
    with tempfile.TemporaryDirectory(prefix=".restore.") as tmp:
        try:
            with tarfile.open(source, mode="r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BackupError(f"{source} is not a backup archive: {e}") from None
        yield Path(tmp)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The backup's manifest, checked to be one this code can restore."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise BackupError(
            f"{folder} is not a backup made by `flask --app portal backup create` "
            f"(no readable {MANIFEST})."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"The backup's format is not {FORMAT}: this release cannot restore it.")
    return manifest


def check_restorable(manifest: Mapping[str, Any]) -> None:
    """Refuse a backup of the other database kind, or of a release newer than this one."""
    kind = _kind()
    if manifest["database"] != kind:
        raise BackupError(
            f"The backup is of a {manifest['database']} database; DATABASE_URL is {kind}. "
            "Restore it into a database of its own kind."
        )
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(current_app.extensions["migrate"].directory)
    known = {r.revision for r in script.walk_revisions()}
    unknown = sorted(set(manifest["revision"]) - known)
    if unknown:
        raise BackupError(
            f"The backup is at migration revision {', '.join(unknown)}, which this release does "
            "not know: restore it with the release that made it (or a newer one)."
        )


def restore_backup(folder: Path, manifest: Mapping[str, Any]) -> list[str]:
    """Replace the database with the backup's and copy its files into the attachment folder;
    then check the rows per table and each attachment's file against the manifest. Returns the
    attachments the manifest already lists without a good file (removed while the backup ran,
    or lost before it)."""
    db.session.remove()
    db.engine.dispose()  # no pooled connection holds a lock on what is replaced
    if manifest["database"] == "sqlite":
        _restore_sqlite(folder / SQLITE_FILE)
    else:
        _restore_postgres(folder / POSTGRES_FILE)
    _restore_files(folder / FILES, attachment_folder())
    return _verify(manifest)


def _restore_sqlite(backup: Path) -> None:
    if not backup.is_file():
        raise BackupError(f"The backup has no {SQLITE_FILE}.")
    path = _sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True)
    target = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_SECONDS, isolation_level=None)
    try:
        source.backup(target)
    except sqlite3.Error as e:
        raise BackupError(f"Restoring the SQLite database failed: {e}") from None
    finally:
        target.close()
        source.close()


def _restore_postgres(dump: Path) -> None:
    """``pg_restore`` in one transaction: it replaces every object of the dump (``--clean
    --if-exists``), owned by the role of DATABASE_URL (``--no-owner``) and without the dumped
    grants (``--no-acl``: run ``audit grant-app-role`` again); on an error nothing changes."""
    if not dump.is_file():
        raise BackupError(f"The backup has no {POSTGRES_FILE}.")
    _run(
        [
            _client("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-acl",
            "--single-transaction",
            str(dump),
        ],
        what="pg_restore",
        database_flag="--dbname",
    )


def _restore_files(source: Path, folder: Path) -> None:
    """Copy the backup's files into ``folder`` (owner-only), each under a temporary name first.
    Files already there that the backup does not have are left alone (no row refers to them)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        out = folder / path.relative_to(source)
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.part")
        partial.unlink(missing_ok=True)
        try:
            _copy(path, partial)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)


def _verify(manifest: Mapping[str, Any]) -> list[str]:
    """The restored database has the manifest's rows per table, and every attachment its file
    with its SHA-256 (but those removed while the backup ran)."""
    expected: dict[str, int] = manifest["tables"]
    folder = attachment_folder()
    with db.engine.connect() as conn:
        found = {t: _count(conn, t) for t in expected}
        rows = (
            conn.execute(text("SELECT stored_name, sha256 FROM attachments")).all()
            if "attachments" in expected
            else []
        )
    differ = {t: (n, found[t]) for t, n in expected.items() if found[t] != n}
    if differ:
        raise BackupError(
            "The restored database differs from the backup's manifest (table: expected, found): "
            + ", ".join(f"{t}: {a}, {b}" for t, (a, b) in sorted(differ.items()))
        )
    files = manifest["attachments"]
    known = {*files["removed_during_backup"], *files.get("lost", []), *files.get("damaged", [])}
    bad = []
    for name, sha in rows:
        path = folder / name
        if not path.is_file() or _sha256(path) != sha:
            bad.append(name)
    if set(bad) - known:
        raise BackupError(
            f"Attachment files missing or damaged after the restore in {folder}: "
            + ", ".join(sorted(set(bad) - known))
        )
    return sorted(bad)


def _count(conn: Connection, table: str) -> int:
    try:
        return int(conn.scalar(text(_count_sql(table))) or 0)
    except Exception:  # the table is missing: reported as a difference, not a traceback
        conn.rollback()
        return -1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- the database, its clients, the folder -------------------------------------------------------


def attachment_folder() -> Path:
    """The attachment folder, as the app resolves it (portal/proposals/attachments.py)."""
    from portal.proposals.attachments import attachment_folder as folder

    return folder()


def _url() -> URL:
    return make_url(current_app.config["SQLALCHEMY_DATABASE_URI"])


def safe_url() -> str:
    """DATABASE_URL as it may be printed: the password masked."""
    return _url().render_as_string(hide_password=True)


def _kind() -> str:
    backend = _url().get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"Backups know SQLite and PostgreSQL, not {backend}.")
    return backend


def _sqlite_path() -> Path:
    database = _url().database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("DATABASE_URL names no SQLite file (an in-memory database?).")
    return Path(database).absolute()


def _client(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} is not on PATH: install the PostgreSQL client (e.g. the postgresql-client "
            "package) of the server's major version or newer."
        )
    return found


def _run(args: list[str], *, what: str, database_flag: str = "--dbname") -> None:
    """Run a PostgreSQL client on DATABASE_URL: the URL without its password on the command
    line (which other users may see), the password in the environment."""
    url = _url()
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    libpq = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    done = subprocess.run(  # noqa: S603 - the client found on PATH, arguments of our own
        [*args, f"{database_flag}={libpq}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        said = done.stderr.strip()
        if url.password:
            said = said.replace(str(url.password), "***")
        raise BackupError(f"{what} failed (exit status {done.returncode}): {said}")


def _count_sql(table: str) -> str:
    """``SELECT count(*)`` of a table named by the database's own catalog, quoted."""
    quoted = '"' + table.replace('"', '""') + '"'
    return f"SELECT count(*) FROM {quoted}"  # noqa: S608 - a quoted name from the catalog
