"""Business rules for notifications: enqueueing, preferences, unsubscribing, retries and digests.

Services flush; the caller commits. ``enqueue_email`` only adds rows to the caller's session, so a
mail exists if and only if the change that caused it commits.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, Protocol

from flask import current_app
from sqlalchemy import select

from portal.core import audit
from portal.core.errors import InvalidTransitionError, NotFoundError, ValidationError
from portal.core.models import AnySession, Base, utcnow
from portal.core.permissions import check
from portal.notifications.kinds import DIGEST, EmailKind, all_kinds, get_kind
from portal.notifications.models import (
    Delivery,
    NotificationPreference,
    OutboxMessage,
    OutboxState,
)
from portal.notifications.permissions import can_manage_outbox
from portal.notifications.rendering import (
    check_address,
    clean_header_text,
    read_unsubscribe_token,
    render_summary,
)


class Person(Protocol):
    """Whom a mail can go to: any user of the portal (this package imports no domain)."""

    @property
    def id(self) -> int: ...
    @property
    def email(self) -> str | None: ...
    @property
    def display_name(self) -> str: ...
    @property
    def email_verified(self) -> bool: ...
    @property
    def is_disabled(self) -> bool: ...


#: A person (their preferences apply) or a plain address.
Recipient = Person | str


def new_message_id() -> str:
    """A Message-ID fixed at enqueue time, in the sender's domain."""
    _, addr = parseaddr(str(current_app.config["MAIL_DEFAULT_SENDER"]))
    domain = addr.partition("@")[2] or "localhost"
    return f"<{uuid.uuid4().hex}@{domain}>"


def preferences_for(
    session: AnySession, user_ids: Iterable[int]
) -> dict[tuple[int, str], Delivery]:
    """The stored choices of these users, keyed by (user id, kind); absent means immediately."""
    ids = list(set(user_ids))
    if not ids:
        return {}
    rows = session.scalars(
        select(NotificationPreference).where(NotificationPreference.user_id.in_(ids))
    )
    return {(p.user_id, p.kind): p.delivery for p in rows}


def effective_delivery(kind: EmailKind, stored: Delivery | None) -> Delivery:
    """Mandatory kinds always go out immediately; otherwise the person's choice (default: at once)."""
    if kind.mandatory or stored is None:
        return Delivery.IMMEDIATELY
    return stored


def enqueue_email(
    session: AnySession,
    template: str,
    *,
    to: Recipient | Iterable[Recipient],
    context: Mapping[str, Any] | None = None,
) -> list[OutboxMessage]:
    """Write one outbox row per recipient in the caller's transaction; returns the rows written.

    ``to`` holds users (their preferences apply; disabled users and users without a verified
    address get nothing: an unverified address may be anyone's) and/or plain addresses, which are
    used as given (only for a mail that must reach an address as such: its verification link).
    ``context`` must be JSON: the worker renders the mail later without reading domain objects, so
    it shows the facts as they were when the change happened.
    """
    kind = get_kind(template)
    ctx = dict(context or {})
    try:
        json.dumps(ctx)
    except TypeError as e:
        raise TypeError(f"e-mail context for {template} must be JSON-serialisable: {e}") from None
    recipients: list[Recipient] = (
        [to] if isinstance(to, str) or not isinstance(to, Iterable) else list(to)
    )
    prefs = preferences_for(session, [r.id for r in recipients if not isinstance(r, str)])
    rows: list[OutboxMessage] = []
    seen: set[str] = set()
    for r in recipients:
        if not isinstance(r, str):
            if r.is_disabled or not r.email or not r.email_verified:
                continue
            addr, name, user_id = r.email, r.display_name, r.id
            delivery = effective_delivery(kind, prefs.get((r.id, kind.key)))
        else:
            addr, name, user_id, delivery = r, None, None, Delivery.IMMEDIATELY
        addr = check_address(addr)
        if delivery == Delivery.OFF or addr.lower() in seen:
            continue
        seen.add(addr.lower())
        rows.append(
            OutboxMessage(
                message_id=new_message_id(),
                template=kind.key,
                to_addr=addr,
                to_name=clean_header_text(name, 200) if name else None,
                recipient_id=user_id,
                context=ctx,
                state=OutboxState.HELD if delivery == Delivery.DIGEST else OutboxState.QUEUED,
            )
        )
    session.add_all(rows)
    session.flush()
    return rows


def set_preferences(session: AnySession, user: Person, choices: Mapping[str, Delivery]) -> None:
    """Store how ``user`` wants each optional kind; mandatory or unknown kinds are refused."""
    for key in choices:
        if get_kind_or_none(key) is None or get_kind(key).mandatory:
            raise ValidationError(f"{key!r} cannot be changed.")
    current = {
        p.kind: p
        for p in session.scalars(
            select(NotificationPreference).where(NotificationPreference.user_id == user.id)
        )
    }
    changed: dict[str, str] = {}
    for key, delivery in choices.items():
        before = current[key].delivery if key in current else Delivery.IMMEDIATELY
        if before == delivery:
            continue
        if key in current:
            current[key].delivery = delivery
        else:
            session.add(NotificationPreference(user_id=user.id, kind=key, delivery=delivery))
        changed[key] = f"{before.value} -> {delivery.value}"
    session.flush()
    if changed:
        audit.record(session, "notification.preferences", actor=user, obj=user, changed=changed)


def get_kind_or_none(key: str) -> EmailKind | None:
    try:
        return get_kind(key)
    except LookupError:
        return None


def current_preferences(session: AnySession, user: Person) -> dict[str, Delivery]:
    """Every registered kind with the delivery that applies to ``user`` now."""
    stored = preferences_for(session, [user.id])
    return {k.key: effective_delivery(k, stored.get((user.id, k.key))) for k in all_kinds()}


def unsubscribe(session: AnySession, token: str) -> tuple[int, EmailKind]:
    """Switch off the kind named in a signed unsubscribe token for the user it names.

    The token is the authority (RFC 8058 one-click: no login, no CSRF token); it names exactly one
    person and one optional kind and cannot be altered. Unsubscribing twice changes nothing more.
    """
    user_id, key = read_unsubscribe_token(token)
    kind = get_kind_or_none(key)
    users = Base.metadata.tables["users"]
    person = session.scalar(select(users.c.id).where(users.c.id == user_id))
    if person is None or kind is None:
        raise NotFoundError("This unsubscribe link is no longer valid.")
    if kind.mandatory:
        raise ValidationError("This kind of e-mail cannot be switched off.")
    pref = session.scalar(
        select(NotificationPreference).where(
            NotificationPreference.user_id == user_id, NotificationPreference.kind == kind.key
        )
    )
    if pref is not None and pref.delivery == Delivery.OFF:
        return user_id, kind
    if pref is None:
        session.add(NotificationPreference(user_id=user_id, kind=kind.key, delivery=Delivery.OFF))
    else:
        pref.delivery = Delivery.OFF
    session.flush()
    audit.record(
        session,
        "notification.unsubscribe",
        actor=_UserRef(user_id),
        obj=_UserRef(user_id),
        kind=kind.key,
    )
    return user_id, kind


@dataclass(frozen=True)
class _UserRef:
    """A user named by id only, for the audit log (the link's token is the one acting)."""

    id: int
    __tablename__ = "users"


def retry_message(session: AnySession, msg: OutboxMessage, *, actor: Person) -> OutboxMessage:
    """Put a dead (or failed) mail back in the queue for the next worker pass, with fresh tries."""
    check(can_manage_outbox, actor)
    if msg.state not in (OutboxState.DEAD, OutboxState.FAILED):
        raise InvalidTransitionError(f"A {msg.state.label.lower()} mail cannot be retried.")
    before = msg.state
    msg.state = OutboxState.QUEUED
    msg.attempts = 0
    msg.next_attempt_at = utcnow()
    msg.claimed_until = None
    msg.claim_token = None
    session.flush()
    audit.record(session, "outbox.retry", actor=actor, obj=msg, before=before.value)
    return msg


def send_digests(session: AnySession, *, now: dt.datetime | None = None) -> int:
    """Gather every held notification into one digest mail per person; returns the digests made.

    Run once a day (``flask --app portal mail digest``). Held rows become ``digested`` and point at
    their digest, in the same transaction, so a notification is in exactly one digest.
    """
    now = now or utcnow()
    held = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.state == OutboxState.HELD)
        .order_by(OutboxMessage.to_addr, OutboxMessage.id)
        .with_for_update(skip_locked=True)
    ).all()
    by_addr: dict[str, list[OutboxMessage]] = {}
    for m in held:
        by_addr.setdefault(m.to_addr, []).append(m)
    for addr, items in by_addr.items():
        entries = []
        for m in items:
            subject, text = render_summary(m)
            entries.append(
                {"subject": subject, "text": text, "at": m.created_at.strftime("%Y-%m-%d %H:%M")}
            )
        first = items[0]
        digest = OutboxMessage(
            message_id=new_message_id(),
            template=DIGEST.key,
            to_addr=addr,
            to_name=first.to_name,
            recipient_id=first.recipient_id,
            context={"items": entries, "date": now.strftime("%d %B %Y")},
        )
        session.add(digest)
        session.flush()
        for m in items:
            m.state = OutboxState.DIGESTED
            m.digest_id = digest.id
    session.flush()
    if by_addr:
        audit.record(session, "outbox.digest", actor=None, digests=len(by_addr), items=len(held))
    return len(by_addr)
