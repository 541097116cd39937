"""Decisions on dataset access that two people take at the same moment leave one outcome that some
serial order explains: two stewards deciding one request (one decision, one access, one data-use
agreement, one mail), an approval against the requester's withdrawal, two revocations, a
revocation against the agreement's last signature starting the access, one person accepting a
registered dataset's terms twice at once (one access), a steward's consent against another's
refusal, and one person asking twice at once for one dataset (one open request).

Each try makes fresh objects on a live, committed database (SQLite file and PostgreSQL), releases
the two service calls together in two threads, each in its own session and transaction as two
requests would be (a barrier, no sleeps), and reads what committed. The loser is refused with a
domain error saying the decision was taken — never a database error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.agreements import services as agreements
from portal.agreements.models import (
    Agreement,
    AgreementState,
    Signature,
    SignatureState,
    SubjectType,
)
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import DomainError
from portal.core.models import utcnow
from portal.datasets import services
from portal.datasets.models import (
    AccessRequest,
    AccessTier,
    ConsentState,
    Dataset,
    DatasetState,
    Grant,
    GrantState,
    ProposalDataset,
    RequestState,
)
from portal.notifications.models import OutboxMessage
from portal.proposals.services import submit_proposal
from tests.factories import make_call, make_dataset, make_grant, make_proposal, make_user
from tests.support.live import live_session
from tests.support.race import CONFLICT_WORDS, TRIES, race, report

USE = "Evaluating open models on the corpus and publishing the evaluation code."

#: What a call in a thread did: "done", or the refusal it was given.
Outcome = str


def attempt(app: Flask, step: Callable[[Session], object]) -> Callable[[], Outcome]:
    """``step`` in a session and transaction of its own, committed if it succeeds; a domain
    refusal is returned as ``refused: <message>``, anything else is raised."""

    def run() -> Outcome:
        try:
            with live_session(app) as s:
                step(s)
        except DomainError as e:
            return f"refused: {e}"
        return "done"

    return run


def in_order(attempt_no: int, a: Callable[[], Outcome], b: Callable[[], Outcome]) -> list[str]:
    """Race ``a`` and ``b``, started in alternating order; results in the order (a, b)."""
    if attempt_no % 2:
        return race(a, b)
    second, first = race(b, a)
    return [first, second]


def one_won(results: list[Outcome], *also_refused: str) -> list[str]:
    """Exactly one call went through; the other was told the decision was already taken (or one
    of ``also_refused``)."""
    done = [r for r in results if r == "done"]
    refused = [r for r in results if r != "done"]
    if len(done) != 1:
        return [f"{len(done)} calls went through: {results}"]
    words = (*CONFLICT_WORDS, *also_refused)
    if not any(w in refused[0] for w in words):
        return [f"the other was told {refused[0]!r}"]
    return []


def events(s: Session, obj_type: str, obj_id: int, *actions: str) -> list[AuditEvent]:
    return list(
        s.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.object_type == obj_type,
                AuditEvent.object_id == obj_id,
                AuditEvent.action.in_(actions),
            )
            .order_by(AuditEvent.id)
        )
    )


def mails(s: Session, template: str, url_end: str) -> list[OutboxMessage]:
    return [
        m
        for m in s.scalars(select(OutboxMessage).where(OutboxMessage.template == template))
        if str(m.context.get("url", "")).endswith(url_end)
    ]


def ends_on() -> dt.date:
    return utcnow().date() + dt.timedelta(days=90)


# --- deciding a request --------------------------------------------------------------------------


def _request(s: Session) -> tuple[AccessRequest, User, User]:
    """A researcher's open request for a controlled dataset with two stewards."""
    one, two = make_user(s, Role.DATA_STEWARD), make_user(s, Role.DATA_STEWARD)
    dataset = make_dataset(s, stewards=[one, two])
    researcher = make_user(s, Role.RESEARCHER)
    request = services.request_access(s, dataset, actor=researcher, intended_use=USE)
    return request, one, two


def _decide(app: Flask, request_id: int, user_id: int, action: str) -> Callable[[], Outcome]:
    def step(s: Session) -> None:
        request, actor = s.get_one(AccessRequest, request_id), s.get_one(User, user_id)
        if action == "approve":
            services.approve(s, request, actor=actor, ends_on=ends_on())
        elif action == "decline":
            services.decline(s, request, actor=actor, reason="Not for this purpose.")
        else:
            services.withdraw(s, request, actor=actor)

    return attempt(app, step)


def _access_made(s: Session, user_id: int) -> tuple[list[Grant], list[Agreement]]:
    grants = list(s.scalars(select(Grant).where(Grant.user_id == user_id)))
    duas = list(
        s.scalars(
            select(Agreement).where(
                Agreement.subject_type == SubjectType.DATASET_ACCESS,
                Agreement.subject_id.in_([g.id for g in grants] or [-1]),
            )
        )
    )
    return grants, duas


@pytest.mark.parametrize("second", ["approve", "decline"])
def test_two_stewards_deciding_one_request_leave_one_decision(race_app: Flask, second: str) -> None:
    broken: dict[int, list[str]] = {}
    outcomes: dict[str, int] = {}
    for n in range(1, TRIES + 1):
        with live_session(race_app) as s:
            request, one, two = _request(s)
            ids = (request.id, request.user_id, one.id, two.id)
        request_id, researcher_id, one_id, two_id = ids

        results = in_order(
            n,
            _decide(race_app, request_id, one_id, "approve"),
            _decide(race_app, request_id, two_id, second),
        )

        problems = one_won(results)
        with live_session(race_app) as s:
            req = s.get_one(AccessRequest, request_id)
            grants, duas = _access_made(s, researcher_id)
            decided = events(
                s,
                "dataset_requests",
                request_id,
                "dataset_request.approve",
                "dataset_request.decline",
            )
            told = mails(s, "datasets/request_decided", f"/datasets/requests/{request_id}")
            to_sign = [
                m for d in duas for m in mails(s, "agreements/to_sign", f"/agreements/{d.id}")
            ]
            state, decider = req.state, req.decided_by_id
        outcomes[state.value] = outcomes.get(state.value, 0) + 1
        winner = one_id if results[0] == "done" else two_id
        if decider != winner or [e.actor_id for e in decided] != [winner]:
            problems.append(f"decided by {decider}; the audit log says {decided}")
        if len(told) != 1 or told[0].recipient_id != researcher_id:
            problems.append(f"the researcher was told {len(told)} times")
        if state == RequestState.APPROVED:
            if [g.state for g in grants] != [GrantState.PENDING] or len(duas) != 1:
                problems.append(f"{len(grants)} grants and {len(duas)} agreements")
            elif [m.recipient_id for m in to_sign] != [researcher_id]:
                problems.append(f"asked to sign {len(to_sign)} times")
        elif state == RequestState.DECLINED:
            if grants or duas:
                problems.append(f"declined, yet {len(grants)} grants, {len(duas)} agreements")
        else:
            problems.append(f"the request is {state.value}")
        if problems:
            broken[n] = problems

    assert not broken, report(broken) + f"\noutcomes: {outcomes}"


def test_an_approval_and_the_requesters_withdrawal_leave_one_outcome(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    outcomes: dict[str, int] = {}
    for n in range(1, TRIES + 1):
        with live_session(race_app) as s:
            request, steward, _ = _request(s)
            ids = (request.id, request.user_id, steward.id)
        request_id, researcher_id, steward_id = ids

        approved, withdrawn = in_order(
            n,
            _decide(race_app, request_id, steward_id, "approve"),
            _decide(race_app, request_id, researcher_id, "withdraw"),
        )

        problems = one_won([approved, withdrawn])
        with live_session(race_app) as s:
            state = s.get_one(AccessRequest, request_id).state
            grants, duas = _access_made(s, researcher_id)
            steps = [
                e.action
                for e in events(
                    s,
                    "dataset_requests",
                    request_id,
                    "dataset_request.approve",
                    "dataset_request.withdraw",
                )
            ]
        outcomes[state.value] = outcomes.get(state.value, 0) + 1
        expected = {
            RequestState.APPROVED: (["dataset_request.approve"], 1, approved),
            RequestState.WITHDRAWN: (["dataset_request.withdraw"], 0, withdrawn),
        }.get(state)
        if expected is None:
            problems.append(f"the request is {state.value}")
        elif (steps, len(grants), len(duas)) != (expected[0], expected[1], expected[1]):
            problems.append(f"{state.value}: audit {steps}, {len(grants)} grants, {len(duas)} DUAs")
        elif expected[2] != "done":
            problems.append(f"{state.value}, but its taker was told {expected[2]!r}")
        if problems:
            broken[n] = problems

    assert not broken, report(broken) + f"\noutcomes: {outcomes}"


# --- revoking ------------------------------------------------------------------------------------


def _revoke(app: Flask, grant_id: int, user_id: int, reason: str) -> Callable[[], Outcome]:
    def step(s: Session) -> None:
        services.revoke(
            s, s.get_one(Grant, grant_id), actor=s.get_one(User, user_id), reason=reason
        )

    return attempt(app, step)


def test_two_revocations_at_once_revoke_once(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    for n in range(1, TRIES + 1):
        with live_session(race_app) as s:
            grant = make_grant(s)
            officer = make_user(s, Role.PROGRAM_OFFICER)
            ids = (grant.id, grant.user_id, grant.dataset.stewards[0].user_id, officer.id)
        grant_id, holder_id, steward_id, officer_id = ids

        results = in_order(
            n,
            _revoke(race_app, grant_id, steward_id, "Shared outside the project."),
            _revoke(race_app, grant_id, officer_id, "The institution asked us to."),
        )

        problems = one_won(results)
        with live_session(race_app) as s:
            g = s.get_one(Grant, grant_id)
            revoked = events(s, "dataset_grants", grant_id, "dataset_grant.revoke")
            told = mails(s, "datasets/access_stopped", f"/datasets/access/{grant_id}")
            dataset = s.get_one(Dataset, g.dataset_id)
            listed = s.scalars(services.current_grants(dataset)).all()
            state, by, reason = g.state, g.ended_by_id, g.ended_reason
        winner, why = (
            (steward_id, "Shared outside the project.")
            if results[0] == "done"
            else (officer_id, "The institution asked us to.")
        )
        if (state, by, reason) != (GrantState.REVOKED, winner, why):
            problems.append(f"{state.value} by {by} because {reason!r}")
        if [e.actor_id for e in revoked] != [winner]:
            problems.append(f"the audit log says {revoked}")
        if [m.recipient_id for m in told] != [holder_id]:
            problems.append(f"the holder was told {len(told)} times")
        if listed:
            problems.append("still listed")
        if problems:
            broken[n] = problems

    assert not broken, report(broken)


def test_a_revocation_and_the_last_signature_at_once_leave_one_outcome(race_app: Flask) -> None:
    """Revoked first: the agreement is withdrawn with it and the signature refused. Signed first:
    the access started, and the revocation either ends it (it read the started access) or is told
    it was changed meanwhile. Never started access under a withdrawn agreement, never a database
    error (the two take their row locks in the same order)."""
    broken: dict[int, list[str]] = {}
    outcomes: dict[str, int] = {}
    for n in range(1, TRIES + 1):
        with live_session(race_app) as s:
            grant = make_grant(s, signed=False)
            assert grant.agreement is not None
            (slot,) = grant.agreement.signatures
            ids = (grant.id, grant.user_id, grant.dataset.stewards[0].user_id, slot.id)
            agreement_id = grant.agreement.id
        grant_id, holder_id, steward_id, slot_id = ids

        def signs(s: Session, slot_id: int = slot_id, holder_id: int = holder_id) -> None:
            signature = s.get_one(Signature, slot_id)
            agreements.sign(
                s,
                signature,
                actor=s.get_one(User, holder_id),
                typed_name=signature.user.display_name if signature.user else "",
                confirmed=True,
                shown_sha256=signature.agreement.text_sha256,
                ip="192.0.2.5",
                user_agent="pytest",
            )

        revoked, signed = in_order(
            n,
            _revoke(race_app, grant_id, steward_id, "Asked in error."),
            attempt(race_app, signs),
        )

        problems: list[str] = []
        with live_session(race_app) as s:
            g = s.get_one(Grant, grant_id)
            ag = s.get_one(Agreement, agreement_id)
            sig = s.get_one(Signature, slot_id)
            steps = [
                e.action
                for e in events(
                    s,
                    "dataset_grants",
                    grant_id,
                    "dataset_grant.activate",
                    "dataset_grant.revoke",
                )
            ]
            state, agreement_state, slot_state = g.state, ag.state, sig.state
        outcome = f"{state.value}/{agreement_state.value}"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        expected = {
            # Revoked before the signature: the agreement went with it.
            (GrantState.REVOKED, AgreementState.WITHDRAWN): (
                SignatureState.PENDING,
                ["dataset_grant.revoke"],
                ("done", "refused"),
            ),
            # Signed first, then the revocation read the started access and revoked it.
            (GrantState.REVOKED, AgreementState.ACTIVE): (
                SignatureState.SIGNED,
                ["dataset_grant.activate", "dataset_grant.revoke"],
                ("done", "done"),
            ),
            # Signed first; the revocation was told the access changed meanwhile.
            (GrantState.ACTIVE, AgreementState.ACTIVE): (
                SignatureState.SIGNED,
                ["dataset_grant.activate"],
                ("refused", "done"),
            ),
        }.get((state, agreement_state))
        if expected is None:
            problems.append(f"the access is {state.value} under a {agreement_state.value} DUA")
        elif slot_state != expected[0] or steps != expected[1]:
            problems.append(f"{outcome}: the slot {slot_state.value}, audit {steps}")
        elif (revoked.split(":")[0], signed.split(":")[0]) != expected[2]:
            problems.append(f"{outcome}, but the revoker got {revoked!r}, the signer {signed!r}")
        if problems:
            broken[n] = problems

    assert not broken, report(broken) + f"\noutcomes: {outcomes}"


# --- registered terms, consent, asking twice -----------------------------------------------------


def test_accepting_the_terms_twice_at_once_gives_one_access(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    for n in range(1, TRIES + 1):
        with live_session(race_app) as s:
            dataset = make_dataset(s, tier=AccessTier.REGISTERED)
            researcher = make_user(s, Role.RESEARCHER)
            ids = (dataset.id, researcher.id)
        dataset_id, researcher_id = ids

        def accepts(
            s: Session, dataset_id: int = dataset_id, researcher_id: int = researcher_id
        ) -> None:
            services.accept_terms(
                s,
                s.get_one(Dataset, dataset_id),
                actor=s.get_one(User, researcher_id),
                accepted=True,
            )

        results = in_order(n, attempt(race_app, accepts), attempt(race_app, accepts))

        problems = one_won(results, "already")
        with live_session(race_app) as s:
            grants = s.scalars(select(Grant).where(Grant.user_id == researcher_id)).all()
            created = [
                e for g in grants for e in events(s, "dataset_grants", g.id, "dataset_grant.create")
            ]
            ready = [
                m
                for g in grants
                for m in mails(s, "datasets/access_ready", f"/datasets/access/{g.id}")
            ]
            states = [g.state for g in grants]
        if states != [GrantState.ACTIVE] or len(created) != 1 or len(ready) != 1:
            problems.append(f"grants {states}, created {len(created)}, told {len(ready)} times")
        if problems:
            broken[n] = problems

    assert not broken, report(broken)


def test_a_consent_and_a_refusal_at_once_leave_one_answer(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    outcomes: dict[str, int] = {}
    for n in range(1, TRIES + 1):
        with live_session(race_app) as s:
            one, two = make_user(s, Role.DATA_STEWARD), make_user(s, Role.DATA_STEWARD)
            dataset = make_dataset(s, stewards=[one, two])
            proposal = make_proposal(
                s, call=make_call(s, endorsement_required=False), complete=True
            )
            pi = proposal.pi
            assert pi is not None
            (link,) = services.set_proposal_datasets(
                s, proposal, actor=pi, picks={dataset.id: "Evaluation."}
            )
            submit_proposal(s, proposal, actor=pi)
            ids = (link.id, proposal.id, pi.id, one.id, two.id)
        link_id, proposal_id, pi_id, one_id, two_id = ids

        def consents(s: Session, link_id: int = link_id, one_id: int = one_id) -> None:
            services.consent(s, s.get_one(ProposalDataset, link_id), actor=s.get_one(User, one_id))

        def refuses(s: Session, link_id: int = link_id, two_id: int = two_id) -> None:
            services.refuse(
                s,
                s.get_one(ProposalDataset, link_id),
                actor=s.get_one(User, two_id),
                reason="Not for training.",
            )

        results = in_order(n, attempt(race_app, consents), attempt(race_app, refuses))

        problems = one_won(results)
        with live_session(race_app) as s:
            lk = s.get_one(ProposalDataset, link_id)
            decided = events(
                s,
                "proposal_datasets",
                link_id,
                "proposal_dataset.consent",
                "proposal_dataset.refuse",
            )
            told = mails(s, "datasets/consent_decided", f"/proposals/{proposal_id}")
            state, decider = lk.state, lk.decided_by_id
        outcomes[state.value] = outcomes.get(state.value, 0) + 1
        winner = {ConsentState.CONSENTED: one_id, ConsentState.REFUSED: two_id}.get(state)
        if winner is None or decider != winner:
            problems.append(f"{state.value}, decided by {decider}")
        elif [e.actor_id for e in decided] != [winner]:
            problems.append(f"the audit log says {decided}")
        elif results[0 if winner == one_id else 1] != "done":
            problems.append(f"{state.value}, but its decider was told {results}")
        if [m.recipient_id for m in told] != [pi_id]:
            problems.append(f"the PI was told {len(told)} times")
        if problems:
            broken[n] = problems

    assert not broken, report(broken) + f"\noutcomes: {outcomes}"


def test_asking_twice_at_once_leaves_one_open_request(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    for n in range(1, TRIES + 1):
        with live_session(race_app) as s:
            dataset = make_dataset(s)
            researcher = make_user(s, Role.RESEARCHER)
            ids = (dataset.id, researcher.id, dataset.stewards[0].user_id)
        dataset_id, researcher_id, steward_id = ids

        def asks(
            s: Session, dataset_id: int = dataset_id, researcher_id: int = researcher_id
        ) -> None:
            services.request_access(
                s,
                s.get_one(Dataset, dataset_id),
                actor=s.get_one(User, researcher_id),
                intended_use=USE,
            )

        results = in_order(n, attempt(race_app, asks), attempt(race_app, asks))

        problems = one_won(results, "already asked")
        with live_session(race_app) as s:
            requests = s.scalars(
                select(AccessRequest).where(AccessRequest.user_id == researcher_id)
            ).all()
            submitted = [
                e
                for r in requests
                for e in events(s, "dataset_requests", r.id, "dataset_request.submit")
            ]
            asked = [
                m
                for r in requests
                for m in mails(s, "datasets/request_received", f"/datasets/requests/{r.id}")
            ]
            states = [r.state for r in requests]
        if states != [RequestState.SUBMITTED] or len(submitted) != 1:
            problems.append(f"requests {states}, {len(submitted)} submitted")
        if [m.recipient_id for m in asked] != [steward_id]:
            problems.append(f"the steward was asked {len(asked)} times")
        if problems:
            broken[n] = problems

    assert not broken, report(broken)


# --- stewards ------------------------------------------------------------------------------------


def _remove(app: Flask, dataset_id: int, officer_id: int, steward_id: int) -> Callable[[], Outcome]:
    def step(s: Session) -> None:
        services.remove_steward(
            s,
            s.get_one(Dataset, dataset_id),
            actor=s.get_one(User, officer_id),
            steward_id=steward_id,
        )

    return attempt(app, step)


def test_two_stewards_removed_at_once_leave_one(race_app: Flask) -> None:
    """A listed controlled dataset keeps a steward to decide on its requests, also when program
    staff remove its two stewards at the same moment."""
    broken: dict[int, list[str]] = {}
    for n in range(1, TRIES + 1):
        with live_session(race_app) as s:
            dataset = make_dataset(
                s, stewards=[make_user(s, Role.DATA_STEWARD), make_user(s, Role.DATA_STEWARD)]
            )
            one, two = dataset.stewards
            officers = [make_user(s, Role.PROGRAM_OFFICER).id for _ in range(2)]
            ids = (dataset.id, one.id, two.id)
        dataset_id, one_id, two_id = ids

        results = in_order(
            n,
            _remove(race_app, dataset_id, officers[0], one_id),
            _remove(race_app, dataset_id, officers[1], two_id),
        )

        problems = one_won(results, "add another steward first")
        with live_session(race_app) as s:
            left = [st.id for st in s.get_one(Dataset, dataset_id).stewards]
            removed = events(s, "datasets", dataset_id, "dataset.remove_steward")
        kept = two_id if results[0] == "done" else one_id
        if left != [kept] or len(removed) != 1:
            problems.append(f"stewards left {left}, {len(removed)} removals audited")
        if problems:
            broken[n] = problems

    assert not broken, report(broken)


def test_publishing_while_the_only_steward_is_removed_never_lists_it_without_one(
    race_app: Flask,
) -> None:
    broken: dict[int, list[str]] = {}
    outcomes: dict[str, int] = {}
    for n in range(1, TRIES + 1):
        with live_session(race_app) as s:
            dataset = make_dataset(s, state=DatasetState.DRAFT)
            (only,) = dataset.stewards
            officers = [make_user(s, Role.PROGRAM_OFFICER).id for _ in range(2)]
            ids = (dataset.id, only.id)
        dataset_id, steward_id = ids

        def publishes(
            s: Session, dataset_id: int = dataset_id, officer_id: int = officers[0]
        ) -> None:
            services.publish(s, s.get_one(Dataset, dataset_id), actor=s.get_one(User, officer_id))

        published, removed = in_order(
            n,
            attempt(race_app, publishes),
            _remove(race_app, dataset_id, officers[1], steward_id),
        )

        problems: list[str] = []
        with live_session(race_app) as s:
            ds = s.get_one(Dataset, dataset_id)
            state, stewards = ds.state, len(ds.stewards)
        outcomes[state.value] = outcomes.get(state.value, 0) + 1
        if state == DatasetState.PUBLISHED:
            if stewards != 1 or published != "done" or "add another steward" not in removed:
                problems.append(f"published with {stewards} stewards: {published!r}, {removed!r}")
        elif state == DatasetState.DRAFT:
            if stewards != 0 or removed != "done" or "at least one steward" not in published:
                problems.append(f"draft with {stewards} stewards: {published!r}, {removed!r}")
        else:
            problems.append(f"the dataset is {state.value}")
        if problems:
            broken[n] = problems

    assert not broken, report(broken) + f"\noutcomes: {outcomes}"
