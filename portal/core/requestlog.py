"""One log line per request, and the request id that ties it to the audit log.

Every request gets an id: the caller's ``X-Request-ID`` when it is a plain token (a proxy or load
balancer may set one), else a new random one. It is sent back in ``X-Request-ID``, stored on every
audit event the request records, and logged with the request's user, route, status, duration and
SQL statement count. ``LOG_FORMAT`` chooses JSON lines (production: one object per line for a log
shipper) or readable text (development); ``none`` leaves logging as it is (tests).
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

from portal.core import signals
from portal.core.database import statements_counted

HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")

log = logging.getLogger("portal.request")

#: The fields of a request's line, in order (text format: ``key=value``).
FIELDS = ("request_id", "method", "route", "endpoint", "status", "duration_ms", "sql", "user_id")


def current_request_id() -> str | None:
    """This request's id (None outside a request)."""
    return g.get("request_id") if has_request_context() else None


class TextFormatter(logging.Formatter):
    """``time level logger message key=value …`` with the request fields a record carries."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if hasattr(record, k))
        return f"{line} {extra}" if extra else line


def configure_logging(fmt: str) -> None:
    """Send the ``portal`` loggers' records to standard error as ``fmt`` ("json" or "text"), in
    place of the handler an earlier call installed; "none" removes it."""
    root = logging.getLogger("portal")
    for old in [h for h in root.handlers if getattr(h, "_portal", False)]:
        root.removeHandler(old)
    if fmt == "none":
        root.propagate = True
        return
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._portal = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def init_app(app: Flask) -> None:
    configure_logging(app.config["LOG_FORMAT"])

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get(HEADER, "")
        g.request_id = incoming if _VALID_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id is None:  # a request that failed before the first hook ran
            return response
        response.headers[HEADER] = request_id
        seconds = time.perf_counter() - g.request_started
        statements = statements_counted() or 0
        rule = request.url_rule
        # The user Flask-Login loaded for this request, if any (not loaded here: no query).
        user = g.get("_login_user")
        user_id = getattr(user, "id", None) if getattr(user, "is_authenticated", False) else None
        log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "request_id": request_id,
                "method": request.method,
                "route": rule.rule if rule else None,
                "endpoint": request.endpoint,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 2),
                "sql": statements,
                "user_id": user_id,
            },
        )
        signals.request_observed.send(
            app,
            endpoint=request.endpoint,
            method=request.method,
            status=response.status_code,
            seconds=seconds,
            statements=statements,
        )
        return response
