"""``flask --app portal check``: what is wrong with this deployment, one line per check.

Each check prints ``OK``, ``PROBLEM`` (with what to do), ``WARNING`` (informational only) or
``SKIPPED`` (it needs something that already failed), and the command exits with 1 when any check
found a problem, else 0, so a deployment script or a monitoring job can run it after every release.

It talks to the real things the portal depends on, as the portal would: the database (and its
migrations), the SMTP relay (EHLO, STARTTLS, login, QUIT; no mail is sent), each enabled identity
provider (discovery document and key set, the same test as the admin page's "Test this provider"),
the upload folder (a file is created and removed) and the shared rate-limit storage (a ping). Run
it as the user the portal runs as, with the same environment: file permissions are that user's.

Nothing secret is printed: URLs are shown with their passwords masked, and every line is scrubbed
of the configured secrets (the secret key, the database, SMTP and storage passwords, client
secrets) in case an error message quotes one.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import ssl
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import click
import requests
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from portal.config import (
    DEV_SECRET_KEY,
    MIN_SECRET_KEY_BITS,
    MIN_SECRET_KEY_LENGTH,
    secret_key_bits,
)
from portal.extensions import db

OK = "OK"
WARNING = "WARNING"
PROBLEM = "PROBLEM"
SKIPPED = "SKIPPED"

#: Shown instead of a password or secret.
MASK = "***"
#: Secrets at least this long are scrubbed from every line printed.
SCRUB_MIN_LENGTH = 8

#: How to make a good secret key (the same advice the app gives when it refuses to start).
KEY_ADVICE = (
    'set SECRET_KEY to a long random value, e.g. python -c "import secrets; '
    'print(secrets.token_urlsafe(48))", the same on every host'
)


@dataclass(frozen=True)
class Finding:
    """The outcome of one check: ``status`` is OK, WARNING, PROBLEM or SKIPPED; ``todo`` says what
    an operator should do about a problem (or a warning)."""

    status: str
    name: str
    detail: str
    todo: str = ""

    def line(self) -> str:
        out = f"{self.status:<7} {self.name}: {self.detail}"
        return f"{out} → {self.todo}" if self.todo else out


def _error(e: BaseException) -> str:
    """A short, single-line description of an error (the driver's own error for database ones)."""
    inner: BaseException = e.orig if isinstance(e, DBAPIError) and e.orig is not None else e
    lines = [s.strip() for s in str(inner).splitlines() if s.strip()]
    message = lines[0] if lines else ""
    return f"{type(inner).__name__}: {message}"[:300] if message else type(inner).__name__


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
    except ValueError:
        return "(a URL that cannot be parsed)"


def _url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def secrets_in_config(config: dict[str, Any]) -> list[str]:
    """Every secret the configuration holds, to be scrubbed from anything printed."""
    found: list[Any] = [
        config.get("SECRET_KEY"),
        config.get("MAIL_PASSWORD"),
        config.get("METRICS_TOKEN"),
        config.get("OIDC_CLIENT_KEY"),
        *(config.get("OIDC_CLIENT_SECRETS") or {}).values(),
        *(v for k, v in os.environ.items() if k.startswith("PORTAL_OIDC_SECRET_")),
        _url_password(str(config.get("RATELIMIT_STORAGE_URI") or "")),
    ]
    # An unparsable URL has no password we could find either.
    with contextlib.suppress(Exception):
        found.append(make_url(str(config.get("SQLALCHEMY_DATABASE_URI"))).password)
    texts = {str(s) for s in found if s}
    # Shorter values would mask ordinary words in the messages (a short secret key is reported as
    # a problem of its own; URLs have their passwords masked whatever their length).
    return sorted((s for s in texts if len(s) >= SCRUB_MIN_LENGTH), key=len, reverse=True)


def scrubber(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function that replaces each of ``secrets`` in a text by ``***``."""
    ordered = sorted(set(secrets), key=len, reverse=True)

    def scrub(line: str) -> str:
        for s in ordered:
            line = line.replace(s, MASK)
        return line

    return scrub


# --------------------------------------------------------------------------------------------
# The checks (each in an application context)
# --------------------------------------------------------------------------------------------


def check_environment() -> Finding:
    env = current_app.config["ENV"]
    if env == "production":
        return Finding(OK, "environment", "ENV is production")
    return Finding(
        WARNING,
        "environment",
        f"ENV is {env!r}, not production: cookies are not Secure and a development secret key "
        "stands in for a missing one (informational; fine for development and tests)",
        "on a deployment set PORTAL_ENV=production",
    )


def check_secret_key() -> Finding:
    """The rules the app enforces at start-up in production (``portal.config``), reported for any
    ENV; the key itself is never shown."""
    key = current_app.config.get("SECRET_KEY")
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    name = "secret key"
    if not key:
        return Finding(PROBLEM, name, "SECRET_KEY is not set", KEY_ADVICE)
    key = str(key)
    if key == DEV_SECRET_KEY:
        return Finding(PROBLEM, name, "SECRET_KEY is the development default", KEY_ADVICE)
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return Finding(
            PROBLEM,
            name,
            f"SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters",
            KEY_ADVICE,
        )
    bits = secret_key_bits(key)
    if bits < MIN_SECRET_KEY_BITS:
        return Finding(
            PROBLEM,
            name,
            "SECRET_KEY is too predictable (repeated or few distinct characters)",
            KEY_ADVICE,
        )
    return Finding(OK, name, f"long and random enough (at least {MIN_SECRET_KEY_BITS} bits)")


def check_database() -> Finding:
    where = db.engine.url.render_as_string(hide_password=True)
    try:
        with db.engine.connect() as conn:
            conn.execute(select(1))
    except Exception as e:
        return Finding(
            PROBLEM,
            "database",
            f"{where} does not answer ({_error(e)})",
            "check DATABASE_URL, that the server runs, and that this host may connect",
        )
    return Finding(OK, "database", f"{where} answers")


def check_migrations() -> Finding:
    """The database's ``alembic_version`` against the head(s) of the migrations this code ships."""
    from alembic.script import ScriptDirectory

    from portal.ops.health import migration_heads

    name = "migrations"
    upgrade = "run flask --app portal db upgrade (as the role that owns the tables)"
    heads = migration_heads()
    try:
        with db.engine.connect() as conn:
            current = set(conn.scalars(text("SELECT version_num FROM alembic_version")))
    except Exception:
        return Finding(
            PROBLEM, name, "the database was never migrated (no alembic_version)", upgrade
        )
    shown_heads = ", ".join(sorted(heads))
    if current == heads:
        return Finding(OK, name, f"the database is at the code's head ({shown_heads})")
    if not current:
        return Finding(PROBLEM, name, "the database was never migrated (no revision)", upgrade)
    shown = ", ".join(sorted(current))
    script = ScriptDirectory(str(current_app.extensions["migrate"].directory))
    known = {r.revision for r in script.walk_revisions()}
    if current <= known:
        return Finding(
            PROBLEM,
            name,
            f"the database is behind the code (at {shown}; head {shown_heads})",
            upgrade,
        )
    return Finding(
        PROBLEM,
        name,
        f"the database is ahead of the code (at {shown}, which this release does not know)",
        "deploy the release that migrated it",
    )


def check_mail_server() -> Finding:
    """EHLO, STARTTLS if configured, login if configured, QUIT: what the worker needs before its
    first mail, without sending one."""
    from portal.notifications.delivery import SmtpSettings

    name = "mail server"
    try:
        s = SmtpSettings.from_config(current_app.config)
    except (ValueError, TypeError, KeyError) as e:
        return Finding(PROBLEM, name, str(e), "fix the MAIL_* settings")
    where = f"{s.host}:{s.port} ({s.security})"
    todo = {
        "connect": "check MAIL_SERVER, MAIL_PORT and MAIL_SECURITY (ssl on 465, starttls on 587), "
        "and that this host may reach the relay",
        "EHLO": "check that MAIL_SERVER:MAIL_PORT is an SMTP relay",
        "STARTTLS": "check MAIL_SECURITY (starttls on 587, ssl on 465) and the relay's certificate",
        "login": "check MAIL_USERNAME and MAIL_PASSWORD",
        "QUIT": "check the relay's logs",
    }
    step = "connect"
    done: list[str] = []
    try:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if s.security == "ssl":
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            step = "EHLO"
            _ehlo(smtp)
            done.append("EHLO")
            if s.security == "starttls":
                step = "STARTTLS"
                smtp.starttls(context=context)
                _ehlo(smtp)
                done.append("STARTTLS")
            if s.username:
                step = "login"
                smtp.login(s.username, s.password or "")
                done.append(f"login as {s.username}")
            step = "QUIT"
            smtp.quit()
        finally:
            smtp.close()
    except (smtplib.SMTPException, OSError) as e:
        return Finding(PROBLEM, name, f"{where}: {step} failed ({_error(e)})", todo[step])
    return Finding(OK, name, f"{where} answers: {', '.join(done)}")


def _ehlo(smtp: smtplib.SMTP) -> None:
    code, reply = smtp.ehlo()
    if not 200 <= code < 300:
        raise smtplib.SMTPHeloError(code, reply)


def check_identity_providers() -> list[Finding]:
    """Each enabled provider's discovery document (its issuer exactly the configured one) and key
    set, read afresh by the admin page's "Test this provider"."""
    from portal.auth.models import IdentityProvider
    from portal.auth.oidc import LoginError
    from portal.auth.oidc import test_provider as probe

    providers = db.session.scalars(
        select(IdentityProvider).where(IdentityProvider.enabled).order_by(IdentityProvider.slug)
    ).all()
    if not providers:
        return [
            Finding(
                PROBLEM,
                "identity providers",
                "none is enabled: nobody can log in",
                "add one (PORTAL_OIDC_PROVIDERS and flask --app portal auth seed-providers)",
            )
        ]
    findings = []
    for p in providers:
        name = f"identity provider {p.slug}"
        try:
            findings.append(Finding(OK, name, probe(p)))
        except LoginError as e:
            cause = f"; {_error(e.__cause__)}" if e.__cause__ is not None else ""
            detail = f"{e} [{e.reason}{cause}]"
            todo = f"check its issuer and discovery URL ({mask_url(p.metadata_url)})"
            if e.reason == "discovery_issuer_mismatch":
                found = _discovered_issuer(p.metadata_url)
                detail = (
                    f"its discovery document names the issuer {found!r}, "
                    f"not the configured {p.issuer!r} [{e.reason}]"
                )
                todo = "set the provider's issuer to exactly the one its discovery document names"
            elif e.reason == "discovery_unreachable":
                todo = (
                    f"check its discovery URL ({mask_url(p.metadata_url)}) and that this host "
                    "reaches it"
                )
            findings.append(Finding(PROBLEM, name, detail, todo))
    return findings


def _discovered_issuer(url: str) -> str | None:
    """The issuer a discovery document names (to show next to the configured one), or None."""
    try:
        resp = requests.get(url, timeout=current_app.config["OIDC_HTTP_TIMEOUT_SECONDS"])
        issuer = resp.json().get("issuer")
    except (requests.RequestException, ValueError, AttributeError):
        return None
    return str(issuer) if issuer is not None else None


def check_upload_folder() -> Finding:
    """The attachment folder exists and takes a new file, or can be created (a folder is made and
    removed where it would be)."""
    from portal.proposals.attachments import attachment_folder

    name = "upload folder"
    folder = attachment_folder()
    todo = (
        "set PORTAL_ATTACHMENT_FOLDER to a folder the portal's user may write "
        "(e.g. chown it to that user, chmod 0700)"
    )
    if folder.exists():
        if not folder.is_dir():
            return Finding(PROBLEM, name, f"{folder} is not a folder", todo)
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".portal-check-"):
                pass
        except OSError as e:
            return Finding(PROBLEM, name, f"{folder} is not writable ({_os_error(e)})", todo)
        return Finding(OK, name, f"{folder} is writable")
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return Finding(PROBLEM, name, f"{folder} cannot be created: {parent} is not a folder", todo)
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".portal-check-"))
    except OSError as e:
        return Finding(
            PROBLEM, name, f"{folder} cannot be created in {parent} ({_os_error(e)})", todo
        )
    return Finding(OK, name, f"{folder} does not exist yet and will be created at the first upload")


def _os_error(e: OSError) -> str:
    return e.strerror or type(e).__name__


def check_rate_limit_storage(workers: int, hosts: int) -> Finding:
    """Flask-Limiter's storage: per process (``memory://``) is only right for one process in all;
    a shared store must answer."""
    from limits.storage import storage_from_string

    name = "rate-limit storage"
    uri = str(current_app.config.get("RATELIMIT_STORAGE_URI") or "memory://")
    shown = mask_url(uri)
    processes = workers * hosts
    setup = f"{workers} worker(s) on {hosts} host(s)"
    if uri.startswith("memory://"):
        if processes > 1:
            return Finding(
                PROBLEM,
                name,
                f"memory:// with {setup}: each process counts on its own, so every limit is "
                f"{processes} times looser than configured",
                "set PORTAL_RATELIMIT_STORAGE_URI to a shared store, e.g. redis://host:6379/0 "
                "(install the portal with its redis extra)",
            )
        return Finding(
            OK, name, "memory:// for one worker on one host (--workers/--hosts for more)"
        )
    options = current_app.config.get("RATELIMIT_STORAGE_OPTIONS") or {}
    try:
        answers = storage_from_string(uri, **options).check()
    except Exception as e:  # unknown scheme, missing driver, bad options
        return Finding(
            PROBLEM,
            name,
            f"{shown} cannot be used ({_error(e)})",
            "check PORTAL_RATELIMIT_STORAGE_URI (and install its driver, e.g. the redis extra)",
        )
    if not answers:
        return Finding(
            PROBLEM,
            name,
            f"{shown} does not answer",
            "check that the store runs and that this host may reach it",
        )
    return Finding(OK, name, f"{shown} answers; shared by {setup}")


def run_checks(*, workers: int = 1, hosts: int = 1) -> list[Finding]:
    """Every check, in order; those that need the database are skipped when it is not usable."""
    findings = [
        _guarded("environment", check_environment),
        _guarded("secret key", check_secret_key),
    ]
    database = _guarded("database", check_database)
    findings.append(database)
    schema_ok = False
    if database.status == OK:
        migrations = _guarded("migrations", check_migrations)
        findings.append(migrations)
        schema_ok = migrations.status == OK
    else:
        findings.append(Finding(SKIPPED, "migrations", "needs the database"))
    findings.append(_guarded("mail server", check_mail_server))
    if schema_ok:
        try:
            findings += _guarded_all("identity providers", check_identity_providers)
        finally:
            db.session.remove()
    else:
        findings.append(
            Finding(SKIPPED, "identity providers", "needs the database at the code's head")
        )
    findings.append(_guarded("upload folder", check_upload_folder))
    findings.append(
        _guarded("rate-limit storage", lambda: check_rate_limit_storage(workers, hosts))
    )
    return findings


def _guarded(name: str, check: Callable[[], Finding]) -> Finding:
    return _guarded_all(name, lambda: [check()])[0]


def _guarded_all(name: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """A check that fails in a way it did not foresee is a problem line too, never a traceback."""
    try:
        return check()
    except Exception as e:
        with contextlib.suppress(Exception):
            db.session.rollback()
        return [
            Finding(
                PROBLEM,
                name,
                f"the check itself failed ({_error(e)})",
                "fix what the error names and run the check again",
            )
        ]


@click.command("check")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    envvar="WEB_CONCURRENCY",
    default=1,
    show_default=True,
    help="gunicorn worker processes per host (default: WEB_CONCURRENCY, as gunicorn reads it).",
)
@click.option(
    "--hosts",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Hosts running the portal behind the load balancer.",
)
@with_appcontext
def check_command(workers: int, hosts: int) -> None:
    """Check this deployment: secret key, database and migrations, SMTP relay, identity providers,
    upload folder, rate-limit storage. Exits with 1 if anything is wrong."""
    scrub = scrubber(secrets_in_config(current_app.config))
    findings = run_checks(workers=workers, hosts=hosts)
    for finding in findings:
        click.echo(scrub(finding.line()))
    problems = sum(f.status == PROBLEM for f in findings)
    warnings = sum(f.status == WARNING for f in findings)
    note = f" ({warnings} warning(s), informational)" if warnings else ""
    if problems:
        click.echo(f"{problems} problem(s) found{note}.")
        raise SystemExit(1)
    click.echo(f"All checks passed{note}.")


def init_app(app: Flask) -> None:
    app.cli.add_command(check_command)
