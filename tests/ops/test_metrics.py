"""``/metrics``: behind its bearer token; what the portal counts (requests, SQL statements, logins,
refusals, rate limits) and what it reads from the database when scraped (the outbox); and, under
gunicorn with several workers, one answer that adds up every worker's counts.

The metric objects are shared by every app in this process (portal/ops/metrics.py), so each test
compares a scrape after its requests with one before them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from gunicorn.config import Config  # type: ignore[import-untyped]
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from portal.auth import oidc
from portal.auth.models import Role
from portal.core import signals
from portal.core.models import utcnow
from portal.extensions import limiter
from portal.notifications.models import OutboxState
from portal.ops import gunicorn_conf, metrics
from tests.factories import make_outbox_message, make_user
from tests.support.app import login
from tests.support.live import live_app
from tests.support.oidc import (
    add_provider,
    authorize_at_mock,
    free_port,
    mock_idp_process,
    oidc_login,
    set_claims,
    start_login,
)

TOKEN = "metrics-token-for-the-tests-0123456789"
ROOT = Path(__file__).resolve().parents[2]
#: Seconds a gunicorn server may take to start and to answer (a bound, never a wait).
START_SECONDS = 60

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the sample ``name{labels}`` grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


def scrape(client: FlaskClient) -> Samples:
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return parse(resp.get_data(as_text=True))


@pytest.fixture
def token(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "METRICS_TOKEN", TOKEN)


# --- the token ---------------------------------------------------------------------------------


@pytest.mark.once
def test_metrics_is_not_there_without_a_token(client: FlaskClient) -> None:
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


@pytest.mark.once
@pytest.mark.parametrize(
    "header",
    [None, "", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer wrong", "Bearer", "Bearer tökén"],
)
def test_metrics_refuses_a_missing_or_wrong_token(
    client: FlaskClient, token: None, header: str | None
) -> None:
    resp = client.get("/metrics", headers={"Authorization": header} if header is not None else {})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "portal_" not in resp.get_data(as_text=True)


@pytest.mark.once
def test_metrics_answers_the_exposition_format_to_the_right_token(
    client: FlaskClient, token: None
) -> None:
    resp = client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.get_data(as_text=True)
    assert "# TYPE portal_http_request_duration_seconds histogram" in body
    assert "# TYPE portal_outbox_waiting gauge" in body
    assert "Set-Cookie" not in resp.headers
    # Prometheus asking for OpenMetrics gets it.
    resp = client.get(
        "/metrics",
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Accept": "application/openmetrics-text; version=1.0.0",
        },
    )
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert resp.get_data(as_text=True).rstrip().endswith("# EOF")


# --- requests ----------------------------------------------------------------------------------


def test_requests_are_counted_by_endpoint_never_by_path(
    app: Flask, client: FlaskClient, token: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "SQL_COUNT_HEADER", True)
    before = scrape(client)
    statements = 0
    for _ in range(2):
        resp = client.get("/")
        assert resp.status_code == 200
        statements += int(resp.headers["X-SQL-Statements"])
    assert client.get("/program/").status_code == 200
    assert client.get("/no-such-page-4711").status_code == 404
    after = scrape(client)

    def seconds(part: str, endpoint: str, status: str = "200", **labels: str) -> float:
        name = f"portal_http_request_duration_seconds_{part}"
        return grown(before, after, name, endpoint=endpoint, method="GET", status=status, **labels)

    def sql(part: str, endpoint: str) -> float:
        return grown(before, after, f"portal_http_request_sql_statements_{part}", endpoint=endpoint)

    assert seconds("count", "core.index") == 2
    assert seconds("bucket", "core.index", le="+Inf") == 2
    assert seconds("sum", "core.index") > 0
    assert seconds("count", "public.overview") == 1
    assert seconds("count", "unmatched", status="404") == 1
    assert sql("count", "core.index") == 2
    assert sql("sum", "core.index") == statements > 0
    assert sql("count", "unmatched") == 1
    # The scrape itself is counted under its endpoint like any request.
    assert value(after, "portal_http_request_sql_statements_count", endpoint="metrics.scrape") >= 1
    labels = {v for (_, pairs) in after for _, v in pairs}
    assert not any("no-such-page" in v or v.startswith("/") for v in labels)


def test_a_refused_request_and_the_refusal_limit_are_counted(
    app: Flask, client: FlaskClient, db: Session, token: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    login(client, make_user(db, Role.RESEARCHER))
    before = scrape(client)
    assert client.get("/admin/audit").status_code == 403
    monkeypatch.setitem(app.config, "REFUSAL_LIMIT", 1)
    assert client.get("/admin/audit").status_code == 429
    after = scrape(client)

    refused = "portal_refused_requests_total"
    limited = "portal_rate_limited_requests_total"
    assert grown(before, after, refused, endpoint="admin.audit_log") == 1
    assert grown(before, after, limited, limit="refusals") == 1


def test_a_flask_limiter_breach_is_counted_as_its_kind_of_limit(tmp_path: Path) -> None:
    enabled = limiter.enabled  # init_app below turns the shared limiter on for every app
    config = {"RATELIMIT_ENABLED": True, "AUTH_RATE_LIMIT": "1 per minute", "METRICS_TOKEN": TOKEN}
    try:
        with live_app("sqlite", tmp_path, config) as app:
            client = app.test_client()
            before = scrape(client)
            assert client.get("/auth/login").status_code == 200
            assert client.get("/auth/login").status_code == 429
            after = scrape(client)
    finally:
        limiter.enabled = enabled

    limited = "portal_rate_limited_requests_total"
    assert grown(before, after, limited, limit="login") == 1
    assert grown(before, after, limited, limit="other") == 0


# --- logins ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idp_url() -> Iterator[str]:
    with mock_idp_process() as url:
        yield url


def test_logins_through_a_real_provider_are_counted_by_outcome(
    app: Flask,
    client: FlaskClient,
    db: Session,
    token: None,
    idp_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.config, "OIDC_CLIENT_SECRETS", {"metrics-idp": "secret-metrics"})
    oidc.clear_metadata_cache()
    add_provider(db, "metrics-idp", idp_url)
    db.commit()
    before = scrape(client)

    # A callback whose state is not the one this browser was given.
    callback = urlsplit(authorize_at_mock(start_login(client, "metrics-idp"), "mallory"))
    query = {k: v[0] for k, v in parse_qs(callback.query).items()}
    query["state"] = "forged-state-value-1234567890"
    assert client.get(callback.path + "?" + urlencode(query)).status_code == 400
    # And a login that works.
    set_claims(idp_url, "ada", {"name": "Ada", "email": "ada@example.org", "email_verified": True})
    assert oidc_login(client, "metrics-idp", idp_url, "ada").status_code == 302

    after = scrape(client)
    oidc.clear_metadata_cache()
    for outcome in ("state_mismatch", "success"):
        assert grown(before, after, "portal_logins_total", outcome=outcome) == 1, outcome


@pytest.mark.once
def test_login_outcomes_stay_a_bounded_set(app: Flask) -> None:
    def count(outcome: str) -> float:
        return metrics.REGISTRY.get_sample_value("portal_logins_total", {"outcome": outcome}) or 0

    other, invalid = count("other"), count("id_token_invalid")
    signals.login_finished.send(app, outcome="id_token_invalid:JoseError:bad signature")
    signals.login_finished.send(app, outcome="made-up-outcome", provider=None)
    # Another app's signals are its own business (each app counts only what it sends).
    signals.login_finished.send(Flask("elsewhere"), outcome="made-up-outcome", provider=None)
    assert (count("other") - other, count("id_token_invalid") - invalid) == (1, 1)
    assert count("id_token_invalid:JoseError:bad signature") == 0


@pytest.mark.once
def test_every_login_error_code_of_the_auth_package_has_its_own_outcome() -> None:
    """A reason code added to ``LoginError`` must be added to LOGIN_OUTCOMES, or it counts as
    "other"; this test finds the codes in the source."""
    codes = set()
    for path in (ROOT / "portal" / "auth").rglob("*.py"):
        found = re.findall(r'LoginError\(\s*f?"([a-z_]+)', path.read_text(encoding="utf-8"))
        codes.update(found)
    assert len(codes) > 15
    assert codes <= metrics.LOGIN_OUTCOMES, codes - metrics.LOGIN_OUTCOMES


@pytest.mark.once
def test_limits_are_told_apart_by_the_blueprint_they_guard() -> None:
    assert metrics.limit_kind("auth.start", "20 per 1 minute") == "login"
    assert metrics.limit_kind("api.usage", "120 per 1 minute") == "api"
    assert metrics.limit_kind("admin.audit_log", "refusals") == "refusals"
    assert metrics.limit_kind("proposals.detail", "5 per 1 minute") == "other"
    assert metrics.limit_kind(None, "5 per 1 minute") == "other"
    assert metrics.method_label("PROPFIND") == "other"


# --- the outbox, read at scrape time ------------------------------------------------------------


def test_outbox_gauges_say_what_the_database_holds(
    client: FlaskClient, db: Session, token: None
) -> None:
    before = scrape(client)
    now = utcnow()
    make_outbox_message(db, next_attempt_at=now - dt.timedelta(hours=1))
    make_outbox_message(db, state=OutboxState.FAILED, next_attempt_at=now - dt.timedelta(minutes=5))
    make_outbox_message(db, next_attempt_at=now + dt.timedelta(hours=1))
    make_outbox_message(db, state=OutboxState.DEAD)
    make_outbox_message(db, state=OutboxState.SENT)
    db.commit()
    after = scrape(client)

    assert value(after, "portal_outbox_readable") == 1
    added = [grown(before, after, f"portal_outbox_{name}") for name in ("waiting", "due", "dead")]
    assert added == [3, 2, 1]
    assert 3600 <= value(after, "portal_outbox_oldest_due_age_seconds") < 4 * 3600


# --- several processes -------------------------------------------------------------------------


@pytest.mark.once
def test_the_gunicorn_hooks_prepare_the_shared_folder_and_bury_dead_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "new" / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    gunicorn_conf.on_starting(None)
    assert folder.is_dir()
    # Metric files of an earlier run go; anything else in a mistyped folder stays.
    (folder / "counter_4242.db").write_bytes(b"old")
    (folder / "notes.txt").write_text("mine")
    gunicorn_conf.on_starting(None)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    # A worker that ended hands back its live gauges; its counters stay to be summed.
    (folder / "gauge_livesum_4242.db").write_bytes(b"")
    (folder / "counter_4242.db").write_bytes(b"")
    gunicorn_conf.child_exit(None, SimpleNamespace(pid=4242))
    assert sorted(p.name for p in folder.iterdir()) == ["counter_4242.db", "notes.txt"]
    # Without the variable the hooks do nothing.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    gunicorn_conf.on_starting(None)
    gunicorn_conf.child_exit(None, SimpleNamespace(pid=4242))


@pytest.mark.once
def test_the_portal_will_not_start_with_a_shared_folder_that_is_not_there(tmp_path: Path) -> None:
    missing = tmp_path / "never-made"
    script = (
        "from portal import create_app; create_app({'ENV': 'testing', 'DATABASE_URL': 'sqlite://'})"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(missing)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert f"PROMETHEUS_MULTIPROC_DIR is '{missing}', which is not a directory" in done.stderr


def _healthz_count(text: str) -> float:
    return value(
        parse(text),
        "portal_http_request_duration_seconds_count",
        endpoint="ops.healthz",
        method="GET",
        status="200",
    )


def test_gunicorn_workers_are_added_up_in_one_answer(tmp_path: Path) -> None:
    """Two sync workers each answer one request (the first is held half-sent, so the second must
    go to the other worker); whichever worker answers /metrics reports both."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"left by an earlier run, not a metrics file")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    log = tmp_path / "gunicorn.log"
    with live_app("sqlite", tmp_path) as app:
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(folder),
            "DATABASE_URL": app.config["DATABASE_URL"],
            "PORTAL_ENV": "testing",
            "PORTAL_METRICS_TOKEN": TOKEN,
            "PORTAL_INSTANCE_PATH": str(tmp_path / "instance"),
        }
        command = [
            *(sys.executable, "-m", "gunicorn", "-c", "python:portal.ops.gunicorn_conf"),
            *("--workers", "2", "--bind", f"127.0.0.1:{port}", "portal:create_app()"),
        ]
        if "control_socket_disable" in Config().settings:  # newer gunicorn: no socket in $HOME
            command.insert(-1, "--no-control-socket")
        with log.open("wb") as out:
            server = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            _wait_for(server, f"{base}/metrics", auth, log)
            assert not (folder / "counter_999999.db").exists()
            first = requests.get(f"{base}/metrics", headers=auth, timeout=START_SECONDS)
            assert _healthz_count(first.text) == 0

            with socket.create_connection(("127.0.0.1", port), timeout=START_SECONDS) as held:
                # Half a request: the first worker to accept takes it and waits for the rest.
                held.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                assert requests.get(f"{base}/healthz", timeout=START_SECONDS).status_code == 200
                held.sendall(b"Connection: close\r\n\r\n")
                answer = b""
                while chunk := held.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]

            last = requests.get(f"{base}/metrics", headers=auth, timeout=START_SECONDS)
            total = _healthz_count(last.text)
        finally:
            server.terminate()  # the master stops its workers
            try:
                server.wait(START_SECONDS)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    assert total == 2
    # Each worker wrote its own file, and each counted one of the two.
    per_worker = sorted(
        s.value
        for path in folder.glob("histogram_*.db")
        for family in MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        for s in family.samples
        if s.name == "portal_http_request_duration_seconds_count"
        and s.labels.get("endpoint") == "ops.healthz"
    )
    assert per_worker == [1.0, 1.0]


def _wait_for(
    server: subprocess.Popen[bytes], url: str, headers: dict[str, str], log: Path
) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            # A worker still loading the app answers late: wait as long as the deadline allows.
            timeout = max(deadline - time.monotonic(), 1)
            if requests.get(url, headers=headers, timeout=timeout).status_code == 200:
                return
        except requests.ConnectionError:
            pass  # not listening yet
        time.sleep(0.05)
    pytest.fail(f"gunicorn did not answer in {START_SECONDS} s:\n{log.read_text()[-3000:]}")
