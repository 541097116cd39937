"""A proposal's team: invitations by e-mail (single-use, expiring, only for the verified invited
address), withdrawing and re-sending them, roles, handing the PI role on, removing people, and
invitation or member ids of another proposal (IDOR).

Set ``UPDATE_EXPECTED=1`` to rewrite ``tests/notifications/expected/proposal_invitation.txt``
after a deliberate wording change, then read the diff before committing it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import flask_login
import pytest
from flask import Flask, render_template
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import (
    ConflictError,
    InvalidTransitionError,
    PermissionDeniedError,
    ValidationError,
)
from portal.core.models import AnySession, utcnow
from portal.institutions.models import Institution
from portal.notifications.models import OutboxMessage
from portal.notifications.rendering import render_email
from portal.proposals import team
from portal.proposals.models import Invitation, InvitationState, Proposal, TeamMember, TeamRole
from portal.proposals.permissions import can_edit_proposal, can_view_proposal
from portal.proposals.services import (
    Criterion,
    Offer,
    run_call,
    save_call,
    save_resource,
    start_proposal,
)
from tests.factories import make_institution, make_user
from tests.support.app import login

EXPECTED = Path(__file__).parents[1] / "notifications" / "expected"
INVITATION_MAIL = "proposals/invitation"
_TOKEN_LINK = re.compile(r"/invitations/[A-Za-z0-9_\-]+")


# --- building a proposal, as people do ---------------------------------------------------------


@dataclass
class Team:
    """A draft proposal at a partner institution and its PI."""

    proposal: Proposal
    pi: User
    institution: Institution


def make_team_proposal(
    session: AnySession,
    *,
    title: str = "Reasoning in open language models",
    institution_name: str | None = None,
    pi_name: str = "Paula Investigator",
) -> Team:
    """An open call (one resource, one criterion), and a draft proposal to it started by a
    researcher at a partner institution, who is its PI."""
    officer = make_user(session, Role.PROGRAM_OFFICER)
    resource = save_resource(
        session,
        None,
        actor=officer,
        cluster=f"cluster-{uuid.uuid4().hex[:8]}",
        gpu_class="H100",
        capacity_hours=500_000,
    )
    call = save_call(
        session,
        None,
        actor=officer,
        title="Open models 2027",
        description="Compute for open research.",
        eligibility="Faculty at partner institutions.",
        opens_at=None,
        closes_at=None,
        reviews_wanted=2,
        single_blind=True,
        endorsement_required=True,
        page_limit=10,
        offers=[Offer(resource_id=resource.id, budget_hours=100_000, max_request_hours=10_000)],
        criteria=[Criterion("Scientific merit")],
    )
    run_call(session, call, "open", actor=officer)
    inst = (
        make_institution(session, name=institution_name)
        if institution_name
        else make_institution(session)
    )
    pi = make_user(
        session,
        Role.RESEARCHER,
        institution=inst,
        display_name=pi_name,
        email=f"pi-{uuid.uuid4().hex[:8]}@northlake.edu",
    )
    proposal = start_proposal(session, call, actor=pi, title=title)
    return Team(proposal, pi, inst)


def invite(
    app: Flask, session: AnySession, t: Team, email: str, role: TeamRole = TeamRole.MEMBER
) -> tuple[Invitation, str]:
    """The PI invites ``email`` (services read the configuration: an app context)."""
    with app.app_context():
        return team.invite(session, t.proposal, actor=t.pi, email=email, role=role)


def add_member(session: Session, t: Team, role: TeamRole, **kw: str) -> User:
    """Someone at the institution, put on the team in ``role`` (as if they had accepted)."""
    person = make_user(session, Role.RESEARCHER, institution=t.institution, **kw)
    session.add(TeamMember(proposal_id=t.proposal.id, user_id=person.id, role=role))
    session.flush()
    session.expire(t.proposal, ["team"])
    return person


# --- reading what happened ---------------------------------------------------------------------


def outbox(db: Session) -> list[OutboxMessage]:
    return list(
        db.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.template == INVITATION_MAIL)
            .order_by(OutboxMessage.id)
        )
    )


def actions(db: Session, *names: str) -> list[str]:
    return list(
        db.scalars(
            select(AuditEvent.action).where(AuditEvent.action.in_(names)).order_by(AuditEvent.id)
        )
    )


def members(db: Session, proposal_id: int) -> dict[int, TeamRole]:
    return {
        m.user_id: m.role
        for m in db.scalars(select(TeamMember).where(TeamMember.proposal_id == proposal_id))
    }


def text_of(response: TestResponse) -> str:
    return " ".join(html.unescape(response.get_data(as_text=True)).split())


def flashes(client: FlaskClient) -> list[tuple[str, str]]:
    """The messages waiting in ``client``'s session, as (category, text)."""
    with client.session_transaction() as s:
        return [(str(c), str(m)) for c, m in s.get("_flashes", [])]


def path_of(response: TestResponse) -> str:
    assert response.location, f"not a redirect: {response.status}"
    return urlsplit(response.location).path


def token_of(msg: OutboxMessage) -> str:
    return str(msg.context["accept_url"]).rsplit("/", 1)[1]


def _check_expected(name: str, actual: str) -> None:
    path = EXPECTED / f"{name}.txt"
    if os.environ.get("UPDATE_EXPECTED"):
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} differs from {path}"


# --- inviting ----------------------------------------------------------------------------------


def test_invitation_mails_the_address_a_single_use_link_and_keeps_only_its_hash(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    t = make_team_proposal(
        db, institution_name="Northlake University", title="Reasoning in open language models"
    )
    login(client, t.pi)
    resp = client.post(
        f"/proposals/{t.proposal.id}/team/invite",
        data={"email": " Ann.Lee@Uni.EDU ", "role": "co_pi"},
    )
    assert resp.status_code == 303 and path_of(resp) == f"/proposals/{t.proposal.id}"
    assert ("success", "Invitation sent to Ann.Lee@uni.edu.") in flashes(client)

    (inv,) = db.scalars(select(Invitation).where(Invitation.proposal_id == t.proposal.id))
    assert (inv.email, inv.role, inv.state, inv.invited_by_id) == (
        "Ann.Lee@uni.edu",
        TeamRole.CO_PI,
        InvitationState.PENDING,
        t.pi.id,
    )
    days = (inv.expires_at - utcnow()).total_seconds() / 86400
    assert 13.9 < days <= 14, "INVITATION_DAYS (14) from now"

    (msg,) = outbox(db)
    assert (msg.to_addr, msg.recipient_id) == ("Ann.Lee@uni.edu", None)
    link = str(msg.context["accept_url"])
    assert link.startswith("http://127.0.0.1:5000/invitations/"), "absolute, under BASE_URL"
    token = token_of(msg)
    assert len(token) >= 43
    # Only the SHA-256 of the token is stored; the link itself is only in the mail.
    assert inv.token_hash == hashlib.sha256(token.encode()).hexdigest() != token
    assert team.invitation_for_token(db, token) == inv
    assert team.invitation_for_token(db, token[:-1] + "x") is None
    assert actions(db, "invitation.create") == ["invitation.create"]

    with app.app_context():
        r = render_email(msg)
    rendered = f"Subject: {r.subject}\n\n--- text/plain ---\n{r.text}\n--- text/html ---\n{r.html}"
    rendered = _TOKEN_LINK.sub("/invitations/<token>", rendered)
    rendered = rendered.replace(str(msg.context["expires_on"]), "<expiry date>")
    _check_expected("proposal_invitation", rendered)


@pytest.mark.parametrize(
    ("email", "role", "error"),
    [
        ("not an address", TeamRole.MEMBER, ValidationError),
        ("ann@", TeamRole.MEMBER, ValidationError),
        ("ann@uni.edu\r\nBcc: x@evil.example", TeamRole.MEMBER, ValidationError),
        ("ann@uni.edu", TeamRole.PI, ValidationError),
    ],
)
def test_invitation_needs_a_usable_address_and_a_role_below_pi(
    app: Flask, db: Session, email: str, role: TeamRole, error: type[Exception]
) -> None:
    t = make_team_proposal(db)
    with pytest.raises(error):
        invite(app, db, t, email, role)
    assert db.scalar(select(func.count()).select_from(Invitation)) == 0
    assert outbox(db) == []


def test_no_second_invitation_to_a_pending_address_or_a_team_member(
    app: Flask, db: Session
) -> None:
    t = make_team_proposal(db)
    invite(app, db, t, "ann@uni.edu")
    with pytest.raises(ConflictError, match="already has a pending invitation"):
        invite(app, db, t, "ANN@uni.edu", TeamRole.CO_PI)
    colleague = add_member(db, t, TeamRole.MEMBER, email="bo@uni.edu")
    with pytest.raises(ConflictError, match="already on the team"):
        invite(app, db, t, "Bo@Uni.edu")
    with pytest.raises(ConflictError, match="already on the team"):
        invite(app, db, t, t.pi.email or "")
    assert len(outbox(db)) == 1
    # An expired invitation no longer blocks a new one to the same address.
    db.execute(update(Invitation).values(expires_at=utcnow() - dt.timedelta(minutes=1)))
    db.expire_all()
    invite(app, db, t, "ann@uni.edu")
    assert len(outbox(db)) == 2 and colleague.id in members(db, t.proposal.id)


def test_bad_address_in_the_form_is_flashed_and_nothing_is_sent(
    client: FlaskClient, db: Session
) -> None:
    t = make_team_proposal(db)
    login(client, t.pi)
    resp = client.post(
        f"/proposals/{t.proposal.id}/team/invite", data={"email": "nobody", "role": "member"}
    )
    assert resp.status_code == 303 and path_of(resp) == f"/proposals/{t.proposal.id}"
    (category, message) = flashes(client)[0]
    assert category == "danger" and "not a usable e-mail address" in message
    resp = client.post(
        f"/proposals/{t.proposal.id}/team/invite", data={"email": "a@uni.edu", "role": "pi"}
    )
    assert resp.status_code == 303 and any(c == "danger" for c, _ in flashes(client))
    assert db.scalar(select(func.count()).select_from(Invitation)) == 0 and outbox(db) == []


def test_a_member_cannot_invite_but_a_co_pi_can(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    t = make_team_proposal(db)
    member = add_member(db, t, TeamRole.MEMBER)
    co_pi = add_member(db, t, TeamRole.CO_PI)
    with pytest.raises(PermissionDeniedError), app.app_context():
        team.invite(db, t.proposal, actor=member, email="x@uni.edu", role=TeamRole.MEMBER)
    login(client, member)
    resp = client.post(
        f"/proposals/{t.proposal.id}/team/invite", data={"email": "x@uni.edu", "role": "member"}
    )
    assert resp.status_code == 403
    assert outbox(db) == []
    with app.app_context():
        team.invite(db, t.proposal, actor=co_pi, email="x@uni.edu", role=TeamRole.MEMBER)
    assert len(outbox(db)) == 1


# --- accepting ---------------------------------------------------------------------------------


def test_the_invited_person_accepts_once_and_joins_in_the_invited_role(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    t = make_team_proposal(db, title="Reasoning in open language models", pi_name="Paula PI")
    inv, token = invite(app, db, t, "ann.lee@uni.edu", TeamRole.CO_PI)
    ann = make_user(db, display_name="Ann Lee", email="Ann.Lee@UNI.edu")  # case differs
    login(client, ann)

    page = client.get(f"/invitations/{token}")
    assert page.status_code == 200
    text = text_of(page)
    for shown in ("Reasoning in open language models", "Co-investigator", "Paula PI", "Accept"):
        assert shown in text
    db.refresh(inv)
    assert inv.state == InvitationState.PENDING, "a GET changes nothing"

    resp = client.post(f"/invitations/{token}")
    assert resp.status_code == 303 and path_of(resp) == f"/proposals/{t.proposal.id}"
    db.expire_all()
    assert members(db, t.proposal.id)[ann.id] == TeamRole.CO_PI
    assert (inv.state, inv.accepted_by_id) == (InvitationState.ACCEPTED, ann.id)
    assert inv.decided_at is not None
    assert actions(db, "invitation.accept") == ["invitation.accept"]

    # The link works once: again for Ann, or for anyone else.
    again = client.post(f"/invitations/{token}")
    assert again.status_code == 409 and "already accepted" in text_of(again)
    login(client, make_user(db, email="ann.lee@uni.edu"))  # another account, same address
    used = client.get(f"/invitations/{token}")
    assert used.status_code == 409 and "already been used" in text_of(used)
    assert client.post(f"/invitations/{token}").status_code == 409
    db.expire_all()
    assert len(members(db, t.proposal.id)) == 2
    assert actions(db, "invitation.accept") == ["invitation.accept"]
    with pytest.raises((PermissionDeniedError, InvalidTransitionError)):
        team.accept(db, inv, actor=ann)


@pytest.mark.parametrize(("role", "may_edit"), [(TeamRole.MEMBER, False), (TeamRole.CO_PI, True)])
def test_members_view_and_co_investigators_edit(
    app: Flask, db: Session, role: TeamRole, may_edit: bool
) -> None:
    t = make_team_proposal(db)
    inv, _ = invite(app, db, t, "bo@uni.edu", role)
    bo = make_user(db, email="bo@uni.edu")
    assert not can_view_proposal(bo, t.proposal)
    team.accept(db, inv, actor=bo)
    db.refresh(t.proposal)
    assert can_view_proposal(bo, t.proposal)
    assert can_edit_proposal(bo, t.proposal) is may_edit
    assert can_edit_proposal(t.pi, t.proposal)


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("someone else", "not to the address of the account you are logged in with"),
        ("unverified", "not verified yet"),
    ],
)
def test_anyone_but_the_verified_invited_person_is_refused_and_told_which_address(
    app: Flask, client: FlaskClient, db: Session, who: str, expected: str
) -> None:
    t = make_team_proposal(db, pi_name="Paula PI")
    inv, token = invite(app, db, t, "ann.lee@uni.edu")
    if who == "unverified":
        person = make_user(db, email="ann.lee@uni.edu", email_verified=False)
    else:
        person = make_user(db, email="mallory@uni.edu")
    login(client, person)
    for resp in (client.get(f"/invitations/{token}"), client.post(f"/invitations/{token}")):
        assert resp.status_code == 403
        text = text_of(resp)
        assert "a***@uni.edu" in text and "ann.lee@uni.edu" not in text
        assert expected in text
        if who == "someone else":
            assert "ask Paula PI to send the invitation to your own address" in text
    db.expire_all()
    assert inv.state == InvitationState.PENDING and person.id not in members(db, t.proposal.id)
    assert actions(db, "permission.denied"), "the refusal is audited"
    with pytest.raises(PermissionDeniedError):
        team.accept(db, inv, actor=person)


def test_an_expired_invitation_is_refused(app: Flask, client: FlaskClient, db: Session) -> None:
    t = make_team_proposal(db)
    inv, token = invite(app, db, t, "ann@uni.edu")
    ann = make_user(db, email="ann@uni.edu")
    db.execute(
        update(Invitation)
        .where(Invitation.id == inv.id)
        .values(expires_at=utcnow() - dt.timedelta(seconds=1))
    )
    db.expire_all()
    login(client, ann)
    for resp in (client.get(f"/invitations/{token}"), client.post(f"/invitations/{token}")):
        assert resp.status_code == 410 and "has expired" in text_of(resp)
    with pytest.raises(ConflictError, match="expired"):
        team.accept(db, inv, actor=ann)
    db.expire_all()
    assert inv.state == InvitationState.PENDING and ann.id not in members(db, t.proposal.id)


def test_a_revoked_invitation_is_refused(app: Flask, client: FlaskClient, db: Session) -> None:
    t = make_team_proposal(db)
    inv, token = invite(app, db, t, "ann@uni.edu")
    ann = make_user(db, email="ann@uni.edu")
    login(client, t.pi)
    resp = client.post(f"/proposals/{t.proposal.id}/team/invitations/{inv.id}/revoke")
    assert resp.status_code == 303 and path_of(resp) == f"/proposals/{t.proposal.id}"
    db.expire_all()
    assert inv.state == InvitationState.REVOKED
    assert actions(db, "invitation.revoke") == ["invitation.revoke"]

    login(client, ann)
    for resp in (client.get(f"/invitations/{token}"), client.post(f"/invitations/{token}")):
        assert resp.status_code == 410 and "was withdrawn" in text_of(resp)
    with pytest.raises(InvalidTransitionError):
        team.accept(db, inv, actor=ann)
    db.expire_all()
    assert ann.id not in members(db, t.proposal.id)


def test_an_unknown_link_is_not_found(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db))
    assert client.get("/invitations/nothing-here").status_code == 404
    assert client.post("/invitations/" + "x" * 300).status_code == 404


def test_anonymous_visitors_log_in_first_and_come_back(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    t = make_team_proposal(db)
    _, token = invite(app, db, t, "ann@uni.edu")
    resp = client.get(f"/invitations/{token}")
    assert resp.status_code == 302
    where = urlsplit(resp.location)
    assert where.path == "/auth/login"
    assert parse_qs(where.query)["next"] == [f"/invitations/{token}"]
    assert client.post(f"/invitations/{token}").status_code == 302
    db.expire_all()
    assert len(members(db, t.proposal.id)) == 1


# --- re-sending, handing on, removing ----------------------------------------------------------


def test_the_pi_resends_an_invitation_to_another_address(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    t = make_team_proposal(db)
    old, old_token = invite(app, db, t, "ann@old-uni.edu", TeamRole.CO_PI)
    login(client, t.pi)
    resp = client.post(
        f"/proposals/{t.proposal.id}/team/invitations/{old.id}/resend",
        data={"email": "ann@uni.edu"},
    )
    assert resp.status_code == 303 and path_of(resp) == f"/proposals/{t.proposal.id}"
    db.expire_all()
    assert old.state == InvitationState.REVOKED
    new = db.scalars(select(Invitation).where(Invitation.state == InvitationState.PENDING)).one()
    assert (new.email, new.role) == ("ann@uni.edu", TeamRole.CO_PI)
    assert [m.to_addr for m in outbox(db)] == ["ann@old-uni.edu", "ann@uni.edu"]
    assert actions(db, "invitation.revoke", "invitation.create") == [
        "invitation.create",
        "invitation.revoke",
        "invitation.create",
    ]
    ann = make_user(db, email="ann@uni.edu")
    login(client, ann)
    assert client.get(f"/invitations/{old_token}").status_code == 410
    new_token = token_of(outbox(db)[-1])
    assert client.post(f"/invitations/{new_token}").status_code == 303
    db.expire_all()
    assert members(db, t.proposal.id)[ann.id] == TeamRole.CO_PI


def test_the_pi_hands_the_role_to_a_co_pi_and_they_swap(client: FlaskClient, db: Session) -> None:
    t = make_team_proposal(db)
    co_pi = add_member(db, t, TeamRole.CO_PI, display_name="Cora Co")
    member = add_member(db, t, TeamRole.MEMBER)
    login(client, t.pi)

    # Only to a co-investigator: not to a member, not to someone off the team.
    for target in (member.id, make_user(db).id):
        resp = client.post(f"/proposals/{t.proposal.id}/team/transfer", data={"to_user_id": target})
        assert resp.status_code == 303 and any(c == "danger" for c, _ in flashes(client))
    db.expire_all()
    assert members(db, t.proposal.id)[t.pi.id] == TeamRole.PI

    resp = client.post(f"/proposals/{t.proposal.id}/team/transfer", data={"to_user_id": co_pi.id})
    assert resp.status_code == 303 and path_of(resp) == f"/proposals/{t.proposal.id}"
    db.expire_all()
    assert members(db, t.proposal.id) == {
        t.pi.id: TeamRole.CO_PI,
        co_pi.id: TeamRole.PI,
        member.id: TeamRole.MEMBER,
    }
    assert t.proposal.pi == co_pi
    (event,) = db.scalars(select(AuditEvent).where(AuditEvent.action == "proposal.transfer_pi"))
    assert (event.actor_id, event.details["to_user_id"]) == (t.pi.id, co_pi.id)
    # The old PI, now a co-investigator, can no longer hand the role on.
    resp = client.post(f"/proposals/{t.proposal.id}/team/transfer", data={"to_user_id": t.pi.id})
    assert resp.status_code == 403


@pytest.mark.parametrize("role", [TeamRole.CO_PI, TeamRole.MEMBER])
def test_only_the_pi_hands_the_role_on(client: FlaskClient, db: Session, role: TeamRole) -> None:
    t = make_team_proposal(db)
    co_pi = add_member(db, t, TeamRole.CO_PI)
    actor = co_pi if role == TeamRole.CO_PI else add_member(db, t, TeamRole.MEMBER)
    with pytest.raises(PermissionDeniedError):
        team.transfer_pi(db, t.proposal, actor=actor, to_user_id=co_pi.id)
    login(client, actor)
    resp = client.post(f"/proposals/{t.proposal.id}/team/transfer", data={"to_user_id": co_pi.id})
    assert resp.status_code == 403
    db.expire_all()
    assert members(db, t.proposal.id)[t.pi.id] == TeamRole.PI
    assert actions(db, "proposal.transfer_pi") == []


def test_the_pi_removes_people_but_never_the_pi(client: FlaskClient, db: Session) -> None:
    t = make_team_proposal(db)
    co_pi = add_member(db, t, TeamRole.CO_PI)
    member = add_member(db, t, TeamRole.MEMBER)
    pi_row = db.scalars(select(TeamMember).where(TeamMember.user_id == t.pi.id)).one()
    member_row = db.scalars(select(TeamMember).where(TeamMember.user_id == member.id)).one()

    login(client, co_pi)
    resp = client.post(f"/proposals/{t.proposal.id}/team/members/{member_row.id}/remove")
    assert resp.status_code == 403

    login(client, t.pi)
    resp = client.post(f"/proposals/{t.proposal.id}/team/members/{pi_row.id}/remove")
    assert resp.status_code == 303 and any(c == "danger" for c, _ in flashes(client))
    resp = client.post(f"/proposals/{t.proposal.id}/team/members/{member_row.id}/remove")
    assert resp.status_code == 303 and path_of(resp) == f"/proposals/{t.proposal.id}"
    db.expire_all()
    assert members(db, t.proposal.id) == {t.pi.id: TeamRole.PI, co_pi.id: TeamRole.CO_PI}
    assert actions(db, "proposal.remove_member") == ["proposal.remove_member"]
    assert not can_view_proposal(member, t.proposal)


# --- another proposal's ids (IDOR) -------------------------------------------------------------


def test_ids_of_another_proposal_are_not_found(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    mine = make_team_proposal(db)
    theirs = make_team_proposal(db)
    their_inv, _ = invite(app, db, theirs, "ann@uni.edu")
    their_member = add_member(db, theirs, TeamRole.MEMBER)
    their_row = db.scalars(select(TeamMember).where(TeamMember.user_id == their_member.id)).one()
    login(client, mine.pi)
    base = f"/proposals/{mine.proposal.id}/team"
    assert client.post(f"{base}/invitations/{their_inv.id}/revoke").status_code == 404
    assert (
        client.post(
            f"{base}/invitations/{their_inv.id}/resend", data={"email": "x@uni.edu"}
        ).status_code
        == 404
    )
    assert client.post(f"{base}/members/{their_row.id}/remove").status_code == 404
    # Through the other proposal's own address: its PI's pages, not mine.
    other = f"/proposals/{theirs.proposal.id}/team"
    assert client.post(f"{other}/invitations/{their_inv.id}/revoke").status_code == 403
    assert (
        client.post(f"{other}/invite", data={"email": "x@uni.edu", "role": "member"}).status_code
        == 403
    )
    assert client.post(f"{other}/transfer", data={"to_user_id": mine.pi.id}).status_code == 403
    db.expire_all()
    assert their_inv.state == InvitationState.PENDING
    assert their_member.id in members(db, theirs.proposal.id)
    assert len(outbox(db)) == 1


# --- the team panel ----------------------------------------------------------------------------


def _panel(app: Flask, proposal: Proposal, user: User) -> str:
    with app.test_request_context():
        flask_login.login_user(user)
        return " ".join(render_template("proposals/_team.html", proposal=proposal).split())


def test_team_panel_shows_roles_invitations_and_the_forms_each_person_may_use(
    app: Flask, db: Session
) -> None:
    t = make_team_proposal(db, pi_name="Paula PI")
    co_pi = add_member(db, t, TeamRole.CO_PI, display_name="Cora Co")
    member = add_member(db, t, TeamRole.MEMBER, display_name="Max Member")
    inv, _ = invite(app, db, t, "ann@uni.edu", TeamRole.CO_PI)
    db.refresh(t.proposal)
    base = f"/proposals/{t.proposal.id}/team"

    as_pi = _panel(app, t.proposal, t.pi)
    for shown in ("Paula PI", "Principal investigator", "Cora Co", "Max Member", "ann@uni.edu"):
        assert shown in as_pi
    assert f'action="{base}/invite"' in as_pi
    assert f'action="{base}/invitations/{inv.id}/revoke"' in as_pi
    assert f'action="{base}/invitations/{inv.id}/resend"' in as_pi
    assert f'action="{base}/transfer"' in as_pi
    assert f'<option value="{co_pi.id}">Cora Co</option>' in as_pi
    assert '<th scope="col">Role</th>' in as_pi and "<label" in as_pi
    assert "/remove" in as_pi

    as_co_pi = _panel(app, t.proposal, co_pi)
    assert f'action="{base}/invite"' in as_co_pi and "/revoke" in as_co_pi
    assert f'action="{base}/transfer"' not in as_co_pi and "/remove" not in as_co_pi

    as_member = _panel(app, t.proposal, member)
    assert "Max Member" in as_member and 'method="post"' not in as_member


@pytest.mark.usefixtures("csrf_enabled")
def test_posts_without_the_forms_csrf_token_change_nothing(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    t = make_team_proposal(db)
    inv, token = invite(app, db, t, "ann@uni.edu")
    login(client, t.pi)
    base = f"/proposals/{t.proposal.id}/team"
    assert (
        client.post(f"{base}/invite", data={"email": "x@uni.edu", "role": "member"}).status_code
        == 400
    )
    assert client.post(f"{base}/invitations/{inv.id}/revoke").status_code == 400
    login(client, make_user(db, email="ann@uni.edu"))
    assert client.post(f"/invitations/{token}").status_code == 400
    db.expire_all()
    assert inv.state == InvitationState.PENDING and len(outbox(db)) == 1
    assert len(members(db, t.proposal.id)) == 1
