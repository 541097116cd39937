"""The rules of datasets as the people involved meet them: program staff keep the catalog (an
entry's short name, licence and tier; its stewards, who hold the role, and a listed controlled
dataset never without one); a researcher asks, a steward decides, the agreement is signed; access
is renewed (a renewal request to the stewards for controlled data, the terms accepted again for
registered data); a proposal picks catalog datasets, their stewards are asked once on submission
and pre-approve, and the project's approval gives its PI access pending the agreement; the
scheduled sweep expires access and tells holders 30 and 7 days before the end, once per end date.
Each change leaves its audit event, and each mail goes to the people it concerns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.agreements import services as agreements
from portal.agreements.models import Agreement, AgreementKind, AgreementState, Signature
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
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
from portal.datasets.workflow import GRANT_WORKFLOW
from portal.notifications.models import SentReminder
from portal.proposals import services as proposals
from portal.proposals.models import Proposal, ProposalState, TeamMember, TeamRole
from tests.factories import (
    make_agreement_template,
    make_call,
    make_dataset,
    make_grant,
    make_proposal,
    make_user,
)
from tests.support.mail import outbox

USE = "Fine-tuning an open model on the corpus and publishing the evaluation."


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.test_request_context():
        yield


@pytest.fixture
def officer(db: Session) -> User:
    return make_user(db, Role.PROGRAM_OFFICER, display_name="Olga Officer")


def events(db: Session, action: str, obj: Any = None) -> list[AuditEvent]:
    q = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
    if obj is not None:
        q = q.where(AuditEvent.object_type == obj.__tablename__, AuditEvent.object_id == obj.id)
    return list(db.scalars(q))


def sign(db: Session, slot: Signature, user: User) -> None:
    agreements.sign(
        db,
        slot,
        actor=user,
        typed_name=user.display_name,
        confirmed=True,
        shown_sha256=slot.agreement.text_sha256,
        ip="192.0.2.4",
        user_agent="pytest",
    )


def days(n: int) -> dt.date:
    return utcnow().date() + dt.timedelta(days=n)


def entry(db: Session, **overrides: Any) -> dict[str, Any]:
    """The fields of a new controlled catalog entry, as the form gives them."""
    fields: dict[str, Any] = {
        "slug": "clinical-notes-2026",
        "name": " Clinical notes 2026 ",
        "summary": "De-identified notes.",
        "licence": "CC-BY-NC-4.0",
        "tier": AccessTier.CONTROLLED,
        "dua_template_id": make_agreement_template(db, kind=AgreementKind.DATA_USE).id,
        "max_months": 6,
    }
    return fields | overrides


# --- the catalog -------------------------------------------------------------------------------


def test_staff_add_a_draft_entry_and_it_is_audited(db: Session, officer: User) -> None:
    dataset = services.create_dataset(db, actor=officer, **entry(db))
    assert dataset.state == DatasetState.DRAFT and dataset.name == "Clinical notes 2026"
    assert dataset.created_by_id == officer.id
    (event,) = events(db, "dataset.create", dataset)
    assert event.actor_id == officer.id and event.details["tier"] == "controlled"
    for who in (make_user(db, Role.DATA_STEWARD), make_user(db, Role.RESEARCHER)):
        with pytest.raises(PermissionDeniedError, match="Only program staff add datasets"):
            services.create_dataset(db, actor=who, **entry(db, slug="another-one"))


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"slug": "Clinical Notes"}, ValidationError, "lowercase letters, digits"),
        ({"slug": "notes--2026"}, ValidationError, "single hyphens"),
        ({"slug": "-notes"}, ValidationError, "single hyphens"),
        ({"slug": "a" * 81}, ValidationError, "lowercase letters"),
        ({"slug": "new"}, ValidationError, "taken by the catalog's own pages"),
        ({"slug": "requests"}, ValidationError, "taken by the catalog's own pages"),
        ({"slug": "access"}, ValidationError, "taken by the catalog's own pages"),
        ({"slug": "pre-approvals"}, ValidationError, "taken by the catalog's own pages"),
        ({"slug": "proposals"}, ValidationError, "taken by the catalog's own pages"),
        ({"licence": "Do what you want"}, ValidationError, "The licence"),
        ({"licence": ""}, ValidationError, "The licence"),
        ({"max_months": 0}, ValidationError, "between 1 and 60 months"),
        ({"max_months": 61}, ValidationError, "between 1 and 60 months"),
        ({"dua_template_id": None}, ValidationError, "needs a data-use agreement template"),
        ({"name": "   "}, ValidationError, "Give the dataset a name"),
    ],
)
def test_an_entry_is_refused_with_the_reason(
    db: Session, officer: User, overrides: dict[str, Any], error: type[Exception], message: str
) -> None:
    before = db.scalars(select(Dataset)).all()
    with pytest.raises(error, match=message):
        services.create_dataset(db, actor=officer, **entry(db, **overrides))
    assert db.scalars(select(Dataset)).all() == before
    assert events(db, "dataset.create") == []


def test_a_controlled_entry_needs_a_data_use_template_not_another_kind(
    db: Session, officer: User
) -> None:
    partnership = make_agreement_template(db, kind=AgreementKind.PARTNERSHIP)
    with pytest.raises(ValidationError, match="needs a data-use agreement template"):
        services.create_dataset(db, actor=officer, **entry(db, dua_template_id=partnership.id))
    # Open and registered entries need none.
    open_one = services.create_dataset(
        db, actor=officer, **entry(db, tier=AccessTier.OPEN, dua_template_id=None)
    )
    assert open_one.dua_template_id is None


def test_a_short_name_is_one_datasets(db: Session, officer: User) -> None:
    taken = make_dataset(db, slug="web-corpus")
    with pytest.raises(ConflictError, match="already has the short name 'web-corpus'"):
        services.create_dataset(db, actor=officer, **entry(db, slug="web-corpus"))
    other = make_dataset(db)
    with pytest.raises(ConflictError, match="already has the short name"):
        services.update_dataset(db, other, actor=officer, slug="web-corpus")
    # Its own short name, unchanged, is fine.
    services.update_dataset(db, taken, actor=officer, slug="web-corpus", version="2")
    assert taken.version == "2"


def test_stewards_edit_their_dataset_and_each_change_is_audited(db: Session) -> None:
    dataset = make_dataset(db)
    steward = dataset.stewards[0].user
    services.update_dataset(
        db, dataset, actor=steward, version="2.1", terms="Cite the paper.", max_months=24
    )
    assert (dataset.version, dataset.terms, dataset.max_months) == ("2.1", "Cite the paper.", 24)
    (event,) = events(db, "dataset.update", dataset)
    assert event.actor_id == steward.id
    assert event.details["changed"] == ["max_months", "terms", "version"]
    with pytest.raises(PermissionDeniedError, match="Only program staff and the dataset's"):
        services.update_dataset(db, dataset, actor=make_dataset(db).stewards[0].user, version="3")
    with pytest.raises(ValueError, match="unknown dataset fields"):
        services.update_dataset(db, dataset, actor=steward, state=DatasetState.RETIRED)
    assert dataset.version == "2.1" and dataset.state == DatasetState.PUBLISHED


def test_the_tier_is_fixed_once_anyone_held_access(db: Session, officer: User) -> None:
    unused = make_dataset(db, tier=AccessTier.REGISTERED)
    services.update_dataset(
        db,
        unused,
        actor=officer,
        tier=AccessTier.CONTROLLED,
        dua_template_id=make_agreement_template(db, kind=AgreementKind.DATA_USE).id,
    )
    assert unused.tier == AccessTier.CONTROLLED

    held = make_grant(db)
    services.revoke(db, held, actor=officer, reason="Ended early.")  # even access that is over
    with pytest.raises(ConflictError, match="cannot change"):
        services.update_dataset(db, held.dataset, actor=officer, tier=AccessTier.REGISTERED)
    assert held.dataset.tier == AccessTier.CONTROLLED
    # Other fields still change.
    services.update_dataset(db, held.dataset, actor=officer, summary="Now with 2025 notes.")
    assert held.dataset.summary == "Now with 2025 notes."


def test_stewards_hold_the_role_and_a_listed_controlled_dataset_keeps_one(
    db: Session, officer: User
) -> None:
    dataset = make_dataset(db)
    (first,) = dataset.stewards
    with pytest.raises(ValidationError, match="does not hold the data steward role"):
        services.add_steward(db, dataset, actor=officer, user=make_user(db, Role.RESEARCHER))
    with pytest.raises(ConflictError, match="already stewards this dataset"):
        services.add_steward(db, dataset, actor=officer, user=first.user)
    with pytest.raises(PermissionDeniedError, match="Only program staff"):
        services.add_steward(db, dataset, actor=first.user, user=make_user(db, Role.DATA_STEWARD))
    with pytest.raises(ConflictError, match="add another steward first"):
        services.remove_steward(db, dataset, actor=officer, steward_id=first.id)
    with pytest.raises(NotFoundError):
        services.remove_steward(db, dataset, actor=officer, steward_id=first.id + 10_000)

    second = make_user(db, Role.DATA_STEWARD)
    added = services.add_steward(db, dataset, actor=officer, user=second)
    assert [s.user_id for s in dataset.stewards] == [first.user_id, second.id]
    services.remove_steward(db, dataset, actor=officer, steward_id=first.id)
    assert [s.user_id for s in dataset.stewards] == [second.id]
    (add,) = events(db, "dataset.add_steward", dataset)
    (remove,) = events(db, "dataset.remove_steward", dataset)
    assert (add.details["user_id"], remove.details["user_id"]) == (second.id, first.user_id)
    assert added.added_by_id == officer.id

    # A draft, a retired or a registered dataset may be left without.
    for ds in (
        make_dataset(db, state=DatasetState.DRAFT),
        make_dataset(db, state=DatasetState.RETIRED),
        make_dataset(db, tier=AccessTier.REGISTERED, stewards=[second]),
    ):
        (only,) = ds.stewards
        services.remove_steward(db, ds, actor=officer, steward_id=only.id)
        assert ds.stewards == []


def test_a_removed_steward_no_longer_decides(db: Session, officer: User) -> None:
    dataset = make_dataset(db)
    (first,) = dataset.stewards
    services.add_steward(db, dataset, actor=officer, user=make_user(db, Role.DATA_STEWARD))
    request = services.request_access(
        db, dataset, actor=make_user(db, Role.RESEARCHER), intended_use=USE
    )
    services.remove_steward(db, dataset, actor=officer, steward_id=first.id)
    with pytest.raises(PermissionDeniedError):
        services.approve(db, request, actor=first.user, ends_on=days(30))


# --- asking, deciding, signing -------------------------------------------------------------------


def test_a_request_goes_to_the_stewards_and_the_decision_to_the_requester(db: Session) -> None:
    one, two = make_user(db, Role.DATA_STEWARD), make_user(db, Role.DATA_STEWARD)
    gone = make_user(db, Role.DATA_STEWARD, is_disabled=True)
    dataset = make_dataset(db, stewards=[one, two, gone])
    researcher = make_user(db, Role.RESEARCHER)
    request = services.request_access(db, dataset, actor=researcher, intended_use=USE)
    assert request.institution_id == researcher.affiliations[0].institution_id
    (event,) = events(db, "dataset_request.submit", request)
    assert event.actor_id == researcher.id and event.details["renewal"] is False
    # Every active steward is asked; nobody else.
    assert sorted(m.recipient_id or 0 for m in outbox(db, "datasets/request_received")) == [
        one.id,
        two.id,
    ]
    services.request_changes(db, request, actor=one, reason="Which subsets?")
    services.resubmit(db, request, actor=researcher, intended_use=USE + " English subset only.")
    again = outbox(db, "datasets/request_received")[2:]
    assert sorted(m.recipient_id or 0 for m in again) == [one.id, two.id]
    assert all(m.context["again"] for m in again)
    services.approve(db, request, actor=two, ends_on=days(60), note="Delete it afterwards.")
    decided = outbox(db, "datasets/request_decided")
    assert [m.recipient_id for m in decided] == [researcher.id, researcher.id]
    assert [m.context["decision"] for m in decided] == ["request_changes", "approve"]
    assert decided[1].context["note"] == "Delete it afterwards."
    # The agreement goes to the researcher to sign.
    grant = request.grant
    assert grant is not None and grant.agreement is not None
    (to_sign,) = outbox(db, "agreements/to_sign")
    assert to_sign.recipient_id == researcher.id
    assert grant.agreement.issued_by_id == two.id
    (created,) = events(db, "dataset_grant.create", grant)
    assert created.details["request_id"] == request.id
    # Signed: the researcher hears the access is ready, with where the data is.
    sign(db, grant.agreement.signatures[0], researcher)
    (ready,) = outbox(db, "datasets/access_ready")
    assert ready.recipient_id == researcher.id
    assert ready.context["location"] == dataset.location


def test_one_open_request_and_one_live_access_per_person_and_dataset(db: Session) -> None:
    dataset = make_dataset(db)
    researcher = make_user(db, Role.RESEARCHER)
    request = services.request_access(db, dataset, actor=researcher, intended_use=USE)
    with pytest.raises(ConflictError, match="your request is open"):
        services.request_access(db, dataset, actor=researcher, intended_use=USE)
    services.approve(db, request, actor=dataset.stewards[0].user, ends_on=days(30))
    with pytest.raises(ConflictError, match="You already have access"):
        services.request_access(db, dataset, actor=researcher, intended_use=USE)
    assert (
        len(db.scalars(select(AccessRequest).where(AccessRequest.user_id == researcher.id)).all())
        == 1
    )


def test_a_request_for_a_project_needs_an_active_project_the_requester_is_on(
    db: Session,
) -> None:
    dataset = make_dataset(db)
    project = make_proposal(db, state=ProposalState.ACTIVE)
    outsider = make_user(db, Role.RESEARCHER)
    with pytest.raises(ValidationError, match="only for a project you are on"):
        services.request_access(db, dataset, actor=outsider, intended_use=USE, proposal=project)
    draft = make_proposal(db, pi=outsider)
    with pytest.raises(ValidationError, match="approved, active project"):
        services.request_access(db, dataset, actor=outsider, intended_use=USE, proposal=draft)
    assert project.pi is not None
    request = services.request_access(
        db, dataset, actor=project.pi, intended_use=USE, proposal=project
    )
    assert request.proposal_id == project.id and request.institution_id == project.institution_id


# --- renewals ------------------------------------------------------------------------------------


def test_a_controlled_renewal_approved_moves_the_end_of_the_same_access(db: Session) -> None:
    grant = make_grant(db, days=20)
    steward = grant.dataset.stewards[0].user
    holder = grant.user
    agreement_id = grant.agreement_id
    renewal = services.request_renewal(
        db, grant, actor=holder, intended_use=USE + " Six more months of evaluation."
    )
    assert renewal.is_renewal and renewal.grant_id == grant.id
    assert [m.recipient_id for m in outbox(db, "datasets/request_received")][-1] == steward.id
    assert outbox(db, "datasets/request_received")[-1].context["renewal"] is True
    with pytest.raises(ConflictError, match="your request is open"):
        services.request_renewal(db, grant, actor=holder, intended_use=USE)
    with pytest.raises(ValidationError, match="after the present end"):
        services.approve(db, renewal, actor=steward, ends_on=days(10))
    assert renewal.state == RequestState.SUBMITTED

    services.approve(db, renewal, actor=steward, ends_on=days(200))
    assert renewal.state == RequestState.APPROVED
    assert grant.ends_on == days(200) and grant.state == GrantState.ACTIVE
    # The same access, under the same signed agreement: nothing new to sign.
    assert grant.agreement_id == agreement_id
    assert db.scalars(select(Grant).where(Grant.user_id == holder.id)).all() == [grant]
    assert len(db.scalars(select(Agreement).where(Agreement.subject_id == grant.id)).all()) == 1
    (renewed,) = events(db, "dataset_grant.renew", grant)
    assert renewed.actor_id == steward.id
    assert outbox(db, "datasets/access_ready")[-1].context["why"] == "renew"
    assert grant.requests == [grant.origin_request, renewal]


def test_revoking_access_withdraws_the_renewal_asked_for_it(db: Session) -> None:
    grant = make_grant(db, days=20)
    steward = grant.dataset.stewards[0].user
    renewal = services.request_renewal(db, grant, actor=grant.user, intended_use=USE)
    services.revoke(db, grant, actor=steward, reason="Shared outside the project.")
    assert renewal.state == RequestState.WITHDRAWN
    (withdrawn,) = events(db, "dataset_request.withdraw", renewal)
    assert withdrawn.actor_id == steward.id and "revoked" in withdrawn.details["reason"]
    # Nobody else may withdraw a renewal of access that is still there.
    other = make_grant(db, days=20)
    open_renewal = services.request_renewal(db, other, actor=other.user, intended_use=USE)
    with pytest.raises(PermissionDeniedError):
        services.withdraw(db, open_renewal, actor=other.dataset.stewards[0].user)


def test_expired_controlled_access_is_renewed(db: Session) -> None:
    grant = make_grant(db)
    grant.starts_on, grant.ends_on = days(-200), days(-1)
    db.flush()
    services.sweep(db)
    assert grant.state == GrantState.EXPIRED
    renewal = services.request_renewal(db, grant, actor=grant.user, intended_use=USE)
    services.approve(db, renewal, actor=grant.dataset.stewards[0].user, ends_on=days(90))
    assert grant.state == GrantState.ACTIVE and grant.ends_on == days(90)
    assert [g.user_id for g in db.scalars(services.current_grants(grant.dataset))] == [
        grant.user_id
    ]


def test_no_renewal_of_old_access_while_newer_access_is_live(db: Session) -> None:
    """After expiry the person asked for new access and got it: renewing the old one as well
    would give two live accesses to one dataset."""
    grant = make_grant(db)
    grant.starts_on, grant.ends_on = days(-200), days(-1)
    db.flush()
    services.sweep(db)
    newer = make_grant(db, dataset=grant.dataset, user=grant.user, signed=False)
    with pytest.raises(ConflictError, match="already have access"):
        services.request_renewal(db, grant, actor=grant.user, intended_use=USE)
    assert grant.state == GrantState.EXPIRED and newer.state == GrantState.PENDING


def test_only_the_holder_asks_to_renew_controlled_access_that_ran(db: Session) -> None:
    grant = make_grant(db)
    with pytest.raises(PermissionDeniedError, match="Only the holder"):
        services.request_renewal(db, grant, actor=grant.dataset.stewards[0].user, intended_use=USE)
    pending = make_grant(db, signed=False)
    with pytest.raises(PermissionDeniedError):
        services.request_renewal(db, pending, actor=pending.user, intended_use=USE)


def test_registered_access_is_renewed_by_accepting_the_terms_again(db: Session) -> None:
    dataset = make_dataset(db, tier=AccessTier.REGISTERED, max_months=3)
    researcher = make_user(db, Role.RESEARCHER)
    with pytest.raises(ValidationError, match="Tick the box"):
        services.accept_terms(db, dataset, actor=researcher, accepted=False)
    grant = services.accept_terms(db, dataset, actor=researcher, accepted=True)
    assert grant.ends_on == services.longest_end(dataset)
    (created,) = events(db, "dataset_grant.create", grant)
    assert created.details["terms"] is True
    # Accepting again the same day gives nothing more.
    with pytest.raises(ConflictError, match="already runs until"):
        services.accept_terms(db, dataset, actor=researcher, accepted=True)

    # Weeks later, accepting again renews the same access to the full period from today.
    grant.starts_on, grant.ends_on = days(-60), days(20)
    db.flush()
    assert services.accept_terms(db, dataset, actor=researcher, accepted=True) is grant
    assert grant.ends_on == services.longest_end(dataset)
    # And once it expired, too.
    grant.starts_on, grant.ends_on = days(-120), days(-1)
    db.flush()
    services.sweep(db)
    assert grant.state == GrantState.EXPIRED
    assert services.accept_terms(db, dataset, actor=researcher, accepted=True) is grant
    assert grant.state == GrantState.ACTIVE and grant.ends_on == services.longest_end(dataset)
    assert len(events(db, "dataset_grant.renew", grant)) == 2
    assert db.scalars(select(Grant).where(Grant.user_id == researcher.id)).all() == [grant]


def test_suspended_registered_access_is_not_renewed_by_its_holder(
    db: Session, officer: User
) -> None:
    dataset = make_dataset(db, tier=AccessTier.REGISTERED)
    researcher = make_user(db, Role.RESEARCHER)
    grant = services.accept_terms(db, dataset, actor=researcher, accepted=True)
    GRANT_WORKFLOW.run(db, grant, "suspend", actor=officer, reason="Misuse reported.")
    with pytest.raises(ConflictError, match="is suspended"):
        services.accept_terms(db, dataset, actor=researcher, accepted=True)
    assert grant.state == GrantState.SUSPENDED


# --- pre-approval with a proposal ----------------------------------------------------------------


def _proposal_with_datasets(
    db: Session, *, endorsement: bool
) -> tuple[Proposal, User, Dataset, Dataset, ProposalDataset, ProposalDataset]:
    """A complete draft whose PI picked a controlled dataset (two stewards) and a registered one."""
    proposal = make_proposal(
        db, call=make_call(db, endorsement_required=endorsement), complete=True
    )
    pi = proposal.pi
    assert pi is not None
    controlled = make_dataset(
        db, stewards=[make_user(db, Role.DATA_STEWARD), make_user(db, Role.DATA_STEWARD)]
    )
    registered = make_dataset(db, tier=AccessTier.REGISTERED)
    links = services.set_proposal_datasets(
        db,
        proposal,
        actor=pi,
        picks={controlled.id: "  Evaluating the trained models.  ", registered.id: ""},
    )
    by_dataset = {link.dataset_id: link for link in links}
    return (
        proposal,
        pi,
        controlled,
        registered,
        by_dataset[controlled.id],
        by_dataset[registered.id],
    )


def asked_mails(db: Session) -> list[Any]:
    return [m for m in outbox(db, "datasets/request_received") if m.context.get("consent")]


def test_picking_datasets_asks_nobody_until_the_proposal_is_submitted(db: Session) -> None:
    proposal, pi, controlled, _, link, other = _proposal_with_datasets(db, endorsement=False)
    assert (link.state, other.state) == (ConsentState.ASKED, ConsentState.NOT_NEEDED)
    assert link.purpose == "Evaluating the trained models." and link.added_by_id == pi.id
    assert link.asked_at is None and asked_mails(db) == []
    (event,) = events(db, "proposal.datasets", proposal)
    assert sorted(event.details["datasets"]) == sorted([link.dataset_id, other.dataset_id])

    proposals.submit_proposal(db, proposal, actor=pi)
    assert link.asked_at is not None and other.asked_at is None
    assert sorted(m.recipient_id or 0 for m in asked_mails(db)) == sorted(
        s.user_id for s in controlled.stewards
    )


def test_stewards_are_asked_once_when_the_institution_endorses(db: Session) -> None:
    proposal, pi, controlled, _, link, _ = _proposal_with_datasets(db, endorsement=True)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)
    proposals.submit_proposal(db, proposal, actor=pi)
    assert proposal.state == ProposalState.AWAITING_ENDORSEMENT
    assert link.asked_at is None and asked_mails(db) == []
    proposals.decide_endorsement(db, proposal, "return", actor=official, reason="Add a budget.")
    proposals.submit_proposal(db, proposal, actor=pi)
    proposals.decide_endorsement(db, proposal, "endorse", actor=official)
    assert proposal.state == ProposalState.SUBMITTED
    assert len(asked_mails(db)) == len(controlled.stewards) == 2
    asked_at = link.asked_at
    assert asked_at is not None
    # Sent back for a revision and submitted again: nobody is asked twice.
    officer = make_user(db, Role.PROGRAM_OFFICER)
    proposals.start_review(db, proposal, actor=officer)
    proposals.decide_proposal(db, proposal, "revise", actor=officer, reason="Tighten the plan.")
    proposals.submit_proposal(db, proposal, actor=pi)
    proposals.decide_endorsement(db, proposal, "endorse", actor=official)
    assert len(asked_mails(db)) == 2 and link.asked_at == asked_at


def test_a_steward_on_the_team_is_not_asked(db: Session) -> None:
    proposal, pi, controlled, *_ = _proposal_with_datasets(db, endorsement=False)
    insider = controlled.stewards[0].user
    db.add(TeamMember(proposal_id=proposal.id, user_id=insider.id, role=TeamRole.MEMBER))
    db.flush()
    db.expire(proposal, ["team"])
    proposals.submit_proposal(db, proposal, actor=pi)
    assert [m.recipient_id for m in asked_mails(db)] == [controlled.stewards[1].user_id]


def test_only_catalog_datasets_are_picked_and_a_new_choice_replaces_the_old(db: Session) -> None:
    proposal, pi, controlled, registered, _, _ = _proposal_with_datasets(db, endorsement=False)
    for dataset in (
        make_dataset(db, state=DatasetState.RETIRED),
        make_dataset(db, state=DatasetState.DRAFT),
    ):
        with pytest.raises(ValidationError, match="Choose datasets from the catalog"):
            services.set_proposal_datasets(db, proposal, actor=pi, picks={dataset.id: ""})
    links = services.set_proposal_datasets(
        db, proposal, actor=pi, picks={registered.id: "Baselines."}
    )
    assert [(lk.dataset_id, lk.purpose) for lk in services.proposal_links(db, proposal.id)] == [
        (registered.id, "Baselines.")
    ]
    assert links == list(services.proposal_links(db, proposal.id))
    member = make_user(db, Role.RESEARCHER, institution=proposal.institution)
    db.add(TeamMember(proposal_id=proposal.id, user_id=member.id, role=TeamRole.MEMBER))
    db.flush()
    db.expire(proposal, ["team"])
    with pytest.raises(PermissionDeniedError):
        services.set_proposal_datasets(db, proposal, actor=member, picks={controlled.id: ""})


def test_pre_approval_gives_the_pi_access_pending_the_agreement_on_approval(
    db: Session, officer: User
) -> None:
    proposal, pi, controlled, registered, link, _ = _proposal_with_datasets(db, endorsement=False)
    refused_one = make_dataset(db)
    services.set_proposal_datasets(
        db,
        proposal,
        actor=pi,
        picks={controlled.id: link.purpose, registered.id: "", refused_one.id: "Extra."},
    )
    refused_link = next(
        lk for lk in services.proposal_links(db, proposal.id) if lk.dataset_id == refused_one.id
    )
    proposals.submit_proposal(db, proposal, actor=pi)
    steward = controlled.stewards[1].user
    services.consent(db, link, actor=steward, note="Keep it on the lab's cluster.")
    services.refuse(db, refused_link, actor=refused_one.stewards[0].user, reason="Not for this.")
    assert link.state == ConsentState.CONSENTED and link.decided_by_id == steward.id
    decided = outbox(db, "datasets/consent_decided")
    assert [(m.recipient_id, m.context["decision"]) for m in decided] == [
        (pi.id, "consent"),
        (pi.id, "refuse"),
    ]
    assert events(db, "proposal_dataset.consent", link)[0].actor_id == steward.id
    assert db.scalars(select(AccessRequest)).all() == []

    proposals.start_review(db, proposal, actor=officer)
    (request,) = proposal.requests
    proposals.decide_proposal(
        db, proposal, "approve", actor=officer, awards={request.call_resource_id: request.hours}
    )
    assert proposal.state == ProposalState.ACTIVE
    (access,) = db.scalars(select(AccessRequest).where(AccessRequest.user_id == pi.id)).all()
    assert access.dataset_id == controlled.id and access.proposal_id == proposal.id
    assert access.state == RequestState.APPROVED and access.preapproved
    assert access.decided_by_id == steward.id
    assert access.decision_note == "Keep it on the lab's cluster."
    assert access.intended_use == "Evaluating the trained models."
    assert access.ends_on is not None and utcnow().date() < access.ends_on
    assert access.ends_on <= services.longest_end(controlled)
    grant = access.grant
    assert grant is not None and grant.state == GrantState.PENDING
    assert grant.proposal_id == proposal.id and grant.user_id == pi.id
    assert grant.agreement is not None and grant.agreement.state == AgreementState.AWAITING
    assert grant.agreement.kind == AgreementKind.DATA_USE
    dua_mails = [
        m
        for m in outbox(db, "agreements/to_sign")
        if str(m.context.get("url", "")).endswith(f"/agreements/{grant.agreement.id}")
    ]
    assert [m.recipient_id for m in dua_mails] == [pi.id]
    (event,) = events(db, "dataset_request.preapprove", access)
    assert event.actor_id == officer.id and event.details["consented_by"] == steward.id
    # The stewards are not asked again: it was decided with the project.
    assert [
        m for m in outbox(db, "datasets/request_received") if not m.context.get("consent")
    ] == []

    sign(db, grant.agreement.signatures[0], pi)
    assert [g.user_id for g in db.scalars(services.current_grants(controlled))] == [pi.id]


def test_pre_approval_gives_nothing_where_the_pi_already_asked_or_holds_access(
    db: Session, officer: User
) -> None:
    proposal, pi, controlled, _, link, _ = _proposal_with_datasets(db, endorsement=False)
    held = make_grant(db, dataset=controlled, user=pi)
    proposals.submit_proposal(db, proposal, actor=pi)
    services.consent(db, link, actor=controlled.stewards[0].user)
    proposals.start_review(db, proposal, actor=officer)
    (request,) = proposal.requests
    proposals.decide_proposal(
        db, proposal, "approve", actor=officer, awards={request.call_resource_id: request.hours}
    )
    assert db.scalars(select(Grant).where(Grant.user_id == pi.id)).all() == [held]
    assert events(db, "dataset_request.preapprove") == []


# --- the sweep -----------------------------------------------------------------------------------


def test_the_sweep_expires_ended_access_of_every_kind_and_is_idempotent(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    running = make_grant(db, days=100)
    ended = [make_grant(db), make_grant(db, signed=False), make_grant(db)]
    GRANT_WORKFLOW.run(db, ended[2], "suspend", actor=officer, reason="Audit.")
    for grant in ended:
        grant.starts_on, grant.ends_on = days(-100), days(-1)
    db.flush()

    counts = services.sweep(db)
    assert counts["expired"] == 3
    assert [g.state for g in ended] == [GrantState.EXPIRED] * 3
    assert running.state == GrantState.ACTIVE
    # The unsigned agreement goes with its access.
    assert ended[1].agreement is not None
    assert ended[1].agreement.state == AgreementState.WITHDRAWN
    (swept,) = events(db, "datasets.sweep")
    assert swept.actor_id is None and swept.details["expired"] == 3
    assert {m.recipient_id for m in outbox(db, "datasets/access_stopped")} >= {
        g.user_id for g in ended
    }

    assert not any(services.sweep(db).values())
    assert len(events(db, "datasets.sweep")) == 1


def test_the_sweep_tells_holders_30_and_7_days_before_the_end_once_per_end_date(
    db: Session,
) -> None:
    grant = make_grant(db, days=25)
    far = make_grant(db, days=31)
    assert services.sweep(db) == {"expired": 0, "ends_30": 1, "ends_7": 0}
    (first,) = outbox(db, "datasets/access_expiring")
    assert first.recipient_id == grant.user_id and first.context["days"] == 25
    assert services.sweep(db) == {"expired": 0, "ends_30": 0, "ends_7": 0}

    grant.ends_on = days(7)
    db.flush()
    assert services.sweep(db)["ends_7"] == 1
    assert services.sweep(db)["ends_7"] == 0
    assert [m.context["days"] for m in outbox(db, "datasets/access_expiring")] == [25, 7]

    # A renewal moves the end: both notices are armed again for the new date.
    renewal = services.request_renewal(db, grant, actor=grant.user, intended_use=USE)
    services.approve(db, renewal, actor=grant.dataset.stewards[0].user, ends_on=days(28))
    assert services.sweep(db)["ends_30"] == 1
    assert db.scalars(
        select(SentReminder.period)
        .where(SentReminder.object_id == grant.id)
        .order_by(SentReminder.id)
    ).all() == [days(25).isoformat(), days(7).isoformat(), days(28).isoformat()]
    assert far.id not in {
        r.object_id
        for r in db.scalars(select(SentReminder).where(SentReminder.rule.like("datasets.%")))
    }


def test_the_sweep_tells_nobody_about_access_that_is_not_running(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    pending = make_grant(db, signed=False, days=5)
    suspended = make_grant(db, days=5)
    GRANT_WORKFLOW.run(db, suspended, "suspend", actor=officer, reason="Audit.")
    assert services.sweep(db) == {"expired": 0, "ends_30": 0, "ends_7": 0}
    assert outbox(db, "datasets/access_expiring") == []
    assert pending.state == GrantState.PENDING
