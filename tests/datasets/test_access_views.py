"""The access pages by every role (requests, decisions, grants, renewals, revocation), other
datasets' and other institutions' requests and grants (IDOR), a requester deciding their own,
bad input and stale decisions (a clear message, nothing changed), CSRF, and what each page shows:
the terms, the data-use agreement and the stewards before asking; the agreement, who signs next
and where the data is once approved."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, object_session

from portal.agreements.models import AgreementKind
from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.core.workflow import Step
from portal.datasets import services, workflow
from portal.datasets.models import (
    AccessRequest,
    AccessTier,
    DatasetState,
    Grant,
    GrantState,
    RequestState,
)
from portal.proposals.models import ProposalState
from tests.factories import (
    LOGGED_IN,
    ROLE_NAMES,
    make_access_request,
    make_actor,
    make_agreement_template,
    make_dataset,
    make_institution,
    make_proposal,
    make_user,
)
from tests.factories import make_grant as _make_grant
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}
#: Who sees a request or grant of a researcher at the actor's institution, on a dataset the actor
#: stewards (when a steward), held by the actor (when a researcher).
OWN = STAFF | {"researcher", "official", "steward"}
#: Who may ask for a controlled dataset or accept a registered one's terms: people with an active
#: affiliation at a partner (researchers and signing officials here).
AFFILIATED = {"researcher", "official"}

USE = "Fine-tuning an open model on it and publishing the evaluation, never the raw records."
ENDS = (utcnow().date() + dt.timedelta(days=60)).isoformat()

# Placeholders: {own} a submitted request on dataset A (stewarded by the actor when a steward) by a
# researcher at the actor's institution (the actor when a researcher); {changes} that researcher's
# request sent back for changes (on dataset E, also the steward's); {other} a request on dataset B
# (another steward) by a researcher at another institution; {grant} that researcher's active
# access to dataset C (the steward's), {other_grant} another institution's access to B; {fresh}
# the slug of a controlled dataset nobody asked for, {a} dataset A's slug and {a_id} its id,
# {registered} a registered dataset's slug, {draft} a draft dataset's slug.
CASES = [
    case("requests", "GET", "/datasets/requests", LOGGED_IN),
    case(
        "requests, waiting on me and filtered",
        "GET",
        "/datasets/requests?show=waiting&state=submitted&dataset={a_id}&kind=new&q=Dataset"
        "&sort=oldest&page=2",
        LOGGED_IN,
    ),
    case("requests, mine", "GET", "/datasets/requests?show=mine&kind=renewal", LOGGED_IN),
    case("requests as CSV", "GET", "/datasets/requests?format=csv", STAFF | {"steward"}),
    case("own request", "GET", "/datasets/requests/{own}", OWN),
    case("another institution's request (IDOR)", "GET", "/datasets/requests/{other}", STAFF),
    case("a request that does not exist", "GET", "/datasets/requests/2147483647", set()),
    case(
        "approve",
        "POST",
        "/datasets/requests/{own}/approve",
        {"steward"},
        302,
        {"approve-ends_on": ENDS, "approve-note": "Keep it on the cluster."},
    ),
    case(
        "ask for changes",
        "POST",
        "/datasets/requests/{own}/request_changes",
        {"steward"},
        302,
        {"request_changes-reason": "Say how the records are kept."},
    ),
    case(
        "decline",
        "POST",
        "/datasets/requests/{own}/decline",
        {"steward"},
        302,
        {"decline-reason": "Not what the data is for."},
    ),
    case("withdraw", "POST", "/datasets/requests/{own}/withdraw", {"researcher"}, 302),
    case(
        "send again",
        "POST",
        "/datasets/requests/{changes}/resubmit",
        {"researcher"},
        302,
        {"resubmit-intended_use": USE + " Kept on the cluster only."},
    ),
    case(
        "approve another dataset's request (IDOR)",
        "POST",
        "/datasets/requests/{other}/approve",
        set(),
        data={"approve-ends_on": ENDS},
    ),
    case(
        "decline another dataset's request (IDOR)",
        "POST",
        "/datasets/requests/{other}/decline",
        set(),
        data={"decline-reason": "No."},
    ),
    case("an action that does not exist", "POST", "/datasets/requests/{own}/explode", set()),
    case("access", "GET", "/datasets/access", LOGGED_IN),
    case(
        "access, mine and filtered",
        "GET",
        "/datasets/access?show=mine&state=active&dataset={c_id}&expiring=y&q=Person&sort=dataset",
        LOGGED_IN,
    ),
    case("access to my datasets", "GET", "/datasets/access?show=stewarded&page=3", LOGGED_IN),
    case("access as CSV", "GET", "/datasets/access?format=csv", STAFF | {"steward", "official"}),
    case("own access", "GET", "/datasets/access/{grant}", OWN),
    case("another institution's access (IDOR)", "GET", "/datasets/access/{other_grant}", STAFF),
    case("access that does not exist", "GET", "/datasets/access/2147483647", set()),
    case(
        "revoke",
        "POST",
        "/datasets/access/{grant}/revoke",
        STAFF | {"steward"},
        302,
        {"revoke-reason": "Shared outside the project."},
    ),
    case(
        "revoke another dataset's access (IDOR)",
        "POST",
        "/datasets/access/{other_grant}/revoke",
        STAFF,
        302,
        {"revoke-reason": "Shared outside the project."},
    ),
    case("ask for more time (page)", "GET", "/datasets/access/{grant}/renew", {"researcher"}),
    case(
        "ask for more time",
        "POST",
        "/datasets/access/{grant}/renew",
        {"researcher"},
        302,
        {"intended_use": USE + " The evaluation needs three more months."},
    ),
    case("more time on another's access", "GET", "/datasets/access/{other_grant}/renew", set()),
    case("request form", "GET", "/datasets/{fresh}/request", AFFILIATED),
    case("request form, asked already", "GET", "/datasets/{a}/request", AFFILIATED),
    case(
        "ask for access",
        "POST",
        "/datasets/{fresh}/request",
        AFFILIATED,
        302,
        {"intended_use": USE},
    ),
    case("request form of a draft", "GET", "/datasets/{draft}/request", set()),
    case("request form of a registered dataset", "GET", "/datasets/{registered}/request", set()),
    case(
        "accept the terms",
        "POST",
        "/datasets/{registered}/accept",
        AFFILIATED,
        302,
        {"accepted": "y"},
    ),
    case(
        "accept a controlled dataset's terms",
        "POST",
        "/datasets/{a}/accept",
        set(),
        data={"accepted": "y"},
    ),
]


def make_grant(app: Flask, db: Session, **kw: Any) -> Grant:
    """``tests.factories.make_grant`` (a steward approves, the researcher signs) in an app context
    of its own (its mail links to the portal), popped before the test's requests: each request
    has its own, with its own database session."""
    with app.app_context():
        return _make_grant(db, **kw)


def _snapshot(db: Session) -> list[object]:
    requests = [
        (r.id, r.state, r.intended_use, r.ends_on, r.decision_note, r.grant_id)
        for r in db.scalars(select(AccessRequest).order_by(AccessRequest.id))
    ]
    grants = [(g.id, g.state, g.ends_on) for g in db.scalars(select(Grant).order_by(Grant.id))]
    return [requests, grants]


def _world(app: Flask, db: Session, role: str) -> tuple[User | None, dict[str, Any]]:
    own = make_institution(db)
    actor = make_actor(db, role, own)
    steward = actor if role == "steward" else make_user(db, Role.DATA_STEWARD)
    assert steward is not None
    researcher = actor if role == "researcher" else make_user(db, Role.RESEARCHER, institution=own)
    assert researcher is not None
    a = make_dataset(db, stewards=[steward])
    b = make_dataset(db)
    c = make_dataset(db, stewards=[steward])
    e = make_dataset(db, stewards=[steward])
    fresh = make_dataset(db)
    registered = make_dataset(db, tier=AccessTier.REGISTERED, terms="Cite the corpus.")
    draft = make_dataset(db, state=DatasetState.DRAFT)
    outsider = make_user(db, Role.RESEARCHER)
    own_request = make_access_request(db, dataset=a, user=researcher)
    changes = make_access_request(
        db, dataset=e, user=researcher, state=RequestState.CHANGES_REQUESTED
    )
    other = make_access_request(db, dataset=b, user=outsider)
    grant = make_grant(app, db, dataset=c, user=researcher)
    other_grant = make_grant(app, db, dataset=b, user=make_user(db, Role.RESEARCHER))
    assert grant.state == other_grant.state == GrantState.ACTIVE
    return actor, {
        "own": own_request.id,
        "changes": changes.id,
        "other": other.id,
        "grant": grant.id,
        "other_grant": other_grant.id,
        "a": a.slug,
        "a_id": a.id,
        "c_id": c.id,
        "fresh": fresh.slug,
        "registered": registered.slug,
        "draft": draft.slug,
    }


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(
    app: Flask, client: FlaskClient, db: Session, role: str, case: Case
) -> None:
    actor, values = _world(app, db, role)
    if actor is not None:
        login(client, actor)
    resp = check_route(
        client, db, role, actor.id if actor else None, case, values, lambda: _snapshot(db)
    )
    if role in case.allowed and "format=csv" in case.path:
        assert resp.mimetype == "text/csv"


# --- helpers -------------------------------------------------------------------------------------


def _page(client: FlaskClient, url: str) -> str:
    resp = client.get(url)
    assert resp.status_code == 200, (url, resp.status_code)
    return resp.get_data(as_text=True)


def _fresh(db: Session, obj: Any) -> Any:
    """``obj`` as the requests left it (the test's session reads it again)."""
    db.expire_all()
    return obj


def _count(db: Session, model: type[Any]) -> int:
    return db.scalar(select(func.count()).select_from(model)) or 0


def _csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


def _sign(app: Flask, db: Session, grant: Grant, signer: User) -> None:
    from portal.agreements.services import sign

    agreement = grant.agreement
    assert agreement is not None
    (slot,) = agreement.next_signatures
    with app.app_context():
        sign(
            db,
            slot,
            actor=signer,
            typed_name=signer.display_name,
            confirmed=True,
            shown_sha256=agreement.text_sha256,
            ip="192.0.2.1",
            user_agent="pytest",
        )


# --- who decides ---------------------------------------------------------------------------------


def test_a_steward_of_one_dataset_cannot_decide_or_revoke_another_datasets(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    steward = make_user(db, Role.DATA_STEWARD)
    mine = make_dataset(db, stewards=[steward])
    theirs = make_dataset(db)
    researcher = make_user(db, Role.RESEARCHER)
    on_mine = make_access_request(db, dataset=mine, user=researcher)
    on_theirs = make_access_request(db, dataset=theirs, user=researcher)
    their_grant = make_grant(app, db, dataset=theirs)
    before = _snapshot(db)
    login(client, steward)

    base = f"/datasets/requests/{on_theirs.id}"
    for action, data in [
        ("approve", {"approve-ends_on": ENDS}),
        ("request_changes", {"request_changes-reason": "More detail."}),
        ("decline", {"decline-reason": "No."}),
    ]:
        resp = client.post(f"{base}/{action}", data=data)
        assert resp.status_code == 403, action
        assert "You cannot see this access request." in resp.get_data(as_text=True)
    resp = client.post(f"/datasets/access/{their_grant.id}/revoke", data={"revoke-reason": "No."})
    assert resp.status_code == 403
    assert client.get(base).status_code == 403
    assert client.get(f"/datasets/access/{their_grant.id}").status_code == 403
    db.expire_all()
    assert _snapshot(db) == before

    # Their own dataset's request is theirs to decide, and only it is listed.
    listed = _page(client, "/datasets/requests")
    assert re.findall(r'href="/datasets/requests/(\d+)"', listed) == [str(on_mine.id)]
    assert 'id="form-approve"' in _page(client, f"/datasets/requests/{on_mine.id}")


def test_a_requester_never_decides_their_own_request(client: FlaskClient, db: Session) -> None:
    inst = make_institution(db)
    both = make_user(db, Role.DATA_STEWARD, Role.RESEARCHER, institution=inst)
    other_steward = make_user(db, Role.DATA_STEWARD)
    dataset = make_dataset(db, stewards=[both, other_steward])
    own = make_access_request(db, dataset=dataset, user=both)
    login(client, both)

    page = _page(client, f"/datasets/requests/{own.id}")
    assert 'id="form-approve"' not in page and 'id="form-decline"' not in page
    assert 'id="form-withdraw"' in page  # theirs to withdraw
    for action, data in [
        ("approve", {"approve-ends_on": ENDS}),
        ("decline", {"decline-reason": "Mine."}),
        ("request_changes", {"request_changes-reason": "Mine."}),
    ]:
        resp = client.post(f"/datasets/requests/{own.id}/{action}", data=data)
        assert resp.status_code == 403
        assert "never on their own" in resp.get_data(as_text=True)
    assert _fresh(db, own).state == RequestState.SUBMITTED and own.grant_id is None
    waiting = _page(client, "/datasets/requests?show=waiting")
    assert f"/datasets/requests/{own.id}" not in waiting

    # The other steward has it waiting on them, and decides it.
    login(client, other_steward)
    waiting = _page(client, "/datasets/requests?show=waiting")
    assert f"/datasets/requests/{own.id}" in waiting
    resp = client.post(f"/datasets/requests/{own.id}/approve", data={"approve-ends_on": ENDS})
    assert resp.status_code == 302
    assert _fresh(db, own).state == RequestState.APPROVED


def test_a_signing_official_sees_their_institutions_people_only(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    home, away = make_institution(db), make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=home)
    ours = make_user(db, Role.RESEARCHER, institution=home)
    theirs = make_user(db, Role.RESEARCHER, institution=away)
    dataset = make_dataset(db)
    our_request = make_access_request(db, dataset=dataset, user=ours)
    their_request = make_access_request(db, dataset=dataset, user=theirs)
    our_grant = make_grant(app, db, user=ours)
    their_grant = make_grant(app, db, user=theirs)
    login(client, official)

    listed = _page(client, "/datasets/requests")
    origin = our_grant.origin_request
    assert origin is not None  # the approved request that gave the access
    assert sorted(re.findall(r'href="/datasets/requests/(\d+)"', listed)) == sorted(
        [str(our_request.id), str(origin.id)]
    )
    assert client.get(f"/datasets/requests/{our_request.id}").status_code == 200
    assert client.get(f"/datasets/requests/{their_request.id}").status_code == 403
    assert client.get("/datasets/requests?format=csv").status_code == 403

    listed = _page(client, "/datasets/access")
    assert re.findall(r'href="/datasets/access/(\d+)"', listed) == [str(our_grant.id)]
    page = _page(client, f"/datasets/access/{our_grant.id}")
    assert 'id="form-revoke"' not in page and 'id="location"' not in page  # not theirs to use
    assert client.get(f"/datasets/access/{their_grant.id}").status_code == 403
    rows = _csv(client.get("/datasets/access?format=csv").data)
    assert [r[0] for r in rows[1:]] == [str(our_grant.id)]
    assert their_grant.user.display_name not in str(rows)


# --- bad input changes nothing -------------------------------------------------------------------


def test_an_end_date_past_the_longest_access_is_refused(client: FlaskClient, db: Session) -> None:
    dataset = make_dataset(db, max_months=6)
    req = make_access_request(db, dataset=dataset)
    login(client, dataset.stewards[0].user)
    latest = services.longest_end(dataset)
    url = f"/datasets/requests/{req.id}/approve"

    page = _page(client, f"/datasets/requests/{req.id}")
    assert f'value="{latest.isoformat()}"' in page  # the default: the longest allowed
    assert f'max="{latest.isoformat()}"' in page
    for ends_on, message in [
        ((latest + dt.timedelta(days=1)).isoformat(), "lasts at most 6 months"),
        (utcnow().date().isoformat(), "Give the last day of access, after today."),
        ("", "Give the last day of access."),
        ("next year", "Not a valid date value."),
    ]:
        resp = client.post(url, data={"approve-ends_on": ends_on})
        assert resp.status_code == 422, ends_on
        assert message in resp.get_data(as_text=True), ends_on
    assert _fresh(db, req).state == RequestState.SUBMITTED
    assert _count(db, Grant) == 0

    resp = client.post(url, data={"approve-ends_on": latest.isoformat()})
    assert resp.status_code == 302
    req = _fresh(db, req)
    assert req.state == RequestState.APPROVED and req.ends_on == latest
    assert req.grant is not None and req.grant.ends_on == latest


def test_a_decision_without_its_reason_is_refused(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    dataset = make_dataset(db)
    req = make_access_request(db, dataset=dataset)
    grant = make_grant(app, db, dataset=dataset)
    login(client, dataset.stewards[0].user)
    for action in ("decline", "request_changes"):
        for reason in ("", "   "):
            resp = client.post(
                f"/datasets/requests/{req.id}/{action}", data={f"{action}-reason": reason}
            )
            assert resp.status_code == 422
            body = resp.get_data(as_text=True)
            assert "Give a reason." in body
            assert f'id="{action}-reason"' in body  # the form comes back, with its error
    resp = client.post(f"/datasets/access/{grant.id}/revoke", data={"revoke-reason": " "})
    assert resp.status_code == 422 and "Give a reason." in resp.get_data(as_text=True)
    db.expire_all()
    assert req.state == RequestState.SUBMITTED and req.decision_note is None
    assert grant.state == GrantState.ACTIVE


def test_terms_are_accepted_only_with_the_box_ticked(client: FlaskClient, db: Session) -> None:
    dataset = make_dataset(db, tier=AccessTier.REGISTERED, terms="Cite **the corpus**.")
    researcher = make_user(db, Role.RESEARCHER)
    login(client, researcher)
    for data in ({}, {"accepted": ""}):
        resp = client.post(f"/datasets/{dataset.slug}/accept", data=data)
        assert resp.status_code == 422
        body = resp.get_data(as_text=True)
        assert "Tick the box to accept the terms of use." in body
        assert "<strong>the corpus</strong>" in body  # the terms are shown again
    assert _count(db, Grant) == 0

    resp = client.post(f"/datasets/{dataset.slug}/accept", data={"accepted": "y"})
    grant = db.scalars(select(Grant).where(Grant.user_id == researcher.id)).one()
    assert resp.status_code == 302 and resp.headers["Location"] == f"/datasets/access/{grant.id}"
    assert grant.state == GrantState.ACTIVE and grant.ends_on == services.longest_end(dataset)
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "You accepted the terms of" in page and 'id="location"' in page


def test_a_short_intended_use_is_refused(app: Flask, client: FlaskClient, db: Session) -> None:
    dataset = make_dataset(db)
    researcher = make_user(db, Role.RESEARCHER)
    login(client, researcher)
    resp = client.post(f"/datasets/{dataset.slug}/request", data={"intended_use": "  research  "})
    assert resp.status_code == 422
    assert "in 30 to 5,000 characters" in resp.get_data(as_text=True)
    assert _count(db, AccessRequest) == 0

    grant = make_grant(app, db, user=researcher)
    resp = client.post(f"/datasets/access/{grant.id}/renew", data={"intended_use": "More."})
    assert resp.status_code == 422 and "in 30 to 5,000 characters" in resp.get_data(as_text=True)
    changes = make_access_request(db, user=researcher, state=RequestState.CHANGES_REQUESTED)
    resp = client.post(
        f"/datasets/requests/{changes.id}/resubmit", data={"resubmit-intended_use": "Same."}
    )
    assert resp.status_code == 422 and "in 30 to 5,000 characters" in resp.get_data(as_text=True)
    db.expire_all()
    assert changes.state == RequestState.CHANGES_REQUESTED
    assert _count(db, AccessRequest) == 2  # the grant's own and the one sent back


@pytest.mark.usefixtures("csrf_enabled")
def test_posts_without_the_csrf_token_change_nothing(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    dataset = make_dataset(db)
    registered = make_dataset(db, tier=AccessTier.REGISTERED)
    req = make_access_request(db, dataset=dataset)
    grant = make_grant(app, db, dataset=dataset)
    steward = dataset.stewards[0].user
    login(client, steward)
    before = _snapshot(db)
    for url, data in [
        (f"/datasets/requests/{req.id}/approve", {"approve-ends_on": ENDS}),
        (f"/datasets/requests/{req.id}/decline", {"decline-reason": "No."}),
        (f"/datasets/access/{grant.id}/revoke", {"revoke-reason": "No."}),
    ]:
        resp = client.post(url, data=data)
        assert resp.status_code == 400 and "Reload the page" in resp.get_data(as_text=True)
    login(client, grant.user)
    for url, data in [
        (f"/datasets/{dataset.slug}/request", {"intended_use": USE}),
        (f"/datasets/{registered.slug}/accept", {"accepted": "y"}),
        (f"/datasets/access/{grant.id}/renew", {"intended_use": USE}),
    ]:
        assert client.post(url, data=data).status_code == 400, url
    db.expire_all()
    assert _snapshot(db) == before

    # With the token the page gave (each form has its own prefix), the decision goes through.
    login(client, steward)
    page = _page(client, f"/datasets/requests/{req.id}")
    token = re.search(r'name="approve-csrf_token" type="hidden" value="([^"]+)"', page)
    assert token is not None
    resp = client.post(
        f"/datasets/requests/{req.id}/approve",
        data={"approve-csrf_token": token[1], "approve-ends_on": ENDS},
    )
    assert resp.status_code == 302
    assert _fresh(db, req).state == RequestState.APPROVED


# --- decided meanwhile ---------------------------------------------------------------------------


def test_a_stale_decision_shows_the_runners_message_and_changes_nothing(
    client: FlaskClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = make_dataset(db)
    req = make_access_request(db, dataset=dataset)
    login(client, dataset.stewards[0].user)
    approvable = workflow.REQUEST_WORKFLOW.checks["approve"]

    def decided_meanwhile(step: Step[Any, Any]) -> None:
        """Another steward's decision lands between this one's read and its write."""
        approvable(step)
        session = object_session(step.obj)
        assert session is not None
        session.execute(
            update(AccessRequest)
            .where(AccessRequest.id == step.obj.id)
            .values(state=RequestState.WITHDRAWN)
        )

    monkeypatch.setitem(workflow.REQUEST_WORKFLOW.checks, "approve", decided_meanwhile)
    resp = client.post(f"/datasets/requests/{req.id}/approve", data={"approve-ends_on": ENDS})
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert "Approve: someone else has already changed this request" in body
    assert "Nothing was changed." in body
    assert _fresh(db, req).state == RequestState.SUBMITTED and req.grant_id is None
    assert _count(db, Grant) == 0


def test_a_decision_taken_already_is_told_not_repeated(client: FlaskClient, db: Session) -> None:
    first, second = make_user(db, Role.DATA_STEWARD), make_user(db, Role.DATA_STEWARD)
    dataset = make_dataset(db, stewards=[first, second])
    req = make_access_request(db, dataset=dataset)
    login(client, second)
    page = _page(client, f"/datasets/requests/{req.id}")  # the second steward reads it …
    assert 'id="form-approve"' in page
    login(client, first)  # … the first declines it …
    resp = client.post(
        f"/datasets/requests/{req.id}/decline", data={"decline-reason": "Out of scope."}
    )
    assert resp.status_code == 302
    login(client, second)  # … and the second, on the page read before, approves.
    resp = client.post(f"/datasets/requests/{req.id}/approve", data={"approve-ends_on": ENDS})
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert "Approve is not possible while the request is declined." in body
    assert 'id="form-approve"' not in body and "Out of scope." in body
    assert _fresh(db, req).state == RequestState.DECLINED and _count(db, Grant) == 0


# --- what the pages show -------------------------------------------------------------------------


def test_the_request_form_shows_the_terms_the_agreement_and_the_stewards(
    client: FlaskClient, db: Session
) -> None:
    steward = make_user(db, Role.DATA_STEWARD, display_name="Stella Steward")
    template = make_agreement_template(
        db,
        kind=AgreementKind.DATA_USE,
        body="# Data use\n\n{{ researcher }} at {{ institution }} uses {{ dataset }} for "
        "{{ purpose }} until {{ expires_on }}.",
    )
    dataset = make_dataset(
        db,
        stewards=[steward],
        terms="No **re-identification**.",
        name="Clinical Notes",
        dua_template=template,
        max_months=3,
    )
    inst = make_institution(db, name="Northlake University")
    researcher = make_user(db, Role.RESEARCHER, institution=inst, display_name="Rosa Researcher")
    active = make_proposal(db, pi=researcher, state=ProposalState.ACTIVE, title="Open medicine")
    make_proposal(db, pi=researcher, title="Still a draft")
    elsewhere = make_proposal(db, state=ProposalState.ACTIVE, title="Not theirs")
    login(client, researcher)

    page = _page(client, f"/datasets/{dataset.slug}/request")
    assert "<strong>re-identification</strong>" in page
    assert "Stella Steward" in page.partition('id="stewards"')[2]
    dua = page.partition('id="dua-text"')[2].partition("</div>")[0]
    latest = services.longest_end(dataset)
    assert (
        "Rosa Researcher at Northlake University uses Clinical Notes for [the intended use you "
        f"write below] until [the end date the steward sets: at most {latest:%d %B %Y}]." in dua
    )
    assert "{{" not in dua
    assert f'<option value="{active.id}">Open medicine</option>' in page
    assert "Still a draft" not in page and "Not theirs" not in page

    # A project that is not one of theirs is refused by the form.
    resp = client.post(
        f"/datasets/{dataset.slug}/request",
        data={"intended_use": USE, "proposal_id": str(elsewhere.id)},
    )
    assert resp.status_code == 422 and "Not a valid choice" in resp.get_data(as_text=True)
    assert _count(db, AccessRequest) == 0

    resp = client.post(
        f"/datasets/{dataset.slug}/request",
        data={"intended_use": USE, "proposal_id": str(active.id)},
    )
    req = db.scalars(select(AccessRequest)).one()
    assert resp.status_code == 302 and resp.headers["Location"] == f"/datasets/requests/{req.id}"
    assert req.proposal_id == active.id and req.institution_id == inst.id
    assert req.intended_use == USE

    # Asked already: the page says so, with a link, instead of the form.
    page = _page(client, f"/datasets/{dataset.slug}/request")
    assert 'name="intended_use"' not in page
    assert f'href="/datasets/requests/{req.id}"' in page and "already asked" in page
    resp = client.post(f"/datasets/{dataset.slug}/request", data={"intended_use": USE})
    assert resp.status_code == 409 and _count(db, AccessRequest) == 1


def test_someone_with_access_is_sent_to_it(app: Flask, client: FlaskClient, db: Session) -> None:
    grant = make_grant(app, db)
    login(client, grant.user)
    page = _page(client, f"/datasets/{grant.dataset.slug}/request")
    assert 'name="intended_use"' not in page
    assert "You already have access" in page and f'href="/datasets/access/{grant.id}"' in page


def test_approval_issues_the_agreement_and_access_starts_once_signed(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    researcher = make_user(db, Role.RESEARCHER, institution=inst)
    dataset = make_dataset(db, location="s3://atom-datasets/notes/")
    steward = dataset.stewards[0].user
    req = make_access_request(db, dataset=dataset, user=researcher)
    login(client, steward)
    resp = client.post(
        f"/datasets/requests/{req.id}/approve",
        data={"approve-ends_on": ENDS, "approve-note": "Keep it on the cluster."},
        follow_redirects=True,
    )
    body = resp.get_data(as_text=True)
    assert "The data-use agreement went to" in body and "Keep it on the cluster." in body
    grant = _fresh(db, req).grant
    assert grant is not None and grant.state == GrantState.PENDING
    agreement = grant.agreement
    assert agreement is not None
    assert "dataset_request.approve" in body.partition('id="history"')[2]

    # The researcher is asked to sign, from the request and from the access page.
    login(client, researcher)
    page = _page(client, f"/datasets/requests/{req.id}")
    assert f'href="/agreements/{agreement.id}"' in page
    (slot,) = agreement.next_signatures
    assert f'href="/agreements/signatures/{slot.id}/sign"' in page
    page = _page(client, f"/datasets/access/{grant.id}")
    assert "Access starts once the data-use agreement is fully signed" in page
    assert 'id="location"' not in page  # not before it is signed
    assert "Ask for more time" not in page

    _sign(app, db, grant, researcher)
    assert _fresh(db, grant).state == GrantState.ACTIVE
    page = _page(client, f"/datasets/access/{grant.id}")
    assert "s3://atom-datasets/notes/" in page.partition('id="location"')[2]
    assert f'href="/datasets/access/{grant.id}/renew"' in page
    # The steward sees where it is and may revoke; the official sees neither.
    login(client, steward)
    page = _page(client, f"/datasets/access/{grant.id}")
    assert 'id="location"' in page and 'id="form-revoke"' in page
    assert f'href="/agreements/{agreement.id}"' not in page  # not a party to it
    login(client, official)
    page = _page(client, f"/datasets/access/{grant.id}")
    assert 'id="location"' not in page and 'id="form-revoke"' not in page
    assert f'href="/agreements/{agreement.id}"' in page  # the institution's official reads it


def test_revoking_ends_access_at_once_and_is_in_its_history(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    grant = make_grant(app, db)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.post(
        f"/datasets/access/{grant.id}/revoke",
        data={"revoke-reason": "Shared outside the project."},
        follow_redirects=True,
    )
    body = resp.get_data(as_text=True)
    assert "Access revoked" in body
    assert "Shared outside the project." in body.partition('id="status-note"')[2]
    assert "dataset_grant.revoke" in body.partition('id="history"')[2]
    assert 'id="form-revoke"' not in body
    assert _fresh(db, grant).state == GrantState.REVOKED
    assert list(db.scalars(services.current_grants(grant.dataset))) == []


def test_asking_for_more_time_on_controlled_access(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    grant = make_grant(app, db, days=20)
    login(client, grant.user)
    resp = client.post(
        f"/datasets/access/{grant.id}/renew",
        data={"intended_use": USE + " Three more months."},
    )
    renewal = db.scalars(select(AccessRequest).where(AccessRequest.is_renewal.is_(True))).one()
    assert resp.status_code == 302
    assert resp.headers["Location"] == f"/datasets/requests/{renewal.id}"
    assert renewal.grant_id == grant.id
    # Asked already: the page links to it instead of a second form.
    page = _page(client, f"/datasets/access/{grant.id}/renew")
    assert 'name="intended_use"' not in page
    assert f'href="/datasets/requests/{renewal.id}"' in page
    assert f'href="/datasets/requests/{renewal.id}"' in _page(
        client, f"/datasets/access/{grant.id}"
    )

    # The steward moves the end date.
    login(client, grant.dataset.stewards[0].user)
    page = _page(client, f"/datasets/requests/{renewal.id}")
    assert "More time on access held" in page
    later = utcnow().date() + dt.timedelta(days=120)
    resp = client.post(
        f"/datasets/requests/{renewal.id}/approve",
        data={"approve-ends_on": later.isoformat()},
        follow_redirects=True,
    )
    assert f"access now runs until {later:%d %B %Y}" in resp.get_data(as_text=True)
    assert _fresh(db, grant).ends_on == later and grant.state == GrantState.ACTIVE


def test_more_time_on_registered_access_is_accepting_the_terms_again(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    dataset = make_dataset(db, tier=AccessTier.REGISTERED, terms="Cite us.")
    researcher = make_user(db, Role.RESEARCHER)
    with app.app_context():
        grant = services.accept_terms(db, dataset, actor=researcher, accepted=True)
    login(client, researcher)

    # At its longest already: the service's reason, nothing changed.
    resp = client.post(f"/datasets/access/{grant.id}/renew", data={"accepted": "y"})
    assert resp.status_code == 422 and "already runs until" in resp.get_data(as_text=True)

    soon = utcnow().date() + dt.timedelta(days=5)
    db.execute(update(Grant).where(Grant.id == grant.id).values(ends_on=soon))
    db.flush()
    page = _page(client, f"/datasets/access/{grant.id}/renew")
    assert 'name="accepted"' in page and "Cite us." in page
    resp = client.post(f"/datasets/access/{grant.id}/renew", data={})
    assert resp.status_code == 422 and "Tick the box" in resp.get_data(as_text=True)
    assert _fresh(db, grant).ends_on == soon
    resp = client.post(f"/datasets/access/{grant.id}/renew", data={"accepted": "y"})
    assert resp.status_code == 302
    assert _fresh(db, grant).ends_on == services.longest_end(dataset)

    # Nobody else renews it for them (a steward or program staff would accept for themselves).
    for other in (make_user(db, Role.PROGRAM_OFFICER), make_user(db, Role.RESEARCHER)):
        login(client, other)
        assert client.get(f"/datasets/access/{grant.id}/renew").status_code == 403


def test_waiting_on_me_lists_what_waits_on_the_viewer(client: FlaskClient, db: Session) -> None:
    steward = make_user(db, Role.DATA_STEWARD)
    dataset = make_dataset(db, stewards=[steward])
    researcher = make_user(db, Role.RESEARCHER)
    submitted = make_access_request(db, dataset=dataset)
    sent_back = make_access_request(
        db, dataset=dataset, user=researcher, state=RequestState.CHANGES_REQUESTED
    )
    declined = make_access_request(db, dataset=dataset, state=RequestState.DECLINED)
    elsewhere = make_access_request(db)

    def ids(url: str) -> list[int]:
        return [int(i) for i in re.findall(r'href="/datasets/requests/(\d+)"', _page(client, url))]

    login(client, steward)
    assert ids("/datasets/requests?show=waiting") == [submitted.id]
    assert sorted(ids("/datasets/requests")) == sorted([submitted.id, sent_back.id, declined.id])
    assert ids(f"/datasets/requests?state=declined&dataset={dataset.id}") == [declined.id]
    login(client, researcher)
    assert ids("/datasets/requests?show=waiting") == [sent_back.id]
    assert ids("/datasets/requests?show=mine") == [sent_back.id]
    assert elsewhere.id not in ids("/datasets/requests")


def test_the_access_list_filters_and_csv(app: Flask, client: FlaskClient, db: Session) -> None:
    inst = make_institution(db, name="@SUM(1+1) University")
    dataset = make_dataset(db, name="=HYPERLINK(1)")
    soon = make_grant(
        app, db, dataset=dataset, days=10, user=make_user(db, Role.RESEARCHER, institution=inst)
    )
    later = make_grant(app, db, dataset=dataset, days=100)
    pending = make_grant(app, db, dataset=dataset, days=10, signed=False)
    login(client, dataset.stewards[0].user)

    def ids(url: str) -> list[int]:
        return [int(i) for i in re.findall(r'href="/datasets/access/(\d+)"', _page(client, url))]

    assert sorted(ids("/datasets/access?show=stewarded")) == sorted([soon.id, later.id, pending.id])
    assert ids("/datasets/access?expiring=y") == [soon.id]
    assert ids("/datasets/access?state=pending") == [pending.id]
    assert ids("/datasets/access?show=mine") == []
    page = _page(client, "/datasets/access?sort=ending")
    assert "(10 days left)" in page and "(100 days left)" in page

    rows = _csv(client.get("/datasets/access?format=csv&expiring=y").data)
    header, (line,) = rows[0], rows[1:]
    assert line[header.index("id")] == str(soon.id)
    assert line[header.index("dataset")] == "'=HYPERLINK(1)"
    assert line[header.index("institution")] == "'@SUM(1+1) University"
    assert line[header.index("agreement_state")] == "active"
    assert line[header.index("days_left")] == "10"

    rows = _csv(client.get(f"/datasets/requests?format=csv&dataset={dataset.id}").data)
    assert rows[0][:3] == ["id", "dataset", "kind"]
    assert {r[1] for r in rows[1:]} == {"'=HYPERLINK(1)"} and len(rows) == 4
