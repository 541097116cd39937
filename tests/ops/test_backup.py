"""Backups (``flask --app portal backup create`` / ``restore``, portal/ops/backup.py) restore into
a fresh database and folder, on SQLite and PostgreSQL, to a state that keeps every rule.

- The round trip runs the operator's commands as real processes, exactly as README.md gives them:
  the demo data with its PDF attachments is backed up, restored into an empty database and
  folder, ``db upgrade`` runs (a no-op at head, but it must succeed), and the restored portal
  serves its pages, has the same rows in every table and every attachment's file.
- The restore drill takes backups while four threads keep approving and declining proposals
  (each approval takes GPU-hours out of a call's budget and a resource's capacity and queues
  the team's mail) and, on each restored database, checks: no budget over-spent and each counter
  equal to what its allocations hold; every outbox row's change present (defined at
  ``changes_behind_the_mail``) and every decision's mail queued; the audit log and the rows agree;
  every attachment's file there. A decision still in flight while the backup is taken is not in
  it, nor is its mail.
- Files changing between the database snapshot and the file copy show why the files are copied
  after the database; bad input gets a clear message and never a traceback, and the database's
  password is never printed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.orm import Session

from portal import create_app
from portal.allocations.models import HOLDING, Allocation
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import ConflictError
from portal.dev.demo import load_if_empty
from portal.extensions import db as flask_db
from portal.notifications.models import OutboxMessage
from portal.ops.backup import create_backup
from portal.proposals.attachments import remove_attachment
from portal.proposals.models import (
    Attachment,
    Award,
    Call,
    CallResource,
    Proposal,
    ProposalState,
    Resource,
    TeamMember,
    TeamRole,
)
from portal.proposals.services import decide_proposal
from tests.databases import temporary_database
from tests.factories import make_call, make_proposal, make_resource, make_user
from tests.support.app import TEST_CONFIG
from tests.support.live import LIVE_DATABASES, live_app, live_session, logged_in_client

REPO = Path(__file__).resolve().parents[2]


# --- running the commands ------------------------------------------------------------------------


def flask_command(
    *args: str, url: str, files: Path, instance: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``flask --app portal ARGS`` in a process of its own, configured as an operator would:
    ``DATABASE_URL`` and ``PORTAL_ATTACHMENT_FOLDER`` in the environment."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PORTAL_ATTACHMENT_FOLDER": str(files),
        "PORTAL_INSTANCE_PATH": str(instance),
        "PORTAL_ENV": "testing",
        "SECRET_KEY": TEST_CONFIG["SECRET_KEY"],
    }
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "portal", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def succeeded(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def cli(app: Flask, *args: str, stdin: str | None = None) -> Result:
    """A command run in this process on ``app`` (as click runs it: no traceback, an exit code)."""
    return app.test_cli_runner().invoke(args=list(args), input=stdin)


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result.output


def refused(result: Result, says: str) -> None:
    """A clear message and exit status 1, no traceback (click prints ``Error: …``)."""
    assert result.exit_code == 1, result.output
    assert says in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@contextmanager
def fresh_app(kind: str, folder: Path, files: Path) -> Iterator[tuple[Flask, str]]:
    """An app on a new, EMPTY database (no schema: a restore makes it) and an empty folder."""
    with temporary_database(kind, folder) as url:
        app = create_app({**TEST_CONFIG, "DATABASE_URL": url, "ATTACHMENT_FOLDER": str(files)})
        try:
            yield app, url
        finally:
            with app.app_context():
                flask_db.session.remove()
                flask_db.engine.dispose()


# --- what a database holds -----------------------------------------------------------------------


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: int(conn.scalar(text(f'SELECT count(*) FROM "{t}"')) or 0)
            for t in sorted(inspect(conn).get_table_names())
        }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_missing_or_damaged(session: Session, folder: Path) -> list[str]:
    """The attachments whose file is not in ``folder`` with the SHA-256 their row records."""
    return [
        a.stored_name
        for a in session.scalars(select(Attachment))
        if not (folder / a.stored_name).is_file() or sha256(folder / a.stored_name) != a.sha256
    ]


def give_files(session: Session, proposal: Proposal, folder: Path) -> None:
    """Write the files of the attachments the factory made (rows only), before they commit, as
    an upload does."""
    folder.mkdir(mode=0o700, exist_ok=True)
    for attachment in proposal.attachments:
        data = b"%PDF-1.4\n% " + attachment.stored_name.encode() + b"\n%%EOF\n"
        (folder / attachment.stored_name).write_bytes(data)
        attachment.sha256, attachment.size_bytes = hashlib.sha256(data).hexdigest(), len(data)
    session.flush()


# --- the round trip, with the demo data ----------------------------------------------------------


@pytest.mark.parametrize("kind", LIVE_DATABASES)
def test_a_populated_database_and_its_files_restore_into_a_fresh_one(
    kind: str, tmp_path: Path
) -> None:
    """``backup create`` of the demo, ``backup restore --yes`` into an empty database and folder,
    ``db upgrade``: the restored portal has every row and file, and serves its pages."""
    source_files, restored_files = tmp_path / "files", tmp_path / "restored-files"
    archive = tmp_path / "portal-backup.tar.gz"
    with live_app(kind, tmp_path, {"ATTACHMENT_FOLDER": str(source_files)}) as source:
        with source.app_context():
            assert load_if_empty() is not None
            expected = table_counts(flask_db.engine)
        url = source.config["DATABASE_URL"]
        said = succeeded(
            flask_command(
                "backup", "create", str(archive), url=url, files=source_files, instance=tmp_path
            )
        )
        assert f"Written to {archive}" in said

    assert expected["attachments"] > 0 and expected["outbox"] > 0 and expected["allocations"] > 0
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    database_file = "database.sqlite3" if kind == "sqlite" else "database.pgdump"
    assert {"manifest.json", database_file, "attachments"} <= names
    assert manifest["database"] == kind and manifest["tables"] == expected
    assert manifest["attachments"]["files"] == manifest["attachments"]["referenced"] > 0
    assert len(manifest["revision"]) == 1

    with fresh_app(kind, tmp_path, restored_files) as (restored, url):
        said = succeeded(
            flask_command(
                "backup",
                "restore",
                str(archive),
                "--yes",
                url=url,
                files=restored_files,
                instance=tmp_path,
            )
        )
        assert "Now run: flask --app portal db upgrade" in said
        succeeded(flask_command("db", "upgrade", url=url, files=restored_files, instance=tmp_path))

        with restored.app_context():
            assert table_counts(flask_db.engine) == expected
            with Session(flask_db.engine) as s:
                assert files_missing_or_damaged(s, restored_files) == []
                attachment = s.scalars(select(Attachment).order_by(Attachment.id)).first()
                assert attachment is not None
                pi_id = s.scalars(
                    select(TeamMember.user_id).where(
                        TeamMember.proposal_id == attachment.proposal_id,
                        TeamMember.role == TeamRole.PI,
                    )
                ).one()
                ids = (attachment.proposal_id, attachment.id, attachment.sha256)
        proposal_id, attachment_id, digest = ids
        visitor = restored.test_client()
        assert visitor.get("/").status_code == 200
        ready = visitor.get("/readyz")
        assert ready.status_code == 200 and ready.json is not None
        assert ready.json["checks"]["migrations"] == "ok"
        pi = logged_in_client(restored, pi_id)
        assert pi.get("/dashboard").status_code == 200
        assert pi.get(f"/proposals/{proposal_id}").status_code == 200
        download = pi.get(f"/proposals/{proposal_id}/attachments/{attachment_id}")
        try:
            assert download.status_code == 200
            assert hashlib.sha256(download.data).hexdigest() == digest
        finally:
            download.close()


# --- the restore drill: backups while approvals run ------------------------------------------------

#: Approving and declining threads, each in transactions of its own.
WRITERS = 4
#: Backups taken, one after another, while they run.
BACKUPS = 3
#: GPU-hours each approval awards; the resource holds 80 of them, each call's budget 50.
AWARD = 700


def _drill_budgets(app: Flask) -> tuple[list[int], int]:
    """Two calls of 35,000 GPU-hours on one resource of 56,000, and a program officer: (the
    calls' ids, the officer's id). Both limits bind: 50 approvals per call, 80 in all."""
    with live_session(app) as s:
        resource = make_resource(s, capacity_hours=80 * AWARD)
        calls = []
        for _ in range(2):
            call = make_call(s, resources=0)
            call.resources.append(
                CallResource(resource=resource, budget_hours=50 * AWARD, max_request_hours=1000)
            )
            calls.append(call)
        s.flush()
        return [c.id for c in calls], make_user(s, Role.PROGRAM_OFFICER).id


#: The decisions whose mail the drill checks.
MAILED = {"proposal.approve", "proposal.decline"}


def changes_behind_the_mail(s: Session) -> list[str]:
    """Every outbox row's causing change is there, and every decision's mail.

    An outbox row here is a ``proposals/decided`` mail (the drill makes no other kind); its
    causing change is the decision it announces: the proposal it names (``proposal_id``) is in
    the state that decision leads to (approve: active, decline: declined), the decision's audit
    event (``proposal.<decision>`` on that proposal) exists, and for an approval the awards the
    mail lists are the proposal's awards, each with its allocation. Conversely each decision's
    audit event has its mail (every team here has a verified address)."""
    problems = []
    leads_to = {"approve": ProposalState.ACTIVE, "decline": ProposalState.DECLINED}
    events = {
        (e.action, e.object_id)
        for e in s.scalars(select(AuditEvent).where(AuditEvent.object_type == "proposals"))
    }
    mailed = set()
    for mail in s.scalars(select(OutboxMessage)):
        if mail.template != "proposals/decided":
            problems.append(f"outbox {mail.id}: an unexpected kind {mail.template}")
            continue
        pid, decision = mail.context["proposal_id"], mail.context["decision"]
        mailed.add((f"proposal.{decision}", pid))
        proposal = s.get(Proposal, pid)
        if proposal is None or proposal.state != leads_to[decision]:
            problems.append(f"outbox {mail.id}: proposal {pid} is not {decision}d")
            continue
        if (f"proposal.{decision}", pid) not in events:
            problems.append(f"outbox {mail.id}: no audit event of the {decision} of {pid}")
        if decision == "approve":
            awarded = [
                {"resource": a.call_resource.resource.name, "hours": a.hours}
                for a in proposal.awards
            ]
            allocated = s.scalars(select(Allocation.award_id).where(Allocation.proposal_id == pid))
            if mail.context["awards"] != awarded or {a.id for a in proposal.awards} != set(
                allocated
            ):
                problems.append(f"outbox {mail.id}: the awards of {pid} are not all there")
    decisions = {(action, pid) for action, pid in events if action in MAILED}
    problems += [f"{action} of {pid} without its mail" for action, pid in decisions - mailed]
    return problems


def budgets_kept(s: Session) -> list[str]:
    """For every budget, awarded ≤ total, and each counter equals what its allocations hold."""
    problems = []
    holding = select(func.coalesce(func.sum(Allocation.hours), 0)).where(
        Allocation.state.in_(HOLDING)
    )
    for cr in s.scalars(select(CallResource)):
        held = s.scalar(holding.where(Allocation.call_resource_id == cr.id))
        if not cr.allocated_hours <= cr.budget_hours or cr.allocated_hours != held:
            problems.append(
                f"call resource {cr.id}: {cr.allocated_hours} of {cr.budget_hours}, held {held}"
            )
    for r in s.scalars(select(Resource)):
        held = s.scalar(holding.where(Allocation.resource_id == r.id))
        if not r.allocated_hours <= r.capacity_hours or r.allocated_hours != held:
            problems.append(f"resource {r.id}: {r.allocated_hours} of {r.capacity_hours}, {held}")
    return problems


def audit_agrees(s: Session) -> list[str]:
    """The audit log and the rows tell the same story: the approved proposals are the active
    ones, those with awards and those with allocations; each allocation has its creation event;
    the declined ones are those with a decline event."""

    def events(action: str) -> set[int | None]:
        return set(s.scalars(select(AuditEvent.object_id).where(AuditEvent.action == action)))

    def in_state(state: ProposalState) -> set[int | None]:
        return set(s.scalars(select(Proposal.id).where(Proposal.state == state)))

    approved = events("proposal.approve")
    stories = {
        "active proposals": in_state(ProposalState.ACTIVE),
        "proposals with awards": set(s.scalars(select(Award.proposal_id))),
        "proposals with allocations": set(s.scalars(select(Allocation.proposal_id))),
    }
    problems = [
        f"{what} differ from the approvals" for what, ids in stories.items() if ids != approved
    ]
    if events("allocation.create") != set(s.scalars(select(Allocation.id))):
        problems.append("allocations and their creation events differ")
    if events("proposal.decline") != in_state(ProposalState.DECLINED):
        problems.append("declined proposals and decline events differ")
    return problems


@pytest.mark.parametrize("kind", LIVE_DATABASES)
def test_backups_taken_while_awards_run_restore_to_a_consistent_state(
    kind: str, tmp_path: Path
) -> None:
    """The restore drill: four threads approve (taking GPU-hours from the budgets, queueing mail)
    and decline proposals, each with its attachment; once all are running, three backups are
    taken one after another; then they stop. Each backup, restored into a fresh database and
    folder, keeps every budget, has every mail's change and every change's mail, an audit log that
    agrees with its rows and every attachment's file — and lies between what the source held
    just before and just after it was taken."""
    files = tmp_path / "files"
    with live_app(kind, tmp_path, {"ATTACHMENT_FOLDER": str(files)}) as source:
        call_ids, officer_id = _drill_budgets(source)
        stop = threading.Event()
        running = threading.Barrier(WRITERS + 1)
        # SQLite lets one writer in at a time anyway, but not fairly: under load one of four
        # writers can wait out the busy timeout. Here they take turns (the backup does not).
        turn: AbstractContextManager[Any] = threading.Lock() if kind == "sqlite" else nullcontext()
        errors: list[BaseException] = []
        decided: list[tuple[str, bool]] = []

        def writer(n: int) -> None:
            try:
                for i in itertools.count():
                    if stop.is_set():
                        return
                    with turn, live_session(source) as s:
                        proposal = make_proposal(
                            s,
                            call=s.get_one(Call, call_ids[(n + i) % 2]),
                            state=ProposalState.IN_REVIEW,
                        )
                        give_files(s, proposal, files)
                        pid, cr_id = proposal.id, proposal.requests[0].call_resource_id
                    action = "decline" if i % 3 == 2 else "approve"
                    try:
                        with turn, live_session(source) as s:
                            decide_proposal(
                                s,
                                s.get_one(Proposal, pid),
                                action,
                                actor=s.get_one(User, officer_id),
                                reason="Outside the call's scope." if action == "decline" else None,
                                awards={cr_id: AWARD} if action == "approve" else None,
                            )
                        decided.append((action, True))
                    except ConflictError:
                        decided.append((action, False))  # the budget is spent: nothing changed
                    if i == 0:
                        running.wait()
            except BaseException as e:  # handed to the test's thread
                errors.append(e)
                running.abort()

        def approvals() -> int:
            with turn, live_session(source) as s:
                return int(
                    s.scalar(
                        select(func.count())
                        .select_from(AuditEvent)
                        .where(AuditEvent.action == "proposal.approve")
                    )
                    or 0
                )

        threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(WRITERS)]
        for t in threads:
            t.start()
        windows = []
        try:
            running.wait(timeout=300)  # every writer has decided once: they are all running
            for b in range(BACKUPS):
                before = approvals()
                with source.app_context():
                    ok(cli(source, "backup", "create", str(tmp_path / f"drill-{b}.tar.gz")))
                windows.append((before, approvals()))
        except threading.BrokenBarrierError:
            pass  # a writer failed before all were running: its error is raised below
        finally:
            stop.set()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        assert len(windows) == BACKUPS
        with live_session(source) as s:
            final = budgets_kept(s), set(s.scalars(select(Award.proposal_id)))
        assert final[0] == []
        assert any(done for action, done in decided if action == "approve")

    for b, (before, after) in enumerate(windows):
        restored_files = tmp_path / f"restored-{b}"
        with fresh_app(kind, tmp_path, restored_files) as (restored, _), restored.app_context():
            ok(cli(restored, "backup", "restore", str(tmp_path / f"drill-{b}.tar.gz"), "--yes"))
            ok(cli(restored, "db", "upgrade"))
            with Session(flask_db.engine) as s:
                assert budgets_kept(s) == []
                assert changes_behind_the_mail(s) == []
                assert audit_agrees(s) == []
                assert files_missing_or_damaged(s, restored_files) == []
                approved = set(s.scalars(select(Award.proposal_id)))
                assert before <= len(approved) <= after
                assert approved <= final[1]


@pytest.mark.parametrize("kind", LIVE_DATABASES)
def test_a_decision_still_in_flight_is_not_in_the_backup_nor_its_mail(
    kind: str, tmp_path: Path
) -> None:
    """The backup is taken while an approval is flushed but not committed (on SQLite it holds the
    write lock: the backup goes on beside it): the backup has the proposal in review, without
    awards, allocation, audit event, mail or hours taken; the approval then commits in the
    source. The restored database keeps every rule of the drill."""
    files = tmp_path / "files"
    with live_app(kind, tmp_path, {"ATTACHMENT_FOLDER": str(files)}) as source:
        call_ids, officer_id = _drill_budgets(source)
        with live_session(source) as s:
            proposal = make_proposal(
                s, call=s.get_one(Call, call_ids[0]), state=ProposalState.IN_REVIEW
            )
            give_files(s, proposal, files)
            pid, cr_id = proposal.id, proposal.requests[0].call_resource_id
        with live_session(source) as s:
            decide_proposal(
                s,
                s.get_one(Proposal, pid),
                "approve",
                actor=s.get_one(User, officer_id),
                awards={cr_id: AWARD},
            )
            s.flush()
            with source.app_context():
                ok(cli(source, "backup", "create", str(tmp_path / "backup")))
        with live_session(source) as s:
            assert s.get_one(Proposal, pid).state == ProposalState.ACTIVE

    with fresh_app(kind, tmp_path, tmp_path / "restored") as (restored, _), restored.app_context():
        ok(cli(restored, "backup", "restore", str(tmp_path / "backup"), "--yes"))
        with Session(flask_db.engine) as s:
            assert s.get_one(Proposal, pid).state == ProposalState.IN_REVIEW
            assert s.get_one(CallResource, cr_id).allocated_hours == 0
            assert s.scalars(select(Award)).all() == []
            assert s.scalars(select(Allocation)).all() == []
            assert s.scalars(select(OutboxMessage)).all() == []
            assert budgets_kept(s) == changes_behind_the_mail(s) == audit_agrees(s) == []


# --- why the files are copied after the database -------------------------------------------------


@pytest.mark.parametrize("kind", LIVE_DATABASES)
def test_files_that_change_after_the_snapshot_leave_a_restorable_backup(
    kind: str, tmp_path: Path
) -> None:
    """Between the database snapshot and the file copy, one attachment is removed (its row, then
    its file) and one uploaded: the removed one is reported as removed during the backup (its row
    is in the backup, its file gone), the new file is in the backup without a row (harmless), and
    the restore accepts both. A file missing while its row is still live was lost: ``create``
    fails, naming it."""
    files = tmp_path / "files"
    with live_app(kind, tmp_path, {"ATTACHMENT_FOLDER": str(files)}) as source:
        with live_session(source) as s:
            proposals = [make_proposal(s, complete=True) for _ in range(2)]
            for p in proposals:
                give_files(s, p, files)
            kept, removed = ([a.stored_name for a in p.attachments] for p in proposals)
            removed_id, actor_id = proposals[1].attachments[0].id, proposals[1].team[0].user_id

        def meanwhile() -> None:
            with live_session(source) as s:
                remove_attachment(
                    s,
                    s.get_one(Attachment, removed_id),
                    actor=s.get_one(User, actor_id),
                    folder=files,
                )
            (files / "0123456789abcdef0123456789abcdef").write_bytes(b"%PDF-1.4 later\n%%EOF\n")

        with source.app_context():
            report = create_backup(tmp_path / "backup", after_snapshot=meanwhile)
        assert report.ok
        assert report.manifest["attachments"]["removed_during_backup"] == removed
        assert (tmp_path / "backup" / "attachments" / kept[0]).is_file()
        assert (tmp_path / "backup" / "attachments" / "0123456789abcdef0123456789abcdef").is_file()

        # A file gone while its row stays: lost, and the backup says so.
        (files / kept[0]).unlink()
        with source.app_context():
            result = cli(source, "backup", "create", str(tmp_path / "second"))
        assert result.exit_code == 1
        assert f"attachment file {kept[0]} is missing" in result.output
        second = json.loads((tmp_path / "second" / "manifest.json").read_text())
        assert second["attachments"]["lost"] == [kept[0]]

    with fresh_app(kind, tmp_path, tmp_path / "restored") as (restored, _), restored.app_context():
        said = ok(cli(restored, "backup", "restore", str(tmp_path / "backup"), "--yes"))
        assert "have no good file in the backup" in said and removed[0] in said
        with Session(flask_db.engine) as s:
            assert files_missing_or_damaged(s, tmp_path / "restored") == removed


# --- bad input, and secrets ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", LIVE_DATABASES)
def test_bad_input_gets_a_clear_message_and_changes_nothing(kind: str, tmp_path: Path) -> None:
    other = "postgresql" if kind == "sqlite" else "sqlite"
    files = {"ATTACHMENT_FOLDER": str(tmp_path / "files")}
    with live_app(kind, tmp_path, files) as app, app.app_context():
        ok(cli(app, "backup", "create", str(tmp_path / "good")))
        refused(cli(app, "backup", "create", str(tmp_path / "good")), "exists already")
        refused(
            cli(app, "backup", "create", str(tmp_path / "no" / "such.tar.gz")), "does not exist"
        )
        refused(cli(app, "backup", "restore", str(tmp_path / "none")), "There is no backup")
        (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
        refused(cli(app, "backup", "restore", str(tmp_path / "junk.tar.gz")), "not a backup")
        refused(cli(app, "backup", "restore", str(tmp_path)), "not a backup made")
        manifest = tmp_path / "good" / "manifest.json"
        content = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**content, "database": other}))
        refused(cli(app, "backup", "restore", str(tmp_path / "good")), f"DATABASE_URL is {kind}")
        manifest.write_text(json.dumps({**content, "revision": ["ffffffffffff"]}))
        refused(cli(app, "backup", "restore", str(tmp_path / "good")), "does not know")
        manifest.write_text(json.dumps(content))
        # Without --yes it asks; "no" leaves the database as it was.
        before = table_counts(flask_db.engine)
        said = cli(app, "backup", "restore", str(tmp_path / "good"), stdin="n\n")
        assert said.exit_code == 1 and "Replace the" in said.output and "Aborted" in said.output
        assert table_counts(flask_db.engine) == before


def test_the_database_password_is_never_printed(tmp_path: Path) -> None:
    """PostgreSQL (trust authentication here, so any password connects): the password in
    DATABASE_URL is in no output, no manifest and no error."""
    password = "s3cret-Pa55word-4-backup"
    with live_app("postgresql", tmp_path) as app:
        url = app.config["DATABASE_URL"]
        with_password = url.replace("postgres@", f"postgres:{password}@", 1)
        assert password in with_password
        files, instance = tmp_path / "files", tmp_path
        created = flask_command(
            "backup",
            "create",
            str(tmp_path / "b"),
            url=with_password,
            files=files,
            instance=instance,
        )
        restored = flask_command(
            "backup",
            "restore",
            str(tmp_path / "b"),
            "--yes",
            url=with_password,
            files=files,
            instance=instance,
        )
        failed = flask_command(
            "backup",
            "create",
            str(tmp_path / "c"),
            url=with_password.rsplit("/", 1)[0] + "/no_such_database_here",
            files=files,
            instance=instance,
        )
    succeeded(created)
    succeeded(restored)
    assert failed.returncode == 1, failed.stderr
    assert "no_such_database_here" in failed.stderr and "Traceback" not in failed.stderr
    shown = [
        created.stdout,
        created.stderr,
        restored.stdout,
        restored.stderr,
        failed.stdout,
        failed.stderr,
        (tmp_path / "b" / "manifest.json").read_text(),
    ]
    assert not [s for s in shown if password in s]
    assert "***" in created.stdout
