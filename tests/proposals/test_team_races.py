"""Accepting an invitation and withdrawing it at the same moment leave exactly one decision.

Only the invited person can accept, so two acceptances cannot race; what can is the invited person
pressing "Accept" while the PI presses "Withdraw". Each try makes a fresh proposal, invitation and
two logged-in clients, releases the two POSTs together (a barrier, no sleeps), then reads what
the database committed. The app runs on its own committed database (SQLite file, PostgreSQL
database), one connection per request, as in production.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import partial

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from portal.core.audit import AuditEvent
from portal.proposals import team
from portal.proposals.models import Invitation, InvitationState, TeamMember, TeamRole
from tests.factories import make_user
from tests.proposals.test_team import make_team_proposal
from tests.support.live import live_session, logged_in_client
from tests.support.race import race

#: Tries per database: whether the two really overlap is up to the scheduler.
TRIES = 20

#: What the loser hears contains one of these: the compare-and-set missed ("someone else has
#: already changed"), the from-state check ("not possible while"), or the invitation page says
#: the link was withdrawn or used.
LOSER_WORDS = ("already changed", "not possible while", "was withdrawn", "already been used")


def post(client: FlaskClient, url: str) -> Callable[[], TestResponse]:
    return partial(client.post, url)


def heard(client: FlaskClient, response: TestResponse) -> list[tuple[str, str]]:
    """What ``client`` was told: the messages flashed for its next page, and the text of the
    page itself when the answer was not a redirect, as (category, text)."""
    with client.session_transaction() as s:
        told = [(str(c), str(m)) for c, m in s.get("_flashes", [])]
    if not 300 <= response.status_code < 400:
        told.append(("page", " ".join(html.unescape(response.get_data(as_text=True)).split())))
    return told


def _winner_and_loser_told(
    winner: list[tuple[str, str]], loser: list[tuple[str, str]]
) -> list[str]:
    problems = []
    if not any(category == "success" for category, _ in winner):
        problems.append(f"the winner was not told it worked: {winner}")
    if any(category == "success" for category, _ in loser) or not any(
        word in text for _, text in loser for word in LOSER_WORDS
    ):
        problems.append(f"the loser was not told what happened: {loser}")
    return problems


def test_accepting_and_withdrawing_one_invitation_at_once_leave_exactly_one_decision(
    race_app: Flask,
) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            t = make_team_proposal(s)
            invitation, token = team.invite(
                s, t.proposal, actor=t.pi, email=f"guest{attempt}@uni.edu", role=TeamRole.CO_PI
            )
            guest = make_user(s, email=f"Guest{attempt}@uni.edu")
            proposal_id, inv_id, pi_id, guest_id = t.proposal.id, invitation.id, t.pi.id, guest.id
        accepting = logged_in_client(race_app, guest_id)
        revoking = logged_in_client(race_app, pi_id)
        accept = post(accepting, f"/invitations/{token}")
        revoke = post(revoking, f"/proposals/{proposal_id}/team/invitations/{inv_id}/revoke")
        if attempt % 2:  # alternate which thread starts first, so either may tend to win
            accepted, revoked = race(accept, revoke)
        else:
            revoked, accepted = race(revoke, accept)

        problems = [
            f"{who} got {r.status_code}"
            for who, r in (("the guest", accepted), ("the PI", revoked))
            if r.status_code >= 500
        ]
        with live_session(race_app) as s:
            state = s.scalars(select(Invitation.state).where(Invitation.id == inv_id)).one()
            on_team = s.scalars(
                select(TeamMember.role).where(
                    TeamMember.proposal_id == proposal_id, TeamMember.user_id == guest_id
                )
            ).all()
            decisions = s.scalars(
                select(AuditEvent.action)
                .where(
                    AuditEvent.object_type == "invitations",
                    AuditEvent.object_id == inv_id,
                    AuditEvent.action.in_(["invitation.accept", "invitation.revoke"]),
                )
                .order_by(AuditEvent.id)
            ).all()

        guest_told, pi_told = heard(accepting, accepted), heard(revoking, revoked)
        if state == InvitationState.ACCEPTED:
            if list(on_team) != [TeamRole.CO_PI]:
                problems.append(f"accepted, but the guest's roles on the team are {on_team}")
            if decisions != ["invitation.accept"]:
                problems.append(f"accepted, but the audit log says {decisions}")
            problems += _winner_and_loser_told(guest_told, pi_told)
        elif state == InvitationState.REVOKED:
            if on_team:
                problems.append(f"withdrawn, but the guest is on the team as {on_team}")
            if decisions != ["invitation.revoke"]:
                problems.append(f"withdrawn, but the audit log says {decisions}")
            problems += _winner_and_loser_told(pi_told, guest_told)
        else:
            problems.append(f"the invitation is still {state.value}")
        if problems:
            broken[attempt] = problems

    assert not broken, f"in {len(broken)} of {TRIES} tries:\n" + "\n".join(
        f"  try {i}: " + "; ".join(p) for i, p in sorted(broken.items())
    )
