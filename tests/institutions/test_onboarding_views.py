"""The application pages by every role (apply, the ROR look-up, the queue, an application, changing
it, staff's decisions, invitations), another institution's application (IDOR), bad input (a form
error or a 4xx, never a 500), CSRF, what each page shows, and the mails the pages' actions send,
rendered."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role, RoleGrant, User
from portal.institutions.emails import (
    APPLICATION_DECIDED,
    APPLICATION_RECEIVED,
    MEMBER_JOINED,
    OFFICIAL_INVITED,
    PARTNERSHIP_CHANGED,
    PARTNERSHIP_STARTED,
)
from portal.institutions.models import (
    Application,
    Institution,
    InstitutionState,
    OfficialInvitation,
)
from portal.notifications.rendering import render_email
from tests.factories import LOGGED_IN, ROLE_NAMES, make_actor, make_institution, make_user
from tests.institutions.onboarding_factories import STATEMENT, mailed_token, make_application
from tests.support.app import login
from tests.support.mail import outbox
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}
#: The applicant of {mine} (a researcher elsewhere) and {mine}'s signing official.
OWNERS = {"researcher", "official"}


def _form(domain: str = "newapply.edu", **changes: str) -> dict[str, str]:
    data = {
        "ror_id": "",
        "name": "Newly Applying University",
        "country": "NL",
        "website": f"https://www.{domain}",
        "email_domains": domain,
        "statement": STATEMENT,
        "officials": f"rector@{domain}",
        "technical_contact_name": "Ines Tech",
        "technical_contact_email": f"it@{domain}",
        "idp_entity_id": "",
    }
    return {**data, **changes}


# Placeholders: {mine} an application (applied) by the researcher, where the official signs;
# {changes} one of theirs sent back for changes; {other} someone else's application; {home} the
# actor's partner institution (registered by staff: no application); {token} the link of a pending
# invitation to {other}.
CASES = [
    case("apply form", "GET", "/apply", LOGGED_IN),
    case("apply form, ROR search", "GET", "/apply?q=stanford", LOGGED_IN),
    case("apply form, filled from ROR", "GET", "/apply?ror=042nb2s44", LOGGED_IN),
    case("apply form, unknown ROR id", "GET", "/apply?ror=nonsense", LOGGED_IN),
    case("apply", "POST", "/apply", LOGGED_IN, 302, _form()),
    case(
        "apply with a bad field",
        "POST",
        "/apply",
        LOGGED_IN,
        422,
        _form(country="x"),
        changes=False,
    ),
    case("ROR look-up", "GET", "/apply/ror?q=mit", LOGGED_IN),
    case("ROR look-up, empty", "GET", "/apply/ror", LOGGED_IN),
    case("queue", "GET", "/applications/", LOGGED_IN),
    case(
        "queue, all and filtered",
        "GET",
        "/applications/?show=all&state=applied&q=Uni&sort=name&page=2",
        LOGGED_IN,
    ),
    case("queue, odd filter", "GET", "/applications/?show=x&state=bogus&sort=x&page=-1", LOGGED_IN),
    case("queue as CSV", "GET", "/applications/?format=csv", STAFF),
    case("own application", "GET", "/applications/{mine}", STAFF | OWNERS),
    case("another's application (IDOR)", "GET", "/applications/{other}", STAFF),
    case("a partner registered by staff", "GET", "/applications/{home}", STAFF),
    case("an application that does not exist", "GET", "/applications/2147483647", set()),
    case("edit form", "GET", "/applications/{mine}/edit", OWNERS),
    case(
        "edit",
        "POST",
        "/applications/{mine}/edit",
        OWNERS,
        302,
        _form("mine-{home}.edu", name="Renamed University", ror_id="{mine_ror}"),
    ),
    case("edit another's (IDOR)", "GET", "/applications/{other}/edit", set()),
    case(
        "edit another's, posted (IDOR)",
        "POST",
        "/applications/{other}/edit",
        set(),
        data=_form("other-{home}.edu", name="Hijacked"),
    ),
    case(
        "start review",
        "POST",
        "/applications/{mine}/transition",
        STAFF,
        302,
        {"action": "start_review"},
    ),
    case(
        "ask for changes",
        "POST",
        "/applications/{mine}/transition",
        STAFF,
        302,
        {"action": "request_changes", "reason": "Add the IdP."},
    ),
    case(
        "decline another's",
        "POST",
        "/applications/{other}/transition",
        STAFF,
        302,
        {"action": "decline", "reason": "Not a research organisation."},
    ),
    case(
        "send again",
        "POST",
        "/applications/{changes}/transition",
        OWNERS,
        302,
        {"action": "resubmit"},
    ),
    case(
        "withdraw own",
        "POST",
        "/applications/{mine}/transition",
        STAFF | OWNERS,
        302,
        {"action": "withdraw", "reason": "Applied twice."},
    ),
    case(
        "send another's again (IDOR)",
        "POST",
        "/applications/{other}/transition",
        set(),
        data={"action": "resubmit"},
    ),
    case("invitation", "GET", "/applications/invitations/{token}", LOGGED_IN),
    case(
        "accept",
        "POST",
        "/applications/invitations/{token}",
        LOGGED_IN,
        302,
        {"answer": "accept"},
    ),
    case(
        "decline",
        "POST",
        "/applications/invitations/{token}",
        LOGGED_IN,
        302,
        {"answer": "decline"},
    ),
    case("an unknown invitation", "GET", "/applications/invitations/nope", set()),
    case("dashboard", "GET", "/dashboard", LOGGED_IN),
]


def _snapshot(db: Session) -> list[object]:
    institutions = [
        (i.id, i.name, i.state, i.ror_id, sorted(d.domain for d in i.all_domains))
        for i in db.scalars(select(Institution).order_by(Institution.id))
    ]
    applications = [
        (a.id, a.statement, a.technical_contact_email, a.submitted_at)
        for a in db.scalars(select(Application).order_by(Application.id))
    ]
    invitations = [
        (i.id, i.email, i.state, i.accepted_by_id)
        for i in db.scalars(select(OfficialInvitation).order_by(OfficialInvitation.id))
    ]
    grants = db.scalar(select(func.count()).select_from(RoleGrant))
    return [institutions, applications, invitations, grants]


def _world(app: Flask, db: Session, role: str) -> tuple[User | None, dict[str, Any]]:
    home = make_institution(db)
    actor = make_actor(db, role, home) if role != "official" else None
    applicant = actor if role == "researcher" else make_user(db)
    assert applicant is not None
    mine = make_application(db, app=app, applicant=applicant, domain=f"mine-{home.id}.edu")
    changes = make_application(
        db, app=app, applicant=applicant, state=InstitutionState.CHANGES_REQUESTED
    )
    other = make_application(db, app=app, domain=f"other-{home.id}.edu")
    if role == "official":
        actor = make_user(db, Role.SIGNING_OFFICIAL, institution=mine)
        db.add(RoleGrant(user=actor, role=Role.SIGNING_OFFICIAL, institution=changes))
        db.flush()
        db.refresh(actor)
    values = {
        "mine": mine.id,
        "mine_ror": mine.ror_id,
        "changes": changes.id,
        "other": other.id,
        "home": home.id,
        "token": mailed_token(db, f"official@other-{home.id}.edu"),
    }
    return actor, values


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
    if role in case.allowed and case.path.startswith("/apply/ror"):
        assert resp.is_json and "results" in (resp.json or {})


# --- helpers -------------------------------------------------------------------------------------


def _page(client: FlaskClient, url: str, status: int = 200) -> str:
    resp = client.get(url)
    assert resp.status_code == status, (url, resp.status_code)
    return resp.get_data(as_text=True)


def _count(db: Session, model: type[Any]) -> int:
    return db.scalar(select(func.count()).select_from(model)) or 0


# --- applying through the form -------------------------------------------------------------------


def test_the_form_works_from_a_ror_id_alone_without_javascript(
    client: FlaskClient, db: Session
) -> None:
    person = make_user(db)
    login(client, person)
    # Search, pick, and the form is filled on the server.
    listed = _page(client, "/apply?q=massachusetts+institute")
    assert 'href="/apply?ror=https://ror.org/042nb2s44"' in listed
    filled = _page(client, "/apply?ror=https://ror.org/042nb2s44")
    assert 'value="Massachusetts Institute of Technology"' in filled
    assert 'value="US"' in filled and "mit.edu</textarea>" in filled
    # Posting the id with only the application's own fields fills the rest from the subset.
    resp = client.post(
        "/apply",
        data={
            "ror_id": "042nb2s44",
            "statement": STATEMENT,
            "officials": "provost@mit.edu",
            "technical_contact_name": "Tim Tech",
            "technical_contact_email": "tim@mit.edu",
        },
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    inst = db.scalar(select(Institution).where(Institution.ror_id == "https://ror.org/042nb2s44"))
    assert inst is not None and inst.name == "Massachusetts Institute of Technology"
    assert inst.country == "US" and [d.domain for d in inst.all_domains] == ["mit.edu"]
    assert resp.headers["Location"] == f"/applications/{inst.id}"


def test_the_page_loads_the_lookup_script_and_no_inline_script(
    client: FlaskClient, db: Session
) -> None:
    login(client, make_user(db))
    html = _page(client, "/apply")
    assert "js/ror-lookup.js" in html and 'data-lookup-url="/apply/ror"' in html
    assert "<script>" not in html and "style=" not in html
    assert 'id="application-form"' in html and 'name="csrf_token"' in html


def test_the_lookup_answers_json(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db))
    body = client.get("/apply/ror?q=someone@mit.edu").json
    assert body is not None
    first = body["results"][0]
    assert first["id"] == "https://ror.org/042nb2s44" and first["country_code"] == "US"
    assert first["domains"] == ["mit.edu"] and first["website"] == "https://web.mit.edu"
    resp = client.get("/apply/ror?q=" + "x" * 500)
    assert resp.status_code == 400 and "at most" in (resp.json or {})["error"]
    assert client.get("/apply/ror?q=%25%27%22").json == {"query": "%'\"", "results": []}


def test_an_id_missing_from_the_subset_is_entered_by_hand(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db))
    html = _page(client, "/apply?ror=0abcdef12")
    assert "not in the portal&#39;s copy of ROR" in html or "not in the portal's copy" in html
    resp = client.post("/apply", data=_form(ror_id="https://ror.org/042nb2s45"))
    assert resp.status_code == 422 and "is not a ROR id" in resp.get_data(as_text=True)


def test_a_claimed_domain_is_refused_with_its_name(client: FlaskClient, db: Session) -> None:
    other = make_institution(db)
    domain = other.domains[0].domain
    login(client, make_user(db))
    before = _snapshot(db)
    resp = client.post("/apply", data=_form(domain))
    assert resp.status_code == 422
    assert f"already belong to another institution: {domain}" in resp.get_data(as_text=True)
    db.expire_all()
    assert _snapshot(db) == before


def test_webmail_is_refused_on_the_form(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db))
    resp = client.post("/apply", data=_form("gmail.com"))
    assert resp.status_code == 422
    assert "gmail.com: public webmail domains belong to no institution" in resp.get_data(
        as_text=True
    )


BAD_INPUT = [
    {"name": "x" * 301},
    {"country": "ÄÖ"},
    {"website": "ftp://nope"},
    {"email_domains": "not a domain\n\x7f"},
    {"email_domains": ",,,"},
    {"statement": "x"},
    {"statement": "x" * 6000},
    {"officials": "a@b"},
    {"officials": "\n".join(f"o{i}@newapply.edu" for i in range(7))},
    {"technical_contact_email": "<script>@x"},
    {"idp_entity_id": "y" * 600},
    {"ror_id": "%00"},
    {"ror_id": "0" * 200},
]


@pytest.mark.parametrize("change", BAD_INPUT, ids=lambda c: next(iter(c)))
def test_bad_input_is_a_form_error_never_a_500(
    client: FlaskClient, db: Session, change: dict[str, str]
) -> None:
    applicant = make_user(db)
    login(client, applicant)
    before = _count(db, Institution)
    resp = client.post("/apply", data=_form(**change))
    assert resp.status_code == 422, resp.status_code
    assert 'class="invalid-feedback' in resp.get_data(as_text=True) or "alert-danger" in (
        resp.get_data(as_text=True)
    )
    assert _count(db, Institution) == before


def test_bad_input_on_the_other_routes_is_a_4xx(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    inst = make_application(db, app=app)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    url = f"/applications/{inst.id}/transition"
    for data in [{}, {"action": ""}, {"action": "explode"}, {"action": "join"}]:
        resp = client.post(url, data=data)
        assert resp.status_code in (303, 400), (data, resp.status_code)
    resp = client.post(url, data={"action": "decline"}, follow_redirects=True)
    assert "please give a reason" in resp.get_data(as_text=True)
    resp = client.post(url, data={"action": "approve"}, follow_redirects=True)
    assert "not possible while the institution is applied" in resp.get_data(as_text=True)
    token = mailed_token(db, inst.official_invitations[0].email)
    for data in [{}, {"answer": "maybe"}]:
        resp = client.post(f"/applications/invitations/{token}", data=data)
        assert resp.status_code == 400
    assert client.get("/applications/invitations/" + "t" * 5000).status_code == 404
    db.expire_all()
    assert inst.state == InstitutionState.APPLIED


@pytest.mark.usefixtures("csrf_enabled")
def test_every_post_needs_the_csrf_token(app: Flask, client: FlaskClient, db: Session) -> None:
    applicant = make_user(db)
    inst = make_application(db, app=app, applicant=applicant)
    token = mailed_token(db, inst.official_invitations[0].email)
    login(client, applicant)
    before = _snapshot(db)
    for url, data in [
        ("/apply", _form()),
        (f"/applications/{inst.id}/edit", _form(name="Changed")),
        (f"/applications/{inst.id}/transition", {"action": "withdraw", "reason": "x"}),
        (f"/applications/invitations/{token}", {"answer": "accept"}),
    ]:
        resp = client.post(url, data=data)
        assert resp.status_code == 400, url
        assert "Reload the page" in resp.get_data(as_text=True)
    db.expire_all()
    assert _snapshot(db) == before


# --- who sees and acts on what -------------------------------------------------------------------


def test_an_official_of_one_application_cannot_see_or_act_on_another(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    a = make_application(db, app=app, name="Alpha Applied")
    b = make_application(db, app=app, name="Beta Applied", state=InstitutionState.CHANGES_REQUESTED)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=a)
    login(client, official)
    before = _snapshot(db)
    assert client.get(f"/applications/{b.id}").status_code == 403
    assert client.get(f"/applications/{b.id}/edit").status_code == 403
    assert client.post(f"/applications/{b.id}/edit", data=_form(name="Mine")).status_code == 403
    resp = client.post(f"/applications/{b.id}/transition", data={"action": "resubmit"})
    assert resp.status_code == 403
    resp = client.post(
        f"/applications/{b.id}/transition", data={"action": "withdraw", "reason": "x"}
    )
    assert resp.status_code == 403
    db.expire_all()
    assert _snapshot(db) == before
    listed = _page(client, "/applications/?show=all")
    assert "Alpha Applied" in listed and "Beta Applied" not in listed
    # Their own is theirs to change.
    assert client.get(f"/applications/{a.id}/edit").status_code == 200


def test_an_applicant_lists_only_their_own_applications(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    ada = make_user(db)
    make_application(db, app=app, applicant=ada, name="Ada's University")
    make_application(db, app=app, name="Someone Else's College")
    login(client, ada)
    listed = _page(client, "/applications/?show=all")
    assert "Ada&#39;s University" in listed and "Someone Else" not in listed
    assert client.get("/applications/?format=csv").status_code == 403
    assert "Ada&#39;s University" in _page(client, "/apply")  # "Your applications"
    assert "Your applications" in _page(client, "/dashboard")


def test_the_queue_puts_the_longest_waiting_first_and_exports_csv(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    first = make_application(db, app=app, name="First Applied")
    second = make_application(db, app=app, name="Second Applied")
    make_application(db, app=app, name="Declined Long Ago", state=InstitutionState.DECLINED)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    listed = _page(client, "/applications/")
    ids = re.findall(r'href="/applications/(\d+)"', listed)
    assert ids.index(str(first.id)) < ids.index(str(second.id))
    assert "Declined Long Ago" not in listed
    assert "Declined Long Ago" in _page(client, "/applications/?show=all")
    assert "Second Applied" not in _page(client, "/applications/?q=First")
    by_domain = _page(client, f"/applications/?q={first.all_domains[0].domain}")
    assert "First Applied" in by_domain and "Second Applied" not in by_domain
    resp = client.get("/applications/?format=csv&q=Applied")
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert rows[0][:3] == ["id", "name", "ror_id"]
    assert [r[1] for r in rows[1:]] == ["First Applied", "Second Applied"]


def test_the_queue_uses_a_bounded_number_of_queries(
    app: Flask,
    client: FlaskClient,
    db: Session,
    count_queries: Callable[[Callable[[], object]], int],
) -> None:
    login(client, make_user(db, Role.ADMIN))
    for _ in range(2):
        make_application(db, app=app)
    few = count_queries(lambda: client.get("/applications/"))
    for _ in range(8):
        make_application(db, app=app)
    assert count_queries(lambda: client.get("/applications/")) == few


# --- the application's page ----------------------------------------------------------------------


def test_the_page_shows_the_application_and_staff_decide_there(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    applicant = make_user(db, display_name="Ada Applicant")
    inst = make_application(
        db, app=app, applicant=applicant, domain="page-uni.edu", officials=["r@page-uni.edu"]
    )
    login(client, applicant)
    page = _page(client, f"/applications/{inst.id}")
    assert (
        "page-uni.edu" in page and "Pending proof" in page and "_atom-portal.page-uni.edu" in page
    )
    assert "r@page-uni.edu" in page and 'id="invitations"' in page
    assert "Waiting for program staff" in page and 'id="history"' in page
    assert "institution.apply" in page
    assert 'name="action" value="approve"' not in page  # not theirs to decide
    assert f'href="/applications/{inst.id}/edit"' in page

    officer = make_user(db, Role.PROGRAM_OFFICER)
    login(client, officer)
    page = _page(client, f"/applications/{inst.id}")
    assert 'value="start_review"' in page and 'value="request_changes"' in page
    assert 'value="decline"' in page and 'value="approve"' not in page
    assert (
        client.post(
            f"/applications/{inst.id}/transition", data={"action": "start_review"}
        ).status_code
        == 302
    )
    page = _page(client, f"/applications/{inst.id}")
    assert 'value="approve"' in page
    resp = client.post(f"/applications/{inst.id}/transition", data={"action": "approve"})
    assert resp.status_code == 302
    db.expire_all()
    assert inst.state == InstitutionState.APPROVED
    decided = outbox(db, APPLICATION_DECIDED.key)
    assert [m.to_addr for m in decided] == [applicant.email]
    assert decided[0].context["approved"] is True


def test_an_accepted_invitation_under_another_address_is_flagged_for_staff(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    inst = make_application(db, app=app, domain="flag-uni.edu", officials=["boss@flag-uni.edu"])
    token = mailed_token(db, "boss@flag-uni.edu")
    other = make_user(db, email="boss.private@example.org", display_name="Boss Person")
    login(client, other)
    page = _page(client, f"/applications/invitations/{token}")
    assert "You are logged in as boss.private@example.org" in page
    assert 'id="form-accept"' in page and 'id="form-decline"' in page
    resp = client.post(f"/applications/invitations/{token}", data={"answer": "accept"})
    assert resp.status_code == 302 and resp.headers["Location"] == f"/applications/{inst.id}"
    # The link is used up: the page says so.
    page = _page(client, f"/applications/invitations/{token}")
    assert "You accepted this invitation" in page and 'id="form-accept"' not in page
    login(client, make_user(db))
    page = _page(client, f"/applications/invitations/{token}", 410)
    assert "already been used" in page
    resp = client.post(
        f"/applications/invitations/{token}", data={"answer": "accept"}, follow_redirects=True
    )
    assert "already been used" in resp.get_data(as_text=True)

    login(client, make_user(db, Role.PROGRAM_OFFICER))
    page = _page(client, f"/applications/{inst.id}")
    assert "logged in as boss.private@example.org" in page and "Boss Person" in page


def test_declining_an_invitation_through_the_page(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    inst = make_application(db, app=app, domain="no-uni.edu", officials=["no@no-uni.edu"])
    token = mailed_token(db, "no@no-uni.edu")
    login(client, make_user(db, email="no@no-uni.edu"))
    resp = client.post(
        f"/applications/invitations/{token}", data={"answer": "decline"}, follow_redirects=True
    )
    assert "You declined" in resp.get_data(as_text=True)
    db.expire_all()
    assert inst.official_invitations[0].state.value == "declined"


def test_changing_and_resending_through_the_pages(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    applicant = make_user(db)
    inst = make_application(
        db,
        app=app,
        applicant=applicant,
        domain="resend-uni.edu",
        state=InstitutionState.CHANGES_REQUESTED,
    )
    login(client, applicant)
    page = _page(client, f"/applications/{inst.id}")
    assert "Program staff asked for changes" in page and "Add the technical contact" in page
    edit = _page(client, f"/applications/{inst.id}/edit")
    assert "resend-uni.edu</textarea>" in edit and "official@resend-uni.edu</textarea>" in edit
    resp = client.post(
        f"/applications/{inst.id}/edit",
        data=_form(
            "resend-uni.edu",
            name="Resent University",
            ror_id=inst.ror_id or "",
            officials="official@resend-uni.edu",
        ),
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    resp = client.post(
        f"/applications/{inst.id}/transition", data={"action": "resubmit"}, follow_redirects=True
    )
    assert "the application is now applied" in resp.get_data(as_text=True)
    db.expire_all()
    assert inst.name == "Resent University" and inst.state == InstitutionState.APPLIED
    # Once under review, it can no longer be changed.
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    client.post(f"/applications/{inst.id}/transition", data={"action": "start_review"})
    login(client, applicant)
    assert client.get(f"/applications/{inst.id}/edit").status_code == 403


# --- the mails, rendered -------------------------------------------------------------------------


def _rendered(db: Session, kind: str) -> list[tuple[str, str, str]]:
    rows = outbox(db, kind)
    assert rows, f"no {kind} mail"
    out = []
    for msg in rows:
        r = render_email(msg)
        out.append((r.subject, r.text, r.html))
    return out


def test_every_onboarding_mail_renders_and_says_what_to_do_next(app: Flask, db: Session) -> None:
    from portal.core.workflow import Step
    from portal.institutions import emails, onboarding
    from portal.institutions.workflow import AFFILIATION_WORKFLOW, TRANSITIONS
    from tests.factories import make_affiliation

    with app.app_context():
        applicant = make_user(db, display_name="Ada Applicant")
        officer = make_user(db, Role.PROGRAM_OFFICER, display_name="Olga Officer")
        inst = make_application(
            db,
            applicant=applicant,
            staff=officer,
            domain="mail-uni.edu",
            state=InstitutionState.CHANGES_REQUESTED,
        )
        onboarding.resubmit(db, inst, actor=applicant)
        onboarding.decide(db, inst, "start_review", actor=officer)
        onboarding.decide(db, inst, "approve", actor=officer)
        official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
        # Joining is gated by the partnership agreement (tested in portal.agreements); the mails
        # of joining and of a suspension are rendered from their steps here.
        emails.partnership_started(
            db,
            Step(inst, "join", TRANSITIONS["join"], InstitutionState.APPROVED, official, None),
        )
        emails.partnership_changed(
            db,
            Step(
                inst,
                "suspend",
                TRANSITIONS["suspend"],
                InstitutionState.PARTNER,
                officer,
                "Unpaid invoices <b>now</b>.",
            ),
        )
        aff = make_affiliation(db, institution=inst)
        colleague = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)  # hears who joined
        AFFILIATION_WORKFLOW.run(db, aff, "approve", actor=official)

        received = _rendered(db, APPLICATION_RECEIVED.key)
        subjects = [s for s, _, _ in received]
        assert any(s.startswith("New application: ") for s in subjects)
        assert any(s.startswith("Sent again: ") for s in subjects)
        assert any(s.startswith("We received the application") for s in subjects)
        staff_text = next(t for s, t, _ in received if s.startswith("New application"))
        assert (
            f"/applications/{inst.id}" in staff_text and "As program staff you decide" in staff_text
        )
        receipt = next(t for s, t, _ in received if s.startswith("We received"))
        assert "What happens next" in receipt and "DNS record" in receipt

        decided = _rendered(db, APPLICATION_DECIDED.key)
        assert [s.split(":")[0] for s, _, _ in decided] == ["Changes asked for", "Approved"]
        assert "send it again" in decided[0][1] and "Add the technical contact" in decided[0][1]
        assert "partnership agreement" in decided[1][1]

        (invited_subject, invited_text, invited_html) = _rendered(db, OFFICIAL_INVITED.key)[0]
        assert "signing official" in invited_subject
        assert "/applications/invitations/" in invited_text and "accept" in invited_html

        started = _rendered(db, PARTNERSHIP_STARTED.key)
        assert started[0][0] == f"{inst.name} is now a partner"
        assert f"/console/{inst.id}" in started[0][1] and "/program/partners" in started[0][1]

        changed = _rendered(db, PARTNERSHIP_CHANGED.key)
        assert changed[0][0].startswith("Suspended:")
        assert "Unpaid invoices <b>now</b>." in changed[0][1]
        assert "<b>now</b>" not in changed[0][2] and "&lt;b&gt;now&lt;/b&gt;" in changed[0][2]

        joined = _rendered(db, MEMBER_JOINED.key)
        assert joined[0][0].startswith(f"New member of {inst.name}")
        assert f"/console/{inst.id}" in joined[0][1]
        # Not the official who approved (they know): the other one.
        assert {m.to_addr for m in outbox(db, MEMBER_JOINED.key)} == {colleague.email}
