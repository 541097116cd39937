"""Applications to become a partner, made through ``portal.institutions.onboarding`` (so only
valid ones), in any state of the application's way."""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from typing import Any

from flask import Flask, has_app_context
from sqlalchemy import select

from portal.auth.models import Role, User
from portal.core.models import AnySession
from portal.institutions import onboarding
from portal.institutions.emails import OFFICIAL_INVITED
from portal.institutions.models import Institution, InstitutionState
from portal.notifications.models import OutboxMessage
from tests.factories import make_ror, make_user

_seq = itertools.count(1)

STATEMENT = (
    "We train open language models for low-resource languages and would publish every checkpoint "
    "and the evaluation code."
)

#: The staff steps that lead from ``applied`` to each state.
_PATH: dict[InstitutionState, list[tuple[str, str | None]]] = {
    InstitutionState.APPLIED: [],
    InstitutionState.CHANGES_REQUESTED: [("request_changes", "Add the technical contact's phone.")],
    InstitutionState.UNDER_REVIEW: [("start_review", None)],
    InstitutionState.APPROVED: [("start_review", None), ("approve", None)],
    InstitutionState.DECLINED: [("decline", "Not a research organisation.")],
    InstitutionState.WITHDRAWN: [("withdraw", "Applied by mistake.")],
}


def application_fields(n: int | None = None, **kw: Any) -> dict[str, Any]:
    """Keyword arguments of ``onboarding.apply`` for a fresh institution (``kw`` overrides)."""
    n = next(_seq) + 5000 if n is None else n
    domain = kw.pop("domain", f"apply{n}.edu")
    fields: dict[str, Any] = {
        "name": f"Applicant University {n}",
        "ror_id": make_ror(n + 20000),
        "country": "DE",
        "website": f"https://www.{domain}",
        "domains": [domain],
        "statement": STATEMENT,
        "technical_contact_name": "Tech Contact",
        "technical_contact_email": f"it@{domain}",
        "idp_entity_id": None,
        "officials": [f"official@{domain}"],
    }
    fields.update(kw)
    return fields


def make_application(
    db: AnySession,
    *,
    applicant: User | None = None,
    state: InstitutionState = InstitutionState.APPLIED,
    app: Flask | None = None,
    staff: User | None = None,
    **kw: Any,
) -> Institution:
    """An application by ``applicant`` (made if not given) through ``onboarding.apply``, moved to
    ``state`` by program staff (``staff``, made if needed). Needs an app context (for the links in
    its mails): pass ``app`` to have one pushed just for this call."""
    ctx = app.app_context() if app is not None and not has_app_context() else nullcontext()
    with ctx:
        person = applicant or make_user(db)
        inst = onboarding.apply(db, actor=person, **application_fields(**kw))
        steps = _PATH[state]
        if steps:
            officer = staff or make_user(db, Role.PROGRAM_OFFICER)
            for action, reason in steps:
                if action == "withdraw":
                    from portal.institutions.services import transition

                    transition(db, inst, action, actor=officer, reason=reason)
                else:
                    onboarding.decide(db, inst, action, actor=officer, reason=reason)
        assert inst.state == state
        return inst


def mailed_token(db: AnySession, email: str) -> str:
    """The token of the newest invitation mailed to ``email`` (read from the link in the outbox:
    the database keeps only its hash)."""
    msg = db.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.template == OFFICIAL_INVITED.key, OutboxMessage.to_addr == email)
        .order_by(OutboxMessage.id.desc())
    ).first()
    assert msg is not None, f"no invitation was mailed to {email}"
    return str(msg.context["accept_url"]).rsplit("/", 1)[1]
