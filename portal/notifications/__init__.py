"""E-mail notifications: the outbox, its delivery worker, templates, preferences and reminders.

How a domain adds an e-mail (see ``portal/institutions/emails.py`` for a complete example):

1. In ``portal/<domain>/emails.py`` register the kind —
   ``APPROVED = register_kind(EmailKind("allocations/approved", "Allocation decisions", mandatory=True))``
   — and write one function per event that picks the recipients (from the domain's permission
   rules: a query of who may act) and calls
   ``enqueue_email(session, APPROVED.key, to=users, context={...JSON only...})``.
2. Add ``templates/emails/allocations/approved.txt`` (with ``{% block subject %}`` and
   ``{% block body %}``, extending ``emails/_layout.txt``) and ``approved.html``
   (extending ``emails/_layout.html``). Templates get ``link(endpoint, **values)`` for absolute links.
3. Name the function as the action's mail in the domain's workflow (``mails={"approve": …}``);
   the workflow runner calls it inside the transaction of the change.
4. Scheduled reminders: ``register_rule(ReminderRule(key, Period.WEEKLY, due=..., send=...))``.
5. Import the module in the domain's ``init_app``, and add an expected-text test in tests/notifications.

This package imports no domain: each domain registers its kinds here, never the other way round.

Commands (cron/systemd): ``flask --app portal mail worker`` (or ``mail deliver`` every minute),
``mail reminders`` (hourly is fine: once per period is guaranteed) and ``mail digest`` (daily).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the pages, the navigation entry, the ``mail`` CLI and the template helpers."""
    from portal.core import navigation
    from portal.core.navigation import NavItem
    from portal.core.web import register_template_helpers
    from portal.notifications import permissions
    from portal.notifications.cli import mail_cli
    from portal.notifications.views import bp

    app.register_blueprint(bp)
    app.cli.add_command(mail_cli)
    register_template_helpers(app, permissions)
    navigation.register(
        NavItem(
            "notifications.outbox",
            "Mail outbox",
            permissions.can_manage_outbox,
            order=80,
            group="Admin",
        )
    )
