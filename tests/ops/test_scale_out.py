"""Scale-out: two gunicorn instances ("hosts") over one PostgreSQL and one Redis behave as one
portal (../shared/DESIGN.md, Architecture: "any number of gunicorn workers on any number of hosts").

The deployment is the one README describes, on one machine: the database migrated by its owner
role (``flask db upgrade``) and served through an app role (``flask audit grant-app-role``); two
gunicorn instances, each with its own instance folder and the same ``SECRET_KEY``, OIDC client
key and shared attachment folder, in production mode (cookies not Secure, as there is no TLS
proxy here); Flask-Limiter's counters in the local Redis (a random database and a key prefix of
this run's, whose keys are deleted afterwards); a real identity provider (oidc-provider-mock);
two outbox workers (``flask mail deliver``) against a real SMTP server (aiosmtpd).

Requests come "through the proxy": ``PORTAL_TRUSTED_PROXIES=1`` and an ``X-Forwarded-For`` per
test, so each test is its own client address for the rate limits. Both instances are reached
as 127.0.0.1 on two ports, so one ``requests.Session`` carries its cookies to both, as a browser
does to one public name whose requests a load balancer spreads over hosts.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
import sqlalchemy as sa
from flask import Flask
from joserfc.jwk import RSAKey
from pypdf import PdfWriter
from sqlalchemy import select

from portal import create_app
from portal.auth.models import Role
from portal.extensions import db as _db
from portal.institutions.models import Institution, InstitutionState
from portal.notifications.models import OutboxMessage, OutboxState
from portal.proposals.models import Attachment
from tests.databases import POSTGRES_ADMIN_URL, require_or_skip, temporary_database
from tests.factories import make_institution, make_outbox_message, make_proposal, make_user
from tests.notifications.smtp import RecordingHandler, SmtpServer
from tests.support.gunicorn import ROOT, Server, host_environ, started, stop
from tests.support.live import live_session
from tests.support.oidc import add_provider, authorize_at_mock, mock_idp_process, set_claims

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("scale_out")]

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: The provider both hosts log in through.
SLUG = "scale"
#: The login endpoints' limit on both hosts: the sixth request in a minute is refused.
AUTH_LIMIT = 5
#: Mails queued for the two outbox workers, and the batch each claims at a time.
MAILS = 200
BATCH = 5
#: The longest the SMTP server holds the first mail while waiting for the second worker.
OVERLAP_SECONDS = 30
WORKER_SECONDS = 120
#: The attachment folder every host mounts (here: a folder of the test's).
SHARED_ATTACHMENTS = "shared-attachments"


@dataclass(frozen=True)
class Deployment:
    a: Server
    b: Server
    folder: Path
    idp: str
    #: The environment every host of the deployment has (its instance folder aside).
    env: dict[str, str]
    #: The portal in this process, on the owner's URL: to seed rows and read what the hosts wrote.
    app: Flask
    officer_sub: str
    officer_name: str
    institution_id: int
    redis: redis.Redis
    redis_prefix: str


def _run(args: list[str], env: dict[str, str]) -> str:
    """A ``flask --app portal`` command, as an operator runs it; fails the test with its output."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "portal", *args],
        cwd=ROOT,
        env=host_environ(env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"flask {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@contextmanager
def _redis_db() -> Iterator[tuple[redis.Redis, str, str]]:
    """A Redis database (random, 1-15) and a key prefix of this run's; yields the client, the
    storage URI for the hosts and the prefix. Only keys carrying the prefix are deleted after."""
    number = secrets.randbelow(15) + 1
    client = redis.Redis.from_url(f"{REDIS_URL}/{number}")
    try:
        client.ping()
    except redis.RedisError as e:
        client.close()
        require_or_skip(f"Redis is not reachable at {REDIS_URL}: {type(e).__name__}")
    prefix = f"atom-scaleout-{uuid.uuid4().hex[:12]}"
    try:
        yield client, f"{REDIS_URL}/{number}", prefix
    finally:
        for key in client.scan_iter(match=f"*{prefix}*"):
            client.delete(key)
        client.close()


@contextmanager
def _app_role() -> Iterator[str]:
    """A PostgreSQL login role for the web and worker processes; dropped after the database that
    holds its grants (so enter it first)."""
    role = f"atom_app_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    except sa.exc.OperationalError as e:
        admin.dispose()
        require_or_skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {type(e).__name__}")
    try:
        yield role
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The deployment, up once for the module: every test makes the rows it acts on, or uses the
    officer and the application under review made here."""
    folder = tmp_path_factory.mktemp("scaleout")
    shared_attachments = folder / SHARED_ATTACHMENTS
    with ExitStack() as stack:
        r, storage_uri, prefix = stack.enter_context(_redis_db())
        role = stack.enter_context(_app_role())
        owner_url = stack.enter_context(temporary_database("postgresql", folder))
        app_url = sa.make_url(owner_url).set(username=role).render_as_string(hide_password=False)
        env = {
            "PORTAL_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            # No TLS proxy in this test: the cookies must travel over plain HTTP.
            "PORTAL_SESSION_COOKIE_SECURE": "false",
            "PORTAL_TRUSTED_PROXIES": "1",
            "PORTAL_BASE_URL": "https://portal.example.org",
            "PORTAL_RATELIMIT_STORAGE_URI": storage_uri,
            "PORTAL_RATELIMIT_KEY_PREFIX": prefix,
            "PORTAL_AUTH_RATE_LIMIT": f"{AUTH_LIMIT} per minute",
            "PORTAL_OIDC_CLIENT_KEY": RSAKey.generate_key(2048, private=True)
            .as_pem(private=True)
            .decode(),
            f"PORTAL_OIDC_SECRET_{SLUG.upper()}": secrets.token_urlsafe(24),
            "PORTAL_ATTACHMENT_FOLDER": str(shared_attachments),
        }
        owner_env = {**env, "DATABASE_URL": owner_url}
        _run(["db", "upgrade"], owner_env)
        _run(["audit", "grant-app-role", role], owner_env)
        env["DATABASE_URL"] = app_url

        # Both hosts start at once and load the app in their workers while the identity provider
        # starts and the rows the tests act on are written; then both must be ready.
        a, b = (
            stack.enter_context(started(_host(env, folder, name), folder, name=name))
            for name in ("a", "b")
        )
        stack.callback(stop, a.process, b.process)  # both at once, before anything else ends
        idp = stack.enter_context(mock_idp_process())
        app = create_app({"ENV": "testing", "DATABASE_URL": owner_url})
        stack.callback(_dispose, app)
        with live_session(app) as s:
            add_provider(s, SLUG, idp)
            officer = make_user(s, Role.PROGRAM_OFFICER, issuer=idp)
            officer_sub, officer_name = officer.identities[0].subject, officer.display_name
            set_claims(
                idp,
                officer_sub,
                {"email": officer.email, "email_verified": True, "name": officer_name},
            )
            institution_id = make_institution(s, state=InstitutionState.UNDER_REVIEW).id

        a.wait_until_ready()
        b.wait_until_ready()
        yield Deployment(
            a, b, folder, idp, env, app, officer_sub, officer_name, institution_id, r, prefix
        )


def _host(env: dict[str, str], folder: Path, name: str) -> dict[str, str]:
    """The environment of host ``name``: the deployment's, and an instance folder of its own
    (nothing a host keeps locally is seen by another)."""
    return {**env, "PORTAL_INSTANCE_PATH": str(folder / f"host-{name}" / "instance")}


def _dispose(app: Flask) -> None:
    with app.app_context():
        _db.session.remove()
        _db.engine.dispose()


def _browser(client_ip: str) -> requests.Session:
    """A browser behind the proxy, seen by the hosts at ``client_ip``."""
    browser = requests.Session()
    browser.headers["X-Forwarded-For"] = client_ip
    return browser


def _csrf_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)


def _log_in(
    dep: Deployment,
    browser: requests.Session,
    start: Server,
    finish: Server,
    sub: str | None = None,
) -> str:
    """A whole login (of the officer unless ``sub`` is given): the login page and "Log in" on
    ``start``, the provider's form, and its redirect back answered by ``finish``. Returns the
    callback URL the provider sent the browser to."""
    page = browser.get(f"{start.url}/auth/login", timeout=10)
    assert page.status_code == 200, start.log_tail()
    pressed = browser.post(
        f"{start.url}/auth/login/{SLUG}",
        data={"csrf_token": _csrf_token(page.text), "next": ""},
        allow_redirects=False,
        timeout=10,
    )
    assert pressed.status_code == 302, f"{pressed.status_code}: {start.log_tail()}"
    assert pressed.headers["Location"].startswith(dep.idp)
    callback = authorize_at_mock(pressed.headers["Location"], sub or dep.officer_sub)
    back = urlsplit(callback)
    done = browser.get(f"{finish.url}{back.path}?{back.query}", allow_redirects=False, timeout=10)
    assert done.status_code == 302, f"{done.status_code}: {finish.log_tail()}"
    assert done.headers["Location"].endswith("/dashboard"), done.headers["Location"]
    return callback


def test_a_login_started_on_one_host_finishes_on_the_other_and_works_on_both(
    deployment: Deployment,
) -> None:
    """Login state (state, nonce, PKCE verifier) lives in the database and the session in a
    cookie signed with the shared key: a load balancer may send each step to any host."""
    dep = deployment
    browser = _browser("203.0.113.1")

    callback = _log_in(dep, browser, start=dep.a, finish=dep.b)

    assert callback.startswith(f"{dep.a.url}/auth/callback/{SLUG}?"), (
        "the provider sends the browser back to the address the login started at"
    )
    for host in (dep.a, dep.b, dep.a):
        account = browser.get(f"{host.url}/auth/account", allow_redirects=False, timeout=10)
        assert account.status_code == 200, f"{host.name}: {account.status_code}"
        assert dep.officer_name in account.text
    anonymous = _browser("203.0.113.1").get(
        f"{dep.b.url}/auth/account", allow_redirects=False, timeout=10
    )
    assert anonymous.status_code == 302, "the page is not open to everyone: the cookie counted"


def test_both_hosts_show_identity_providers_the_same_client_key(deployment: Deployment) -> None:
    """``private_key_jwt`` needs one key pair per deployment (``PORTAL_OIDC_CLIENT_KEY``)."""
    keys = [
        requests.get(f"{host.url}/.well-known/jwks.json", timeout=10).json()
        for host in (deployment.a, deployment.b)
    ]
    assert keys[0] == keys[1] and len(keys[0]["keys"]) == 1


def test_a_decision_taken_on_one_host_is_shown_by_the_other(deployment: Deployment) -> None:
    """The officer reads the application on B, approves it on A with the CSRF token from B's
    page (the token is in the shared-key session cookie), and B shows the approval."""
    dep = deployment
    browser = _browser("203.0.113.2")
    _log_in(dep, browser, start=dep.b, finish=dep.b)
    page = f"/institutions/{dep.institution_id}"
    before = browser.get(f"{dep.b.url}{page}", timeout=10)
    assert before.status_code == 200 and "Under review" in before.text

    unprotected = browser.post(
        f"{dep.a.url}{page}/transition",
        data={"action": "approve"},
        allow_redirects=False,
        timeout=10,
    )
    assert unprotected.status_code == 400, "CSRF protection is on: the token below counts"
    decided = browser.post(
        f"{dep.a.url}{page}/transition",
        data={"csrf_token": _csrf_token(before.text), "action": "approve", "reason": ""},
        allow_redirects=False,
        timeout=10,
    )

    assert decided.status_code == 302, f"{decided.status_code}: {dep.a.log_tail()}"
    after = browser.get(f"{dep.b.url}{page}", timeout=10)
    assert "Approved, awaiting agreement" in after.text
    assert "<code>institution.approve</code>" in after.text, "B shows A's audit event"
    with live_session(dep.app) as s:
        institution = s.get(Institution, dep.institution_id)
        assert institution is not None and institution.state == InstitutionState.APPROVED


def test_the_login_rate_limit_is_counted_across_both_hosts(deployment: Deployment) -> None:
    """Alternating hosts, one client's sixth request in the minute is refused; the counter is in
    Redis, so neither host alone has seen more than three."""
    dep = deployment
    browser = _browser("203.0.113.3")
    remaining = []
    for i in range(AUTH_LIMIT):
        host = (dep.a, dep.b)[i % 2]
        resp = browser.get(f"{host.url}/auth/login", timeout=10)
        assert resp.status_code == 200, f"request {i + 1} on {host.name}: {resp.status_code}"
        remaining.append(int(resp.headers["X-RateLimit-Remaining"]))

    sixth = browser.get(f"{dep.b.url}/auth/login", timeout=10)

    assert remaining == [4, 3, 2, 1, 0]
    assert sixth.status_code == 429
    other = _browser("203.0.113.4").get(f"{dep.a.url}/auth/login", timeout=10)
    assert other.status_code == 200, "the limit is per client address, not for everyone"
    assert any(dep.redis.scan_iter(match=f"*{dep.redis_prefix}*")), "the counters are in Redis"


def test_a_file_uploaded_on_one_host_is_downloaded_from_the_other(deployment: Deployment) -> None:
    """Proposals' PDFs are the one thing kept outside the database: in the attachment folder,
    which every host must share."""
    dep = deployment
    with live_session(dep.app) as s:
        pi = make_user(s, Role.RESEARCHER, issuer=dep.idp)
        proposal_id = make_proposal(s, pi=pi).id
        sub = pi.identities[0].subject
        set_claims(dep.idp, sub, {"email": pi.email, "email_verified": True, "name": "PI"})
    browser = _browser("203.0.113.5")
    _log_in(dep, browser, start=dep.a, finish=dep.a, sub=sub)
    page = browser.get(f"{dep.a.url}/proposals/{proposal_id}", timeout=10)
    assert page.status_code == 200
    document = _pdf()

    uploaded = browser.post(
        f"{dep.a.url}/proposals/{proposal_id}/attachments",
        data={"csrf_token": _csrf_token(page.text), "kind": "description"},
        files={"file": ("description.pdf", document, "application/pdf")},
        allow_redirects=False,
        timeout=10,
    )

    assert uploaded.status_code == 303, f"{uploaded.status_code}: {dep.a.log_tail()}"
    with live_session(dep.app) as s:
        attachment_id = s.scalar(select(Attachment.id).where(Attachment.proposal_id == proposal_id))
    assert attachment_id is not None, "the upload was accepted"
    downloaded = browser.get(
        f"{dep.b.url}/proposals/{proposal_id}/attachments/{attachment_id}", timeout=10
    )
    assert downloaded.status_code == 200, f"{downloaded.status_code}: {dep.b.log_tail()}"
    assert downloaded.content == document
    copies = [p for p in dep.folder.rglob("*") if p.is_file() and p.read_bytes() == document]
    assert [p.relative_to(dep.folder).parts[0] for p in copies] == [SHARED_ATTACHMENTS], (
        "the file is kept once, in the shared folder, not in a host's own"
    )


def _pdf() -> bytes:
    """A real one-page PDF (blank A4)."""
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _sent(output: str) -> int:
    """How many mails ``flask mail deliver`` reports it sent (none failed, none dead)."""
    found = re.search(r"^sent (\d+), will retry 0, dead 0$", output, re.MULTILINE)
    assert found, output
    return int(found.group(1))


class OverlapHandler(RecordingHandler):
    """Holds each connection's first mail until mail has come over two connections (two
    workers), so both workers are mid-delivery at once however their start-up times differ.
    Gives up after ``OVERLAP_SECONDS`` (the test then fails on the counts, not here)."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: set[Any] = set()
        self.overlapped = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.peers.add(session.peer)
        if len(self.peers) >= 2:
            self.overlapped.set()
        else:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.overlapped.wait(), OVERLAP_SECONDS)
        return await super().handle_DATA(server, session, envelope)


def test_two_outbox_workers_deliver_every_mail_exactly_once_between_them(
    deployment: Deployment,
) -> None:
    """Two ``mail deliver`` runs at once claim the outbox in small batches (``FOR UPDATE SKIP
    LOCKED``): every queued mail reaches the SMTP server once, and each run sent some of them."""
    dep = deployment
    with live_session(dep.app) as s:
        for n in range(MAILS):
            make_outbox_message(s, to_addr=f"scale{n}@example.org")
    with live_session(dep.app) as s:
        due = set(
            s.scalars(
                select(OutboxMessage.message_id).where(OutboxMessage.state == OutboxState.QUEUED)
            )
        )
    smtp = SmtpServer()
    handler = smtp.handler = OverlapHandler()
    smtp.start()
    env = host_environ(
        {
            **_host(dep.env, dep.folder, "mail"),
            "PORTAL_MAIL_SERVER": smtp.host,
            "PORTAL_MAIL_PORT": str(smtp.port),
            "PORTAL_MAIL_BATCH_SIZE": str(BATCH),
            "PORTAL_MAIL_TIMEOUT": str(OVERLAP_SECONDS * 2),
        }
    )
    try:
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "portal", "mail", "deliver"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [w.communicate(timeout=WORKER_SECONDS) for w in workers]
    finally:
        smtp.stop()

    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, f"{out}\n{err}"
    sent = [_sent(out) for out, _ in outputs]
    received = Counter(smtp.message_ids())
    assert len(due) >= MAILS
    assert set(received) == due, "every queued mail arrived"
    assert max(received.values()) == 1, "and none twice"
    assert sum(sent) == len(due) and min(sent) > 0, f"both workers delivered some: {sent}"
    assert handler.overlapped.is_set(), "the workers delivered at the same time"
    with live_session(dep.app) as s:
        states = Counter(
            s.scalars(select(OutboxMessage.state).where(OutboxMessage.message_id.in_(due)))
        )
    assert states == {OutboxState.SENT: len(due)}
