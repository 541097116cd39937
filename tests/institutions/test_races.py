"""Two people deciding the same thing at the same moment leave exactly one decision.

Each try makes fresh objects and two logged-in test clients, releases their two POSTs together
(a barrier, no sleeps), then reads what the database committed: the state, the audit log, the
outbox and the role grants. The app runs on its own committed database (SQLite file, PostgreSQL
database), one connection per request, as in production. Every try's broken rules are collected
and reported together, so a failure says in how many of the tries the race was lost.
"""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from portal.auth.models import Role, RoleGrant
from portal.core.audit import AuditEvent
from portal.institutions.models import (
    Affiliation,
    AffiliationState,
    Institution,
    InstitutionState,
)
from portal.notifications.models import OutboxMessage
from tests.factories import make_affiliation, make_institution, make_user
from tests.support.live import live_session, logged_in_client
from tests.support.race import (
    TRIES,
    post,
    race,
    redirects,
    report,
    told,
    was_told_success,
    who_was_told_what,
)

DECIDED_MAIL = "institutions/affiliation_decided"


# --- Affiliation requests -------------------------------------------------------------------------


def test_two_officials_deciding_one_affiliation_request_leave_exactly_one_decision(
    race_app: Flask,
) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            inst = make_institution(s)
            approver = make_user(s, Role.SIGNING_OFFICIAL, institution=inst)
            rejecter = make_user(s, Role.SIGNING_OFFICIAL, institution=inst)
            person = make_user(s)
            aff = make_affiliation(s, user=person, institution=inst)
            inst_id, person_id, aff_id = inst.id, person.id, aff.id
        approving = logged_in_client(race_app, approver.id)
        rejecting = logged_in_client(race_app, rejecter.id)
        url = f"/affiliations/{aff_id}/decide"

        approve = post(approving, url, decision="approve")
        reject = post(rejecting, url, decision="reject", note="Not one of ours")
        if attempt % 2:  # alternate which thread starts first, so either may tend to win
            approved, rejected = race(approve, reject)
        else:
            rejected, approved = race(reject, approve)

        problems = redirects(approver=approved, rejecter=rejected)
        with live_session(race_app) as s:
            state = s.scalars(select(Affiliation.state).where(Affiliation.id == aff_id)).one()
            decisions = s.scalars(
                select(AuditEvent.action)
                .where(
                    AuditEvent.object_type == "affiliations",
                    AuditEvent.object_id == aff_id,
                    AuditEvent.action.in_(["affiliation.approve", "affiliation.reject"]),
                )
                .order_by(AuditEvent.id)
            ).all()
            mails = s.scalars(
                select(OutboxMessage.id).where(
                    OutboxMessage.template == DECIDED_MAIL,
                    OutboxMessage.recipient_id == person_id,
                )
            ).all()
            researcher = s.scalars(
                select(RoleGrant.id).where(
                    RoleGrant.user_id == person_id,
                    RoleGrant.role == Role.RESEARCHER,
                    RoleGrant.institution_id == inst_id,
                )
            ).all()

        if state not in (AffiliationState.ACTIVE, AffiliationState.REJECTED):
            problems.append(f"the request is {state.value}, not decided")
        expected = {
            AffiliationState.ACTIVE: ["affiliation.approve"],
            AffiliationState.REJECTED: ["affiliation.reject"],
        }.get(state)
        if decisions != expected:
            problems.append(f"state {state.value} but audit log says {decisions}")
        if len(mails) != 1:
            problems.append(f"{len(mails)} decision mails to the person")
        if bool(researcher) != (state == AffiliationState.ACTIVE):
            problems.append(
                f"state {state.value} but {len(researcher)} researcher role grant(s) at the institution"
            )
        if state in (AffiliationState.ACTIVE, AffiliationState.REJECTED) and not any(
            p.endswith("redirect") for p in problems
        ):
            by_approver, by_rejecter = (approving, approved), (rejecting, rejected)
            if state == AffiliationState.ACTIVE:
                problems += who_was_told_what(winner=by_approver, loser=by_rejecter)
            else:
                problems += who_was_told_what(winner=by_rejecter, loser=by_approver)
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)


# --- Institutions ---------------------------------------------------------------------------------


def _new_partner_and_two_officers(app: Flask) -> tuple[int, int, int]:
    with live_session(app) as s:
        inst = make_institution(s, state=InstitutionState.PARTNER)
        first = make_user(s, Role.PROGRAM_OFFICER)
        second = make_user(s, Role.PROGRAM_OFFICER)
        return inst.id, first.id, second.id


def _state_and_events(
    app: Flask, inst_id: int, actions: list[str]
) -> tuple[InstitutionState, list[tuple[int | None, str, str, str]]]:
    """The institution's state and its status changes among ``actions``, oldest first, as
    (actor id, action, from, to)."""
    with live_session(app) as s:
        state = s.scalars(select(Institution.state).where(Institution.id == inst_id)).one()
        events = s.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.object_type == "institutions",
                AuditEvent.object_id == inst_id,
                AuditEvent.action.in_(actions),
            )
            .order_by(AuditEvent.id)
        ).all()
        return state, [
            (e.actor_id, e.action, str(e.details.get("frm")), str(e.details.get("to")))
            for e in events
        ]


def test_suspend_and_withdraw_of_one_institution_leave_exactly_one_change(
    race_app: Flask,
) -> None:
    """Withdrawing is allowed from suspended too, so both may succeed one after the other; what
    must never happen is a lost update: two changes that both start from ``partner``.

    Allowed: suspend then withdraw (two changes, partner → suspended → withdrawn); withdraw, then
    suspend refused; suspend, then withdraw refused because the state changed under it (the
    compare-and-set missed). Each change in the audit log starts where the previous one ended,
    the state is where the last one ended, and each officer is told success iff their change is
    in the log."""
    actions = ["institution.suspend", "institution.withdraw"]
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        inst_id, suspender_id, withdrawer_id = _new_partner_and_two_officers(race_app)
        suspending = logged_in_client(race_app, suspender_id)
        withdrawing = logged_in_client(race_app, withdrawer_id)
        url = f"/institutions/{inst_id}/transition"

        suspend = post(suspending, url, action="suspend", reason="Audit pending")
        withdraw = post(withdrawing, url, action="withdraw", reason="Left the program")
        if attempt % 2:  # alternate which thread starts first, so either may tend to win
            suspended, withdrawn = race(suspend, withdraw)
        else:
            withdrawn, suspended = race(withdraw, suspend)

        problems = redirects(suspender=suspended, withdrawer=withdrawn)
        state, events = _state_and_events(race_app, inst_id, actions)
        chain = [(frm, to) for _, _, frm, to in events]
        before = InstitutionState.PARTNER.value
        for frm, to in chain:
            if frm != before:
                problems.append(f"a change claims to start from {frm}, but the state was {before}")
            before = to
        starts = [frm for frm, _ in chain]
        if len(starts) != len(set(starts)):
            problems.append(f"lost update: two changes start from the same state: {chain}")
        if state.value != before:
            problems.append(f"the state is {state.value}, but the audit log ends at {before}")
        if not any(p.endswith("redirect") for p in problems):
            for who, client, response, actor_id in (
                ("suspender", suspending, suspended, suspender_id),
                ("withdrawer", withdrawing, withdrawn, withdrawer_id),
            ):
                changed = sum(1 for actor, *_ in events if actor == actor_id)
                messages = told(client, response)
                if changed > 1:
                    problems.append(f"the {who} changed it {changed} times")
                if was_told_success(messages) != (changed == 1):
                    problems.append(
                        f"the {who} made {changed} change(s) but was told {messages or 'nothing'}"
                    )
                if changed == 0 and not messages:
                    problems.append(f"the {who} was refused without being told why")
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)


def test_two_officers_suspending_one_institution_leave_exactly_one_suspension(
    race_app: Flask,
) -> None:
    """The strict case: the same action twice from ``partner``; the second must find it done."""
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        inst_id, first_id, second_id = _new_partner_and_two_officers(race_app)
        first = logged_in_client(race_app, first_id)
        second = logged_in_client(race_app, second_id)
        url = f"/institutions/{inst_id}/transition"
        form = {"action": "suspend", "reason": "Audit pending"}

        first_response, second_response = race(post(first, url, **form), post(second, url, **form))

        problems = redirects(first=first_response, second=second_response)
        state, events = _state_and_events(race_app, inst_id, ["institution.suspend"])
        if state != InstitutionState.SUSPENDED:
            problems.append(f"the institution is {state.value}, not suspended")
        if len(events) != 1:
            problems.append(f"{len(events)} suspensions in the audit log")
        elif events[0][2:] != ("partner", "suspended"):
            problems.append(f"the suspension is logged as {events[0][2]} → {events[0][3]}")
        if len(events) == 1 and not any(p.endswith("redirect") for p in problems):
            winner_id = events[0][0]
            one, two = (first, first_response), (second, second_response)
            if winner_id == first_id:
                problems += who_was_told_what(winner=one, loser=two)
            else:
                problems += who_was_told_what(winner=two, loser=one)
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)
