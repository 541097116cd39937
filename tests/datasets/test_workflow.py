"""Every (state, action) pair of datasets, access requests, grants and a proposal's datasets,
allowed and refused, through the shared runner — each action taken by whom (or what) its rule
allows, at the moment it happens in real life: a request decided by a steward of its dataset and
changed or withdrawn by its requester; access started by the last signature of its data-use
agreement, expired after its end date (the sweep, acting as nobody), ended once its holder left,
suspended and resumed by program staff, renewed by a steward — so only the state decides.

Then each permission rule, allowed and refused, per kind of person: a steward decides only on the
datasets they steward and never on their own request; a requester never decides; the rules that
follow facts (expire, end) refuse while the fact is false. And the list filters show what the
rules allow, no more."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.agreements import services as agreements
from portal.agreements.models import AgreementKind, AgreementState, Signature, VersionState
from portal.auth.models import Role, User
from portal.core.errors import ConflictError, PermissionDeniedError, ValidationError
from portal.core.models import utcnow
from portal.core.permissions import DEFAULT_REFUSAL
from portal.core.workflow import Workflow
from portal.datasets import permissions as p
from portal.datasets import services
from portal.datasets.models import (
    AccessRequest,
    AccessTier,
    ConsentState,
    Dataset,
    DatasetSteward,
    Grant,
    ProposalDataset,
)
from portal.datasets.models import DatasetState as D
from portal.datasets.models import GrantState as G
from portal.datasets.models import RequestState as R
from portal.datasets.workflow import (
    CONSENT_WORKFLOW,
    DATASET_WORKFLOW,
    GRANT_WORKFLOW,
    REQUEST_WORKFLOW,
)
from portal.institutions.models import AffiliationState, Institution, InstitutionState
from portal.proposals.models import Proposal, ProposalState, TeamMember, TeamRole
from portal.proposals.services import submit_proposal
from tests.factories import (
    make_agreement_template,
    make_call,
    make_dataset,
    make_grant,
    make_proposal,
    make_user,
)
from tests.support.mail import outbox
from tests.support.workflows import assert_declared, assert_step, every_pair

#: A catalog entry is drafted, published, retired (stops new requests) and put back.
DATASETS = {
    (D.DRAFT, "publish"): D.PUBLISHED,
    (D.PUBLISHED, "retire"): D.RETIRED,
    (D.RETIRED, "restore"): D.PUBLISHED,
}

#: A request waits for a steward, who approves it, declines it or asks for changes; the requester
#: sends it again or withdraws it while it is open. Once decided or withdrawn, it stays so.
REQUESTS = {
    (R.SUBMITTED, "approve"): R.APPROVED,
    (R.SUBMITTED, "request_changes"): R.CHANGES_REQUESTED,
    (R.SUBMITTED, "decline"): R.DECLINED,
    (R.SUBMITTED, "withdraw"): R.WITHDRAWN,
    (R.CHANGES_REQUESTED, "resubmit"): R.SUBMITTED,
    (R.CHANGES_REQUESTED, "decline"): R.DECLINED,
    (R.CHANGES_REQUESTED, "withdraw"): R.WITHDRAWN,
}

#: Access waits for its agreement, then runs; staff suspend and resume it (with the institution);
#: a renewal moves the end of running or expired access; any live access expires at its end date,
#: is revoked, or ends when its holder leaves. Expired, revoked and ended access never moves
#: again, except an expired one renewed.
GRANTS = {
    (G.PENDING, "activate"): G.ACTIVE,
    (G.ACTIVE, "suspend"): G.SUSPENDED,
    (G.SUSPENDED, "resume"): G.ACTIVE,
    (G.ACTIVE, "renew"): G.ACTIVE,
    (G.EXPIRED, "renew"): G.ACTIVE,
    **{
        (s, a): to
        for s in (G.PENDING, G.ACTIVE, G.SUSPENDED)
        for a, to in (
            ("expire", G.EXPIRED),
            ("revoke", G.REVOKED),
            ("end", G.ENDED),
        )
    },
}

#: A steward answers once whether a submitted proposal's controlled dataset is pre-approved; the
#: datasets that need nobody's consent are not asked.
CONSENTS = {
    (ConsentState.ASKED, "consent"): ConsentState.CONSENTED,
    (ConsentState.ASKED, "refuse"): ConsentState.REFUSED,
}

#: The mail each grant step sends its holder.
GRANT_MAIL = {
    "activate": "datasets/access_ready",
    "resume": "datasets/access_ready",
    "renew": "datasets/access_ready",
    "suspend": "datasets/access_stopped",
    "expire": "datasets/access_stopped",
    "revoke": "datasets/access_stopped",
    "end": "datasets/access_stopped",
}

USE = "Evaluating open models on the corpus and publishing the evaluation code."


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Steps write e-mails with links to the outbox."""
    with app.test_request_context():
        yield


def sign(db: Session, slot: Signature, user: User) -> None:
    agreements.sign(
        db,
        slot,
        actor=user,
        typed_name=user.display_name,
        confirmed=True,
        shown_sha256=slot.agreement.text_sha256,
        ip="192.0.2.9",
        user_agent="pytest",
    )


def past_end(grant: Grant) -> None:
    """Its period ended yesterday (a fact the sweep reads)."""
    today = utcnow().date()
    grant.starts_on, grant.ends_on = today - dt.timedelta(days=200), today - dt.timedelta(days=1)


def holder_left(db: Session, grant: Grant) -> None:
    """The holder is no longer a member of the grant's institution (a fact ``end`` reads)."""
    for aff in grant.user.affiliations:
        if aff.institution_id == grant.institution_id:
            aff.state = AffiliationState.ENDED
    db.flush()


def test_workflows_name_the_same_actions_everywhere() -> None:
    for workflow in (DATASET_WORKFLOW, REQUEST_WORKFLOW, GRANT_WORKFLOW, CONSENT_WORKFLOW):
        assert_declared(workflow)


# --- datasets ----------------------------------------------------------------------------------


def dataset_in(db: Session, state: D, officer: User) -> Dataset:
    """A controlled draft brought into ``state`` by program staff."""
    dataset = make_dataset(db, state=D.DRAFT)
    if state != D.DRAFT:
        services.publish(db, dataset, actor=officer)
    if state == D.RETIRED:
        services.retire(db, dataset, actor=officer, reason="Superseded by version 2.")
    assert dataset.state == state
    return dataset


@pytest.mark.parametrize(("state", "action"), every_pair(D, DATASET_WORKFLOW))
def test_dataset_transition_table(db: Session, state: D, action: str) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    dataset = dataset_in(db, state, officer)
    assert_step(
        db,
        DATASET_WORKFLOW,
        dataset,
        action,
        DATASETS,
        lambda: DATASET_WORKFLOW.run(db, dataset, action, actor=officer, reason="Replaced."),
    )


def test_a_dataset_is_listed_only_with_a_licence_an_agreement_and_a_steward(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    no_steward = make_dataset(db, state=D.DRAFT, stewards=[])
    with pytest.raises(ValidationError, match="at least one steward"):
        services.publish(db, no_steward, actor=officer)
    bad_licence = make_dataset(db, state=D.DRAFT, licence="Do what you like")
    with pytest.raises(ValidationError, match="The licence"):
        services.publish(db, bad_licence, actor=officer)
    unpublished = make_agreement_template(db, kind=AgreementKind.DATA_USE, state=VersionState.DRAFT)
    draft_only = make_dataset(db, state=D.DRAFT, dua_template=unpublished)
    with pytest.raises(ValidationError, match="published version"):
        services.publish(db, draft_only, actor=officer)
    assert {no_steward.state, bad_licence.state, draft_only.state} == {D.DRAFT}
    # Registered and open datasets need no steward or agreement.
    open_one = make_dataset(db, tier=AccessTier.OPEN, state=D.DRAFT)
    services.publish(db, open_one, actor=officer)
    assert open_one.state == D.PUBLISHED


def test_retiring_needs_a_reason_and_leaves_access_alone(db: Session) -> None:
    grant = make_grant(db)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    with pytest.raises(ValidationError, match="please give a reason"):
        services.retire(db, grant.dataset, actor=officer, reason="  ")
    services.retire(db, grant.dataset, actor=officer, reason="Version 2 is out.")
    assert grant.state == G.ACTIVE
    assert list(db.scalars(services.current_grants(grant.dataset))) == [grant]


# --- access requests ---------------------------------------------------------------------------


def request_in(db: Session, state: R) -> tuple[AccessRequest, User]:
    """A researcher's request brought into ``state`` by the people who take each step; and the
    steward of its dataset."""
    dataset = make_dataset(db)
    steward = dataset.stewards[0].user
    researcher = make_user(db, Role.RESEARCHER)
    request = services.request_access(db, dataset, actor=researcher, intended_use=USE)
    if state == R.CHANGES_REQUESTED:
        services.request_changes(db, request, actor=steward, reason="Say which subsets.")
    elif state == R.APPROVED:
        services.approve(db, request, actor=steward, ends_on=utcnow().date() + dt.timedelta(90))
    elif state == R.DECLINED:
        services.decline(db, request, actor=steward, reason="Not for this purpose.")
    elif state == R.WITHDRAWN:
        services.withdraw(db, request, actor=researcher)
    assert request.state == state
    return request, steward


@pytest.mark.parametrize(("state", "action"), every_pair(R, REQUEST_WORKFLOW))
def test_request_transition_table(db: Session, state: R, action: str) -> None:
    request, steward = request_in(db, state)
    requester = request.user
    ends_on = utcnow().date() + dt.timedelta(days=60)
    take: dict[str, Callable[[], object]] = {
        "approve": lambda: services.approve(db, request, actor=steward, ends_on=ends_on),
        "request_changes": lambda: services.request_changes(
            db, request, actor=steward, reason="Which subsets?"
        ),
        "decline": lambda: services.decline(db, request, actor=steward, reason="No."),
        "resubmit": lambda: services.resubmit(
            db, request, actor=requester, intended_use=USE + " Only the English subset."
        ),
        "withdraw": lambda: services.withdraw(db, request, actor=requester),
    }
    decided = len(outbox(db, "datasets/request_decided"))
    received = len(outbox(db, "datasets/request_received"))

    assert_step(db, REQUEST_WORKFLOW, request, action, REQUESTS, take[action])

    allowed = (state, action) in REQUESTS
    # The requester hears each decision; the stewards hear of a request sent again; a
    # withdrawal and a refused step tell nobody.
    told_requester = allowed and action in ("approve", "request_changes", "decline")
    assert len(outbox(db, "datasets/request_decided")) == decided + told_requester
    assert len(outbox(db, "datasets/request_received")) == received + (
        allowed and action == "resubmit"
    )
    if allowed and action == "approve":
        grant = request.grant
        assert grant is not None and grant.state == G.PENDING and grant.ends_on == ends_on
        assert request.ends_on == ends_on and request.decided_by_id == steward.id
        assert grant.agreement is not None and grant.agreement.state == AgreementState.AWAITING
    if allowed and action in ("decline", "request_changes"):
        assert request.decision_note and request.grant_id is None
    if allowed and action == "resubmit":
        assert request.intended_use.endswith("Only the English subset.")


def test_a_request_is_approved_only_while_its_dataset_is_listed_and_its_institution_a_partner(
    db: Session,
) -> None:
    request, steward = request_in(db, R.SUBMITTED)
    ends_on = utcnow().date() + dt.timedelta(days=30)
    services.retire(db, request.dataset, actor=steward, reason="Replaced by version 2.")
    with pytest.raises(ConflictError, match="is retired: it gives no new access"):
        services.approve(db, request, actor=steward, ends_on=ends_on)
    services.restore(db, request.dataset, actor=steward)
    request.institution.state = InstitutionState.SUSPENDED
    db.flush()
    with pytest.raises(ConflictError, match="not a partner in good standing"):
        services.approve(db, request, actor=steward, ends_on=ends_on)
    assert request.state == R.SUBMITTED and request.grant_id is None


def test_an_approval_ends_after_today_and_within_the_datasets_longest_access(db: Session) -> None:
    request, steward = request_in(db, R.SUBMITTED)
    request.dataset.max_months = 3
    today = utcnow().date()
    for bad in (None, today, today - dt.timedelta(days=1)):
        with pytest.raises(ValidationError, match="after today"):
            services.approve(db, request, actor=steward, ends_on=bad)
    with pytest.raises(ValidationError, match="at most 3 months"):
        services.approve(db, request, actor=steward, ends_on=today + dt.timedelta(days=120))
    assert request.state == R.SUBMITTED
    services.approve(db, request, actor=steward, ends_on=services.longest_end(request.dataset))
    assert request.state == R.APPROVED


def test_declining_and_asking_for_changes_need_a_reason(db: Session) -> None:
    request, steward = request_in(db, R.SUBMITTED)
    for action in ("decline", "request_changes"):
        with pytest.raises(ValidationError, match="please give a reason"):
            REQUEST_WORKFLOW.run(db, request, action, actor=steward, reason=" ")
    with pytest.raises(ValidationError, match="at least 30 characters"):
        services.request_access(
            db, make_dataset(db), actor=request.user, intended_use="For research."
        )
    assert request.state == R.SUBMITTED


# --- grants --------------------------------------------------------------------------------------


def grant_in(db: Session, state: G, officer: User) -> Grant:
    """Access brought into ``state`` the way real life does: approved (pending, or active once
    the researcher signed the agreement), suspended by staff, expired by the sweep after its end
    date, revoked by staff, ended once its holder left the institution."""
    grant = make_grant(db, signed=state != G.PENDING)
    if state == G.SUSPENDED:
        GRANT_WORKFLOW.run(db, grant, "suspend", actor=officer, reason="Audit of use.")
    elif state == G.EXPIRED:
        past_end(grant)
        db.flush()
        assert services.sweep(db)["expired"] == 1
    elif state == G.REVOKED:
        services.revoke(db, grant, actor=officer, reason="Shared outside the project.")
    elif state == G.ENDED:
        holder_left(db, grant)
        GRANT_WORKFLOW.run(db, grant, "end", actor=None)
    db.flush()
    assert grant.state == state
    return grant


@pytest.mark.parametrize(("state", "action"), every_pair(G, GRANT_WORKFLOW))
def test_grant_transition_table(db: Session, state: G, action: str) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    grant = grant_in(db, state, officer)
    steward = grant.dataset.stewards[0].user
    ends_on = max(grant.ends_on, utcnow().date()) + dt.timedelta(days=30)
    actor: User | None = officer
    if action == "expire":
        actor = None  # the sweep, after the end date
        past_end(grant)
    elif action == "end":
        actor = None  # the step that makes its holder leave
        holder_left(db, grant)
    elif action == "renew":
        actor = steward  # approving a renewal request
    elif action == "activate":
        actor = grant.user
    db.flush()
    mails = len(outbox(db, GRANT_MAIL[action]))

    def take() -> object:
        if action == "activate" and grant.state == G.PENDING:
            # The researcher's signature completes the agreement, which starts the access.
            assert grant.agreement is not None
            (slot,) = grant.agreement.signatures
            sign(db, slot, grant.user)
            return grant
        return GRANT_WORKFLOW.run(
            db,
            grant,
            action,
            actor=actor,
            reason="Misuse is being looked into.",
            values={"ends_on": ends_on} if action == "renew" else None,
        )

    assert_step(db, GRANT_WORKFLOW, grant, action, GRANTS, take)

    allowed = (state, action) in GRANTS
    # Each step tells the holder; a refused one tells nobody.
    assert len(outbox(db, GRANT_MAIL[action])) == mails + allowed
    if allowed and action == "renew":
        assert grant.ends_on == ends_on
        assert list(db.scalars(services.current_grants(grant.dataset))) == [grant]
    if allowed and action in ("expire", "revoke", "end") and state == G.PENDING:
        # Nobody is left asked to sign for access that is gone.
        assert grant.agreement is not None
        assert grant.agreement.state == AgreementState.WITHDRAWN
    if allowed and action == "revoke":
        assert grant.ended_reason == "Misuse is being looked into."
        assert grant.ended_by_id == officer.id
    if allowed and action == "end":
        assert grant.ended_reason is not None
        assert "no longer a member of" in grant.ended_reason


def test_access_starts_only_once_its_agreement_is_signed(db: Session) -> None:
    grant = make_grant(db, signed=False)
    with pytest.raises(ConflictError, match="not fully signed and in force"):
        GRANT_WORKFLOW.run(db, grant, "activate", actor=grant.user)
    assert grant.state == G.PENDING


def test_suspended_access_resumes_only_within_its_period_at_a_partner(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    past = grant_in(db, G.SUSPENDED, officer)
    past_end(past)
    suspended_inst = grant_in(db, G.SUSPENDED, officer)
    suspended_inst.institution.state = InstitutionState.SUSPENDED
    db.flush()
    with pytest.raises(ConflictError, match="passed its end date: it expires instead"):
        GRANT_WORKFLOW.run(db, past, "resume", actor=officer)
    with pytest.raises(ConflictError, match="not a partner in good standing"):
        GRANT_WORKFLOW.run(db, suspended_inst, "resume", actor=officer)
    assert {past.state, suspended_inst.state} == {G.SUSPENDED}


def test_revoking_needs_a_reason(db: Session) -> None:
    grant = make_grant(db)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    for blank in (None, "", "   "):
        with pytest.raises(ValidationError, match="please give a reason"):
            services.revoke(db, grant, actor=officer, reason=blank)  # type: ignore[arg-type]
    assert grant.state == G.ACTIVE


# --- a proposal's datasets -----------------------------------------------------------------------


def link_in(db: Session, state: ConsentState) -> tuple[ProposalDataset, User]:
    """A dataset a submitted proposal plans to use, in ``state`` (a registered one needs nobody's
    consent); and a steward of it."""
    steward = make_user(db, Role.DATA_STEWARD)
    tier = AccessTier.REGISTERED if state == ConsentState.NOT_NEEDED else AccessTier.CONTROLLED
    dataset = make_dataset(db, tier=tier, stewards=[steward])
    proposal = make_proposal(db, call=make_call(db, endorsement_required=False), complete=True)
    pi = proposal.pi
    assert pi is not None
    (link,) = services.set_proposal_datasets(
        db, proposal, actor=pi, picks={dataset.id: "Evaluating the models we train."}
    )
    submit_proposal(db, proposal, actor=pi)
    if state == ConsentState.CONSENTED:
        services.consent(db, link, actor=steward)
    elif state == ConsentState.REFUSED:
        services.refuse(db, link, actor=steward, reason="Not for training.")
    assert link.state == state
    return link, steward


@pytest.mark.parametrize(("state", "action"), every_pair(ConsentState, CONSENT_WORKFLOW))
def test_consent_transition_table(db: Session, state: ConsentState, action: str) -> None:
    link, steward = link_in(db, state)
    mails = len(outbox(db, "datasets/consent_decided"))
    take: dict[str, Callable[[], object]] = {
        "consent": lambda: services.consent(db, link, actor=steward, note="Fine."),
        "refuse": lambda: services.refuse(db, link, actor=steward, reason="Not for training."),
    }
    assert_step(db, CONSENT_WORKFLOW, link, action, CONSENTS, take[action])
    allowed = (state, action) in CONSENTS
    # The proposal's PI hears the answer.
    assert len(outbox(db, "datasets/consent_decided")) == mails + allowed
    if allowed:
        assert link.decided_by_id == steward.id and link.decided_at is not None


@pytest.mark.parametrize("action", ["consent", "refuse"])
def test_a_steward_answers_only_once_the_proposal_is_submitted(db: Session, action: str) -> None:
    steward = make_user(db, Role.DATA_STEWARD)
    dataset = make_dataset(db, stewards=[steward])
    proposal = make_proposal(db, complete=True)
    assert proposal.pi is not None
    (link,) = services.set_proposal_datasets(
        db, proposal, actor=proposal.pi, picks={dataset.id: ""}
    )
    with pytest.raises(ConflictError, match="not been submitted yet"):
        if action == "consent":
            services.consent(db, link, actor=steward)
        else:
            services.refuse(db, link, actor=steward, reason="No.")
    assert link.state == ConsentState.ASKED and link.decided_at is None


# --- permission rules, per kind of person ------------------------------------------------------


class Cast:
    """The people around one controlled dataset and one request for it: its steward, a steward
    of another dataset, the requester (at a partner), another researcher, the requester's
    institution's signing official, another institution's, a reviewer, a program officer, an
    administrator, a disabled steward, and an anonymous visitor (None)."""

    def __init__(self, db: Session) -> None:
        self.db = db
        self.dataset = make_dataset(db)
        self.steward = self.dataset.stewards[0].user
        self.other_steward = make_dataset(db).stewards[0].user
        self.requester = make_user(db, Role.RESEARCHER)
        self.institution: Institution = self.requester.affiliations[0].institution
        self.colleague = make_user(db, Role.RESEARCHER, institution=self.institution)
        self.official = make_user(db, Role.SIGNING_OFFICIAL, institution=self.institution)
        self.other_official = make_user(db, Role.SIGNING_OFFICIAL)
        self.reviewer = make_user(db, Role.REVIEWER)
        self.officer = make_user(db, Role.PROGRAM_OFFICER)
        self.admin = make_user(db, Role.ADMIN)
        self.disabled = make_user(db, Role.DATA_STEWARD, is_disabled=True)
        db.add(DatasetSteward(dataset_id=self.dataset.id, user_id=self.disabled.id))
        db.flush()
        db.expire(self.dataset, ["stewards"])
        self.request = services.request_access(
            db, self.dataset, actor=self.requester, intended_use=USE
        )

    def who(self, name: str) -> User | None:
        return None if name == "anonymous" else getattr(self, name)


PEOPLE = [
    "steward",
    "other_steward",
    "requester",
    "colleague",
    "official",
    "other_official",
    "reviewer",
    "officer",
    "admin",
    "disabled",
    "anonymous",
]


def allowed(cast: Cast, rule: Callable[..., bool], *args: Any) -> set[str]:
    return {name for name in PEOPLE if rule(cast.who(name), *args)}


def test_who_adds_datasets_and_edits_them(db: Session) -> None:
    cast = Cast(db)
    assert allowed(cast, p.can_manage_datasets) == {"officer", "admin"}
    assert allowed(cast, p.can_edit_dataset, cast.dataset) == {"steward", "officer", "admin"}


def test_who_sees_a_dataset(db: Session) -> None:
    cast = Cast(db)
    logged_in = set(PEOPLE) - {"anonymous", "disabled"}
    assert allowed(cast, p.can_view_dataset, cast.dataset) == logged_in
    draft = make_dataset(db, state=D.DRAFT, stewards=[cast.steward])
    assert allowed(cast, p.can_view_dataset, draft) == {"steward", "officer", "admin"}
    retired = make_dataset(db, state=D.RETIRED, stewards=[cast.steward])
    assert allowed(cast, p.can_view_dataset, retired) == logged_in
    registered = make_dataset(db, tier=AccessTier.REGISTERED)
    assert allowed(cast, p.can_view_dataset, registered) == logged_in | {"anonymous", "disabled"}
    # The lists show the same.
    for name in PEOPLE:
        listed = set(db.scalars(p.visible_datasets(cast.who(name))))
        for dataset in (cast.dataset, draft, retired, registered):
            assert (dataset in listed) == p.can_view_dataset(cast.who(name), dataset), name


def test_who_asks_for_access_and_accepts_terms(db: Session) -> None:
    cast = Cast(db)
    # Members of a partner institution (its signing officials are members too).
    researchers = {"requester", "colleague", "official", "other_official"}
    assert allowed(cast, p.can_request_access, cast.dataset) == researchers
    registered = make_dataset(db, tier=AccessTier.REGISTERED)
    assert allowed(cast, p.can_accept_terms, registered) == researchers
    # Not the other tier's way in, not a retired or draft dataset.
    assert allowed(cast, p.can_accept_terms, cast.dataset) == set()
    assert allowed(cast, p.can_request_access, registered) == set()
    for state in (D.DRAFT, D.RETIRED):
        assert allowed(cast, p.can_request_access, make_dataset(db, state=state)) == set()
    # Nobody at an institution that is not a partner in good standing (the other official's is).
    cast.institution.state = InstitutionState.SUSPENDED
    db.flush()
    assert allowed(cast, p.can_request_access, cast.dataset) == {"other_official"}
    assert allowed(cast, p.can_accept_terms, registered) == {"other_official"}


def test_who_sees_decides_and_changes_a_request(db: Session) -> None:
    cast = Cast(db)
    request = cast.request
    assert allowed(cast, p.can_view_request, request) == {
        "steward",
        "requester",
        "official",
        "officer",
        "admin",
    }
    # Only a steward of this dataset decides: not one of another dataset, not program staff.
    assert allowed(cast, p.can_decide_request, request) == {"steward"}
    assert allowed(cast, p.can_amend_request, request) == {"requester"}
    # The recipients of a new request are exactly those who may decide it (and are active).
    assert list(db.scalars(p.stewards_of(request.dataset_id, except_user_id=request.user_id))) == [
        cast.steward
    ]
    for name in PEOPLE:
        user = cast.who(name)
        assert (request in set(db.scalars(p.visible_requests(user)))) == p.can_view_request(
            user, request
        ), name
        assert (request in set(db.scalars(p.decidable_requests(user)))) == p.can_decide_request(
            user, request
        ), name


def test_a_steward_never_decides_on_their_own_request(db: Session) -> None:
    steward = make_user(db, Role.DATA_STEWARD, Role.RESEARCHER)
    colleague = make_user(db, Role.DATA_STEWARD)
    dataset = make_dataset(db, stewards=[steward, colleague])
    request = services.request_access(db, dataset, actor=steward, intended_use=USE)
    assert p.can_view_request(steward, request) and p.can_amend_request(steward, request)
    assert not p.can_decide_request(steward, request)
    assert request not in set(db.scalars(p.decidable_requests(steward)))
    with pytest.raises(PermissionDeniedError, match="never on their own"):
        services.approve(db, request, actor=steward, ends_on=utcnow().date() + dt.timedelta(9))
    # Only the other steward is asked.
    (mail,) = outbox(db, "datasets/request_received")
    assert mail.recipient_id == colleague.id
    services.approve(db, request, actor=colleague, ends_on=utcnow().date() + dt.timedelta(9))
    assert request.state == R.APPROVED


@pytest.mark.parametrize("action", ["approve", "request_changes", "decline"])
@pytest.mark.parametrize("who", ["other_steward", "requester", "officer", "admin", "official"])
def test_nobody_but_the_datasets_steward_decides(db: Session, who: str, action: str) -> None:
    cast = Cast(db)
    user = cast.who(who)
    assert user is not None
    with pytest.raises(PermissionDeniedError, match="Only a steward of this dataset decides"):
        if action == "approve":
            services.approve(
                db, cast.request, actor=user, ends_on=utcnow().date() + dt.timedelta(9)
            )
        else:
            REQUEST_WORKFLOW.run(db, cast.request, action, actor=user, reason="Why?")
    assert cast.request.state == R.SUBMITTED


@pytest.mark.parametrize("who", ["steward", "colleague", "officer"])
def test_nobody_but_the_requester_withdraws_or_sends_again(db: Session, who: str) -> None:
    cast = Cast(db)
    with pytest.raises(PermissionDeniedError, match="Only the person who asked"):
        services.withdraw(db, cast.request, actor=cast.who(who))  # type: ignore[arg-type]
    assert cast.request.state == R.SUBMITTED


def test_who_sees_holds_and_acts_on_access(db: Session) -> None:
    cast = Cast(db)
    services.approve(
        db, cast.request, actor=cast.steward, ends_on=utcnow().date() + dt.timedelta(days=60)
    )
    grant = cast.request.grant
    assert grant is not None
    watchers = {"steward", "requester", "official", "officer", "admin"}
    assert allowed(cast, p.can_view_grant, grant) == watchers
    for name in PEOPLE:
        user = cast.who(name)
        assert (grant in set(db.scalars(p.visible_grants(user)))) == p.can_view_grant(
            user, grant
        ), name
    assert allowed(cast, p.can_revoke_grant, grant) == {"steward", "officer", "admin"}
    assert allowed(cast, p.can_suspend_grant, grant) == {"officer", "admin"}
    # Renewing controlled access is a steward's decision; its holder asks for it.
    assert allowed(cast, p.can_renew_grant, grant) == {"steward"}
    # Whoever takes the step that opens the gate (the workflow's check decides): not anonymous.
    assert allowed(cast, p.can_activate_grant, grant) == set(PEOPLE) - {"anonymous", "disabled"}
    # Pending: where the data is stays hidden from the holder until the agreement is signed.
    assert allowed(cast, p.can_see_location, cast.dataset) == {"steward", "officer", "admin"}
    assert grant.agreement is not None
    (slot,) = grant.agreement.signatures
    sign(db, slot, cast.requester)
    assert grant.state == G.ACTIVE
    assert allowed(cast, p.can_see_location, cast.dataset) == {
        "steward",
        "requester",
        "officer",
        "admin",
    }
    assert allowed(cast, p.can_request_renewal, grant) == {"requester"}
    assert list(db.scalars(p.grantee_of(grant))) == [cast.requester]


def test_registered_access_is_renewed_by_its_holder(db: Session) -> None:
    steward = make_user(db, Role.DATA_STEWARD)
    dataset = make_dataset(db, tier=AccessTier.REGISTERED, stewards=[steward])
    holder = make_user(db, Role.RESEARCHER)
    grant = services.accept_terms(db, dataset, actor=holder, accepted=True)
    assert p.can_renew_grant(holder, grant) and p.can_renew_grant(steward, grant)
    assert not p.can_renew_grant(make_user(db, Role.RESEARCHER), grant)
    # There is nothing to ask for: accepting the terms again renews it.
    assert not p.can_request_renewal(holder, grant)
    assert p.can_see_location(holder, dataset)
    assert p.can_see_location(None, make_dataset(db, tier=AccessTier.OPEN))


def test_expiry_refuses_until_the_end_date_has_passed(db: Session) -> None:
    grant = make_grant(db)
    officer = make_user(db, Role.ADMIN)
    today = utcnow().date()
    grant.starts_on, grant.ends_on = today - dt.timedelta(days=30), today
    db.flush()
    # Its last day is today: not yet, not for anyone.
    for who in (None, officer, grant.dataset.stewards[0].user):
        assert not p.can_expire_grant(who, grant)
        with pytest.raises(PermissionDeniedError, match="only after its end date"):
            GRANT_WORKFLOW.run(db, grant, "expire", actor=who)
    assert grant.state == G.ACTIVE
    grant.ends_on = today - dt.timedelta(days=1)
    assert p.can_expire_grant(None, grant)


def test_access_ends_by_itself_only_when_a_fact_says_so(db: Session) -> None:
    officer = make_user(db, Role.ADMIN)
    grant = make_grant(db)
    steward = grant.dataset.stewards[0].user
    assert p.end_reason(grant) is None
    for who in (None, officer, steward, grant.user):
        assert not p.can_end_grant(who, grant)
        with pytest.raises(PermissionDeniedError, match="only when its holder has left"):
            GRANT_WORKFLOW.run(db, grant, "end", actor=who)
    assert grant.state == G.ACTIVE
    # Each fact that ends it, by itself.
    grant.institution.state = InstitutionState.WITHDRAWN
    assert p.end_reason(grant) == f"{grant.institution.name} is no longer a partner."
    grant.institution.state = InstitutionState.PARTNER
    holder_left(db, grant)
    assert p.end_reason(grant) == (
        f"{grant.user.display_name} is no longer a member of {grant.institution.name}."
    )


def test_an_agreement_declined_or_a_project_left_ends_access(db: Session) -> None:
    pending = make_grant(db, signed=False)
    assert pending.agreement is not None
    pending.agreement.state = AgreementState.DECLINED
    assert p.end_reason(pending) == "The data-use agreement was declined."
    project = make_proposal(db, state=ProposalState.ACTIVE)
    member = make_user(db, Role.RESEARCHER, institution=project.institution)
    grant = make_grant(db, user=member)
    grant.proposal_id = project.id
    db.flush()
    db.expire(grant, ["proposal"])
    assert "is no longer on the project" in (p.end_reason(grant) or "")
    db.add(TeamMember(proposal_id=project.id, user_id=member.id, role=TeamRole.MEMBER))
    db.flush()
    db.expire(project, ["team"])
    assert p.end_reason(grant) is None


def test_who_picks_a_proposals_datasets_and_who_pre_approves_them(db: Session) -> None:
    cast = Cast(db)
    proposal: Proposal = make_proposal(db, pi=cast.requester, complete=True)
    co_pi = make_user(db, Role.RESEARCHER, institution=proposal.institution)
    member = make_user(db, Role.RESEARCHER, institution=proposal.institution)
    # The dataset's own steward, on the team: never pre-approves for their own project.
    insider = make_user(db, Role.DATA_STEWARD, Role.RESEARCHER, institution=proposal.institution)
    db.add(DatasetSteward(dataset_id=cast.dataset.id, user_id=insider.id))
    for user, role in (
        (co_pi, TeamRole.CO_PI),
        (member, TeamRole.MEMBER),
        (insider, TeamRole.MEMBER),
    ):
        db.add(TeamMember(proposal_id=proposal.id, user_id=user.id, role=role))
    db.flush()
    db.expire(proposal, ["team"])
    db.expire(cast.dataset, ["stewards"])
    pickers = {n for n in PEOPLE if p.can_pick_datasets(cast.who(n), proposal)}
    assert pickers == {"requester"}
    assert p.can_pick_datasets(co_pi, proposal) and not p.can_pick_datasets(member, proposal)
    (link,) = services.set_proposal_datasets(
        db, proposal, actor=cast.requester, picks={cast.dataset.id: "Evaluation."}
    )
    assert allowed(cast, p.can_consent, link) == {"steward"}
    assert not p.can_consent(insider, link)
    for name in PEOPLE:
        person = cast.who(name)
        assert (link in set(db.scalars(p.consentable_links(person)))) == p.can_consent(person, link)
    assert link not in set(db.scalars(p.consentable_links(insider)))
    # Once submitted, nobody changes the choice.
    proposal.state = ProposalState.SUBMITTED
    assert not p.can_pick_datasets(cast.requester, proposal)


def test_every_refusal_message_names_who_may() -> None:
    """Each rule a workflow uses refuses with words a person can act on."""
    workflows: list[Workflow[Any, Any]] = [
        DATASET_WORKFLOW,
        REQUEST_WORKFLOW,
        GRANT_WORKFLOW,
        CONSENT_WORKFLOW,
    ]
    for workflow in workflows:
        for action, rule in workflow.permissions.items():
            assert rule.refusal.endswith("."), (workflow.name, action)
            assert rule.refusal != DEFAULT_REFUSAL, (workflow.name, action)
