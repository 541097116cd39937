"""E-mails about people's accounts. Called by the login service; the outbox does the rest."""

from __future__ import annotations

from sqlalchemy import select

from portal.auth.models import User
from portal.core.models import AnySession
from portal.notifications.kinds import EmailKind, register_kind
from portal.notifications.models import OutboxMessage
from portal.notifications.services import enqueue_email

WELCOME = register_kind(
    EmailKind(
        "auth/welcome",
        "Welcome",
        "Sent once, after your first login.",
        mandatory=True,
    )
)


def welcome(session: AnySession, user: User) -> None:
    """Greet a person after their first login and tell them what to do next. Sent once per person:
    calling it again (a retried login, a second identity) enqueues nothing."""
    already = session.scalar(
        select(OutboxMessage.id)
        .where(OutboxMessage.template == WELCOME.key, OutboxMessage.recipient_id == user.id)
        .limit(1)
    )
    if already is not None:
        return
    enqueue_email(
        session,
        WELCOME.key,
        to=user,
        context={
            "name": user.display_name,
            "has_affiliation": any(a.state == "active" for a in user.affiliations),
        },
    )
