"""Cross-cutting web behaviour: security headers, request origin for the audit log, error pages."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar, cast

from flask import Flask, Response, abort, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_login import login_required as _login_required
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, Map

from portal.core import audit, hooks, navigation, requestlog, signals
from portal.core.database import (
    count_statements,
    own_transaction,
    set_read_only,
    statements_counted,
)
from portal.core.errors import DomainError
from portal.core.permissions import Rule, check, permission_helpers
from portal.core.roles import is_logged_in, is_staff

log = logging.getLogger(__name__)

#: No inline script or style anywhere; everything the pages need is served from /static. Forms
#: post to the portal only, except where a page allows more (``allow_form_action``).
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
        "form-action 'self'",
    ]
)


def allow_form_action(*origins: str) -> None:
    """Let this page's forms lead to ``origins`` too (a login button is redirected to the identity
    provider, and browsers apply ``form-action`` to that redirect)."""
    g.setdefault("form_action", []).extend(o for o in origins if _SAFE_ORIGIN.fullmatch(o))


_SAFE_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?")


def _content_security_policy() -> str:
    extra = g.get("form_action")
    if not extra:
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace(
        "form-action 'self'", " ".join(["form-action 'self'", *dict.fromkeys(extra)])
    )


SECURITY_HEADERS = {
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


class IdConverter(IntegerConverter):
    """``<int:…>`` in every route: a positive id that fits the database's integer column, so a
    larger number is a plain 404 instead of a database error."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min", 1)
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def _carries_nul() -> bool:
    """Whether any part of the request a view may read holds a NUL (PostgreSQL refuses it in text)."""
    parts = [request.path, *request.cookies.values()]
    for multi in (request.args, request.form if request.mimetype in _FORM_TYPES else None):
        if multi is not None:
            parts += [*multi.keys(), *(v for _, v in multi.items(multi=True))]
    return any("\x00" in p for p in parts)


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def init_app(app: Flask) -> None:
    from portal.core.markdown import render_markdown

    requestlog.init_app(app)
    app.url_map.converters["int"] = IdConverter
    app.jinja_env.filters["markdown"] = render_markdown

    @app.before_request
    def _before() -> None:
        view = app.view_functions.get(request.endpoint or "")
        set_read_only(
            request.method in ("GET", "HEAD", "OPTIONS") and not getattr(view, "writes", False)
        )
        audit.set_origin(audit.Origin(ip=request.remote_addr, channel="web"))
        count_statements()
        if _carries_nul():
            abort(400, description="The request contains a NUL character, which no field accepts.")

    @app.teardown_request
    def _after(exc: BaseException | None) -> None:
        set_read_only(False)  # the next user of this thread (a CLI command, a worker) may write
        audit.set_origin(audit.Origin())

    @app.after_request
    def _headers(response: Response) -> Response:
        if "Content-Security-Policy" not in response.headers:
            response.headers["Content-Security-Policy"] = _content_security_policy()
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if app.config["SESSION_COOKIE_SECURE"]:
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
            )
        if current_user and not current_user.is_anonymous:
            response.headers.setdefault("Cache-Control", "no-store")
        if app.config["SQL_COUNT_HEADER"]:
            response.headers["X-SQL-Statements"] = str(statements_counted() or 0)
        return response

    @app.context_processor
    def _template_globals() -> dict[str, Any]:
        return {
            "site_name": app.config["SITE_NAME"],
            "demo_mode": app.config["DEMO_MODE"],
            "nav_items": lambda: navigation.items_for(current_user),
            "url_endpoints": app.view_functions,
            **app.extensions.get(HELPERS_KEY, {}),
        }

    # A global (not a context variable): macros imported without the page's context see it.
    app.jinja_env.globals["blockers_on"] = blockers_on
    app.jinja_env.globals["sections_on"] = lambda obj: hooks.sections_for(obj, current_user)

    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(DomainError, _domain_error)
    app.register_error_handler(Exception, _unexpected_error)


HELPERS_KEY = "portal.template_helpers"


def blockers_on(obj: Any) -> list[hooks.Blocker]:
    """What keeps ``obj``'s next step closed (``hooks.notices_for``), for the person viewing: a
    link meant for program staff is left out for everyone else (they would be refused there)."""
    return [
        b if not b.staff_only or is_staff(current_user) else replace(b, url=None)
        for b in hooks.notices_for(obj)
    ]


def register_template_helpers(app: Flask, *modules: Any) -> None:
    """Offer the permission rules (``can_*``, ``is_*``) of ``modules`` to every template; a name
    taken by another function already is refused, never silently replaced."""
    helpers: dict[str, Any] = app.extensions.setdefault(HELPERS_KEY, {})
    for name, fn in permission_helpers(*modules).items():
        if helpers.get(name, fn) is not fn:
            raise RuntimeError(f"two template helpers are called {name!r}")
        helpers[name] = fn


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def commit_or_flash(change: Callable[[], T]) -> tuple[bool, T | None]:
    """Run one service call for this request and commit it: ``(True, what it returned)``.

    When a business rule refuses (a DomainError), roll back, flash the reason and return
    ``(False, None)``, so the view shows its form or page again. A refused permission is not
    flashed: it propagates and becomes an audited 403.
    """
    from portal.extensions import db

    try:
        result = change()
    except DomainError as e:
        db.session.rollback()
        if e.status_code == 403:
            raise
        flash(str(e), "danger")
        return False, None
    db.session.commit()
    return True, result


M = TypeVar("M")

#: Largest id any ``<int:…>`` route looks up (PostgreSQL's integer; SQLite's is larger).
MAX_ID = 2**31 - 1


def load(model: type[M], ident: int, rule: Rule[Any] | None = None, *options: Any) -> M:
    """The ``model`` row ``ident`` (404 when there is none), which ``rule`` lets the current user
    see (an audited 403 otherwise). ``options``: loader options such as ``selectinload(…)``."""
    from sqlalchemy import select

    from portal.extensions import db

    obj = None
    if 0 < ident <= MAX_ID:
        key: Any = getattr(model, "id")  # noqa: B009 - every model has an integer id
        obj = db.session.scalar(select(model).where(key == ident).options(*options))
    if obj is None:
        abort(404)
    if rule is not None:
        check(rule, current_user, obj)
    return obj


def form_page(
    form: FlaskForm,
    change: Callable[[], T],
    *,
    template: str,
    done: Callable[[T], tuple[str, str]],
    **context: Any,
) -> ResponseReturnValue:
    """The whole of a form view: on a valid POST run ``change`` (one service call) and commit, then
    flash and redirect as ``done(result)`` says (message, url); otherwise show ``template`` with
    the form — 200 for GET, 422 for a POST that a field or a business rule refused."""
    if form.validate_on_submit():
        ok, result = commit_or_flash(change)
        if ok:
            message, url = done(cast(T, result))
            flash(message, "success")
            return redirect(url)
    return render_template(template, form=form, **context), (
        422 if request.method == "POST" else 200
    )


def require_valid(form: FlaskForm) -> None:
    """A 400 with a clear reason when a POST's form (its CSRF token first) does not validate."""
    if not form.validate_on_submit():
        abort(
            400,
            description="The form was incomplete or has expired. Reload the page and try again.",
        )


def post_action(
    form: FlaskForm,
    change: Callable[[], T],
    *,
    back: str,
    done: Callable[[T], str] | str,
) -> ResponseReturnValue:
    """A button's POST: check the form (400 when its CSRF token or fields are missing), run
    ``change`` and commit, flash ``done`` and go ``back``; when a rule refuses, go back (303)
    with the reason flashed. Nothing changes unless everything passed."""
    require_valid(form)
    ok, result = commit_or_flash(change)
    if not ok:
        return redirect(back), 303
    flash(done(cast(T, result)) if callable(done) else done, "success")
    return redirect(back)


def writes_on_get(view: F) -> F:
    """Mark a view that writes although it answers GET (an OIDC callback): on SQLite its
    transaction then takes the write lock as it begins, as a POST's does, instead of reading first
    and failing to write when another request committed in between."""
    view.writes = True  # type: ignore[attr-defined]
    return view


def login_required(view: F) -> F:
    """Flask-Login's ``login_required``, typed (Flask-Login ships no type information)."""
    return cast(F, _login_required(view))


def _wants_json() -> bool:
    return request.path.startswith("/api/") or (
        request.accept_mimetypes.best_match(["application/json", "text/html"]) == "application/json"
    )


def problem(status: int, detail: str, **extra: Any) -> Response:
    """An RFC 9457 problem (``application/problem+json``): the answer of every error under
    ``/api/``; ``extra`` members add to ``type``, ``title``, ``status`` and ``detail``."""
    from flask import json
    from werkzeug.http import HTTP_STATUS_CODES

    body = {
        "type": "about:blank",
        "title": HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    response = Response(json.dumps(body), status, mimetype="application/problem+json")
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def error_response(status: int, message: str) -> ResponseReturnValue:
    """The error page (or JSON body for API clients) for ``status``; it names no internals."""
    title = ERROR_TITLES.get(status, "Error")
    if request.path.startswith("/api/"):
        return problem(status, message)
    if _wants_json():
        return {"error": title, "message": message}, status
    return render_template("errors/error.html", status=status, title=title, message=message), status


def _refuse(message: str) -> bool:
    """Count and audit a refused request (in a transaction of its own); False when this person or
    address has been refused more than ``REFUSAL_LIMIT`` times in the current window."""
    from flask import current_app

    from portal.extensions import db

    with own_transaction(db.session):
        count = audit.record_refusal(
            db.session,
            actor=current_user if is_logged_in(current_user) else None,
            ip=request.remote_addr,
            method=request.method,
            path=request.path,
            window_seconds=int(current_app.config["REFUSAL_WINDOW_SECONDS"]),
            endpoint=request.endpoint,
            message=message,
        )
    return count <= int(current_app.config["REFUSAL_LIMIT"])


def _refused(message: str) -> ResponseReturnValue:
    if _refuse(message):
        signals.emit(signals.request_refused, endpoint=request.endpoint)
        return error_response(403, message)
    signals.emit(signals.rate_limited, endpoint=request.endpoint, limit="refusals")
    return error_response(429, "Too many refused requests; wait a minute before trying again.")


def _http_error(e: HTTPException) -> ResponseReturnValue:
    status = e.code or 500
    if status == 401 and not _wants_json():
        flash("Please log in to continue.", "info")
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if status == 403:
        return _refused(e.description or "forbidden")

    return error_response(status, e.description or ERROR_TITLES.get(status, ""))


def _csrf_error(e: CSRFError) -> ResponseReturnValue:
    return error_response(
        400, "The form has expired or was not sent from this site. Reload the page and try again."
    )


def _domain_error(e: DomainError) -> ResponseReturnValue:
    from portal.extensions import db

    db.session.rollback()
    if e.status_code == 403:
        return _refused(str(e))
    return error_response(e.status_code, str(e))


def _unexpected_error(e: Exception) -> ResponseReturnValue:
    from portal.extensions import db

    log.exception("unhandled error on %s %s", request.method, request.path)
    db.session.rollback()
    return error_response(500, "The error has been logged. Please try again later.")
