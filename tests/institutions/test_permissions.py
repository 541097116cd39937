"""The permission rules of institutions and affiliations agree with their list filters and with
whom the mails ask to act, for every kind of user and object."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.institutions.models import Institution, InstitutionState
from portal.institutions.permissions import (
    can_decide_affiliation,
    can_view_institution,
    decidable_affiliations,
    deciders_of_affiliation,
    visible_institutions,
)
from portal.institutions.services import request_affiliation, withdraw_affiliation_request
from tests.factories import make_affiliation, make_institution, make_user
from tests.support.visibility import disagreements, recipients_disagree


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Requests write e-mails to the outbox, which reads the app's configuration."""
    with app.app_context():
        yield


def _world(db: Session) -> tuple[list[User], list[Institution], list[Any]]:
    """Institutions in every state, one of them without a signing official; people of every role,
    at one institution or another, and requests to join several of them."""
    insts = [make_institution(db, state=s) for s in InstitutionState]
    orphan = make_institution(db, state=InstitutionState.PARTNER)  # no signing official
    applied = insts[0]
    users = [
        make_user(db, Role.SIGNING_OFFICIAL, institution=applied),
        make_user(db, Role.SIGNING_OFFICIAL, institution=insts[2]),
        make_user(db, Role.RESEARCHER, institution=insts[1]),
        make_user(db, Role.REVIEWER),
        make_user(db, Role.DATA_STEWARD),
        make_user(db, Role.PROGRAM_OFFICER),
        make_user(db, Role.ADMIN),
        make_user(db),
        make_user(db, Role.SIGNING_OFFICIAL, institution=insts[2], is_disabled=True),
    ]
    partners = [i for i in insts if i.state == InstitutionState.PARTNER]
    requests = [request_affiliation(db, inst, actor=make_user(db)) for inst in (*partners, orphan)]
    # A request to join an applicant (from before only partners took requests) grants no view of it.
    requests.append(make_affiliation(db, institution=applied))
    users.append(requests[-1].user)
    users.append(make_user(db))
    withdraw_affiliation_request(
        db, request_affiliation(db, partners[0], actor=users[-1]), actor=users[-1]
    )
    return users, [*insts, orphan], requests


def test_institution_list_shows_exactly_what_the_detail_page_allows(db: Session) -> None:
    users, insts, _ = _world(db)
    assert disagreements(db, visible_institutions, can_view_institution, users, insts) == []


def test_requests_to_decide_list_exactly_what_the_rule_allows(db: Session) -> None:
    users, _, requests = _world(db)
    assert disagreements(db, decidable_affiliations, can_decide_affiliation, users, requests) == []


def test_request_mail_asks_exactly_those_who_may_decide(db: Session) -> None:
    users, _, requests = _world(db)
    everyone = users + [r.user for r in requests]
    assert (
        recipients_disagree(db, deciders_of_affiliation, can_decide_affiliation, everyone, requests)
        == []
    )
