"""The delivery worker: claim due outbox rows, render them, send them over SMTP, record the outcome.

Claiming is a short transaction of its own that gives the worker a lease on a batch of rows
(``claimed_until``, ``claim_token``); the SMTP conversation happens outside any open transaction,
so the web application is never blocked behind a slow mail server.

- PostgreSQL: the claim reads with ``FOR UPDATE SKIP LOCKED``, so any number of workers on any
  number of hosts claim disjoint batches; a row leased by one worker is skipped by the others.
- SQLite: the claim runs in a ``BEGIN IMMEDIATE`` transaction (the database's write lock), so claims
  are serialised too. Run one worker per SQLite database (``make run`` does); that is the embedded
  set-up, and more workers would only queue for the same lock.

Delivery is at-least-once: a crash between the SMTP server's "250 OK" and the commit that marks the
row sent makes the row due again once its lease has passed. The Message-ID is fixed in the row, so a
receiving system can recognise the copy.

Failures: an SMTP 5xx refusal of the recipient or the message is permanent and the row is ``dead``
at once; anything else (connection refused, timeout, 4xx) is ``failed`` and retried after an
exponential back-off, until ``MAIL_MAX_ATTEMPTS`` tries make it ``dead``. Dead rows are reported by
the command, listed on the admin outbox page, and can be retried there.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from flask import current_app
from sqlalchemy import insert, or_, select, update

from portal.core import audit
from portal.core.database import write_intent
from portal.core.models import AnySession, utcnow
from portal.notifications.models import (
    DELIVERABLE,
    DeliveryAttempt,
    OutboxMessage,
    OutboxState,
)
from portal.notifications.rendering import build_message, render_email, sender_address

log = logging.getLogger(__name__)

SECURITY_MODES = ("none", "starttls", "ssl")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    #: "none" (plain, e.g. a local relay), "starttls" (upgrade on connect) or "ssl" (implicit TLS).
    security: str
    username: str | None
    password: str | None
    timeout: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SmtpSettings:
        security = str(config["MAIL_SECURITY"]).lower()
        if security not in SECURITY_MODES:
            raise ValueError(f"MAIL_SECURITY must be one of {', '.join(SECURITY_MODES)}")
        return cls(
            host=str(config["MAIL_SERVER"]),
            port=int(config["MAIL_PORT"]),
            security=security,
            username=config["MAIL_USERNAME"] or None,
            password=config["MAIL_PASSWORD"] or None,
            timeout=float(config["MAIL_TIMEOUT"]),
        )


class TransientError(Exception):
    """The mail could not be handed over now; try again later."""

    def __init__(self, message: str, code: int | None = None, *, connection: bool = False):
        super().__init__(message)
        self.code = code
        #: The connection itself failed: the other mails of the batch would fail the same way.
        self.connection = connection


class PermanentError(Exception):
    """The server refused this mail for good (5xx); retrying will not help."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class SmtpTransport:
    """One SMTP connection, opened on first use and reused for a whole pass."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if s.security == "ssl":
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            if s.security == "starttls":
                smtp.starttls(context=context)
            if s.username:
                smtp.login(s.username, s.password or "")
        except BaseException:
            smtp.close()  # a failed TLS upgrade or login must not leak the socket
            raise
        return smtp

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        """Hand ``message`` over for exactly one envelope recipient (never taken from headers)."""
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            self._smtp.send_message(message, from_addr=sender, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as e:
            code, reply = next(iter(e.recipients.values()))
            raise _classify(code, reply) from None
        except smtplib.SMTPDataError as e:
            raise _classify(e.smtp_code, e.smtp_error) from None
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as e:
            self._drop()
            raise TransientError(f"{type(e).__name__}: {e}", connection=True) from None
        except smtplib.SMTPResponseException as e:
            # Sender refused, authentication failed …: a set-up problem, not this mail's fault.
            self._drop()
            raise TransientError(_reply_text(e.smtp_code, e.smtp_error), e.smtp_code) from None
        except smtplib.SMTPException as e:
            self._drop()
            raise TransientError(f"{type(e).__name__}: {e}", connection=True) from None

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                self._drop()


def _reply_text(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {text}"[:900]


def _classify(code: int, reply: bytes | str) -> Exception:
    if 500 <= code < 600:
        return PermanentError(_reply_text(code, reply), code)
    return TransientError(_reply_text(code, reply), code)


def backoff(attempts: int, base: float, cap: float) -> dt.timedelta:
    """Wait before try ``attempts + 1``: base, 2 x base, 4 x base ... never more than ``cap`` seconds."""
    return dt.timedelta(seconds=min(cap, base * 2 ** max(0, attempts - 1)))


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    dead: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.sent + self.failed + len(self.dead)


def claim_batch(
    session: AnySession, *, now: dt.datetime, size: int, lease: dt.timedelta
) -> tuple[str, list[int]]:
    """Lease up to ``size`` due rows to this worker; returns (claim token, row ids) and commits."""
    token = uuid.uuid4().hex
    with write_intent():
        session.commit()  # start the claim in a fresh (on SQLite: BEGIN IMMEDIATE) transaction
        ids = list(
            session.scalars(
                select(OutboxMessage.id)
                .where(
                    OutboxMessage.state.in_(DELIVERABLE),
                    OutboxMessage.next_attempt_at <= now,
                    or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
                )
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
                .limit(size)
                .with_for_update(skip_locked=True)
            )
        )
        if ids:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids))
                .values(claimed_until=now + lease, claim_token=token)
            )
        session.commit()
    return token, ids


def _release(session: AnySession, token: str, ids: list[int]) -> None:
    """Give rows back without counting a try (the pass is ending early)."""
    if not ids:
        return
    with write_intent():
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.claim_token == token)
            .values(claimed_until=None, claim_token=None)
        )
        session.commit()


def _finish(
    session: AnySession,
    msg: OutboxMessage,
    token: str,
    *,
    now: dt.datetime,
    subject: str | None,
    error: Exception | None,
    report: DeliveryReport,
) -> None:
    """Record the outcome of one try (only if this worker still holds the row) and commit."""
    cfg = current_app.config
    attempts = msg.attempts + 1
    code = getattr(error, "code", None)
    values: dict[str, Any] = {"attempts": attempts, "claimed_until": None, "claim_token": None}
    if subject:
        values["subject"] = subject[:300]
    if error is None:
        values |= {"state": OutboxState.SENT, "sent_at": now, "last_error": None}
    elif isinstance(error, PermanentError) or attempts >= int(cfg["MAIL_MAX_ATTEMPTS"]):
        values |= {"state": OutboxState.DEAD, "last_error": str(error)[:1000]}
    else:
        wait = backoff(
            attempts, float(cfg["MAIL_RETRY_BASE_SECONDS"]), float(cfg["MAIL_RETRY_MAX_SECONDS"])
        )
        values |= {
            "state": OutboxState.FAILED,
            "next_attempt_at": now + wait,
            "last_error": str(error)[:1000],
        }
    msg_id = msg.id
    with write_intent():
        result = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == msg_id, OutboxMessage.claim_token == token)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 1) != 1:
            # Our lease ran out and another worker took the row: it records its own outcome.
            log.warning("lost the lease on outbox row %s; not recording this try", msg_id)
            session.rollback()
            return
        session.execute(
            insert(DeliveryAttempt).values(
                message_id=msg_id,
                attempted_at=now,
                ok=error is None,
                smtp_code=code,
                error=str(error)[:1000] if error else None,
            )
        )
        state = values["state"]
        if state == OutboxState.DEAD:
            audit.record(
                session,
                "outbox.dead",
                actor=None,
                obj=msg,
                to=msg.to_addr,
                template=msg.template,
                error=str(error)[:300],
            )
            report.dead.append(msg_id)
            log.error("mail %s to %s is dead: %s", msg_id, msg.to_addr, error)
        elif state == OutboxState.FAILED:
            report.failed += 1
        else:
            report.sent += 1
        session.commit()


def _snapshot(m: OutboxMessage) -> OutboxMessage:
    """A copy outside any session: the commits after each send then cannot expire (and reload) it,
    and the caller's own objects are left alone."""
    return OutboxMessage(
        id=m.id,
        message_id=m.message_id,
        template=m.template,
        to_addr=m.to_addr,
        to_name=m.to_name,
        recipient_id=m.recipient_id,
        context=dict(m.context),
        attempts=m.attempts,
        state=m.state,
    )


def deliver_pending(
    session: AnySession,
    *,
    now: dt.datetime | None = None,
    limit: int | None = None,
    transport: SmtpTransport | None = None,
) -> DeliveryReport:
    """One pass: send every mail that is due (at most ``limit``); returns what happened.

    Needs an application context (settings and templates). Commits through ``session``.
    """
    cfg = current_app.config
    settings = SmtpSettings.from_config(cfg)
    smtp = transport or SmtpTransport(settings)
    sender = sender_address().addr_spec
    lease = dt.timedelta(seconds=int(cfg["MAIL_CLAIM_SECONDS"]))
    batch = int(cfg["MAIL_BATCH_SIZE"])
    report = DeliveryReport()
    try:
        while limit is None or report.total < limit:
            size = batch if limit is None else min(batch, limit - report.total)
            # A fresh time for every claim: a lease must run from when it is taken, or a long pass
            # would hand out leases that have already expired for the other workers.
            token, ids = claim_batch(session, now=now or utcnow(), size=size, lease=lease)
            if not ids:
                break
            lease_end = utcnow() + lease - dt.timedelta(seconds=settings.timeout)
            msgs = [
                _snapshot(m)
                for m in session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.id.in_(ids))
                    .order_by(OutboxMessage.id)
                )
            ]
            session.commit()  # nothing is held open during the SMTP conversation
            connection_down = False
            for i, msg in enumerate(msgs):
                if utcnow() >= lease_end:
                    _release(session, token, [m.id for m in msgs[i:]])
                    break
                at = now or utcnow()
                subject: str | None = None
                error: Exception | None = None
                try:
                    rendered = render_email(msg)
                    subject = rendered.subject
                    email = build_message(msg, rendered)
                except Exception as e:  # a broken template or context will not mend by waiting
                    log.exception("cannot render outbox row %s", msg.id)
                    error = PermanentError(f"cannot render: {type(e).__name__}: {e}")
                if error is None:
                    try:
                        smtp.send(email, sender=sender, recipient=msg.to_addr)
                    except (TransientError, PermanentError) as e:
                        error = e
                        connection_down = isinstance(e, TransientError) and e.connection
                _finish(session, msg, token, now=at, subject=subject, error=error, report=report)
                if connection_down:
                    # The server is unreachable: every other mail of this batch failed this try too.
                    for rest in msgs[i + 1 :]:
                        _finish(
                            session,
                            rest,
                            token,
                            now=at,
                            subject=None,
                            error=TransientError(str(error), connection=True),
                            report=report,
                        )
                    break
            if connection_down:
                break
    finally:
        if transport is None:
            smtp.close()
    return report


@dataclass(frozen=True)
class Backlog:
    """The outbox at a glance, for readiness (``/readyz``) and metrics: mail waiting to go out
    (queued or failed, retried later), the age of the oldest that is due now, and dead mail."""

    waiting: int
    due: int
    oldest_due_seconds: float
    dead: int


def backlog(session: AnySession) -> Backlog:
    """Two aggregate queries over the outbox's (state, next_attempt_at) index."""
    from sqlalchemy import case, func

    now = utcnow()
    is_due = OutboxMessage.next_attempt_at <= now
    waiting, due, oldest = session.execute(
        select(
            func.count(),
            func.count(case((is_due, 1))),
            func.min(case((is_due, OutboxMessage.next_attempt_at))),
        ).where(OutboxMessage.state.in_(DELIVERABLE))
    ).one()
    dead = session.scalar(select(func.count()).where(OutboxMessage.state == OutboxState.DEAD))
    age = (now - oldest).total_seconds() if oldest is not None else 0.0
    return Backlog(waiting=waiting, due=due, oldest_due_seconds=max(age, 0.0), dead=dead or 0)
