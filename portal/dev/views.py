"""The demo mailbox: what the local SMTP sink of ``make run`` received, for administrators."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask.typing import ResponseReturnValue
from flask_login import current_user

from portal.core.permissions import check
from portal.core.web import login_required
from portal.dev.sink import get_sink_message, read_sink, sink_folder
from portal.notifications.permissions import can_read_demo_mailbox

bp = Blueprint("dev", __name__)


def _sink_dir() -> Path:
    """The demo sink's folder, for administrators in demo mode (404 outside demo mode)."""
    if not current_app.config["DEMO_MODE"]:
        abort(404)
    check(can_read_demo_mailbox, current_user)
    return sink_folder(current_app.instance_path, current_app.config["MAIL_SINK_DIR"])


@bp.get("/admin/mail/mailbox/")
@login_required
def mailbox() -> ResponseReturnValue:
    folder = _sink_dir()
    messages = read_sink(folder)
    size = int(current_app.config["PAGE_SIZE"])
    page_no = max(1, request.args.get("page", 1, type=int) or 1)
    pages = max(1, -(-len(messages) // size))
    page_no = min(page_no, pages)
    return render_template(
        "dev/mailbox.html",
        messages=messages[(page_no - 1) * size : page_no * size],
        total=len(messages),
        page_no=page_no,
        pages=pages,
    )


@bp.get("/admin/mail/mailbox/<key>")
@login_required
def mailbox_message(key: str) -> ResponseReturnValue:
    folder = _sink_dir()
    message = get_sink_message(folder, key)
    if message is None:
        abort(404)
    return render_template("dev/mailbox_message.html", m=message)


@bp.get("/admin/mail/mailbox/<key>/html")
@login_required
def mailbox_html(key: str) -> ResponseReturnValue:
    """The HTML part as sent, in a sandbox: no scripts, no requests, no access to the portal."""
    folder = _sink_dir()
    message = get_sink_message(folder, key)
    html = message.part("html") if message else None
    if html is None:
        abort(404)
    resp = Response(html, mimetype="text/html")
    resp.headers["Content-Security-Policy"] = (
        "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    )
    return resp
