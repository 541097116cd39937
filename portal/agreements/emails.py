"""E-mails about agreements: please sign, please sign again (a newer version), a weekly
reminder to whoever the agreement waits on, fully signed (with the PDF), declined.

Whom each mail asks to sign comes from ``permissions.signers_of`` — the same rule that lets them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from portal.agreements.models import Agreement, AgreementState, Signature
from portal.agreements.permissions import signers_of
from portal.auth.models import User
from portal.core.models import AnySession
from portal.core.workflow import Step
from portal.notifications.kinds import EmailKind, register_kind
from portal.notifications.reminders import Period, ReminderRule, register_rule
from portal.notifications.rendering import external_url
from portal.notifications.services import enqueue_email

TO_SIGN = register_kind(
    EmailKind(
        "agreements/to_sign",
        "Agreements to sign",
        "An agreement waits for your signature (or, for a newer version, your signature again).",
        mandatory=True,
    )
)
RECONSENT = register_kind(
    EmailKind(
        "agreements/reconsent",
        "Agreements to sign again",
        "A newer version of an agreement you signed needs your signature by a date.",
        mandatory=True,
    )
)
REMINDER = register_kind(
    EmailKind(
        "agreements/reminder",
        "Reminders of agreements to sign",
        "Weekly, while an agreement still waits for your signature.",
    )
)
SIGNED = register_kind(
    EmailKind(
        "agreements/signed",
        "Fully signed agreements",
        "Every party has signed an agreement you are party to: the signed PDF is ready.",
    )
)
DECLINED = register_kind(
    EmailKind(
        "agreements/declined",
        "Declined agreements",
        "A party declined to sign an agreement you issued or signed.",
    )
)

#: An agreement waiting this long for the same party is reminded of, weekly.
REMIND_AFTER = dt.timedelta(days=3)


def _context(agreement: Agreement, **extra: Any) -> dict[str, Any]:
    replaces = agreement.replaces
    return {
        "title": agreement.title,
        # Not "kind": the renderer gives templates the mail's own kind under that name.
        "agreement_kind": agreement.kind.label,
        "url": external_url("agreements.detail", agreement_id=agreement.id),
        "reconsent": replaces is not None,
        "reconsent_by": (
            replaces.reconsent_by.strftime("%d %B %Y")
            if replaces is not None and replaces.reconsent_by
            else None
        ),
        "change_note": agreement.version.change_note if replaces is not None else "",
        **extra,
    }


def _ask(session: AnySession, agreement: Agreement, kind: str) -> None:
    for signature in agreement.next_signatures:
        enqueue_email(
            session,
            kind,
            to=session.scalars(signers_of(signature)).all(),
            context=_context(
                agreement,
                party=signature.party,
                sign_url=external_url("agreements.sign", signature_id=signature.id),
            ),
        )


def ask_to_sign(session: AnySession, agreement: Agreement) -> None:
    """Whoever may sign the slots whose turn it is is asked to (at issue, and after each
    signature that leaves the agreement waiting on someone else); to sign *again* where the
    agreement re-issues an earlier one for re-consent to a newer version."""
    _ask(session, agreement, (RECONSENT if agreement.replaces_id else TO_SIGN).key)


def signed(session: AnySession, step: Step[Signature, Any]) -> None:
    """After a signature: the next party is asked (the last signature's mail is ``fully_signed``,
    sent by the completion it triggers)."""
    agreement = step.obj.agreement
    if agreement.state == AgreementState.AWAITING:
        ask_to_sign(session, agreement)


def _parties(session: AnySession, agreement: Agreement) -> list[User]:
    """Everyone who signed or is named, and the issuer. Read by id: the signature just given in
    this step has its ``signed_by_id`` but not (yet) its ``signed_by``."""
    ids = {i for s in agreement.signatures for i in (s.signed_by_id, s.user_id) if i is not None}
    if agreement.issued_by_id is not None:
        ids.add(agreement.issued_by_id)
    return list(session.scalars(select(User).where(User.id.in_(ids)).order_by(User.id)))


def fully_signed(session: AnySession, step: Step[Agreement, Any]) -> None:
    """Every signer, the named parties and the issuer get the link to the signed PDF."""
    agreement = step.obj
    enqueue_email(
        session,
        SIGNED.key,
        to=_parties(session, agreement),
        context=_context(
            agreement,
            pdf_url=external_url("agreements.pdf", agreement_id=agreement.id),
            verify_url=external_url("agreements.verify", agreement_id=agreement.id),
            sha256=agreement.text_sha256,
        ),
    )


def declined(session: AnySession, step: Step[Agreement, Any]) -> None:
    """The issuer and everyone who signed or was named hear who declined and why."""
    agreement = step.obj
    decliner = step.actor
    enqueue_email(
        session,
        DECLINED.key,
        to=[u for u in _parties(session, agreement) if u.id != decliner.id],
        context=_context(agreement, declined_by=decliner.display_name, reason=step.reason),
    )


def _waiting(session: AnySession, now: dt.datetime) -> Sequence[Agreement]:
    """Agreements waiting on the same party for longer than ``REMIND_AFTER``: since issue, or since
    the last signature."""
    last_signed = (
        select(func.max(Signature.signed_at))
        .where(Signature.agreement_id == Agreement.id)
        .scalar_subquery()
    )
    return session.scalars(
        select(Agreement).where(
            Agreement.state == AgreementState.AWAITING,
            func.coalesce(last_signed, Agreement.state_changed_at) <= now - REMIND_AFTER,
        )
    ).all()


def remind(session: AnySession, agreement: Agreement) -> None:
    _ask(session, agreement, REMINDER.key)


register_rule(
    ReminderRule(
        key="agreements.unsigned",
        period=Period.WEEKLY,
        due=_waiting,
        send=remind,
        description="Agreements waiting on a signature for three days or more, weekly to the "
        "people who may give it (re-consent included).",
    )
)
