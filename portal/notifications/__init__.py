"""E-mail notifications: the outbox, its delivery worker, templates, preferences and reminders.

How a domain adds an e-mail (see ``portal/institutions/emails.py`` for a complete example):

1. In ``portal/<domain>/emails.py`` register the kind —
   ``APPROVED = register_kind(EmailKind("allocations/approved", "Allocation decisions", mandatory=True))``
   — and write one function per event that picks the recipients and calls
   ``enqueue_email(session, APPROVED.key, to=users, context={...JSON only...})``.
2. Add ``templates/emails/allocations/approved.txt`` (with ``{% block subject %}`` and
   ``{% block body %}``, extending ``emails/_layout.txt``) and ``approved.html``
   (extending ``emails/_layout.html``). Templates get ``link(endpoint, **values)`` for absolute links.
3. Call the event function from the service, inside the transaction of the change.
4. Scheduled reminders: ``register_rule(ReminderRule(key, Period.WEEKLY, due=..., send=...))``.
5. Import the module in ``init_app`` below, and add an expected-text test in tests/notifications.

Commands (cron/systemd): ``flask --app portal mail worker`` (or ``mail deliver`` every minute),
``mail reminders`` (hourly is fine: once per period is guaranteed) and ``mail digest`` (daily).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the pages, the navigation entries and every domain's e-mail kinds and reminders."""
    import portal.auth.emails
    import portal.institutions.emails  # noqa: F401 - registers kinds and reminder rules
    from portal.core import navigation
    from portal.core.navigation import NavItem
    from portal.notifications.permissions import can_manage_outbox, can_read_demo_mailbox
    from portal.notifications.views import bp

    app.register_blueprint(bp)
    navigation.register(
        NavItem("notifications.outbox", "Mail outbox", can_manage_outbox, order=80, group="Admin")
    )
    navigation.register(
        NavItem(
            "notifications.mailbox",
            "Demo mailbox",
            can_read_demo_mailbox,
            order=85,
            group="Admin",
        )
    )
