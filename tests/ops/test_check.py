"""``flask --app portal check`` against a real deployment: a migrated PostgreSQL database, an SMTP
server that wants a login (aiosmtpd), an oidc-provider-mock process, a folder, Redis.

The good deployment passes every check; then each problem alone — a weak key, the database down or
behind the migrations, the SMTP port closed or the login refused, a provider whose discovery
document is missing or names another issuer, no provider at all, an upload folder nobody can write,
per-process rate limits with several workers, Redis down — fails exactly the check that names it,
and nothing secret is ever printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from alembic.script import ScriptDirectory
from sqlalchemy import delete, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from portal import create_app
from portal.auth.models import IdentityProvider
from portal.config import DEV_SECRET_KEY
from portal.dev.sink import free_port, stop_sink
from portal.extensions import db
from tests.databases import require_or_skip, temporary_database
from tests.notifications.smtp import RecordingHandler, allow_smtp
from tests.support.app import TEST_CONFIG, create_schema
from tests.support.oidc import add_provider, mock_idp_process

SMTP_USER = "portal"
SMTP_PASSWORD = "smtp-pass-9f3c2a71"  # the test relay's password (must never be printed)
DB_PASSWORD = "db-pass-5e81b0c4"  # ignored by trust auth; must never be printed
STRONG_KEY = "k3Jx9vQ2mZpW7tR4yB8nL1sD6fH0gC5eA-uXoVqTiKwYa"
#: A Redis database of the local server, only pinged.
REDIS_URL = "redis://127.0.0.1:6379/11"

LINE = re.compile(r"^(OK|WARNING|PROBLEM|SKIPPED) +([^:]+): (.*)$")


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@contextmanager
def smtp_relay() -> Iterator[int]:
    """A real SMTP server that offers AUTH LOGIN/PLAIN (over plain SMTP, as a local relay might)."""
    port = free_port()
    controller = Controller(
        RecordingHandler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield port
    finally:
        stop_sink(controller)


@dataclass
class Deployment:
    database_url: str
    smtp_port: int
    idp: str
    folder: Path

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            **TEST_CONFIG,
            "DATABASE_URL": self.database_url,
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": self.smtp_port,
            "MAIL_USERNAME": SMTP_USER,
            "MAIL_PASSWORD": SMTP_PASSWORD,
            "MAIL_TIMEOUT": 10,
            "ATTACHMENT_FOLDER": str(self.folder / "attachments"),
            "SECRET_KEY": STRONG_KEY,
            **overrides,
        }

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session on the deployment's database that commits when the block ends."""
        app = create_app(self.config())
        with app.app_context():
            with Session(db.engine) as session:
                yield session
                session.commit()
            db.engine.dispose()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The good deployment: every check passes (tests that change it put it back)."""
    folder = tmp_path_factory.mktemp("check")
    (folder / "attachments").mkdir()
    with (
        mock_idp_process() as idp,
        temporary_database("postgresql", folder) as url,
        smtp_relay() as smtp_port,
    ):
        deployment = Deployment(url, smtp_port, idp, folder)
        app = create_app(deployment.config())
        with app.app_context():
            create_schema()
            db.engine.dispose()
        with deployment.session() as session:
            add_provider(session, "campus", idp)
        yield deployment


@pytest.fixture(autouse=True)
def _allow_the_relay(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    allow_smtp(deployment.smtp_port)  # the no-stray-SMTP guard resets before every test
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)


@dataclass
class Outcome:
    exit_code: int
    output: str

    @property
    def statuses(self) -> dict[str, str]:
        """Each check's name → its status, from the one line it printed."""
        found = {}
        for line in self.output.splitlines():
            m = LINE.match(line)
            if m:
                assert m.group(2) not in found, f"two lines for {m.group(2)}:\n{self.output}"
                found[m.group(2)] = m.group(1)
        return found

    @property
    def problems(self) -> set[str]:
        return {name for name, status in self.statuses.items() if status == "PROBLEM"}

    def line(self, name: str) -> str:
        (line,) = [ln for ln in self.output.splitlines() if (m := LINE.match(ln)) and m[2] == name]
        return line


def run_check(deployment: Deployment, *args: str, **overrides: Any) -> Outcome:
    app = create_app(deployment.config(**overrides))
    try:
        result = app.test_cli_runner().invoke(args=["check", *args])
    finally:
        with app.app_context():
            db.engine.dispose()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return Outcome(result.exit_code, result.output)


def assert_no_secrets(output: str, *secrets: str) -> None:
    for secret in (SMTP_PASSWORD, DB_PASSWORD, STRONG_KEY, *secrets):
        assert secret not in output


def redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
    except redis.RedisError as e:
        require_or_skip(f"Redis is not reachable at {REDIS_URL}: {type(e).__name__}")


# --------------------------------------------------------------------------------------------
# The good deployment
# --------------------------------------------------------------------------------------------

EVERY_CHECK = {
    "environment",
    "secret key",
    "database",
    "migrations",
    "mail server",
    "identity provider campus",
    "upload folder",
    "rate-limit storage",
}


def test_a_good_deployment_passes_every_check(deployment: Deployment) -> None:
    outcome = run_check(deployment)

    assert outcome.exit_code == 0, outcome.output
    statuses = outcome.statuses
    assert set(statuses) == EVERY_CHECK
    # Tests run with ENV=testing: said, but informational only.
    assert statuses.pop("environment") == "WARNING"
    assert set(statuses.values()) == {"OK"}, outcome.output
    assert "login as portal" in outcome.line("mail server")
    assert "signing key" in outcome.line("identity provider campus")
    assert outcome.output.splitlines()[-1].startswith("All checks passed")
    assert_no_secrets(outcome.output)


def test_several_workers_on_several_hosts_pass_with_redis(deployment: Deployment) -> None:
    redis_or_skip()
    outcome = run_check(
        deployment, "--workers", "4", "--hosts", "2", RATELIMIT_STORAGE_URI=REDIS_URL
    )

    assert outcome.exit_code == 0, outcome.output
    assert outcome.problems == set()
    assert "redis://127.0.0.1:6379/11 answers" in outcome.line("rate-limit storage")


def test_a_production_deployment_passes_as_a_subprocess(deployment: Deployment) -> None:
    """As an operator runs it: ``flask --app portal check`` with the settings in the environment,
    ENV=production, gunicorn's WEB_CONCURRENCY, Redis, and passwords in the URLs."""
    redis_or_skip()
    url = make_url(deployment.database_url)
    if url.password is None:  # trust auth ignores it; it is there to prove it is never printed
        url = url.set(password=DB_PASSWORD)
    db_password = str(url.password)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")},
        "PORTAL_ENV": "production",
        "SECRET_KEY": STRONG_KEY,
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "PORTAL_MAIL_SERVER": "127.0.0.1",
        "PORTAL_MAIL_PORT": str(deployment.smtp_port),
        "PORTAL_MAIL_USERNAME": SMTP_USER,
        "PORTAL_MAIL_PASSWORD": SMTP_PASSWORD,
        "PORTAL_ATTACHMENT_FOLDER": str(deployment.folder / "attachments"),
        "PORTAL_RATELIMIT_STORAGE_URI": REDIS_URL,
        "WEB_CONCURRENCY": "4",
    }
    flask = Path(sys.executable).with_name("flask")
    proc = subprocess.run(
        [str(flask), "--app", "portal", "check"],
        env=env,
        cwd=deployment.folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    outcome = Outcome(proc.returncode, proc.stdout)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(outcome.statuses) == EVERY_CHECK
    assert set(outcome.statuses.values()) == {"OK"}, outcome.output
    assert "4 worker(s) on 1 host(s)" in outcome.line("rate-limit storage")
    assert ":***@127.0.0.1" in outcome.line("database")
    assert_no_secrets(proc.stdout + proc.stderr, db_password)


# --------------------------------------------------------------------------------------------
# Each problem alone
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (DEV_SECRET_KEY, "development default"),
        ("Zq8#pL2x", "shorter than 32"),
        ("changeme" * 4, "too predictable"),
    ],
    ids=["development-default", "short", "predictable"],
)
def test_a_weak_secret_key_is_a_problem_in_any_env(
    deployment: Deployment, key: str, reason: str
) -> None:
    outcome = run_check(deployment, SECRET_KEY=key)

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"secret key"}, outcome.output
    assert reason in outcome.line("secret key")
    assert "token_urlsafe" in outcome.line("secret key")  # what to do
    assert key not in outcome.output


def test_an_unreachable_database_is_a_problem_and_its_checks_are_skipped(
    deployment: Deployment,
) -> None:
    closed = free_port()
    outcome = run_check(
        deployment, DATABASE_URL=f"postgresql://portal:{DB_PASSWORD}@127.0.0.1:{closed}/portal"
    )

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"database"}, outcome.output
    assert outcome.statuses["migrations"] == "SKIPPED"
    assert outcome.statuses["identity providers"] == "SKIPPED"
    line = outcome.line("database")
    assert f"postgresql+psycopg://portal:***@127.0.0.1:{closed}/portal does not answer" in line
    assert "DATABASE_URL" in line
    assert_no_secrets(outcome.output)


def test_a_database_behind_the_migrations_is_a_problem(deployment: Deployment) -> None:
    app = create_app(deployment.config())
    script = ScriptDirectory(app.extensions["migrate"].directory)
    (head,) = script.get_heads()
    older = next(r.revision for r in script.walk_revisions() if r.revision != head)
    with deployment.session() as session:
        session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": older})
    try:
        outcome = run_check(deployment)
    finally:
        with deployment.session() as session:
            session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"migrations"}, outcome.output
    line = outcome.line("migrations")
    assert f"behind the code (at {older}; head {head})" in line
    assert "db upgrade" in line
    # The schema is not trusted, so the providers (read from it) are not asked.
    assert outcome.statuses["identity providers"] == "SKIPPED"


def test_a_closed_smtp_port_is_a_problem(deployment: Deployment) -> None:
    closed = free_port()
    allow_smtp(closed)  # this test knows the port is closed
    outcome = run_check(deployment, MAIL_PORT=closed)

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"mail server"}, outcome.output
    line = outcome.line("mail server")
    assert f"127.0.0.1:{closed} (none): connect failed" in line
    assert "MAIL_PORT" in line
    assert_no_secrets(outcome.output)


def test_a_refused_smtp_login_is_a_problem_and_the_password_is_not_shown(
    deployment: Deployment,
) -> None:
    wrong = "wrong-smtp-password-77"
    outcome = run_check(deployment, MAIL_PASSWORD=wrong)

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"mail server"}, outcome.output
    line = outcome.line("mail server")
    assert "login failed (SMTPAuthenticationError" in line
    assert "MAIL_PASSWORD" in line
    assert_no_secrets(outcome.output, wrong)


@contextmanager
def extra_provider(deployment: Deployment, slug: str, issuer: str, **kwargs: Any) -> Iterator[None]:
    with deployment.session() as session:
        add_provider(session, slug, issuer, **kwargs)
    try:
        yield
    finally:
        with deployment.session() as session:
            session.execute(delete(IdentityProvider).where(IdentityProvider.slug == slug))


def test_a_provider_whose_discovery_document_is_missing_is_a_problem(
    deployment: Deployment,
) -> None:
    with extra_provider(deployment, "gone", f"{deployment.idp}/gone"):
        outcome = run_check(deployment)

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"identity provider gone"}, outcome.output
    line = outcome.line("identity provider gone")
    assert "discovery_unreachable" in line and "404" in line
    assert f"{deployment.idp}/gone/.well-known/openid-configuration" in line
    assert outcome.statuses["identity provider campus"] == "OK"


def test_a_provider_whose_issuer_differs_is_a_problem(deployment: Deployment) -> None:
    with extra_provider(
        deployment,
        "elsewhere",
        "https://login.elsewhere.example",
        discovery_url=f"{deployment.idp}/.well-known/openid-configuration",
    ):
        outcome = run_check(deployment)

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"identity provider elsewhere"}, outcome.output
    line = outcome.line("identity provider elsewhere")
    assert f"names the issuer '{deployment.idp}'" in line
    assert "not the configured 'https://login.elsewhere.example'" in line


def test_no_enabled_provider_is_a_problem(deployment: Deployment) -> None:
    with deployment.session() as session:
        session.execute(update(IdentityProvider).values(enabled=False))
    try:
        outcome = run_check(deployment)
    finally:
        with deployment.session() as session:
            session.execute(update(IdentityProvider).values(enabled=True))

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"identity providers"}, outcome.output
    assert "nobody can log in" in outcome.line("identity providers")


def test_an_upload_folder_nobody_can_write_is_a_problem(
    deployment: Deployment, tmp_path: Path
) -> None:
    if os.geteuid() == 0:
        # root writes whatever the mode says; a folder under a regular file can never be made.
        (tmp_path / "a-file").write_text("not a folder\n")
        folder = tmp_path / "a-file" / "attachments"
    else:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
    try:
        outcome = run_check(deployment, ATTACHMENT_FOLDER=str(folder))
    finally:
        if folder.is_dir():
            folder.chmod(0o700)

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"upload folder"}, outcome.output
    line = outcome.line("upload folder")
    assert str(folder) in line and "PORTAL_ATTACHMENT_FOLDER" in line


def test_a_missing_upload_folder_that_can_be_made_passes_and_is_not_made(
    deployment: Deployment, tmp_path: Path
) -> None:
    folder = tmp_path / "not" / "yet"
    outcome = run_check(deployment, ATTACHMENT_FOLDER=str(folder))

    assert outcome.exit_code == 0, outcome.output
    assert "will be created at the first upload" in outcome.line("upload folder")
    # The check leaves nothing behind (made as another user, it could lock the portal out).
    assert list(tmp_path.iterdir()) == []


def test_a_check_that_fails_unforeseen_is_a_problem_line_not_a_traceback(
    deployment: Deployment,
) -> None:
    outcome = run_check(deployment, ATTACHMENT_FOLDER=42)  # not a path: nothing foresaw it

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"upload folder"}, outcome.output
    assert "the check itself failed (TypeError" in outcome.line("upload folder")
    assert outcome.statuses["rate-limit storage"] == "OK"  # the checks after it still ran


@pytest.mark.parametrize("how", ["option", "WEB_CONCURRENCY"])
def test_per_process_rate_limits_with_several_workers_are_a_problem(
    deployment: Deployment, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    args: tuple[str, ...] = ()
    if how == "option":
        args = ("--workers", "4")
    else:
        monkeypatch.setenv("WEB_CONCURRENCY", "4")  # as gunicorn reads it
    outcome = run_check(deployment, *args, RATELIMIT_STORAGE_URI="memory://")

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"rate-limit storage"}, outcome.output
    line = outcome.line("rate-limit storage")
    assert "memory:// with 4 worker(s) on 1 host(s)" in line
    assert "4 times looser" in line and "PORTAL_RATELIMIT_STORAGE_URI" in line


def test_a_rate_limit_store_that_does_not_answer_is_a_problem(deployment: Deployment) -> None:
    closed = free_port()
    outcome = run_check(
        deployment,
        "--workers",
        "2",
        RATELIMIT_STORAGE_URI=f"redis://:redis-pass-31c9@127.0.0.1:{closed}/0",
    )

    assert outcome.exit_code == 1, outcome.output
    assert outcome.problems == {"rate-limit storage"}, outcome.output
    assert f"redis://:***@127.0.0.1:{closed}/0 does not answer" in outcome.line(
        "rate-limit storage"
    )
    assert_no_secrets(outcome.output, "redis-pass-31c9")


def test_a_bad_workers_value_is_a_clear_error(deployment: Deployment) -> None:
    outcome = run_check(deployment, "--workers", "0")

    assert outcome.exit_code == 2
    assert "Invalid value for '--workers'" in outcome.output
    assert "Traceback" not in outcome.output
