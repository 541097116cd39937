"""The whole path of access to a controlled dataset through the services: asked for, approved by a
steward, pending until its data-use agreement is signed, then listed as current; revoked, it is
gone at once; a registered dataset's terms give access directly."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementState
from portal.auth.models import Role
from portal.core.models import utcnow
from portal.datasets import services
from portal.datasets.models import AccessTier, GrantState, RequestState
from tests.factories import make_dataset, make_grant, make_user
from tests.support.mail import outbox


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.test_request_context():
        yield


def test_request_approve_sign_then_current_then_revoked(db: Session) -> None:
    dataset = make_dataset(db)
    steward = dataset.stewards[0].user
    researcher = make_user(db, Role.RESEARCHER)
    request = services.request_access(
        db,
        dataset,
        actor=researcher,
        intended_use="Evaluating open models on clinical notes, no re-identification.",
    )
    assert request.state == RequestState.SUBMITTED
    assert any(m.to_addr == steward.email for m in outbox(db, "datasets/request_received"))
    services.approve(db, request, actor=steward, ends_on=utcnow().date() + dt.timedelta(days=90))
    grant = request.grant
    assert grant is not None and grant.state == GrantState.PENDING
    assert grant.agreement is not None and grant.agreement.state == AgreementState.AWAITING
    assert list(db.scalars(services.current_grants(dataset))) == []

    signed = make_grant(db, dataset=dataset)
    assert signed.state == GrantState.ACTIVE
    assert list(db.scalars(services.current_grants(dataset))) == [signed]

    services.revoke(db, signed, actor=steward, reason="Data shared outside the project.")
    assert signed.state == GrantState.REVOKED
    assert list(db.scalars(services.current_grants(dataset))) == []

    # The pending one revoked takes its unsigned agreement with it.
    services.revoke(db, grant, actor=steward, reason="Asked in error.")
    assert grant.agreement.state == AgreementState.WITHDRAWN


def test_registered_terms_give_access_at_once(db: Session) -> None:
    dataset = make_dataset(db, tier=AccessTier.REGISTERED, terms="Cite us.")
    researcher = make_user(db, Role.RESEARCHER)
    grant = services.accept_terms(db, dataset, actor=researcher, accepted=True)
    assert grant.state == GrantState.ACTIVE
    assert list(db.scalars(services.current_grants(dataset))) == [grant]
