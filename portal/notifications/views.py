"""Notification pages: your settings, one-click unsubscribe, and the admin outbox."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from portal.core.errors import DomainError
from portal.core.forms import ConfirmForm
from portal.core.listing import ListSpec, list_page
from portal.core.permissions import check
from portal.core.web import form_page, load, login_required, post_action
from portal.extensions import csrf, db
from portal.notifications import services
from portal.notifications.forms import PreferencesForm
from portal.notifications.kinds import all_kinds, get_kind, optional_kinds
from portal.notifications.models import OutboxMessage, OutboxState
from portal.notifications.permissions import (
    can_edit_notification_settings,
    can_manage_outbox,
)
from portal.notifications.rendering import read_unsubscribe_token, render_email

bp = Blueprint("notifications", __name__)

#: The RFC 8058 one-click body a mail client POSTs (and the confirm page's form sends too).
ONE_CLICK = ("List-Unsubscribe", "One-Click")


@bp.route("/notifications/settings", methods=["GET", "POST"])
@login_required
def settings() -> ResponseReturnValue:
    check(can_edit_notification_settings, current_user)
    current = services.current_preferences(db.session, current_user)
    form = PreferencesForm.for_kinds(optional_kinds(), current)
    return form_page(
        form,
        lambda: services.set_preferences(db.session, current_user, form.choices()),
        template="notifications/settings.html",
        done=lambda _: ("Your notification settings are saved.", url_for(".settings")),
        mandatory=[k for k in all_kinds() if k.mandatory],
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


OUTBOX = ListSpec(
    search=(
        OutboxMessage.to_addr,
        OutboxMessage.subject,
        OutboxMessage.template,
        OutboxMessage.to_name,
    ),
    state_column=OutboxMessage.state,
    states=OutboxState,
    sorts={"newest": (OutboxMessage.id.desc(),)},
    placeholder="Recipient, subject or template",
)


@bp.get("/admin/mail/")
@login_required
def outbox() -> ResponseReturnValue:
    check(can_manage_outbox, current_user)
    listing = list_page(select(OutboxMessage), OUTBOX)
    counts = dict(
        db.session.execute(
            select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
        ).all()
    )
    return render_template(
        "notifications/outbox.html", form=listing.form, page=listing.page, counts=counts
    ), (200 if listing.valid else 400)


@bp.get("/admin/mail/<int:message_id>")
@login_required
def outbox_detail(message_id: int) -> ResponseReturnValue:
    check(can_manage_outbox, current_user)
    msg = load(OutboxMessage, message_id, None, selectinload(OutboxMessage.attempt_log))
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
    )


@bp.post("/admin/mail/<int:message_id>/retry")
@login_required
def outbox_retry(message_id: int) -> ResponseReturnValue:
    check(can_manage_outbox, current_user)
    msg = load(OutboxMessage, message_id)
    return post_action(
        ConfirmForm(),
        lambda: services.retry_message(db.session, msg, actor=current_user),
        back=url_for(".outbox_detail", message_id=message_id),
        done=f"Mail #{message_id} is queued again.",
    )
