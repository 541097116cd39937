"""Only partner institutions take requests to join, and asking grants no view of an institution
(security report, item 6)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.core.errors import PermissionDeniedError
from portal.institutions import services
from portal.institutions.models import InstitutionState
from tests.factories import make_affiliation, make_institution, make_user
from tests.support.app import login


def test_the_request_form_offers_partners_only(client: FlaskClient, db: Session) -> None:
    partner = make_institution(db, name="Partner University")
    others = [
        make_institution(db, name=f"Not a partner {s.value}", state=s)
        for s in InstitutionState
        if s != InstitutionState.PARTNER
    ]
    login(client, make_user(db))
    html = client.get("/affiliations/request").get_data(as_text=True)
    assert partner.name in html
    assert not [i.name for i in others if i.name in html]
    for inst in others:
        resp = client.post("/affiliations/request", data={"institution_id": inst.id})
        assert resp.status_code in (403, 422), inst.state


@pytest.mark.parametrize("state", [InstitutionState.APPLIED, InstitutionState.UNDER_REVIEW])
def test_asking_to_join_an_applicant_is_refused(db: Session, state: InstitutionState) -> None:
    with pytest.raises(PermissionDeniedError, match="Only partner institutions"):
        services.request_affiliation(db, make_institution(db, state=state), actor=make_user(db))


def test_a_request_grants_no_view_of_a_non_partner(client: FlaskClient, db: Session) -> None:
    applicant = make_institution(db, state=InstitutionState.APPLIED)
    request = make_affiliation(db, institution=applicant)  # made before only partners took them
    login(client, request.user)
    assert client.get(f"/institutions/{applicant.id}").status_code == 403
    assert applicant.name not in client.get("/institutions/").get_data(as_text=True)
