"""The bytes a mail server receives: ``List-Unsubscribe`` is the literal ``<https://…>`` RFC 2369
and RFC 8058 ask for, never an RFC 2047 encoded-word (security report, item 13)."""

from __future__ import annotations

import re

from flask import Flask

from portal.auth.models import Role
from portal.extensions import db
from portal.institutions.emails import affiliation_requested
from portal.notifications.delivery import deliver_pending
from tests.factories import make_affiliation, make_institution, make_user
from tests.notifications.smtp import SmtpServer


def test_list_unsubscribe_arrives_as_a_literal_url(live: Flask, live_smtp: SmtpServer) -> None:
    inst = make_institution(db.session, name="A University With A Rather Long Name For Folding")
    make_user(db.session, Role.SIGNING_OFFICIAL, institution=inst, email="raw.official@example.org")
    aff = make_affiliation(db.session, user=make_user(db.session), institution=inst)
    affiliation_requested(db.session, aff)
    db.session.commit()
    assert deliver_pending(db.session).sent == 1

    raw = live_smtp.received[0].raw
    headers = raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    (line,) = re.findall(rb"^List-Unsubscribe:.*(?:\n[ \t].*)*", headers, flags=re.MULTILINE)
    assert b"=?" not in line, line
    assert re.fullmatch(
        rb"List-Unsubscribe: <https?://[^\s<>]+/notifications/unsubscribe/[^\s<>]+>", line
    ), line
    assert b"\nList-Unsubscribe-Post: List-Unsubscribe=One-Click" in b"\n" + headers
