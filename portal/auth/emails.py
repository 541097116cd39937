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

VERIFY_EMAIL = register_kind(
    EmailKind(
        "auth/verify_email",
        "Verify your e-mail address",
        "Sent when you ask for a link that confirms your address.",
        mandatory=True,
    )
)


def email_verification(session: AnySession, address: str, *, token: str, hours: int) -> None:
    """Send the link that confirms ``address``. The one mail that goes to an unverified address, so
    it goes to the address as such: no name (the identity provider may have let anyone type the
    address and the name), and nothing about the account but the link."""
    enqueue_email(session, VERIFY_EMAIL.key, to=address, context={"token": token, "hours": hours})


def welcome(session: AnySession, user: User) -> None:
    """Greet a person after their first login and tell them what to do next. Sent once per person:
    calling it again (a retried login, a second identity) enqueues nothing. Like every mail to a
    person, only to a verified address (``enqueue_email`` skips anyone else)."""
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
