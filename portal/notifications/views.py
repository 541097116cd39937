"""Notification pages: your settings, one-click unsubscribe, the admin outbox and the demo mailbox."""

from __future__ import annotations

from pathlib import Path

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from portal.core.errors import DomainError
from portal.core.pagination import paginate
from portal.core.permissions import require
from portal.core.web import commit_or_flash, login_required
from portal.extensions import csrf, db
from portal.notifications import services
from portal.notifications.forms import OutboxFilterForm, PreferencesForm, RetryForm
from portal.notifications.kinds import all_kinds, get_kind, optional_kinds
from portal.notifications.models import OutboxMessage, OutboxState
from portal.notifications.permissions import (
    can_edit_notification_settings,
    can_manage_outbox,
    can_read_demo_mailbox,
)
from portal.notifications.rendering import read_unsubscribe_token, render_email
from portal.notifications.sink import get_sink_message, read_sink, sink_folder

bp = Blueprint("notifications", __name__)

#: The RFC 8058 one-click body a mail client POSTs (and the confirm page's form sends too).
ONE_CLICK = ("List-Unsubscribe", "One-Click")


@bp.route("/notifications/settings", methods=["GET", "POST"])
@login_required
def settings() -> ResponseReturnValue:
    require(can_edit_notification_settings(current_user))
    current = services.current_preferences(db.session, current_user)
    form = PreferencesForm.for_kinds(optional_kinds(), current)
    if form.validate_on_submit():
        try:
            services.set_preferences(db.session, current_user, form.choices())
        except DomainError as e:
            db.session.rollback()
            flash(str(e), "danger")
        else:
            db.session.commit()
            flash("Your notification settings are saved.", "success")
            return redirect(url_for(".settings"))
    mandatory = [k for k in all_kinds() if k.mandatory]
    return render_template("notifications/settings.html", form=form, mandatory=mandatory), (
        422 if request.method == "POST" else 200
    )


@bp.get("/notifications/unsubscribe/<token>")
def unsubscribe_confirm(token: str) -> ResponseReturnValue:
    """The link in the mail: shows what will be switched off and a button (no change on GET)."""
    try:
        _, key = read_unsubscribe_token(token)
        kind = get_kind(key)
    except (DomainError, LookupError):
        abort(400, description="This unsubscribe link is not valid.")
    if kind.mandatory:
        abort(400, description="This kind of e-mail cannot be switched off.")
    return render_template(
        "notifications/unsubscribe.html", kind=kind, token=token, one_click=ONE_CLICK, done=False
    )


@bp.post("/notifications/unsubscribe/<token>")
def unsubscribe(token: str) -> ResponseReturnValue:
    if request.form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
        abort(400, description="Send List-Unsubscribe=One-Click to unsubscribe.")
    _, kind = services.unsubscribe(db.session, token)
    db.session.commit()
    return render_template(
        "notifications/unsubscribe.html", kind=kind, token=token, one_click=ONE_CLICK, done=True
    )


# RFC 8058: mail clients POST without a session or CSRF token; the signed token is the authority.
csrf.exempt(unsubscribe)


@bp.get("/admin/mail/")
@login_required
def outbox() -> ResponseReturnValue:
    require(can_manage_outbox(current_user), "Only administrators can see the outbox.")
    form = OutboxFilterForm(request.args)
    q = select(OutboxMessage)
    if form.validate():
        if form.q.data and form.q.data.strip():
            term = f"%{form.q.data.strip().lower()}%"
            q = q.where(
                or_(
                    func.lower(OutboxMessage.to_addr).like(term),
                    func.lower(OutboxMessage.subject).like(term),
                    func.lower(OutboxMessage.template).like(term),
                    func.lower(OutboxMessage.to_name).like(term),
                )
            )
        if form.state.data:
            q = q.where(OutboxMessage.state == OutboxState(form.state.data))
    elif request.args:
        return render_template(
            "notifications/outbox.html", form=form, page=None, counts={}, retry_form=RetryForm()
        ), 400
    page = paginate(q.order_by(OutboxMessage.id.desc()))
    counts = dict(
        db.session.execute(
            select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
        ).all()
    )
    return render_template(
        "notifications/outbox.html", form=form, page=page, counts=counts, retry_form=RetryForm()
    )


def _get_message(message_id: int) -> OutboxMessage:
    msg = db.session.scalar(
        select(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .options(selectinload(OutboxMessage.attempt_log))
    )
    if msg is None:
        abort(404)
    return msg


@bp.get("/admin/mail/<int:message_id>")
@login_required
def outbox_detail(message_id: int) -> ResponseReturnValue:
    require(can_manage_outbox(current_user), "Only administrators can see the outbox.")
    msg = _get_message(message_id)
    try:
        preview = render_email(msg)
        preview_error = None
    except Exception as e:  # show the admin why a mail cannot be rendered
        preview, preview_error = None, f"{type(e).__name__}: {e}"
    return render_template(
        "notifications/outbox_detail.html",
        msg=msg,
        preview=preview,
        preview_error=preview_error,
        retry_form=RetryForm(),
    )


@bp.post("/admin/mail/<int:message_id>/retry")
@login_required
def outbox_retry(message_id: int) -> ResponseReturnValue:
    require(can_manage_outbox(current_user), "Only administrators can retry mail.")
    msg = _get_message(message_id)
    if not RetryForm().validate_on_submit():
        abort(400, description="The retry form was incomplete.")
    if commit_or_flash(lambda: services.retry_message(db.session, msg, actor=current_user)):
        flash(f"Mail #{message_id} is queued again.", "success")
        return redirect(url_for(".outbox_detail", message_id=message_id))
    return redirect(
        url_for(".outbox_detail", message_id=message_id)
    ), 303  # refused: the flash says why


def _sink_dir() -> Path:
    """The demo sink's folder, for administrators in demo mode (404 outside demo mode)."""
    if not current_app.config["DEMO_MODE"]:
        abort(404)
    require(can_read_demo_mailbox(current_user), "Only administrators can read the demo mailbox.")
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
        "notifications/mailbox.html",
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
    return render_template("notifications/mailbox_message.html", m=message)


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
