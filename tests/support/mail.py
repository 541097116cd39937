"""Rendered e-mails compared with stored expected texts (``tests/notifications/expected/*.txt``;
run with ``UPDATE_EXPECTED=1`` to rewrite them after a deliberate wording change)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.notifications.models import OutboxMessage
from portal.notifications.rendering import render_email

EXPECTED = Path(__file__).parent.parent / "notifications" / "expected"
_TOKEN = re.compile(r"/notifications/unsubscribe/[A-Za-z0-9_.\-]+")
_IDS = re.compile(r"/(proposals|assignments)/\d+")


def rendered(msg: OutboxMessage) -> str:
    """Subject, text and HTML of ``msg`` as the worker would render them, with the parts that
    change from run to run (unsubscribe tokens, ids in links) normalised."""
    r = render_email(msg)
    text = f"Subject: {r.subject}\n\n--- text/plain ---\n{r.text}\n--- text/html ---\n{r.html}"
    return _IDS.sub(r"/\1/<id>", _TOKEN.sub("/notifications/unsubscribe/<token>", text))


def check_expected(name: str, actual: str) -> None:
    """``actual`` equals ``expected/<name>.txt`` (or rewrites it under UPDATE_EXPECTED)."""
    path = EXPECTED / f"{name}.txt"
    if os.environ.get("UPDATE_EXPECTED"):
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} differs from {path}"


def outbox(db: Session, template: str) -> list[OutboxMessage]:
    """The outbox rows of one kind, in order."""

    return list(
        db.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.template == template)
            .order_by(OutboxMessage.id)
        )
    )
