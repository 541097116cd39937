"""``/metrics``: the portal's Prometheus metrics, for whoever holds ``METRICS_TOKEN``.

What is counted comes from the signals of ``portal.core.signals`` (core and the domains send them
and know nothing of Prometheus): each request's latency (by endpoint, method and status) and SQL
statement count (by endpoint), logins by outcome, refused requests, rate-limit hits. The outbox's
backlog is read from the database when Prometheus scrapes, so every process reports the same
numbers and nothing has to keep them up to date.

Label values are always from a bounded set: endpoint names (never the path, which a visitor
chooses), "unmatched" for a request no route matched, a fixed list of methods, login outcomes and
limit kinds, anything else "other". Prometheus keeps one series per label combination; a label
that took any value would let one visitor fill its memory.

The metric objects are made once, at import, in this module's own registry (not the client's
global one): several apps in one process (the tests) then share them without registering twice,
and each app only connects its signals.

Under gunicorn, each worker is a process with its own counters. With ``PROMETHEUS_MULTIPROC_DIR``
set (in the environment, before the server starts; see ``portal.ops.gunicorn_conf``) the client
writes every worker's values to files there and whichever worker answers ``/metrics`` adds them
up (the client's "multiprocess mode"). Without it, the values live in memory, which is right for a
single process (``flask run``, one worker).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from portal.config import ConfigError
from portal.core import signals

log = logging.getLogger(__name__)

#: Where the workers' values are shared (multiprocess mode), read once: the client chooses
#: between files and memory when it is imported, so a later change would not be followed anyway.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

#: The portal's own metrics. In multiprocess mode this registry is never exposed itself (the
#: files hold the values); without it, it is, with the process's CPU, memory and GC figures.
REGISTRY = CollectorRegistry()
if MULTIPROCESS_DIR is None:
    ProcessCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)
    GCCollector(registry=REGISTRY)

#: Whatever is the same for every page (sessions, the user) costs a few statements; a page that
#: sends a hundred has an N+1 (DESIGN.md: "a bounded number of SQL queries").
STATEMENT_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 20, 30, 50, 100, 200)
#: Seconds; the main pages aim at a median well under 50 ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_SECONDS = Histogram(
    "portal_http_request_duration_seconds",
    "Time to answer a request, by endpoint (route name), method and status.",
    ["endpoint", "method", "status"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
REQUEST_STATEMENTS = Histogram(
    "portal_http_request_sql_statements",
    "SQL statements a request sent to the database, by endpoint.",
    ["endpoint"],
    buckets=STATEMENT_BUCKETS,
    registry=REGISTRY,
)
LOGINS = Counter(
    "portal_logins",
    'Logins through an identity provider that ended, by outcome ("success" or why not).',
    ["outcome"],
    registry=REGISTRY,
)
REFUSALS = Counter(
    "portal_refused_requests",
    "Requests refused (403) by a permission rule, by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "portal_rate_limited_requests",
    'Requests answered 429, by limit: "login", "api", "refusals" (too many refused requests) '
    'or "other".',
    ["limit"],
    registry=REGISTRY,
)

#: The label of a request no route matched (a 404 or 405 on an unknown path).
UNMATCHED = "unmatched"
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: Login outcomes kept as they are: success, "refused" (a domain rule, e.g. a disabled account)
#: and the reason codes of ``portal.auth.oidc.LoginError`` (a code with details after a colon,
#: ``id_token_invalid:ExpiredTokenError:…``, counts under its first part). A new code shows as
#: "other" until it is added here (tests/ops/test_metrics.py compares this list with the code).
LOGIN_OUTCOMES = frozenset(
    {
        "success",
        "refused",
        "auth_method_unsupported",
        "discovery_incomplete",
        "discovery_issuer_mismatch",
        "discovery_unreachable",
        "id_token_invalid",
        "incomplete_callback",
        "iss_mismatch",
        "iss_missing",
        "jwks_unreachable",
        "link_user_changed",
        "logout_token_invalid",
        "no_common_algorithm",
        "no_id_token",
        "no_nonce_or_pkce",
        "provider_error",
        "reauth_not_fresh",
        "state_mismatch",
        "token_request_failed",
        "unsafe_algorithms",
        "userinfo_failed",
        "userinfo_jwt_invalid",
        "userinfo_not_json",
        "userinfo_sub_mismatch",
    }
)

#: Which limit a 429 came from, by the blueprint of the endpoint it guarded.
LIMIT_KINDS = {"auth": "login", "api": "api"}


def endpoint_label(endpoint: str | None) -> str:
    return endpoint or UNMATCHED


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def login_outcome(outcome: str) -> str:
    code = outcome.split(":", 1)[0]
    return code if code in LOGIN_OUTCOMES else OTHER


def limit_kind(endpoint: str | None, limit: str) -> str:
    if limit == "refusals":
        return "refusals"
    blueprint = (endpoint or "").rpartition(".")[0]
    return LIMIT_KINDS.get(blueprint, OTHER)


# --- counting: the receivers of the signals (module functions: blinker keeps weak references) --


def _request_observed(
    sender: Flask,
    *,
    endpoint: str | None,
    method: str,
    status: int,
    seconds: float,
    statements: int,
    **_: Any,
) -> None:
    name = endpoint_label(endpoint)
    REQUEST_SECONDS.labels(name, method_label(method), str(status)).observe(seconds)
    REQUEST_STATEMENTS.labels(name).observe(statements)


def _login_finished(sender: Flask, *, outcome: str, **_: Any) -> None:
    LOGINS.labels(login_outcome(outcome)).inc()


def _request_refused(sender: Flask, *, endpoint: str | None, **_: Any) -> None:
    REFUSALS.labels(endpoint_label(endpoint)).inc()


def _rate_limited(sender: Flask, *, endpoint: str | None, limit: str, **_: Any) -> None:
    RATE_LIMITED.labels(limit_kind(endpoint, limit)).inc()


RECEIVERS = (
    (signals.request_observed, _request_observed),
    (signals.login_finished, _login_finished),
    (signals.request_refused, _request_refused),
    (signals.rate_limited, _rate_limited),
)


# --- what the database says, at scrape time ----------------------------------------------------


class OutboxCollector:
    """The outbox backlog as gauges, read (two aggregate queries) when Prometheus scrapes.

    Registered on each scrape's registry, in the process that answers, so it works in
    multiprocess mode too (the client cannot add up collectors across processes, but the
    database is the same for all of them). When the database does not answer, the scrape still
    succeeds and ``portal_outbox_readable`` says 0 (an alert can watch that)."""

    def collect(self) -> Iterable[Metric]:
        from portal.extensions import db
        from portal.notifications.delivery import backlog

        readable = GaugeMetricFamily(
            "portal_outbox_readable", "1 when the outbox backlog could be read at this scrape."
        )
        try:
            b = backlog(db.session)
        except Exception:
            log.exception("metrics: the outbox backlog cannot be read")
            db.session.rollback()
            readable.add_metric([], 0)
            yield readable
            return
        readable.add_metric([], 1)
        yield readable
        yield _gauge("portal_outbox_waiting", "Mails queued or to retry (due or not).", b.waiting)
        yield _gauge("portal_outbox_due", "Mails whose (next) try is due now.", b.due)
        yield _gauge(
            "portal_outbox_oldest_due_age_seconds",
            "How long the longest-waiting due mail has been due (0 when none is).",
            b.oldest_due_seconds,
        )
        yield _gauge(
            "portal_outbox_dead", "Mails given up on; an administrator may retry them.", b.dead
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


# --- the endpoint -------------------------------------------------------------------------------

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape() -> Response:
    """The exposition text (or OpenMetrics, when Prometheus asks for it).

    Not behind a login (Prometheus has no session) but behind a bearer token: 404 while
    ``METRICS_TOKEN`` is unset (as if there were no such page), 401 without the right token."""
    expected = _token(current_app.config.get("METRICS_TOKEN"))
    if expected is None:
        abort(404)
    if not _authorised(request.headers.get("Authorization", ""), expected):
        # Not abort(401): the portal's 401 page sends browsers to the login form.
        return Response(
            "A bearer token is needed.\n",
            401,
            {"WWW-Authenticate": 'Bearer realm="metrics"', "Cache-Control": "no-store"},
            mimetype="text/plain",
        )
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(_scrape_registry())
    return Response(body, 200, {"Content-Type": content_type, "Cache-Control": "no-store"})


def _token(configured: object) -> str | None:
    """The configured token as text (a ``PORTAL_METRICS_TOKEN`` of digits arrives as a number);
    None when unset or empty."""
    if configured is None:
        return None
    text = str(configured).strip()
    return text or None


def _authorised(header: str, expected: str) -> bool:
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Bytes: compare_digest refuses non-ASCII text, and the header is the caller's to choose.
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def _scrape_registry() -> CollectorRegistry:
    """This scrape's collectors: the portal's metrics (from every worker's files in multiprocess
    mode, else from memory) and the outbox, read now."""
    registry = CollectorRegistry()
    if MULTIPROCESS_DIR is not None:
        MultiProcessCollector(registry, path=MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)
    registry.register(OutboxCollector())
    return registry


def init_app(app: Flask) -> None:
    """Register ``/metrics`` and count this app's signals (each app only its own: the sender)."""
    if MULTIPROCESS_DIR is not None and not os.path.isdir(MULTIPROCESS_DIR):
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR is {MULTIPROCESS_DIR!r}, which is not a directory. Create "
            "it (empty) before starting, or start gunicorn with "
            "-c python:portal.ops.gunicorn_conf, which does."
        )
    app.register_blueprint(bp)
    for signal, receiver in RECEIVERS:
        signal.connect(receiver, sender=app)
