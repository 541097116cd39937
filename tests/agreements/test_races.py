"""Two people acting on one agreement at the same moment leave one outcome that some serial order
explains: two signing officials signing the same slot, two program officers countersigning (the
agreement is completed once, its "signed" mails sent once), a signature against a withdrawal, and
two staff publishing the same draft (one publish, one re-issue).

Each try makes fresh objects and logged-in clients on a live, committed database (SQLite file and
PostgreSQL), releases the two POSTs to the real pages together (a barrier, no sleeps) and reads
what committed.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from portal.agreements import services
from portal.agreements.models import (
    Agreement,
    AgreementState,
    Signature,
    SignatureState,
    TemplateVersion,
    VersionState,
)
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.models import utcnow
from portal.institutions.models import InstitutionState
from portal.notifications.models import OutboxMessage
from tests.factories import make_agreement, make_institution, make_user
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

_ALERT = re.compile(
    r'<div class="alert alert-(?P<category>[\w-]+)[^"]*"[^>]*>(?P<message>.*?)<button', re.S
)


def said(client: FlaskClient, response: TestResponse) -> list[tuple[str, str]]:
    """The messages shown after a POST: on the page it redirects to, or — when the signing page
    refuses and shows itself again (422) — on that page."""
    if 300 <= response.status_code < 400:
        return told(client, response)
    return [
        (m["category"], " ".join(html.unescape(m["message"]).split()))
        for m in _ALERT.finditer(response.get_data(as_text=True))
    ]


def signing(
    client: FlaskClient, slot_id: int, name: str, digest: str
) -> Callable[[], TestResponse]:
    """The signing page's POST: full name typed, confirmation ticked, the shown text's hash."""
    return post(
        client,
        f"/agreements/signatures/{slot_id}/sign",
        typed_name=name,
        confirm="y",
        sha256=digest,
    )


def events(s: Session, table: str, object_id: int, action: str) -> list[AuditEvent]:
    return list(
        s.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.object_type == table,
                AuditEvent.object_id == object_id,
                AuditEvent.action == action,
            )
            .order_by(AuditEvent.id)
        )
    )


def mails_about(s: Session, template: str, agreement_id: int) -> list[OutboxMessage]:
    """The outbox rows of one kind about one agreement (their link names it)."""
    return [
        m
        for m in s.scalars(select(OutboxMessage).where(OutboxMessage.template == template))
        if str(m.context.get("url", "")).endswith(f"/agreements/{agreement_id}")
    ]


def one_signed_one_refused(
    winner: tuple[FlaskClient, TestResponse], loser: tuple[FlaskClient, TestResponse]
) -> list[str]:
    """The signer whose signature stands was told so; the other got the signing page back (422),
    told the slot was signed meanwhile."""
    problems = []
    if not was_told_success(said(*winner)):
        problems.append(f"the signer was not told it was signed: {said(*winner)}")
    if loser[1].status_code != 422:
        problems.append(f"the second signer got {loser[1].status} instead of the page again")
    elif not was_told_conflict(said(*loser)):
        problems.append(f"the second signer was not told of the conflict: {said(*loser)}")
    return problems


def test_two_officials_signing_one_slot_leave_exactly_one_signature(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            inst = make_institution(s, state=InstitutionState.UNDER_REVIEW)
            one = make_user(s, Role.SIGNING_OFFICIAL, institution=inst)
            two = make_user(s, Role.SIGNING_OFFICIAL, institution=inst)
            officer = make_user(s, Role.PROGRAM_OFFICER)
            agreement = make_agreement(s, institution=inst)
            slot = agreement.signatures[0]
            ids = (agreement.id, slot.id, one.id, two.id, officer.id)
            names, digest = (one.display_name, two.display_name), agreement.text_sha256
        agreement_id, slot_id, one_id, two_id, officer_id = ids
        first = logged_in_client(race_app, one_id)
        second = logged_in_client(race_app, two_id)

        a = signing(first, slot_id, names[0], digest)
        b = signing(second, slot_id, names[1], digest)
        if attempt % 2:
            by_one, by_two = race(a, b)
        else:
            by_two, by_one = race(b, a)

        problems = [
            f"{who} got {r.status}"
            for who, r in (("first", by_one), ("second", by_two))
            if r.status_code >= 500
        ]
        with live_session(race_app) as s:
            sig = s.get(Signature, slot_id)
            ag = s.get(Agreement, agreement_id)
            assert sig is not None and ag is not None
            signed = events(s, "agreement_signatures", slot_id, "signature.sign")
            asked = [
                m
                for m in mails_about(s, "agreements/to_sign", agreement_id)
                if m.recipient_id == officer_id
            ]
            state, signer, agreement_state = sig.state, sig.signed_by_id, ag.state
        if state != SignatureState.SIGNED or signer not in (one_id, two_id):
            problems.append(f"the slot is {state.value}, signed by {signer}")
        elif [e.actor_id for e in signed] != [signer]:
            problems.append(f"signed by {signer} but the audit log says {signed}")
        if agreement_state != AgreementState.AWAITING:
            problems.append(f"the agreement is {agreement_state.value}")
        if len(asked) != 1:
            problems.append(f"the lab was asked to countersign {len(asked)} times")
        if not problems:
            one_side, two_side = (first, by_one), (second, by_two)
            if signer == one_id:
                problems += one_signed_one_refused(winner=one_side, loser=two_side)
            else:
                problems += one_signed_one_refused(winner=two_side, loser=one_side)
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)


def test_two_officers_countersigning_complete_the_agreement_once(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            one = make_user(s, Role.PROGRAM_OFFICER)
            two = make_user(s, Role.PROGRAM_OFFICER)
            agreement = make_agreement(s, signed=1)
            institution_signer = agreement.signatures[0].signed_by_id
            slot = agreement.signatures[1]
            ids = (agreement.id, slot.id, one.id, two.id)
            names, digest = (one.display_name, two.display_name), agreement.text_sha256
        agreement_id, slot_id, one_id, two_id = ids
        first = logged_in_client(race_app, one_id)
        second = logged_in_client(race_app, two_id)

        a = signing(first, slot_id, names[0], digest)
        b = signing(second, slot_id, names[1], digest)
        if attempt % 2:
            by_one, by_two = race(a, b)
        else:
            by_two, by_one = race(b, a)

        problems = [
            f"{who} got {r.status}"
            for who, r in (("first", by_one), ("second", by_two))
            if r.status_code >= 500
        ]
        with live_session(race_app) as s:
            sig = s.get(Signature, slot_id)
            ag = s.get(Agreement, agreement_id)
            assert sig is not None and ag is not None
            signed = events(s, "agreement_signatures", slot_id, "signature.sign")
            completed = events(s, "agreements", agreement_id, "agreement.complete")
            mailed = sorted(
                m.recipient_id or 0 for m in mails_about(s, "agreements/signed", agreement_id)
            )
            signer, agreement_state, completed_at = sig.signed_by_id, ag.state, ag.completed_at
        if signer not in (one_id, two_id) or [e.actor_id for e in signed] != [signer]:
            problems.append(f"signed by {signer}; the audit log says {signed}")
        if agreement_state != AgreementState.ACTIVE or completed_at is None:
            problems.append(f"the agreement is {agreement_state.value}")
        if [e.actor_id for e in completed] != [signer]:
            problems.append(f"completed {len(completed)} times: {completed}")
        if mailed != sorted([institution_signer or 0, signer or 0]):
            problems.append(f"'signed' mails went to {mailed}")
        if not problems:
            one_side, two_side = (first, by_one), (second, by_two)
            if signer == one_id:
                problems += one_signed_one_refused(winner=one_side, loser=two_side)
            else:
                problems += one_signed_one_refused(winner=two_side, loser=one_side)
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)


def test_a_last_signature_and_a_withdrawal_at_once_leave_one_outcome(race_app: Flask) -> None:
    """Either the agreement was completed (and the withdrawal refused: it is signed) or it was
    withdrawn (and the signature refused: it takes no more) — never both, never neither."""
    broken: dict[int, list[str]] = {}
    outcomes: dict[str, int] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            countersigner = make_user(s, Role.PROGRAM_OFFICER)
            withdrawer = make_user(s, Role.PROGRAM_OFFICER)
            agreement = make_agreement(s, signed=1)
            slot = agreement.signatures[1]
            ids = (agreement.id, slot.id, countersigner.id, withdrawer.id)
            name, digest = countersigner.display_name, agreement.text_sha256
        agreement_id, slot_id, countersigner_id, withdrawer_id = ids
        signs = logged_in_client(race_app, countersigner_id)
        withdraws = logged_in_client(race_app, withdrawer_id)

        sign = signing(signs, slot_id, name, digest)
        withdraw = post(
            withdraws,
            f"/agreements/{agreement_id}/withdraw",
            action="withdraw",
            reason="Issued on the wrong template.",
        )
        if attempt % 2:
            signed, withdrawn = race(sign, withdraw)
        else:
            withdrawn, signed = race(withdraw, sign)

        problems = redirects(withdrawer=withdrawn)
        if signed.status_code >= 500:
            problems.append(f"the signer got {signed.status}")
        with live_session(race_app) as s:
            ag = s.get(Agreement, agreement_id)
            sig = s.get(Signature, slot_id)
            assert ag is not None and sig is not None
            state, slot_state = ag.state, sig.state
            steps = [
                e.action
                for action in ("signature.sign", "agreement.complete", "agreement.withdraw")
                for e in events(
                    s,
                    "agreement_signatures" if action.startswith("signature") else "agreements",
                    slot_id if action.startswith("signature") else agreement_id,
                    action,
                )
            ]
        outcomes[state.value] = outcomes.get(state.value, 0) + 1
        expected = {
            AgreementState.ACTIVE: (
                SignatureState.SIGNED,
                ["signature.sign", "agreement.complete"],
            ),
            AgreementState.WITHDRAWN: (SignatureState.PENDING, ["agreement.withdraw"]),
        }.get(state)
        if expected is None:
            problems.append(f"the agreement is {state.value}")
        elif (slot_state, steps) != expected:
            problems.append(f"{state.value} with the slot {slot_state.value}; audit log {steps}")
        elif not problems:
            if state == AgreementState.ACTIVE:
                if not was_told_success(said(signs, signed)):
                    problems.append("the signer was not told it was signed")
                if not was_told_conflict(told(withdraws, withdrawn)):
                    problems.append(f"the withdrawer was told {told(withdraws, withdrawn)}")
            else:
                if not was_told_success(told(withdraws, withdrawn)):
                    problems.append("the withdrawer was not told it was withdrawn")
                refused = said(signs, signed)
                if signed.status_code != 422 or not any(
                    "withdrawn" in text for category, text in refused if category != "success"
                ):
                    problems.append(f"the signer got {signed.status}, told {refused}")
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken) + f"\noutcomes: {outcomes}"


def _template_with_draft(s: Session, officer: User) -> tuple[TemplateVersion, Agreement, int]:
    """A partnership template whose first version an institution signed, and a second version
    as a draft asking for re-consent; (the draft, the signed agreement, its official's id)."""
    agreement = make_agreement(s, state=AgreementState.ACTIVE)
    template = agreement.version.template
    draft = services.save_draft(
        s,
        template,
        actor=officer,
        body=agreement.version.body + "\n\nResults are published openly.",
        change_note="Open results",
        reconsent_by=utcnow().date() + dt.timedelta(days=30),
    )
    official = agreement.signatures[0].signed_by_id
    assert official is not None
    return draft, agreement, official


def test_two_staff_publishing_one_draft_publish_it_once(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            one = make_user(s, Role.PROGRAM_OFFICER)
            two = make_user(s, Role.ADMIN)
            draft, signed, official_id = _template_with_draft(s, one)
            ids = (draft.id, draft.template_id, signed.id, one.id, two.id)
        draft_id, template_id, signed_id, one_id, two_id = ids
        first = logged_in_client(race_app, one_id)
        second = logged_in_client(race_app, two_id)
        url = f"/agreements/versions/{draft_id}/publish"

        if attempt % 2:
            by_one, by_two = race(post(first, url), post(second, url))
        else:
            by_two, by_one = race(post(second, url), post(first, url))

        problems = redirects(first=by_one, second=by_two)
        with live_session(race_app) as s:
            versions = s.scalars(
                select(TemplateVersion)
                .where(TemplateVersion.template_id == template_id)
                .order_by(TemplateVersion.number)
            ).all()
            states = [v.state for v in versions]
            published = events(s, "agreement_versions", draft_id, "agreement_version.publish")
            superseded = events(
                s, "agreement_versions", versions[0].id, "agreement_version.supersede"
            )
            reissued = s.scalars(select(Agreement).where(Agreement.replaces_id == signed_id)).all()
            asked = [
                m.recipient_id
                for m in s.scalars(
                    select(OutboxMessage).where(OutboxMessage.template == "agreements/reconsent")
                )
                if reissued and str(m.context.get("url", "")).endswith(f"/{reissued[0].id}")
            ]
            publisher = versions[1].published_by_id
        if states != [VersionState.SUPERSEDED, VersionState.PUBLISHED]:
            problems.append(f"versions are {[s.value for s in states]}")
        if [e.actor_id for e in published] != [publisher] or publisher not in (one_id, two_id):
            problems.append(f"published by {publisher}; the audit log says {published}")
        if len(superseded) != 1:
            problems.append(f"the first version was superseded {len(superseded)} times")
        if len(reissued) != 1 or reissued[0].version_id != draft_id:
            problems.append(f"re-issued {len(reissued)} times")
        if asked != [official_id]:
            problems.append(f"asked to sign again: {asked}")
        if not problems:
            one_side, two_side = (first, by_one), (second, by_two)
            if publisher == one_id:
                problems += who_was_told_what(winner=one_side, loser=two_side)
            else:
                problems += who_was_told_what(winner=two_side, loser=one_side)
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)
