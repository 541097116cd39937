"""Cross-cutting web behaviour: security headers, request origin for the audit log, error pages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_login import login_required as _login_required
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from portal.core import audit
from portal.core.database import set_read_only
from portal.core.errors import DomainError
from portal.core.permissions import as_user

log = logging.getLogger(__name__)

#: No inline script or style anywhere; everything the pages need is served from /static.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

ERROR_TITLES = {
    400: "Bad request",
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Upload too large",
    422: "Cannot process this",
    429: "Too many requests",
    500: "Something went wrong",
}


def init_app(app: Flask) -> None:
    @app.before_request
    def _before() -> None:
        set_read_only(request.method in ("GET", "HEAD", "OPTIONS"))
        audit.set_origin(audit.Origin(ip=request.remote_addr, channel="web"))

    @app.teardown_request
    def _after(exc: BaseException | None) -> None:
        set_read_only(False)  # the next user of this thread (a CLI command, a worker) may write
        audit.set_origin(audit.Origin())

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if app.config["SESSION_COOKIE_SECURE"]:
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
            )
        if current_user and not current_user.is_anonymous:
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(DomainError, _domain_error)
    app.register_error_handler(Exception, _unexpected_error)


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def commit_or_flash(change: Callable[[], T]) -> T | None:
    """Run one service call for this request and commit it; return what the service returned.

    When a business rule refuses (a DomainError), roll back, flash the reason and return None, so
    the view shows its form or page again. A refused permission is not flashed: it propagates and
    becomes an audited 403.
    """
    from portal.extensions import db

    try:
        result = change()
    except DomainError as e:
        db.session.rollback()
        if e.status_code == 403:
            raise
        flash(str(e), "danger")
        return None
    db.session.commit()
    return result


def login_required(view: F) -> F:
    """Flask-Login's ``login_required``, typed (Flask-Login ships no type information)."""
    return cast(F, _login_required(view))


def _wants_json() -> bool:
    return request.path.startswith("/api/") or (
        request.accept_mimetypes.best_match(["application/json", "text/html"]) == "application/json"
    )


def error_response(status: int, message: str) -> ResponseReturnValue:
    """The error page (or JSON body for API clients) for ``status``; it names no internals."""
    title = ERROR_TITLES.get(status, "Error")
    if _wants_json():
        return {"error": title, "message": message}, status
    return render_template("errors/error.html", status=status, title=title, message=message), status


def _audit_refusal(message: str) -> None:
    """Every refused permission decision leaves an audit event, in its own transaction."""
    from portal.extensions import db

    db.session.rollback()
    audit.record(
        db.session,
        "permission.denied",
        actor=as_user(current_user),
        method=request.method,
        path=request.path,
        endpoint=request.endpoint,
        message=message,
    )
    db.session.commit()


def _http_error(e: HTTPException) -> ResponseReturnValue:
    status = e.code or 500
    if status == 401 and not _wants_json():
        flash("Please log in to continue.", "info")
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if status == 403:
        _audit_refusal(e.description or "forbidden")
    return error_response(status, e.description or ERROR_TITLES.get(status, ""))


def _csrf_error(e: CSRFError) -> ResponseReturnValue:
    return error_response(
        400, "The form has expired or was not sent from this site. Reload the page and try again."
    )


def _domain_error(e: DomainError) -> ResponseReturnValue:
    from portal.extensions import db

    db.session.rollback()
    if e.status_code == 403:
        _audit_refusal(str(e))
    return error_response(e.status_code, str(e))


def _unexpected_error(e: Exception) -> ResponseReturnValue:
    from portal.extensions import db

    log.exception("unhandled error on %s %s", request.method, request.path)
    db.session.rollback()
    return error_response(500, "The error has been logged. Please try again later.")
