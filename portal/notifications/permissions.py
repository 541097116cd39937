"""Who may see the outbox, retry mail, read the demo mailbox and change notification settings."""

from __future__ import annotations

from typing import Any

from flask import current_app

from portal.core.permissions import rule
from portal.core.roles import is_admin, is_logged_in


@rule("Only administrators can see the outbox and retry mail.")
def can_manage_outbox(user: Any) -> bool:
    """Administrators see every queued, sent, failed and dead mail, and retry dead ones."""
    return is_admin(user)


@rule("Only administrators can read the demo mailbox.")
def can_read_demo_mailbox(user: Any) -> bool:
    """In demo mode, administrators read what the local mail sink received."""
    return bool(current_app.config["DEMO_MODE"]) and is_admin(user)


@rule("Log in to change your notification settings.")
def can_edit_notification_settings(user: Any) -> bool:
    """Everyone logged in edits their own settings (only their own: the page has no user id)."""
    return is_logged_in(user)
