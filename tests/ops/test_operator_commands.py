"""The services and scheduled jobs README.md tells operators to run, run as written.

Every ``flask --app portal …`` command in the README's ```crontab blocks and in the ``ExecStart=``
lines of its ```ini blocks (systemd units) runs, as its own process, against a throw-away
PostgreSQL database at the migrations' head with a real SMTP server (aiosmtpd), and must exit 0.
The mail worker service is started, delivers a queued mail to that server, and on SIGTERM (what
``systemctl stop`` sends) exits 0. gunicorn's ``ExecStart`` is checked with ``--check-config``,
which loads the app from the app spec with the unit's options.

The README read is ``README_UNDER_TEST`` (default: the repository's README.md), so a fragment can be
tried on a copy before it is pasted in.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portal import create_app
from portal.extensions import db
from portal.notifications.services import enqueue_email
from tests.databases import temporary_database
from tests.notifications.smtp import RecordingHandler, SmtpServer
from tests.support.app import TEST_CONFIG, create_schema

REPOSITORY = Path(__file__).resolve().parents[2]
README = Path(os.environ.get("README_UNDER_TEST") or REPOSITORY / "README.md")
BIN = Path(sys.executable).parent

#: One worker runs the module, so its deployment (database, SMTP server) is set up once.
pytestmark = pytest.mark.xdist_group("operator_commands")

#: A fenced block whose info string is exactly ``ini`` or ``crontab``.
BLOCK = re.compile(r"^```(ini|crontab)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: A flask command in a crontab line, up to the end of the line or the next shell operator.
FLASK_IN_CRONTAB = re.compile(r"(?:[^\s;|&]*/)?flask\s+--app\s+portal\b[^;|&<>\n]*")
#: What the README must give operators a way to run.
EXPECTED = {
    "mail worker",
    "mail deliver",
    "mail reminders",
    "mail digest",
    "allocations sweep",
    "datasets sweep",
    "outputs sweep",
    "audit prune-refusals",
    "usage import",
}
#: Standard input for every command (``usage import -`` reads it): Slurm's sacct output for a job
#: on an account no allocation maps to, which is listed and not charged.
SACCT = (
    "JobID|Account|Cluster|AllocTRES|ElapsedRaw|Start|End|State\n"
    "4242|atom-nobody-h100|nocluster|billing=8,cpu=8,gres/gpu=4,mem=64G,node=1|3600|"
    "2026-11-01T10:00:00|2026-11-01T11:00:00|COMPLETED\n"
)
SECRET_KEY = "operator-commands-test-key-5f0d9e2b7c41a8"
#: Generous bounds for a process to do its work (never a wait that a result could end sooner).
TIMEOUT = 120


@dataclass(frozen=True)
class Command:
    """One documented command: where it was found and its argv as written."""

    source: str  # "crontab" or the unit's ExecStart
    argv: tuple[str, ...]
    unit: str = ""  # the whole ini block, for ExecStart lines

    @property
    def program(self) -> str:
        return Path(self.argv[0]).name

    @property
    def name(self) -> str:
        """``mail reminders``, ``audit prune-refusals`` …: the subcommand without options."""
        words = [a for a in self.argv[3:] if not a.startswith("-")]
        return " ".join(words[:2])


def documented_commands(text: str) -> list[Command]:
    found: dict[tuple[str, ...], Command] = {}
    for kind, body in BLOCK.findall(text):
        if kind == "crontab":
            for m in FLASK_IN_CRONTAB.finditer(body):
                argv = tuple(shlex.split(m.group(0)))
                found.setdefault(argv, Command("crontab", argv))
            continue
        for line in body.splitlines():
            if line.startswith("ExecStart="):
                # systemd's prefixes (-, @, :, +, !) change how it runs the line, not the command.
                argv = tuple(shlex.split(line.removeprefix("ExecStart=").lstrip("-@:+!")))
                found.setdefault(argv, Command("ExecStart", argv, unit=body))
    return list(found.values())


def _readme_commands() -> list[Command]:
    return documented_commands(README.read_text(encoding="utf-8")) if README.is_file() else []


COMMANDS = _readme_commands()
FLASK_COMMANDS = [c for c in COMMANDS if c.program == "flask" and c.name != "mail worker"]


class Mailbox(RecordingHandler):
    """Keeps every message and lets a test wait for one to a given address."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        answer = await super().handle_DATA(server, session, envelope)
        with self.arrived:
            self.arrived.notify_all()
        return answer

    def wait_for(self, address: str, timeout: float) -> bool:
        with self.arrived:
            return self.arrived.wait_for(
                lambda: any(address in r.rcpt_tos for r in self.received), timeout
            )


@dataclass
class Deployment:
    database_url: str
    smtp: SmtpServer
    mailbox: Mailbox
    folder: Path

    def env(self) -> dict[str, str]:
        """The settings file of the README's examples, pointed at the test's own services."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PORTAL_")
            and k not in {"SECRET_KEY", "DATABASE_URL", "WEB_CONCURRENCY"}
            and k != "PROMETHEUS_MULTIPROC_DIR"
        }
        return {
            **base,
            "PORTAL_ENV": "testing",
            "SECRET_KEY": SECRET_KEY,
            "DATABASE_URL": self.database_url,
            "PORTAL_INSTANCE_PATH": str(self.folder / "instance"),
            "PORTAL_MAIL_SERVER": self.smtp.host,
            "PORTAL_MAIL_PORT": str(self.smtp.port),
        }

    def enqueue(self, address: str) -> None:
        app = create_app({**TEST_CONFIG, "DATABASE_URL": self.database_url})
        with app.app_context():
            enqueue_email(
                db.session,
                "auth/welcome",
                to=address,
                context={"name": "Operator", "has_affiliation": False},
            )
            db.session.commit()
            db.session.remove()
            db.engine.dispose()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("operator")
    server = SmtpServer()
    mailbox = server.handler = Mailbox()
    server.start()
    try:
        with temporary_database("postgresql", folder) as url:
            app = create_app({**TEST_CONFIG, "DATABASE_URL": url})
            with app.app_context():
                create_schema()
                db.engine.dispose()
            yield Deployment(url, server, mailbox, folder)
    finally:
        server.stop()


def unit_command(what: str, test: Any) -> Command:
    """The one ExecStart command that ``test`` picks, or a failure naming what README lacks."""
    found = [c for c in COMMANDS if c.source == "ExecStart" and test(c)]
    assert len(found) == 1, f"{README}: expected one ExecStart for {what}, found {len(found)}"
    return found[0]


def local(argv: tuple[str, ...]) -> list[str]:
    """The documented command with its program taken from this virtualenv."""
    return [str(BIN / Path(argv[0]).name), *argv[1:]]


def test_the_readme_documents_the_services_and_every_job() -> None:
    names = {c.name for c in COMMANDS if c.program == "flask"}
    assert names >= EXPECTED, f"{README} lacks {sorted(EXPECTED - names)}"
    units = [c for c in COMMANDS if c.source == "ExecStart"]
    assert any(c.program == "gunicorn" for c in units), "no gunicorn ExecStart"
    (worker,) = [c for c in units if c.name == "mail worker"]
    assert re.search(r"^Restart=always$", worker.unit, re.MULTILINE)
    for unit in {c.unit for c in units}:
        assert re.search(r"^EnvironmentFile=/srv/atom-portal/portal.env$", unit, re.MULTILINE), unit
        assert "/srv/atom-portal/venv/bin/" in unit
    for c in COMMANDS:
        assert c.argv[0].startswith("/srv/atom-portal/venv/bin/"), c.argv


@pytest.mark.slow
@pytest.mark.parametrize("command", FLASK_COMMANDS, ids=lambda c: " ".join(c.argv[3:]))
def test_each_documented_command_runs(deployment: Deployment, command: Command) -> None:
    proc = subprocess.run(
        local(command.argv),
        env=deployment.env(),
        cwd=deployment.folder,
        input=SACCT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, f"{command.argv}:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_mail_worker_service_delivers_and_stops_on_sigterm(deployment: Deployment) -> None:
    worker = unit_command("the mail worker", lambda c: c.name == "mail worker")
    deployment.enqueue("service@example.org")
    proc = subprocess.Popen(
        local(worker.argv),
        env=deployment.env(),
        cwd=deployment.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        delivered = deployment.mailbox.wait_for("service@example.org", TIMEOUT)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            pytest.fail(f"the worker did not stop on SIGTERM:\n{output}")
    assert delivered, output
    assert proc.returncode == 0, output


@pytest.mark.slow
def test_the_gunicorn_service_loads_the_app(deployment: Deployment) -> None:
    """``gunicorn --check-config`` with the unit's options: the config module and the app spec
    load (the app is created), with the unit's Environment= lines (their paths moved under a
    temporary folder)."""
    web = unit_command("gunicorn", lambda c: c.program == "gunicorn")
    env = deployment.env()
    for value in re.findall(r"^Environment=(.*)$", web.unit, re.MULTILINE):
        for assignment in shlex.split(value):
            key, _, val = assignment.partition("=")
            if val.startswith("/"):
                moved = deployment.folder / "root" / val.lstrip("/")
                moved.mkdir(parents=True, exist_ok=True)
                val = str(moved)
            env[key] = val
    proc = subprocess.run(
        [*local(web.argv[:1]), "--check-config", *web.argv[1:]],
        env=env,
        cwd=deployment.folder,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, f"{web.argv}:\n{proc.stdout}\n{proc.stderr}"
