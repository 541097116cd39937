"""Two people acting on one institution's lifecycle at the same moment leave one outcome that a
serial order explains: two program officers deciding one application (approve, decline, ask for
changes) leave exactly one decision — the other is told someone else already changed it, and
nothing of theirs happens (no second mail, no second agreement; asking for changes and then
declining, one after the other, is the one serial order in which both stand); the applicant sending the
application again while staff decline it; a signature of the partnership agreement while staff
withdraw the institution; and the partnership agreement's last signature taken twice (or with the
official's) at once, which makes the institution a partner exactly once.

Each try makes fresh objects and logged-in clients on a live, committed database (SQLite file and
PostgreSQL), releases the POSTs to the real pages together (a barrier, no sleeps) and reads what
committed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from portal.agreements import services as agreements
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    Signature,
    SignatureState,
)
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.models import utcnow
from portal.institutions import services
from portal.institutions.models import (
    Application,
    DomainState,
    Institution,
    InstitutionDomain,
    OfficialInvitation,
    OfficialInvitationState,
)
from portal.institutions.models import InstitutionState as S
from portal.notifications.models import OutboxMessage
from tests.factories import make_agreement_template, make_domain, make_institution, make_user
from tests.support.live import live_session, logged_in_client
from tests.support.race import (
    TRIES,
    post,
    race,
    redirects,
    report,
    told,
    was_told_conflict,
    was_told_success,
    who_was_told_what,
)

DECIDED = "institutions/application_decided"
STARTED = "institutions/partnership_started"
DECISIONS = ("institution.approve", "institution.decline", "institution.request_changes")
TO = {"approve": S.APPROVED, "decline": S.DECLINED, "request_changes": S.CHANGES_REQUESTED}

_ALERT = re.compile(
    r'<div class="alert alert-(?P<category>[\w-]+)[^"]*"[^>]*>(?P<message>.*?)<button', re.S
)


@dataclass(frozen=True)
class Case:
    """The ids of one try's objects."""

    inst: int
    applicant: int
    official: int
    first: int
    second: int
    official_name: str
    first_name: str
    second_name: str


def _auto_partnership_template(s: Session) -> None:
    """The partnership template issued on approval (one per database: the schema allows one)."""
    template = s.scalar(
        select(AgreementTemplate).where(
            AgreementTemplate.kind == AgreementKind.PARTNERSHIP,
            AgreementTemplate.auto_issue.is_(True),
        )
    )
    if template is not None and template.current is not None:
        return
    if template is not None:  # another test's, with no published version
        template.auto_issue = False
        s.flush()
    make_agreement_template(s, kind=AgreementKind.PARTNERSHIP, auto_issue=True)


def _case(app: Flask, state: S) -> Case:
    """An application in ``state`` (its applicant, a signing official, a pending domain and an
    open invitation), two program officers, and a partnership template issued on approval."""
    with live_session(app) as s:
        inst = make_institution(s, state=state)
        applicant = make_user(s)
        inst.application = Application(
            applicant_id=applicant.id,
            statement="We train and release open models for science, and publish everything.",
            technical_contact_name="Tess Tech",
            technical_contact_email="tess@example.org",
        )
        inst.all_domains.append(
            make_domain(
                f"lab-{inst.id}-{secrets.token_hex(3)}.example.edu", state=DomainState.PENDING
            )
        )
        s.add(
            OfficialInvitation(
                institution_id=inst.id,
                email="dean@example.edu",
                token_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
                expires_at=utcnow() + dt.timedelta(days=14),
            )
        )
        official = make_user(s, Role.SIGNING_OFFICIAL, institution=inst)
        first = make_user(s, Role.PROGRAM_OFFICER)
        second = make_user(s, Role.PROGRAM_OFFICER)
        _auto_partnership_template(s)
        s.flush()
        return Case(
            inst.id,
            applicant.id,
            official.id,
            first.id,
            second.id,
            official.display_name,
            first.display_name,
            second.display_name,
        )


def _approved(app: Flask, *, official_signed: bool) -> tuple[Case, Agreement]:
    """An application approved by the first officer (which issued the partnership agreement),
    signed by the official if ``official_signed``."""
    case = _case(app, S.UNDER_REVIEW)
    with live_session(app) as s:
        inst = s.get_one(Institution, case.inst)
        services.transition(s, inst, "approve", actor=s.get_one(User, case.first))
        agreement = s.scalars(select(Agreement).where(Agreement.institution_id == inst.id)).one()
        assert len(agreement.signatures) == 2  # loaded before the agreement leaves the session
        if official_signed:
            agreements.sign(
                s,
                agreement.signatures[0],
                actor=s.get_one(User, case.official),
                typed_name=case.official_name,
                confirmed=True,
                shown_sha256=agreement.text_sha256,
                ip=None,
                user_agent=None,
            )
        s.expunge(agreement)
    return case, agreement


def _events(s: Session, inst_id: int, actions: tuple[str, ...]) -> list[AuditEvent]:
    return list(
        s.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.object_type == "institutions",
                AuditEvent.object_id == inst_id,
                AuditEvent.action.in_(actions),
            )
            .order_by(AuditEvent.id)
        )
    )


def said(client: FlaskClient, response: TestResponse) -> list[tuple[str, str]]:
    """The messages shown after a POST: on the page it redirects to, or on the page shown again
    (the signing page refuses with 422)."""
    if 300 <= response.status_code < 400:
        return told(client, response)
    return [
        (m["category"], " ".join(html.unescape(m["message"]).split()))
        for m in _ALERT.finditer(response.get_data(as_text=True))
    ]


def signing(
    client: FlaskClient, slot_id: int, name: str, digest: str
) -> Callable[[], TestResponse]:
    return post(
        client,
        f"/agreements/signatures/{slot_id}/sign",
        typed_name=name,
        confirm="y",
        sha256=digest,
    )


def _chain(events: list[AuditEvent], start: S) -> tuple[S, list[str]]:
    """Where the logged changes end, and complaints if one does not start where the last ended."""
    problems, before = [], start.value
    for e in events:
        if e.details["frm"] != before:
            problems.append(f"{e.action} claims to start from {e.details['frm']}, not {before}")
        before = e.details["to"]
    return S(before), problems


def _released(s: Session, inst_id: int) -> tuple[int, list[OfficialInvitationState]]:
    pending = s.scalars(
        select(InstitutionDomain.id).where(
            InstitutionDomain.institution_id == inst_id,
            InstitutionDomain.state == DomainState.PENDING,
        )
    ).all()
    invitations = s.scalars(
        select(OfficialInvitation.state).where(OfficialInvitation.institution_id == inst_id)
    ).all()
    return len(pending), list(invitations)


# --- two program officers decide one application -----------------------------------------------


@pytest.mark.parametrize(
    ("one", "two"),
    [("approve", "decline"), ("approve", "request_changes"), ("decline", "request_changes")],
)
def test_two_officers_deciding_one_application_leave_exactly_one_decision(
    race_app: Flask, one: str, two: str
) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        case = _case(race_app, S.UNDER_REVIEW)
        first = logged_in_client(race_app, case.first)
        second = logged_in_client(race_app, case.second)
        url = f"/applications/{case.inst}/transition"
        a = post(first, url, action=one, reason="First officer's reason.")
        b = post(second, url, action=two, reason="Second officer's reason.")
        if attempt % 2:  # alternate which thread starts first, so either may tend to win
            by_first, by_second = race(a, b)
        else:
            by_second, by_first = race(b, a)

        problems = redirects(first=by_first, second=by_second)
        with live_session(race_app) as s:
            inst = s.get_one(Institution, case.inst)
            events = _events(s, case.inst, DECISIONS)
            issued = s.scalars(select(Agreement.id).where(Agreement.institution_id == case.inst))
            issued_count = len(issued.all())
            decided_mails = s.scalars(
                select(OutboxMessage.context).where(
                    OutboxMessage.template == DECIDED,
                    OutboxMessage.recipient_id == case.applicant,
                )
            ).all()
            pending_domains, invitations = _released(s, case.inst)
            state, note = inst.state, inst.decision_note

        # Exactly one decision — except that asking for changes and then declining is a serial
        # order too (declining is allowed from "changes requested"): never two from one state.
        end, complaints = _chain(events, S.UNDER_REVIEW)
        problems += complaints
        done = [e.action.removeprefix("institution.") for e in events]
        if done not in ([one], [two], ["request_changes", "decline"]):
            problems.append(f"decisions logged: {done}")
        if end != state:
            problems.append(f"the application is {state.value}, but the log ends at {end.value}")
        if events:
            last = "First" if events[-1].actor_id == case.first else "Second"
            if note != f"{last} officer's reason.":
                problems.append(f"the decision note is not the last decision's: {note!r}")
        if issued_count != done.count("approve"):
            problems.append(f"{done} logged but {issued_count} agreement(s) were issued")
        if len(decided_mails) != len(done):
            problems.append(f"{len(decided_mails)} decision mails to the applicant for {done}")
        declined = state == S.DECLINED
        if (pending_domains == 0) != declined or (
            OfficialInvitationState.PENDING in invitations
        ) == declined:
            problems.append(
                f"{state.value}: {pending_domains} pending domain(s), invitations {invitations}"
            )
        if len(done) == 1 and not any(p.endswith("redirect") for p in problems):
            by_one, by_two = (first, by_first), (second, by_second)
            if events[0].actor_id == case.first:
                problems += who_was_told_what(winner=by_one, loser=by_two)
            else:
                problems += who_was_told_what(winner=by_two, loser=by_one)
        elif len(done) == 2:
            for client, response in ((first, by_first), (second, by_second)):
                if not was_told_success(told(client, response)):
                    problems.append(f"both decided, but one was told {told(client, response)}")
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)


# --- the applicant sends it again while staff decline ------------------------------------------


def test_resubmitting_while_staff_decline_leaves_one_serial_outcome(race_app: Flask) -> None:
    """Declining is allowed from applied too, so both may succeed one after the other (sent
    again, then declined); what must never happen is two changes from ``changes_requested``.
    Whatever the order, a declined application has let go of its pending domain and invitation."""
    actions = ("institution.resubmit", "institution.decline")
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        case = _case(race_app, S.CHANGES_REQUESTED)
        applicant = logged_in_client(race_app, case.applicant)
        officer = logged_in_client(race_app, case.first)
        url = f"/applications/{case.inst}/transition"
        resubmit = post(applicant, url, action="resubmit")
        decline = post(officer, url, action="decline", reason="Not a research organisation.")
        if attempt % 2:
            resubmitted, declined = race(resubmit, decline)
        else:
            declined, resubmitted = race(decline, resubmit)

        problems = redirects(applicant=resubmitted, officer=declined)
        with live_session(race_app) as s:
            state = s.get_one(Institution, case.inst).state
            events = _events(s, case.inst, actions)
            pending_domains, invitations = _released(s, case.inst)
        end, complaints = _chain(events, S.CHANGES_REQUESTED)
        problems += complaints
        if end != state:
            problems.append(f"the state is {state.value}, but the log ends at {end.value}")
        starts = [e.details["frm"] for e in events]
        if len(starts) != len(set(starts)):
            problems.append(f"lost update: two changes start from the same state: {starts}")
        if state == S.DECLINED and (
            pending_domains or OfficialInvitationState.PENDING in invitations
        ):
            problems.append("declined, but the pending domain or invitation was kept")
        if not any(p.endswith("redirect") for p in problems):
            for who, client, response, action in (
                ("applicant", applicant, resubmitted, "institution.resubmit"),
                ("officer", officer, declined, "institution.decline"),
            ):
                done = any(e.action == action for e in events)
                messages = told(client, response)
                if was_told_success(messages) != done:
                    problems.append(
                        f"the {who} {'did' if done else 'did not'} but was told {messages}"
                    )
                if not done and not was_told_conflict(messages):
                    problems.append(f"the {who} was refused without the conflict: {messages}")
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)


# --- a signature while staff withdraw the institution ------------------------------------------


@pytest.mark.parametrize("signer", ["official", "program"])
def test_a_signature_and_a_withdrawal_at_once_leave_one_serial_outcome(
    race_app: Flask, signer: str
) -> None:
    """The official signs first (the agreement stays open), or the program countersigns last
    (the institution joins). Either way: the log is one chain from ``approved``; the agreement is
    fully signed only if the institution joined; no signature counts without its signer being
    told so, nor a refused one without a reason; the withdrawal is told as it happened."""
    actions = ("institution.join", "institution.withdraw")
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        case, agreement = _approved(race_app, official_signed=signer == "program")
        position = 1 if signer == "official" else 2
        slot = next(x for x in agreement.signatures if x.position == position)
        signer_id, name = (
            (case.official, case.official_name)
            if signer == "official"
            else (case.second, case.second_name)
        )
        signing_client = logged_in_client(race_app, signer_id)
        withdrawing = logged_in_client(race_app, case.first)
        sign = signing(signing_client, slot.id, name, agreement.text_sha256)
        withdraw = post(
            withdrawing,
            f"/applications/{case.inst}/transition",
            action="withdraw",
            reason="The university closed the lab.",
        )
        if attempt % 2:
            signed, withdrawn = race(sign, withdraw)
        else:
            withdrawn, signed = race(withdraw, sign)

        problems = redirects(withdrawer=withdrawn)
        with live_session(race_app) as s:
            state = s.get_one(Institution, case.inst).state
            events = _events(s, case.inst, actions)
            agreement_state = s.get_one(Agreement, agreement.id).state
            slot_state = s.scalars(select(Signature.state).where(Signature.id == slot.id)).one()
        end, complaints = _chain(events, S.APPROVED)
        problems += complaints
        if end != state:
            problems.append(f"the state is {state.value}, but the log ends at {end.value}")
        joined = [e for e in events if e.action == "institution.join"]
        if len(joined) > 1:
            problems.append(f"joined {len(joined)} times")
        if (agreement_state == AgreementState.ACTIVE) != bool(joined):
            problems.append(f"the agreement is {agreement_state.value}, joined: {bool(joined)}")
        signed_ok = slot_state == SignatureState.SIGNED
        messages = said(signing_client, signed)
        if was_told_success(messages) != signed_ok:
            problems.append(f"signature {slot_state.value}, but the signer was told {messages}")
        if not signed_ok and not messages:
            problems.append("the signer was refused without being told why")
        if not any(p.endswith("redirect") for p in problems):
            done = any(e.action == "institution.withdraw" for e in events)
            withdrawer_told = told(withdrawing, withdrawn)
            if was_told_success(withdrawer_told) != done:
                problems.append(f"withdrawn: {done}, but the officer was told {withdrawer_told}")
            if not done and not was_told_conflict(withdrawer_told):
                problems.append(
                    f"the withdrawal was refused without the conflict: {withdrawer_told}"
                )
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)


# --- the last signature at once: a partner exactly once ----------------------------------------


@pytest.mark.parametrize("who", ["two officers", "official and officer"])
def test_the_last_signatures_at_once_make_a_partner_exactly_once(race_app: Flask, who: str) -> None:
    """Two program officers countersign at once (the official signed already), or the official
    and a program officer sign at once (the officer's turn comes only after the official's).
    Exactly one agreement (issued on approval); if it is fully signed, exactly one join, one
    welcome mail per person, ``partner_since`` set; otherwise the institution still waits."""
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        case, agreement = _approved(race_app, official_signed=who == "two officers")
        first_slot, program_slot = sorted(agreement.signatures, key=lambda x: x.position)
        digest = agreement.text_sha256
        if who == "two officers":
            one = logged_in_client(race_app, case.first)
            two = logged_in_client(race_app, case.second)
            a = signing(one, program_slot.id, case.first_name, digest)
            b = signing(two, program_slot.id, case.second_name, digest)
        else:
            one = logged_in_client(race_app, case.official)
            two = logged_in_client(race_app, case.second)
            a = signing(one, first_slot.id, case.official_name, digest)
            b = signing(two, program_slot.id, case.second_name, digest)
        if attempt % 2:
            by_one, by_two = race(a, b)
        else:
            by_two, by_one = race(b, a)

        problems: list[str] = []
        with live_session(race_app) as s:
            inst = s.get_one(Institution, case.inst)
            state, since = inst.state, inst.partner_since
            issued = s.scalars(select(Agreement).where(Agreement.institution_id == case.inst)).all()
            joins = _events(s, case.inst, ("institution.join",))
            program_signed = s.scalars(
                select(Signature.signed_by_id).where(Signature.id == program_slot.id)
            ).one()
            welcome = s.scalars(
                select(OutboxMessage.recipient_id).where(
                    OutboxMessage.template == STARTED,
                    OutboxMessage.context["institution_id"].as_integer() == case.inst,
                )
            ).all()
            completed = len(
                s.scalars(
                    select(AuditEvent.id).where(
                        AuditEvent.action == "agreement.complete",
                        AuditEvent.object_id == agreement.id,
                    )
                ).all()
            )
        if len(issued) != 1:
            problems.append(f"{len(issued)} partnership agreements issued")
        if program_signed is None:
            if state != S.APPROVED or joins or since is not None or welcome or completed:
                problems.append(f"not countersigned, yet {state.value} with {len(joins)} join(s)")
            if who == "two officers":
                problems.append("neither officer's countersignature stood")
        else:
            if state != S.PARTNER or since != utcnow().date():
                problems.append(f"countersigned but {state.value}, partner since {since}")
            if len(joins) != 1 or completed != 1:
                problems.append(f"{len(joins)} join(s), {completed} completion(s)")
            elif joins[0].actor_id != program_signed:
                problems.append("the join was not taken by the countersigner")
            if sorted(welcome, key=lambda i: i or 0) != sorted([case.applicant, case.official]):
                problems.append(f"welcome mails to {welcome}")
        if who == "two officers" and program_signed is not None:
            winner, loser = ((one, by_one), (two, by_two))
            if program_signed == case.second:
                winner, loser = loser, winner
            if not was_told_success(said(*winner)):
                problems.append(f"the countersigner was not told: {said(*winner)}")
            if was_told_success(said(*loser)) or not said(*loser):
                problems.append(f"the second countersigner was told {said(*loser)}")
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)
