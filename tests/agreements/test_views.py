"""Every agreements route by every role, other institutions' agreements and other parties' slots
(IDOR), the sign page (the hash it shows, a stale hash, a wrong name, an old login), and a whole
agreement from issue to the signed PDF and its verification."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    PartyRole,
    Signature,
    SignatureState,
    TemplateVersion,
    VersionState,
)
from portal.agreements.text import sha256
from portal.auth.models import LoginSession, Role, User
from portal.core.audit import AuditEvent
from portal.institutions.models import InstitutionState
from portal.proposals.models import ProposalState
from tests.factories import (
    LOGGED_IN,
    ROLE_NAMES,
    make_actor,
    make_agreement,
    make_agreement_template,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}
EVERYONE = set(ROLE_NAMES)

#: What signing posts: the actor's name, the confirmation, and the hash of the text shown.
SIGN = {"typed_name": "{name}", "confirm": "y", "sha256": "{sha}"}

BODY = "# Partnership\n\n{{ institution }} and {{ lab }} agree, from {{ today }}."

# Placeholders: {own_awaiting} a partnership agreement of the actor's institution waiting on its
# signing official ({own_slot}); {other_awaiting} / {other_slot} the same at another institution;
# {countersign} a partnership of the actor's institution its official signed, waiting on the
# lab ({program_slot}); {project} the contribution agreement of an active project whose PI is the
# actor when a researcher (else another researcher of the actor's institution), with the PI's
# slot {pi_slot} and the signing official's {project_official_slot}; {signed} / {other_signed}
# fully signed partnerships of the actor's / another institution; {template} a published
# partnership template, {draft} a template version still a draft; {approved} an institution
# under review with no agreement yet. {sha} is the text's SHA-256 of the agreement a case signs.
CASES = [
    case("agreements list", "GET", "/agreements/", LOGGED_IN),
    case("agreements as CSV", "GET", "/agreements/?format=csv", STAFF),
    case("agreements to sign", "GET", "/agreements/to-sign", LOGGED_IN),
    case("own institution's agreement", "GET", "/agreements/{own_awaiting}", STAFF | {"official"}),
    case("other institution's agreement (IDOR)", "GET", "/agreements/{other_awaiting}", STAFF),
    case("project's agreement", "GET", "/agreements/{project}", STAFF | {"official", "researcher"}),
    case("sign page", "GET", "/agreements/signatures/{own_slot}/sign", {"official"}),
    case(
        "sign page of another institution (IDOR)",
        "GET",
        "/agreements/signatures/{other_slot}/sign",
        set(),
    ),
    case(
        "official signs for the institution",
        "POST",
        "/agreements/signatures/{own_slot}/sign",
        {"official"},
        302,
        SIGN,
    ),
    case(
        "official signs for another institution (IDOR)",
        "POST",
        "/agreements/signatures/{other_slot}/sign",
        set(),
        data={**SIGN, "sha256": "{other_sha}"},
    ),
    case(
        "officer countersigns for the lab",
        "POST",
        "/agreements/signatures/{program_slot}/sign",
        {"officer"},
        302,
        {**SIGN, "sha256": "{countersign_sha}"},
    ),
    case(
        "PI signs the project agreement",
        "POST",
        "/agreements/signatures/{pi_slot}/sign",
        {"researcher"},
        302,
        {**SIGN, "sha256": "{project_sha}"},
    ),
    # The PI may not sign the signing official's slot; the official may, but not before the PI.
    case(
        "sign the official's slot before the PI",
        "POST",
        "/agreements/signatures/{project_official_slot}/sign",
        {"official"},
        422,
        {**SIGN, "sha256": "{project_sha}"},
        changes=False,
    ),
    case(
        "decline own institution's agreement",
        "POST",
        "/agreements/{own_awaiting}/decline",
        {"official"},
        302,
        {"action": "decline", "reason": "Clause 4 needs our legal office first."},
    ),
    case(
        "decline another institution's agreement (IDOR)",
        "POST",
        "/agreements/{other_awaiting}/decline",
        set(),
        data={"action": "decline", "reason": "Not ours."},
    ),
    case(
        "withdraw an agreement",
        "POST",
        "/agreements/{own_awaiting}/withdraw",
        STAFF,
        302,
        {"action": "withdraw", "reason": "Issued from the wrong template."},
    ),
    case(
        "PDF of an unsigned agreement",
        "GET",
        "/agreements/{own_awaiting}.pdf",
        STAFF | {"official"},
        409,
    ),
    case("verify", "GET", "/agreements/{signed}/verify", STAFF | {"official"}),
    case("verify another institution's (IDOR)", "GET", "/agreements/{other_signed}/verify", STAFF),
    case("public check", "GET", "/agreements/verify?sha256={signed_sha}", EVERYONE),
    case("public check form", "GET", "/agreements/verify", EVERYONE),
    case(
        "public check of a bad hash", "GET", "/agreements/verify?sha256=not-a-hash", EVERYONE, 422
    ),
    case("templates", "GET", "/agreements/templates", STAFF),
    case("new template form", "GET", "/agreements/templates/new", STAFF),
    case(
        "create a template",
        "POST",
        "/agreements/templates/new",
        STAFF,
        302,
        {"kind": "partnership", "title": "Partnership 2027", "body": BODY},
    ),
    case("template page", "GET", "/agreements/templates/{template}", STAFF),
    case(
        "save a template's details",
        "POST",
        "/agreements/templates/{template}",
        STAFF,
        302,
        {"part": "details", "title": "Partnership, renamed", "auto_issue": "y"},
    ),
    case(
        "save a template's draft",
        "POST",
        "/agreements/templates/{template}",
        STAFF,
        302,
        {"part": "draft", "body": BODY + "\n\nA new clause.", "change_note": "Clause added."},
    ),
    case("a published version", "GET", "/agreements/versions/{published}", LOGGED_IN),
    case("a draft version", "GET", "/agreements/versions/{draft}", STAFF),
    case("publish a draft", "POST", "/agreements/versions/{draft}/publish", STAFF, 302),
    case(
        "publish a published version",
        "POST",
        "/agreements/versions/{published}/publish",
        STAFF,
        303,
        changes=False,
    ),
    case("issue page", "GET", "/agreements/issue", STAFF),
    case(
        "issue page, preselected",
        "GET",
        "/agreements/issue?kind=partnership&subject_id={approved}",
        STAFF,
    ),
    case(
        "issue an agreement",
        "POST",
        "/agreements/issue?kind=partnership",
        STAFF,
        302,
        {"template_id": "{template}", "subject_id": "{approved}"},
    ),
    case("dashboard", "GET", "/dashboard", LOGGED_IN),
]


def _snapshot(db: Session) -> list[object]:
    return [
        [(a.id, a.state, a.reason) for a in db.scalars(select(Agreement).order_by(Agreement.id))],
        [
            (s.id, s.state, s.signed_by_id, s.text_sha256)
            for s in db.scalars(select(Signature).order_by(Signature.id))
        ],
        [
            (t.id, t.title, t.auto_issue)
            for t in db.scalars(select(AgreementTemplate).order_by(AgreementTemplate.id))
        ],
        [
            (v.id, v.state, v.body, v.change_note)
            for v in db.scalars(select(TemplateVersion).order_by(TemplateVersion.id))
        ],
    ]


def _slot(agreement: Agreement, role: PartyRole) -> Signature:
    return next(s for s in agreement.signatures if s.role == role)


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(client: FlaskClient, db: Session, role: str, case: Case) -> None:
    own = make_institution(db)
    other = make_institution(db)
    actor = make_actor(db, role, own)
    if actor is not None:
        login(client, actor)
    pi = actor if role == "researcher" else make_user(db, Role.RESEARCHER, institution=own)
    template = make_agreement_template(db, body=BODY)
    own_awaiting = make_agreement(db, institution=own, template=template)
    other_awaiting = make_agreement(db, institution=other, template=template)
    countersign = make_agreement(db, institution=make_institution(db), signed=1)
    project = make_agreement(
        db,
        kind=AgreementKind.CONTRIBUTION,
        proposal=make_proposal(db, pi=pi, institution=own, state=ProposalState.ACTIVE),
    )
    signed = make_agreement(db, institution=own, state=AgreementState.ACTIVE)
    other_signed = make_agreement(db, institution=other, state=AgreementState.ACTIVE)
    draft = make_agreement_template(db, state=VersionState.DRAFT).versions[0]
    approved = make_institution(db, state=InstitutionState.APPROVED)
    values: dict[str, Any] = {
        "own_awaiting": own_awaiting.id,
        "own_slot": _slot(own_awaiting, PartyRole.SIGNING_OFFICIAL).id,
        "sha": own_awaiting.text_sha256,
        "other_awaiting": other_awaiting.id,
        "other_slot": _slot(other_awaiting, PartyRole.SIGNING_OFFICIAL).id,
        "other_sha": other_awaiting.text_sha256,
        "program_slot": _slot(countersign, PartyRole.PROGRAM).id,
        "countersign_sha": countersign.text_sha256,
        "project": project.id,
        "pi_slot": _slot(project, PartyRole.PI).id,
        "project_official_slot": _slot(project, PartyRole.SIGNING_OFFICIAL).id,
        "project_sha": project.text_sha256,
        "signed": signed.id,
        "signed_sha": signed.text_sha256,
        "other_signed": other_signed.id,
        "template": template.id,
        "published": template.versions[0].id,
        "draft": draft.id,
        "approved": approved.id,
        "name": actor.display_name if actor else "Nobody",
    }
    check_route(client, db, role, actor.id if actor else None, case, values, lambda: _snapshot(db))


# The signed PDF is a download (bytes, not a page): the same invariants, by role, on their own.
PDF_READERS = STAFF | {"official"}


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_the_signed_pdf_by_role_and_never_of_another_institution(
    client: FlaskClient, db: Session, role: str
) -> None:
    own = make_institution(db)
    actor = make_actor(db, role, own)
    if actor is not None:
        login(client, actor)
    signed = make_agreement(db, institution=own, state=AgreementState.ACTIVE)
    other = make_agreement(db, state=AgreementState.ACTIVE)
    for agreement, readers in ((signed, PDF_READERS), (other, STAFF)):
        resp = client.get(f"/agreements/{agreement.id}.pdf")
        if role == "anonymous":
            assert resp.status_code == 302 and resp.location.startswith("/auth/login")
        elif role in readers:
            assert resp.status_code == 200 and resp.mimetype == "application/pdf"
            assert resp.data.startswith(b"%PDF")
            assert (
                resp.headers["Content-Disposition"]
                == f"attachment; filename=agreement-{agreement.id}.pdf"
            )
        else:
            assert resp.status_code == 403
            refusal = db.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "permission.denied")
                .order_by(AuditEvent.id.desc())
            ).first()
            assert refusal is not None and refusal.actor_id == (actor.id if actor else None)


# --- the sign page -----------------------------------------------------------------------------


def _awaiting_official(db: Session) -> tuple[Agreement, Signature, User]:
    """A partnership agreement waiting on its institution's signing official, who is logged in."""
    inst = make_institution(db, state=InstitutionState.APPROVED)
    agreement = make_agreement(db, institution=inst)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    return agreement, _slot(agreement, PartyRole.SIGNING_OFFICIAL), official


def _hidden_sha(page: str) -> str:
    found = re.search(r'<input[^>]*name="sha256"[^>]*>', page)
    assert found is not None, "the sign form carries the hash of the text shown"
    value = re.search(r'value="([0-9a-f]*)"', found.group(0))
    assert value is not None
    return value.group(1)


def _signature_events(db: Session) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "signature.sign")
        )
        or 0
    )


def test_the_sign_page_shows_the_full_text_and_carries_its_hash(
    client: FlaskClient, db: Session
) -> None:
    agreement, slot, official = _awaiting_official(db)
    login(client, official)
    resp = client.get(f"/agreements/signatures/{slot.id}/sign")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert _hidden_sha(page) == agreement.text_sha256 == sha256(agreement.text)
    assert agreement.institution is not None and agreement.institution.name in page
    assert "<h1" in page and page.count("<h1") == 1  # the text's own "# Title" sits lower
    assert 'name="typed_name"' in page and 'name="confirm"' in page


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": sha256("An older wording of the text.")}, "not this agreement&#39;s text"),
        ({"sha256": "0" * 63}, "not this agreement&#39;s text"),
        ({"typed_name": "Somebody Else"}, "Type your full name exactly"),
        ({"confirm": ""}, "Tick the box"),
        ({"typed_name": ""}, "This field is required"),
    ],
    ids=["stale hash", "malformed hash", "another name", "not confirmed", "no name"],
)
def test_signing_is_refused_and_changes_nothing_unless_every_check_passes(
    client: FlaskClient, db: Session, change: dict[str, str], message: str
) -> None:
    agreement, slot, official = _awaiting_official(db)
    login(client, official)
    data = {
        "typed_name": official.display_name,
        "confirm": "y",
        "sha256": agreement.text_sha256,
        **change,
    }
    before = _signature_events(db)
    resp = client.post(f"/agreements/signatures/{slot.id}/sign", data=data)
    assert resp.status_code == 422
    assert message in resp.get_data(as_text=True)
    db.expire_all()
    assert slot.state == SignatureState.PENDING and slot.signed_by_id is None
    assert agreement.state == AgreementState.AWAITING
    assert _signature_events(db) == before


def test_the_typed_name_may_differ_in_case_and_spacing(client: FlaskClient, db: Session) -> None:
    agreement, slot, official = _awaiting_official(db)
    login(client, official)
    typed = "  " + official.display_name.upper().replace(" ", "   ") + " "
    resp = client.post(
        f"/agreements/signatures/{slot.id}/sign",
        data={"typed_name": typed, "confirm": "y", "sha256": agreement.text_sha256},
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.expire_all()
    assert slot.state == SignatureState.SIGNED and slot.signed_by_id == official.id


def _age_login(db: Session, user: User, minutes: int) -> None:
    db.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user.id)
        .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes))
    )
    db.commit()


def test_an_old_login_must_log_in_again_before_signing(client: FlaskClient, db: Session) -> None:
    agreement, slot, official = _awaiting_official(db)
    login(client, official)
    _age_login(db, official, 20)  # SIGN_REAUTH_MINUTES is 15
    page = client.get(f"/agreements/signatures/{slot.id}/sign").get_data(as_text=True)
    assert "Log in again to sign" in page
    assert f"/auth/login?reauth=1&amp;next=/agreements/signatures/{slot.id}/sign" in page
    assert 'name="typed_name"' not in page

    before = _signature_events(db)
    resp = client.post(
        f"/agreements/signatures/{slot.id}/sign",
        data={"typed_name": official.display_name, "confirm": "y", "sha256": agreement.text_sha256},
        follow_redirects=True,
    )
    assert resp.history and resp.history[0].status_code == 303
    assert "log in again, then sign. Nothing was signed." in resp.get_data(as_text=True)
    db.expire_all()
    assert slot.state == SignatureState.PENDING and _signature_events(db) == before


def test_a_login_within_the_limit_signs(client: FlaskClient, db: Session) -> None:
    agreement, slot, official = _awaiting_official(db)
    login(client, official)
    _age_login(db, official, 10)
    resp = client.post(
        f"/agreements/signatures/{slot.id}/sign",
        data={"typed_name": official.display_name, "confirm": "y", "sha256": agreement.text_sha256},
    )
    assert resp.status_code == 302
    db.expire_all()
    assert slot.state == SignatureState.SIGNED


def test_a_party_whose_turn_has_not_come_is_told_who_signs_first(
    client: FlaskClient, db: Session
) -> None:
    agreement, _, _ = _awaiting_official(db)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    login(client, officer)
    page = client.get(
        f"/agreements/signatures/{_slot(agreement, PartyRole.PROGRAM).id}/sign"
    ).get_data(as_text=True)
    assert "Not your turn yet: Signing official for" in page
    assert 'name="typed_name"' not in page


def test_a_pi_cannot_open_the_signing_officials_slot(client: FlaskClient, db: Session) -> None:
    agreement = make_agreement(db, kind=AgreementKind.CONTRIBUTION)
    assert agreement.proposal is not None
    pi = agreement.proposal.team[0].user
    login(client, pi)
    official_slot = _slot(agreement, PartyRole.SIGNING_OFFICIAL)
    assert client.get(f"/agreements/signatures/{official_slot.id}/sign").status_code == 403
    assert client.get(f"/agreements/{agreement.id}").status_code == 200


# --- from issue to the signed PDF --------------------------------------------------------------


def test_an_agreement_is_issued_signed_in_turn_downloaded_and_verified(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db, state=InstitutionState.APPROVED)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    template = make_agreement_template(db, body=BODY)

    # The institution's page says what is missing, and links program staff to the issue page.
    login(client, officer)
    page = client.get(f"/institutions/{inst.id}").get_data(as_text=True)
    assert "none has been issued yet" in page
    assert f"/agreements/issue?kind=partnership&amp;subject_id={inst.id}" in page
    page = client.get(f"/agreements/issue?kind=partnership&subject_id={inst.id}").get_data(
        as_text=True
    )
    assert f'<option selected value="{inst.id}">' in page
    resp = client.post(
        "/agreements/issue?kind=partnership",
        data={"template_id": str(template.id), "subject_id": str(inst.id)},
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    agreement = db.scalars(select(Agreement).where(Agreement.institution_id == inst.id)).one()
    assert inst.name in agreement.text and "{{" not in agreement.text

    # A second one for the same institution is refused while the first is being signed.
    resp = client.post(
        "/agreements/issue?kind=partnership",
        data={"template_id": str(template.id), "subject_id": str(inst.id)},
    )
    assert resp.status_code == 422 and "already has a partnership agreement" in resp.get_data(
        as_text=True
    )

    # The official finds it on the dashboard and in "to sign", and signs.
    login(client, official)
    assert "Agreements to sign" in client.get("/dashboard").get_data(as_text=True)
    page = client.get("/agreements/to-sign").get_data(as_text=True)
    slot = _slot(agreement, PartyRole.SIGNING_OFFICIAL)
    assert f"/agreements/signatures/{slot.id}/sign" in page
    sign_page = client.get(f"/agreements/signatures/{slot.id}/sign").get_data(as_text=True)
    resp = client.post(
        f"/agreements/signatures/{slot.id}/sign",
        data={
            "typed_name": official.display_name,
            "confirm": "y",
            "sha256": _hidden_sha(sign_page),
        },
        follow_redirects=True,
    )
    page = resp.get_data(as_text=True)
    assert "You signed. The agreement now waits for: Program officer for" in page
    page = client.get("/agreements/to-sign").get_data(as_text=True)
    assert "Nothing waits for your signature" in page
    assert agreement.title in page.partition("Waiting on someone else")[2]
    assert client.get(f"/agreements/{agreement.id}.pdf").status_code == 409

    # The program officer countersigns: the agreement is in force.
    login(client, officer)
    program = _slot(agreement, PartyRole.PROGRAM)
    resp = client.post(
        f"/agreements/signatures/{program.id}/sign",
        data={"typed_name": officer.display_name, "confirm": "y", "sha256": agreement.text_sha256},
        follow_redirects=True,
    )
    assert "Every party has signed" in resp.get_data(as_text=True)
    db.expire_all()
    assert agreement.state == AgreementState.ACTIVE
    # The countersignature made the approved institution a partner.
    assert inst.state == InstitutionState.PARTNER and inst.partner_since is not None
    detail = client.get(f"/agreements/{agreement.id}").get_data(as_text=True)
    assert "127.0.0.1" in detail  # staff see where it was signed from
    assert "Download the signed PDF" in detail

    login(client, official)
    detail = client.get(f"/agreements/{agreement.id}").get_data(as_text=True)
    assert "127.0.0.1" not in detail  # signers do not see each other's address
    resp = client.get(f"/agreements/{agreement.id}.pdf")
    assert resp.status_code == 200 and resp.mimetype == "application/pdf"
    assert resp.data.startswith(b"%PDF")
    assert (
        resp.headers["Content-Disposition"] == f"attachment; filename=agreement-{agreement.id}.pdf"
    )
    page = client.get(f"/agreements/{agreement.id}/verify").get_data(as_text=True)
    assert "Verified" in page and "Does NOT match" not in page

    # Anyone holding the PDF checks its hash publicly.
    anonymous = client.application.test_client()
    page = anonymous.get(f"/agreements/verify?sha256={agreement.text_sha256.upper()}").get_data(
        as_text=True
    )
    assert agreement.title in page and "1 fully signed agreement has this text" in page
    page = anonymous.get(f"/agreements/verify?sha256={'a' * 64}").get_data(as_text=True)
    assert "No fully signed agreement has this text" in page

    # A text changed behind the portal's back no longer verifies.
    db.execute(
        update(Agreement).where(Agreement.id == agreement.id).values(text=agreement.text + " ")
    )
    db.commit()
    page = client.get(f"/agreements/{agreement.id}/verify").get_data(as_text=True)
    assert "Does NOT match: the text was changed after signing" in page


def test_declining_needs_a_reason_and_tells_the_parties(client: FlaskClient, db: Session) -> None:
    agreement, _, official = _awaiting_official(db)
    login(client, official)
    resp = client.post(
        f"/agreements/{agreement.id}/decline",
        data={"action": "decline", "reason": ""},
        follow_redirects=True,
    )
    assert resp.history[0].status_code == 303 and "please give a reason" in resp.get_data(
        as_text=True
    )
    db.expire_all()
    assert agreement.state == AgreementState.AWAITING
    resp = client.post(
        f"/agreements/{agreement.id}/decline",
        data={"action": "decline", "reason": "Our legal office has not approved clause 4."},
        follow_redirects=True,
    )
    assert "You declined to sign" in resp.get_data(as_text=True)
    db.expire_all()
    assert agreement.state == AgreementState.DECLINED
    assert agreement.reason == "Our legal office has not approved clause 4."


# --- templates, versions, re-consent -----------------------------------------------------------


def test_a_template_is_written_published_and_its_next_version_asks_for_reconsent(
    client: FlaskClient, db: Session
) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    login(client, officer)
    resp = client.post(
        "/agreements/templates/new",
        data={"kind": "partnership", "title": "Partnership", "body": "Hello {{ nobody }}"},
    )
    assert resp.status_code == 422 and "Placeholders you can use" in resp.get_data(as_text=True)
    resp = client.post(
        "/agreements/templates/new",
        data={"kind": "partnership", "title": "Partnership", "body": BODY},
    )
    assert resp.status_code == 302
    template = db.scalars(
        select(AgreementTemplate).where(AgreementTemplate.title == "Partnership")
    ).one()
    page = client.get(f"/agreements/templates/{template.id}").get_data(as_text=True)
    assert "[institution] and [lab] agree" in page  # the preview
    assert "{{ ror_id }}" in page  # the placeholders the kind offers
    v1 = template.versions[0]
    resp = client.post(f"/agreements/versions/{v1.id}/publish")
    assert resp.status_code == 302
    db.expire_all()
    assert v1.state == VersionState.PUBLISHED

    signed = make_agreement(db, template=template, state=AgreementState.ACTIVE)
    by = (dt.date.today() + dt.timedelta(days=60)).isoformat()
    resp = client.post(
        f"/agreements/templates/{template.id}",
        data={
            "part": "draft",
            "body": BODY + "\n\nData stays in the EU.",
            "change_note": "EU data.",
            "reconsent_by": by,
        },
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.expire_all()
    v2 = template.draft
    assert v2 is not None and v2.number == 2
    page = client.get(f"/agreements/versions/{v2.id}").get_data(as_text=True)
    assert "<strong>1</strong> signed agreement of this template will be re-issued" in page
    resp = client.post(f"/agreements/versions/{v2.id}/publish", follow_redirects=True)
    assert "1 signed agreement is re-issued for re-consent" in resp.get_data(as_text=True)
    db.expire_all()
    renewed = db.scalars(select(Agreement).where(Agreement.replaces_id == signed.id)).one()
    assert renewed.state == AgreementState.AWAITING and "EU" in renewed.text
    assert signed.reconsent_by == dt.date.fromisoformat(by)
    page = client.get(f"/agreements/{signed.id}").get_data(as_text=True)
    assert "counts until" in page and f"/agreements/{renewed.id}" in page


def test_a_researcher_reads_published_wording_but_not_drafts(
    client: FlaskClient, db: Session
) -> None:
    published = make_agreement_template(db).versions[0]
    draft = make_agreement_template(db, state=VersionState.DRAFT).versions[0]
    login(client, make_user(db, Role.RESEARCHER))
    assert client.get(f"/agreements/versions/{published.id}").status_code == 200
    assert client.get(f"/agreements/versions/{draft.id}").status_code == 403


# --- the list ----------------------------------------------------------------------------------


def test_the_list_filters_by_kind_and_state_and_the_csv_quotes_formulas(
    client: FlaskClient, db: Session
) -> None:
    partnership = make_agreement(db)
    contribution = make_agreement(db, kind=AgreementKind.CONTRIBUTION)
    db.execute(
        update(Agreement)
        .where(Agreement.id == contribution.id)
        .values(title='=HYPERLINK("http://x","click")')
    )
    db.commit()
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    page = client.get("/agreements/?kind=contribution").get_data(as_text=True)
    assert (
        f'/agreements/{contribution.id}"' in page and f'/agreements/{partnership.id}"' not in page
    )
    page = client.get("/agreements/?state=active").get_data(as_text=True)
    assert "No agreements match" in page
    assert client.get("/agreements/?kind=nonsense").status_code == 200
    resp = client.get("/agreements/?format=csv&kind=contribution")
    assert resp.mimetype == "text/csv"
    lines = resp.get_data(as_text=True).splitlines()
    assert lines[0].startswith("id,title,kind,state") and len(lines) == 2
    assert "'=HYPERLINK" in lines[1] and "Principal investigator" in lines[1]


def test_an_official_sees_only_agreements_of_their_institution(
    client: FlaskClient, db: Session
) -> None:
    mine = make_agreement(db)
    theirs = make_agreement(db)
    assert mine.institution is not None
    login(client, make_user(db, Role.SIGNING_OFFICIAL, institution=mine.institution))
    page = client.get("/agreements/").get_data(as_text=True)
    assert mine.title in page and theirs.title not in page
    assert client.get("/agreements/?format=csv").status_code == 403
    assert client.get(f"/agreements/{theirs.id}").status_code == 403


# --- bad input ---------------------------------------------------------------------------------

#: Values known to break careless code (Unicode digits, numbers beyond any column, impossible
#: dates, wildcards, long text), for every field and query argument these pages read.
TROUBLE = ["", "²", "٣", "9" * 30, "-1", "%_", "' OR 1=1 --", "é" * 300, "2026-02-30", "x" * 5000]
FIELDS = [
    "sha256", "subject_id", "template_id", "typed_name", "confirm", "part", "body", "change_note",
    "reconsent_by", "kind", "title", "description", "auto_issue", "action", "reason", "q",
    "state", "sort", "page", "format",
]  # fmt: skip


@pytest.mark.parametrize("value", TROUBLE, ids=range(len(TROUBLE)))
def test_no_input_makes_an_agreements_page_fail(
    client: FlaskClient, db: Session, value: str
) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    login(client, officer)
    awaiting = make_agreement(db, signed=1)  # waiting on the officer
    signed = make_agreement(db, state=AgreementState.ACTIVE)
    template = make_agreement_template(db)
    draft = make_agreement_template(db, state=VersionState.DRAFT).versions[0]
    paths = [
        "/agreements/",
        "/agreements/to-sign",
        f"/agreements/{awaiting.id}",
        f"/agreements/signatures/{_slot(awaiting, PartyRole.PROGRAM).id}/sign",
        f"/agreements/{awaiting.id}/decline",
        f"/agreements/{signed.id}/verify",
        "/agreements/verify",
        "/agreements/templates",
        "/agreements/templates/new",
        f"/agreements/templates/{template.id}",
        f"/agreements/versions/{draft.id}",
        "/agreements/issue",
        "/agreements/issue?kind=partnership",
        "/agreements/issue?kind=contribution",
        f"/agreements/{awaiting.id}/withdraw",
    ]
    fields = {name: value for name in FIELDS}
    for path in paths:
        query = urlencode(fields)
        for method, url, data in (
            ("GET", path + ("&" if "?" in path else "?") + query, None),
            ("POST", path, fields),
        ):
            resp = client.open(url, method=method, data=data)
            assert resp.status_code < 500, f"{method} {path} with {value[:20]!r}"
