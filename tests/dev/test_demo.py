"""The demo data ``make run`` loads: made through the real services, it shows every state of the
institution, agreement, allocation and dataset workflows, keeps every rule the gates and budgets
keep, gives each demo signer something to sign, the demo PI an allocation in use, each steward
requests to decide and each researcher access to look at, is the same each time, and loads only
once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from portal.agreements import services as agreements
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    PartyRole,
    Signature,
    SignatureState,
    SubjectType,
    TemplateVersion,
    VersionState,
)
from portal.agreements.permissions import signable_signatures
from portal.allocations import services as allocations
from portal.allocations.models import (
    HOLDING,
    SECONDS_PER_HOUR,
    Allocation,
    AllocationReviewer,
    AllocationState,
    FollowUpKind,
    FollowUpRequest,
    FollowUpState,
    UsageRecord,
)
from portal.allocations.permissions import visible_allocations
from portal.allocations.workflow import usable_blocker
from portal.api.models import ApiToken, TokenScope
from portal.auth.models import Identity, Role, RoleGrant, User
from portal.core.audit import AuditEvent
from portal.core.hooks import blockers
from portal.core.models import utcnow
from portal.datasets import services as datasets
from portal.datasets.models import (
    OPEN_REQUESTS,
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
from portal.datasets.permissions import (
    can_decide_request,
    consentable_links,
    decidable_requests,
    stewards,
    visible_datasets,
)
from portal.dev.demo import FORMER_PEOPLE, PEOPLE, load
from portal.dev.demo_agreements import DEMO_IP, sign_as
from portal.dev.demo_allocations import PROJECTS
from portal.dev.demo_outputs import NOTHING_YET
from portal.extensions import db as flask_db
from portal.institutions.models import (
    Affiliation,
    AffiliationState,
    DomainState,
    Institution,
    InstitutionState,
    OfficialInvitation,
    OfficialInvitationState,
)
from portal.institutions.permissions import applications_of, can_resubmit_application
from portal.institutions.ror import by_id
from portal.notifications.models import OutboxMessage, SentReminder
from portal.outputs import services as outputs
from portal.outputs.models import FinalReport, ReleasedOutput, ReportState
from portal.outputs.score import is_open_licence
from portal.proposals.models import CallResource, OutputKind, Proposal, ProposalState, Resource
from tests.support.app import sessions_on


@pytest.fixture(scope="module")
def _demo_loaded(app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    """The demo loaded once per database for this module's tests, in a transaction rolled back
    at the end (each test works in a savepoint of it: loading it for each test took minutes)."""
    with app.app_context():
        engine = flask_db.engine
    connection = engine.connect()
    outer = connection.begin()
    folder = app.config["ATTACHMENT_FOLDER"]
    app.config["ATTACHMENT_FOLDER"] = str(tmp_path_factory.mktemp("demo") / "attachments")
    try:
        with sessions_on(connection) as session, app.app_context():
            load(session)
            session.commit()  # releases the savepoint: the demo stays for the module's tests
        yield connection
    finally:
        app.config["ATTACHMENT_FOLDER"] = folder
        outer.rollback()
        connection.close()


@pytest.fixture
def demo(app: Flask, _demo_loaded: Connection) -> Iterator[Session]:
    """The demo, loaded for the module; what a test changes is rolled back after it."""
    with sessions_on(_demo_loaded) as session, app.app_context():
        yield session


def _person(db: Session, login: str) -> User:
    return db.scalars(select(User).join(Identity).where(Identity.subject == login)).one()


def _states(db: Session, column: InstrumentedAttribute[Any]) -> Counter[Any]:
    return Counter(dict(db.execute(select(column, func.count()).group_by(column)).all()))


def test_the_demo_shows_every_state_of_agreements_signatures_and_versions(demo: Session) -> None:
    assert set(_states(demo, Agreement.state)) == set(AgreementState)
    assert set(_states(demo, Signature.state)) == set(SignatureState)
    assert set(_states(demo, TemplateVersion.state)) == set(VersionState)
    assert set(_states(demo, Institution.state)) == set(InstitutionState)


def test_the_demo_is_the_same_each_time(demo: Session) -> None:
    """Deterministic: the same agreements, in the same states, on every load."""
    assert _states(demo, Agreement.state) == {
        AgreementState.AWAITING: 9,
        AgreementState.ACTIVE: 17,
        AgreementState.DECLINED: 2,
        AgreementState.WITHDRAWN: 2,
        AgreementState.SUPERSEDED: 1,
    }
    assert _states(demo, Agreement.kind) == {
        AgreementKind.PARTNERSHIP: 10,
        AgreementKind.CONTRIBUTION: 14,
        AgreementKind.DATA_USE: 7,
    }
    assert _states(demo, TemplateVersion.state) == {
        VersionState.PUBLISHED: 3,
        VersionState.SUPERSEDED: 1,
        VersionState.DRAFT: 1,
    }


def test_templates_of_every_kind_with_versions_a_draft_and_a_reconsent(demo: Session) -> None:
    templates = {t.kind: t for t in demo.scalars(select(AgreementTemplate))}
    assert set(templates) == set(AgreementKind)
    assert all(t.current is not None for t in templates.values())
    assert {k for k, t in templates.items() if t.auto_issue} == {
        AgreementKind.PARTNERSHIP,
        AgreementKind.CONTRIBUTION,
    }
    partnership = templates[AgreementKind.PARTNERSHIP]
    assert [(v.number, v.state) for v in partnership.versions] == [
        (1, VersionState.SUPERSEDED),
        (2, VersionState.PUBLISHED),
    ]
    current = partnership.current
    assert current is not None and current.change_note
    assert current.reconsent_by is not None and current.reconsent_by > utcnow().date()
    draft = templates[AgreementKind.CONTRIBUTION].draft
    assert draft is not None and draft.number == 2 and draft.change_note


def test_partners_have_a_signed_partnership_agreement_in_force(demo: Session) -> None:
    """Signed by the institution's signing official, countersigned by a program officer, bound to
    the text by its hash; a partner (or suspended partner) can be approved (or reinstated)."""
    partners = demo.scalars(
        select(Institution).where(
            Institution.state.in_((InstitutionState.PARTNER, InstitutionState.SUSPENDED))
        )
    ).all()
    assert len(partners) == 4
    for institution in partners:
        agreement = agreements.in_force(
            demo, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, institution.id
        )
        assert agreement is not None, institution.name
        official, program = agreement.signatures
        assert official.signed_by is not None and program.signed_by is not None
        assert official.signed_by.has_role(Role.SIGNING_OFFICIAL, institution)
        assert program.signed_by.has_role(Role.PROGRAM_OFFICER)
        assert official.typed_name == official.signed_by.display_name
        assert {official.ip, program.ip} == {DEMO_IP}
        assert blockers(demo, "institution.join", institution) == []
    for agreement in demo.scalars(select(Agreement)):
        assert agreements.verify(agreement).ok, agreement.title


def test_signed_partnerships_wait_for_re_consent_to_the_new_version(demo: Session) -> None:
    """Signed on version 1, they count until the re-consent date while version 2 is signed; Keio
    has signed it (its first agreement is superseded)."""
    reissued = demo.scalars(select(Agreement).where(Agreement.replaces_id.is_not(None))).all()
    assert len(reissued) == 4
    states = Counter(a.state for a in reissued)
    assert states == {AgreementState.AWAITING: 3, AgreementState.ACTIVE: 1}
    for agreement in reissued:
        old = agreement.replaces
        assert old is not None and old.reconsent_by is not None
        expected = (
            AgreementState.SUPERSEDED
            if agreement.state == AgreementState.ACTIVE
            else AgreementState.ACTIVE
        )
        assert old.state == expected


def test_an_approved_institution_waits_for_the_programs_countersignature(demo: Session) -> None:
    """Laikipia's signing official signed the partnership agreement its approval issued (again,
    on version 2); the program officer's countersignature makes it a partner. Applications not
    approved yet have no partnership agreement."""
    (approved,) = demo.scalars(
        select(Institution).where(Institution.state == InstitutionState.APPROVED)
    ).all()
    assert approved.name == "Laikipia University" and approved.partner_since is None
    agreement = agreements.standing(
        demo, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, approved.id
    )
    assert agreement is not None and agreement.state == AgreementState.AWAITING
    assert agreement.replaces_id is None and agreement.version.number == 2
    official, program = agreement.signatures
    assert official.signed_by is not None and official.signed_by.display_name == "Wanjiru Kamau"
    assert agreement.next_signatures == [program] and program.role == PartyRole.PROGRAM
    (blocker,) = blockers(demo, "institution.join", approved)
    assert "Priya Officer" in blocker.message
    officer = _person(demo, "officer")
    assert program in demo.scalars(signable_signatures(officer)).all()
    sign_as(demo, agreement, officer)
    assert approved.state == InstitutionState.PARTNER
    assert approved.partner_since == utcnow().date()
    for institution in demo.scalars(
        select(Institution).where(
            Institution.state.in_(
                (
                    InstitutionState.APPLIED,
                    InstitutionState.CHANGES_REQUESTED,
                    InstitutionState.UNDER_REVIEW,
                    InstitutionState.DECLINED,
                )
            )
        )
    ):
        assert (
            agreements.standing(
                demo, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, institution.id
            )
            is None
        ), institution.name


def test_every_active_project_has_its_contribution_agreement(demo: Session) -> None:
    """Issued when the project was approved; the fully signed ones make its hours usable, the
    others say whom they wait on."""
    usable, waiting = [], Counter[PartyRole]()
    for project in demo.scalars(select(Proposal).where(Proposal.state == ProposalState.ACTIVE)):
        agreement = agreements.standing(
            demo, AgreementKind.CONTRIBUTION, SubjectType.PROJECT, project.id
        )
        assert agreement is not None, project.title
        if agreement.state == AgreementState.ACTIVE:
            closed = blockers(demo, "proposal.use_compute", project)
            if project.institution.state == InstitutionState.SUSPENDED:
                # Signed, but its university is suspended: the hours wait for reinstatement.
                (closed_by,) = closed
                assert "suspended" in closed_by.message
            else:
                assert closed == []
            usable.append(project.title)
        else:
            (turn,) = agreement.next_signatures
            waiting[turn.role] += 1
            assert blockers(demo, "proposal.use_compute", project)
    assert len(usable) == 10
    assert set(waiting) == {PartyRole.PI, PartyRole.SIGNING_OFFICIAL, PartyRole.PROGRAM}
    declined = demo.scalars(select(Agreement).where(Agreement.state == AgreementState.DECLINED))
    assert all(a.reason for a in declined)
    withdrawn = demo.scalars(select(Agreement).where(Agreement.state == AgreementState.WITHDRAWN))
    assert all(a.reason for a in withdrawn)


@pytest.mark.parametrize(
    ("login", "role"),
    [
        ("professor", PartyRole.PI),
        ("official", PartyRole.SIGNING_OFFICIAL),
        ("officer", PartyRole.PROGRAM),
        ("tum-official", PartyRole.SIGNING_OFFICIAL),
    ],
)
def test_each_demo_signer_has_an_agreement_to_sign(
    demo: Session, login: str, role: PartyRole
) -> None:
    mine = demo.scalars(signable_signatures(_person(demo, login))).all()
    assert role in {s.role for s in mine}


def test_every_signing_official_login_signed_or_has_something_to_sign(demo: Session) -> None:
    """Officials named in the demo, and those who became one by accepting an invitation."""
    officials = 0
    for p in PEOPLE:
        user = _person(demo, p.sub)
        if not any(g.role == Role.SIGNING_OFFICIAL for g in user.role_grants):
            continue
        officials += 1
        signed = demo.scalar(select(func.count()).where(Signature.signed_by_id == user.id))
        assert signed or demo.scalars(signable_signatures(user)).all(), p.sub
    assert officials == 4


def test_a_former_signing_official_is_disabled_and_asked_for_nothing(demo: Session) -> None:
    for former, _ in FORMER_PEOPLE:
        user = _person(demo, former.sub)
        assert user.is_disabled
        assert demo.scalar(select(func.count()).where(Signature.signed_by_id == user.id))
        assert demo.scalars(signable_signatures(user)).all() == []


# --- allocations ---------------------------------------------------------------------------------


def _hours(db: Session, *where: Any) -> int:
    return db.scalar(select(func.coalesce(func.sum(Allocation.hours), 0)).where(*where)) or 0


def _allocation(db: Session, title: str) -> Allocation:
    return db.scalars(select(Allocation).join(Proposal).where(Proposal.title == title)).one()


def test_the_demo_shows_every_state_of_allocations(demo: Session) -> None:
    """Pending (three agreements waiting on three parties), active (two in use, two not started),
    used up, expired by the sweep (four projects whose period is over), suspended with its
    institution — the same each time."""
    assert _states(demo, Allocation.state) == {
        AllocationState.PENDING: 3,
        AllocationState.ACTIVE: 4,
        AllocationState.EXHAUSTED: 1,
        AllocationState.EXPIRED: 4,
        AllocationState.SUSPENDED: 1,
    }
    assert set(_states(demo, Allocation.state)) == set(AllocationState)


def test_budget_counters_equal_the_allocations_they_hold(demo: Session) -> None:
    """A resource's counter is the hours of its allocations that hold capacity (``HOLDING``: an
    expired one gave its hours back); a call's counter on a resource is the hours its allocations
    hold, plus those of its expired ones (expiry returns hours to the resource's capacity, not to
    the call's budget: ``budget.give_back(to_call=False)``). Every counter within its limit."""
    resources = demo.scalars(select(Resource)).all()
    assert len(resources) == 3
    for resource in resources:
        held = _hours(demo, Allocation.resource_id == resource.id, Allocation.state.in_(HOLDING))
        assert resource.allocated_hours == held, resource.name
        assert 0 <= resource.allocated_hours <= resource.capacity_hours
    assert sum(r.allocated_hours for r in resources) > 0
    for cr in demo.scalars(select(CallResource)):
        mine = Allocation.call_resource_id == cr.id
        held = _hours(demo, mine, Allocation.state.in_(HOLDING))
        expired = _hours(demo, mine, Allocation.state == AllocationState.EXPIRED)
        assert cr.allocated_hours == held + expired, (cr.call.title, cr.resource.name)
        assert 0 <= cr.allocated_hours <= cr.budget_hours
    gone = demo.scalars(select(Allocation).where(Allocation.state == AllocationState.EXPIRED))
    assert all(g.hours and g.ends_on < utcnow().date() for g in gone)


def test_pending_allocations_say_which_agreement_they_wait_on(demo: Session) -> None:
    waiting_on = set()
    for allocation in demo.scalars(
        select(Allocation).where(Allocation.state == AllocationState.PENDING)
    ):
        agreement = agreements.standing(
            demo, AgreementKind.CONTRIBUTION, SubjectType.PROJECT, allocation.proposal_id
        )
        assert agreement is not None and agreement.state == AgreementState.AWAITING
        blocker = usable_blocker(allocation)
        assert blocker is not None and f"“{agreement.title}”" in blocker.message
        (turn,) = agreement.next_signatures
        waiting_on.add(turn.role)
    assert waiting_on == {PartyRole.PI, PartyRole.SIGNING_OFFICIAL, PartyRole.PROGRAM}


def test_usage_from_the_clusters_adds_up_over_months(demo: Session) -> None:
    """Each allocation's usage is the sum of its jobs, run within its period and before today;
    the ones in use ran for months; one nears 80 %, one is used up, and they are the same each
    time (their share of the hours is the project's)."""
    now = utcnow()
    used = {p.title: p.used for p in PROJECTS}
    for allocation in demo.scalars(select(Allocation)):
        records = demo.scalars(
            select(UsageRecord).where(UsageRecord.allocation_id == allocation.id)
        ).all()
        assert sum(r.gpu_seconds for r in records) == allocation.used_gpu_seconds
        expected = used.get(allocation.proposal.title, 0.0)
        assert (
            allocation.used_gpu_seconds
            == round(expected * allocation.hours * SECONDS_PER_HOUR / 8) * 8
        ), allocation.proposal.title
        months = set()
        for r in records:
            assert r.started_at is not None and r.ended_at is not None
            assert allocation.starts_on <= r.started_at.date() <= r.ended_at.date()
            assert r.ended_at.date() <= allocation.ends_on and r.ended_at < now
            assert r.job_id.startswith("demo-") and r.account == allocation.account
            months.add((r.started_at.year, r.started_at.month))
        if records and allocation.state != AllocationState.EXHAUSTED:
            assert len(months) >= 4, allocation.proposal.title
    (used_up,) = demo.scalars(
        select(Allocation).where(Allocation.state == AllocationState.EXHAUSTED)
    )
    assert used_up.used_gpu_seconds == used_up.hours * SECONDS_PER_HOUR
    assert any(
        0.75 <= a.used_fraction < 0.85
        for a in demo.scalars(select(Allocation).where(Allocation.state == AllocationState.ACTIVE))
    )


def test_the_suspended_allocation_stopped_with_the_westfjords(demo: Session) -> None:
    (stopped,) = demo.scalars(
        select(Allocation).where(Allocation.state == AllocationState.SUSPENDED)
    )
    assert stopped.institution.name == "University Centre of the Westfjords"
    assert stopped.institution.state == InstitutionState.SUSPENDED
    assert stopped.used_gpu_seconds > 0
    blocker = usable_blocker(stopped)
    assert blocker is not None and "University Centre of the Westfjords" in blocker.message


def test_the_sweep_ran_and_has_nothing_left_to_do(demo: Session) -> None:
    """The demo ran the sweep: it expired the allocation past its end and sent the notices due
    (80 % used, used up, ending within 30 days), each once; running it again does nothing."""
    sent = {(r.rule, r.object_id) for r in demo.scalars(select(SentReminder))}
    assert sent >= {
        ("allocations.used_80", _allocation(demo, PROJECTS[0].title).id),
        ("allocations.used_100", _allocation(demo, PROJECTS[3].title).id),
    }
    # Kenji's "ends within 30 days" went out; his extension (approved afterwards) moved the end
    # three months on, and cleared the notice so that it goes out again before the new end.
    dialects = _allocation(demo, PROJECTS[2].title)
    ending = demo.scalars(
        select(OutboxMessage).where(OutboxMessage.template == "allocations/notice")
    )
    assert any(
        m.context["what"] == "ends_30" and m.context["project"] == PROJECTS[2].title for m in ending
    )
    assert ("allocations.ends_30", dialects.id) not in sent
    assert set(allocations.sweep(demo).values()) == {0}


#: The allocations each demo login sees (by state): their projects', their institution's as its
#: signing official, all of them as program staff.
SEES = {
    "professor": {"active": 2, "pending": 1, "expired": 2},
    "student": {"active": 1, "pending": 1},
    "official": {"active": 2, "pending": 2, "expired": 2},
    "keio-prof": {"active": 2, "pending": 1, "expired": 1},
    "keio-official": {"active": 2, "pending": 1, "expired": 1},
    "reviewer": {"exhausted": 1, "expired": 1},
    "tum-official": {"exhausted": 1, "expired": 1},
    "officer": {"active": 4, "pending": 3, "exhausted": 1, "expired": 4, "suspended": 1},
    "admin": {"active": 4, "pending": 3, "exhausted": 1, "expired": 4, "suspended": 1},
}


def test_which_demo_login_sees_which_allocations(demo: Session) -> None:
    for p in PEOPLE:
        mine = demo.scalars(visible_allocations(_person(demo, p.sub))).all()
        assert Counter(a.state.value for a in mine) == SEES.get(p.sub, {}), p.sub


def test_the_demo_pi_has_an_allocation_in_use(demo: Session) -> None:
    """Ada's instruction-data project: active, 81 % used over eight months, its team told."""
    ada = _person(demo, "professor")
    in_use = [
        a
        for a in demo.scalars(visible_allocations(ada))
        if a.state == AllocationState.ACTIVE and a.used_gpu_seconds
    ]
    assert [a.proposal.title for a in in_use] == [PROJECTS[0].title]
    (allocation,) = in_use
    assert allocation.proposal.pi is not None and allocation.proposal.pi.id == ada.id
    assert usable_blocker(allocation) is None
    assert allocation.starts_on < utcnow().date() < allocation.ends_on


def test_the_demo_shows_follow_up_requests_in_every_state_and_a_reviewer(demo: Session) -> None:
    """Every state and kind of follow-up request, and Ines deciding on the H100 pool."""
    requests = demo.scalars(select(FollowUpRequest)).all()
    assert {r.state for r in requests} == set(FollowUpState)
    assert {r.kind for r in requests} >= {
        FollowUpKind.SUPPLEMENT,
        FollowUpKind.EXTENSION,
        FollowUpKind.RETURN,
    }
    (reviewer,) = demo.scalars(select(AllocationReviewer)).all()
    assert reviewer.user.display_name == "Ines Reviewer" and reviewer.ceiling_hours == 20_000


def test_the_demo_has_an_operator_token_for_the_atlas_cluster_and_one_for_the_store(
    demo: Session,
) -> None:
    scheduler, store = demo.scalars(select(ApiToken).order_by(ApiToken.id)).all()
    assert {r.cluster for r in scheduler.resources} == {"atlas"} and scheduler.revoked_at is None
    assert store.scope == TokenScope.DATASET_OPERATOR and store.revoked_at is None
    assert store.datasets and {d.tier for d in store.datasets} == {
        AccessTier.REGISTERED,
        AccessTier.CONTROLLED,
    }


# --- datasets ------------------------------------------------------------------------------------


def _dataset(db: Session, slug: str) -> Dataset:
    return db.scalars(select(Dataset).where(Dataset.slug == slug)).one()


def test_the_demo_shows_every_state_of_datasets_requests_grants_and_consents(demo: Session) -> None:
    """Every tier and state of the catalog, every state of a request, a grant and a proposal's
    dataset — the same each time."""
    assert _states(demo, Dataset.tier) == {
        AccessTier.OPEN: 2,
        AccessTier.REGISTERED: 4,
        AccessTier.CONTROLLED: 4,
    }
    assert _states(demo, Dataset.state) == {
        DatasetState.PUBLISHED: 8,
        DatasetState.DRAFT: 1,
        DatasetState.RETIRED: 1,
    }
    assert _states(demo, AccessRequest.state) == {
        RequestState.SUBMITTED: 3,
        RequestState.CHANGES_REQUESTED: 1,
        RequestState.APPROVED: 7,
        RequestState.DECLINED: 1,
        RequestState.WITHDRAWN: 1,
    }
    assert _states(demo, Grant.state) == {
        GrantState.PENDING: 2,
        GrantState.ACTIVE: 6,
        GrantState.SUSPENDED: 1,
        GrantState.EXPIRED: 1,
        GrantState.REVOKED: 1,
        GrantState.ENDED: 1,
    }
    assert _states(demo, ProposalDataset.state) == {
        ConsentState.ASKED: 1,
        ConsentState.CONSENTED: 1,
        ConsentState.REFUSED: 1,
        ConsentState.NOT_NEEDED: 2,
    }
    for enum, column in [
        (AccessTier, Dataset.tier),
        (DatasetState, Dataset.state),
        (RequestState, AccessRequest.state),
        (GrantState, Grant.state),
        (ConsentState, ProposalDataset.state),
    ]:
        assert set(_states(demo, column)) == set(enum), enum


def test_the_catalog_keeps_the_rules_a_listed_dataset_keeps(demo: Session) -> None:
    """Listed controlled datasets have a published data-use template and a steward; one asks the
    researcher's institution to co-sign; every entry has an SPDX licence, a size, a version and
    its storage place; stewards hold the data steward role."""
    for dataset in demo.scalars(select(Dataset)):
        assert dataset.licence and dataset.size_bytes and dataset.version, dataset.slug
        assert dataset.location == f"s3://atom-datasets/{dataset.slug}/"
        assert all(s.user.has_role(Role.DATA_STEWARD) for s in dataset.stewards)
        if dataset.tier == AccessTier.CONTROLLED:
            assert dataset.dua_template is not None and dataset.dua_template.current is not None
            assert dataset.dua_template.kind == AgreementKind.DATA_USE and dataset.stewards
        if dataset.tier == AccessTier.REGISTERED:
            assert dataset.terms, dataset.slug
    co_signed = demo.scalars(select(Dataset).where(Dataset.institution_signs.is_(True))).all()
    assert [d.slug for d in co_signed] == ["northwind-clinical-notes"]
    stewards = {s.user.display_name for d in demo.scalars(select(Dataset)) for s in d.stewards}
    assert stewards == {"Dana Steward", "Lena Steward"}


def test_each_steward_has_requests_waiting_and_decides_only_on_their_datasets(
    demo: Session,
) -> None:
    """Dana and Lena each have submitted requests to decide; each has one the other may not
    decide (a dataset only the other stewards); Dana has a proposal's dataset to pre-approve."""
    dana, lena = _person(demo, "steward"), _person(demo, "steward2")
    waiting = {
        login: demo.scalars(
            decidable_requests(_person(demo, login)).where(
                AccessRequest.state == RequestState.SUBMITTED
            )
        ).all()
        for login in ("steward", "steward2")
    }
    assert all(waiting.values())
    only_lena = [r for r in waiting["steward2"] if not can_decide_request(dana, r)]
    assert [r.dataset.slug for r in only_lena] == ["north-atlantic-sar-ice"]
    assert all(can_decide_request(lena, r) for r in waiting["steward2"])
    assert any(not can_decide_request(lena, r) for r in demo.scalars(decidable_requests(dana)))
    renewals = [r for r in waiting["steward"] if r.is_renewal]
    assert len(renewals) == 1 and renewals[0].grant is not None
    asked = demo.scalars(
        consentable_links(dana).where(ProposalDataset.state == ConsentState.ASKED)
    ).all()
    assert [link.dataset.slug for link in asked] == ["northwind-clinical-notes"]
    assert asked[0].asked_at is not None
    # Lena sees her draft in the catalog; the researchers do not.
    draft = _dataset(demo, "permissive-code-commons-2027")
    assert draft in demo.scalars(visible_datasets(lena)).all()
    assert draft not in demo.scalars(visible_datasets(_person(demo, "professor"))).all()


def test_data_use_agreements_wait_on_a_researcher_and_a_signing_official(demo: Session) -> None:
    """Sam has a data-use agreement to sign (his access waits on it); Ada has signed hers for the
    clinical notes, whose provider asks UNC Charlotte to co-sign: it waits on Olivia."""
    for login, role in [
        ("student", PartyRole.RESEARCHER),
        ("official", PartyRole.SIGNING_OFFICIAL),
    ]:
        mine = [
            s
            for s in demo.scalars(signable_signatures(_person(demo, login)))
            if s.agreement.kind == AgreementKind.DATA_USE
        ]
        assert [s.role for s in mine] == [role], login
        (grant,) = demo.scalars(select(Grant).where(Grant.agreement_id == mine[0].agreement_id))
        assert grant.state == GrantState.PENDING
    for grant in demo.scalars(select(Grant).where(Grant.agreement_id.is_not(None))):
        agreement = grant.agreement
        assert agreement is not None and agreements.verify(agreement).ok
        if grant.state in (GrantState.ACTIVE, GrantState.SUSPENDED):
            assert agreement.state == AgreementState.ACTIVE


def test_every_researcher_login_has_access_to_look_at(demo: Session) -> None:
    """Each researcher demo login has requests or access of their own under "My access"."""
    for p in PEOPLE:
        if not any(role == Role.RESEARCHER for role, _ in p.roles):
            continue
        user = _person(demo, p.sub)
        grants = demo.scalars(select(Grant).where(Grant.user_id == user.id)).all()
        requests = demo.scalars(select(AccessRequest).where(AccessRequest.user_id == user.id)).all()
        assert grants and requests, p.sub


def test_who_may_use_each_dataset_now_follows_the_facts(demo: Session) -> None:
    """The operators' answer: active grants within their period at a partner in good standing,
    with the data-use agreement in force. Katla's access is suspended with the Westfjords, Kenji's
    expired lecture audio and Rafael's revoked essays are gone; Ada keeps the retired corpus until
    its end; access ending within 30 days was told so by the sweep, which has nothing left to do."""
    names = {
        slug: {
            g.user.display_name for g in demo.scalars(datasets.current_grants(_dataset(demo, slug)))
        }
        for slug in (
            "north-atlantic-sar-ice",
            "lecture-audio-commons",
            "classroom-essays",
            "commons-web-text-2025",
            "dialect-conversations-ja",
        )
    }
    assert names == {
        "north-atlantic-sar-ice": set(),
        "lecture-audio-commons": {"Sam Student"},
        "classroom-essays": {"Ada Lovelace"},
        "commons-web-text-2025": {"Ada Lovelace"},
        "dialect-conversations-ja": {"Kenji Tanaka"},
    }
    (suspended,) = demo.scalars(select(Grant).where(Grant.state == GrantState.SUSPENDED))
    assert suspended.suspended_with_institution
    assert suspended.institution.state == InstitutionState.SUSPENDED
    (expired,) = demo.scalars(select(Grant).where(Grant.state == GrantState.EXPIRED))
    assert expired.ends_on < utcnow().date() and expired.terms_accepted_at is not None
    (revoked,) = demo.scalars(select(Grant).where(Grant.state == GrantState.REVOKED))
    assert revoked.ended_reason and revoked.ended_by is not None
    assert revoked.agreement is not None and revoked.agreement.state == AgreementState.WITHDRAWN
    (ended,) = demo.scalars(select(Grant).where(Grant.state == GrantState.ENDED))
    assert ended.agreement is not None and ended.agreement.state == AgreementState.DECLINED
    # The user who declined asked again: his new request waits.
    assert datasets.open_request(demo, ended.dataset_id, ended.user_id) is not None
    sent = {(r.rule, r.object_id) for r in demo.scalars(select(SentReminder))}
    soon = [
        g
        for g in demo.scalars(select(Grant).where(Grant.state == GrantState.ACTIVE))
        if g.days_left(utcnow().date()) <= 30
    ]
    assert len(soon) == 1 and ("datasets.ends_30", soon[0].id) in sent
    assert set(datasets.sweep(demo).values()) == {0}


def test_requests_carry_their_decisions(demo: Session) -> None:
    """Decided requests name who decided and why; open ones wait on the dataset's stewards."""
    for request in demo.scalars(select(AccessRequest)):
        if request.state in (RequestState.APPROVED, RequestState.DECLINED):
            assert request.decided_by is not None
            assert stewards(request.decided_by, request.dataset_id)
        if request.state in (RequestState.DECLINED, RequestState.CHANGES_REQUESTED):
            assert request.decision_note
        if request.state in OPEN_REQUESTS:
            assert request.dataset.stewards


# --- institutions and applications ---------------------------------------------------------------


def test_every_institution_is_a_real_ror_record(demo: Session) -> None:
    """Names, countries, websites and e-mail domains come from the shipped ROR subset (no
    invented organisation or domain); the people named at an institution have its addresses."""
    countries = set()
    # A declined or withdrawn application let go of its ROR id; the audit log keeps it.
    released = {
        e.object_id: e.details["ror_id"]
        for e in demo.scalars(
            select(AuditEvent).where(AuditEvent.action == "institution.ror_released")
        )
    }
    for institution in demo.scalars(select(Institution)):
        if institution.state in (InstitutionState.DECLINED, InstitutionState.WITHDRAWN):
            assert institution.ror_id is None and institution.id in released, institution.name
        record = by_id(institution.ror_id or released[institution.id])
        assert record is not None, institution.name
        assert "education" in record.types and record.domains, institution.name
        assert (institution.name, institution.country, institution.website) == (
            record.name,
            record.country_code,
            record.website,
        )
        claimed = {d.domain for d in institution.all_domains}
        assert claimed <= set(record.domains), institution.name
        countries.add(institution.country)
        for grant in demo.scalars(
            select(RoleGrant).where(RoleGrant.institution_id == institution.id)
        ):
            email = grant.user.email or ""
            assert email.rsplit("@", 1)[1] in record.domains, email
    assert len(countries) == 10


def _only(db: Session, state: InstitutionState) -> Institution:
    (institution,) = db.scalars(select(Institution).where(Institution.state == state)).all()
    return institution


def test_the_application_just_received_has_everything_the_form_asks(demo: Session) -> None:
    applied = _only(demo, InstitutionState.APPLIED)
    application = applied.application
    assert application is not None and application.applicant is not None
    assert application.applicant.email == "c.okafor@nutm.edu.ng"
    assert len(application.statement) >= 50 and application.technical_contact_email
    assert application.idp_entity_id and ".example.org/" in application.idp_entity_id
    assert {d.state for d in applied.all_domains} == {DomainState.PENDING}
    (invitation,) = applied.official_invitations
    assert invitation.state == OfficialInvitationState.PENDING
    assert invitation.email.endswith("@nutm.edu.ng")
    assert applied in demo.scalars(applications_of(_person(demo, "applicant"))).all()


def test_applications_carry_their_decisions(demo: Session) -> None:
    """Sent back with the program's note (its first proposed official declined); under review
    with its official accepted; declined with the reason, its pending domain released and the
    open invitation cancelled; withdrawn with the reason."""
    changes = _only(demo, InstitutionState.CHANGES_REQUESTED)
    assert changes.decision_note and "signing official" in changes.decision_note
    assert [i.state for i in changes.official_invitations] == [OfficialInvitationState.DECLINED]
    wits = _person(demo, "wits-applicant")
    assert can_resubmit_application(wits, changes)
    reviewed = _only(demo, InstitutionState.UNDER_REVIEW)
    (accepted,) = reviewed.official_invitations
    assert accepted.state == OfficialInvitationState.ACCEPTED
    assert accepted.accepted_by is not None
    assert accepted.accepted_by.has_role(Role.SIGNING_OFFICIAL, reviewed)
    declined = _only(demo, InstitutionState.DECLINED)
    assert declined.decision_note and declined.all_domains == []
    assert {i.state for i in declined.official_invitations} == {OfficialInvitationState.CANCELLED}
    withdrawn = _only(demo, InstitutionState.WITHDRAWN)
    assert withdrawn.decision_note and withdrawn.application is not None
    assert {i.state for i in withdrawn.official_invitations} == {OfficialInvitationState.CANCELLED}
    suspended = _only(demo, InstitutionState.SUSPENDED)
    assert suspended.decision_note and suspended.partner_since is not None
    assert set(_states(demo, OfficialInvitation.state)) == set(OfficialInvitationState)


def test_partners_became_partners_through_their_partnership_agreement(demo: Session) -> None:
    """Each joined when its agreement was fully signed; the history is dated as it would have
    happened (over the past three years), so the directory's "partner since" differs."""
    since = set()
    for institution in demo.scalars(
        select(Institution).where(Institution.state == InstitutionState.PARTNER)
    ):
        joined = demo.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "institution.join", AuditEvent.object_id == institution.id
            )
        ).one()
        assert joined.details["agreement"]
        assert institution.partner_since is not None
        assert institution.partner_since < utcnow().date()
        since.add(institution.partner_since)
        assert institution.application is None  # registered by program staff
    assert len(since) == 3


def test_projects_were_approved_over_many_months(demo: Session) -> None:
    """The overview's GPU-hours per month has more than one month to show."""
    months = {
        (p.decided_at.year, p.decided_at.month)
        for p in demo.scalars(select(Proposal).where(Proposal.state == ProposalState.ACTIVE))
        if p.decided_at is not None
    }
    assert len(months) >= 4


def test_the_officials_console_has_something_in_every_section(demo: Session) -> None:
    """Olivia: requests to join, members, proposals to endorse, agreements to sign, projects with
    GPU-hours awarded and used, dataset grants, and a domain still to prove."""
    olivia = _person(demo, "official")
    (charlotte,) = [g.institution for g in olivia.role_grants if g.institution is not None]
    assert olivia.has_role(Role.SIGNING_OFFICIAL, charlotte)
    affiliations = Counter(
        a.state
        for a in demo.scalars(select(Affiliation).where(Affiliation.institution_id == charlotte.id))
    )
    assert affiliations[AffiliationState.REQUESTED] and affiliations[AffiliationState.ACTIVE] >= 3
    awaiting = demo.scalars(
        select(Proposal).where(
            Proposal.institution_id == charlotte.id,
            Proposal.state == ProposalState.AWAITING_ENDORSEMENT,
        )
    ).all()
    assert awaiting
    assert demo.scalars(signable_signatures(olivia)).all()
    used = demo.scalars(
        select(Allocation).where(
            Allocation.institution_id == charlotte.id, Allocation.used_gpu_seconds > 0
        )
    ).all()
    assert used
    assert demo.scalars(select(Grant).where(Grant.institution_id == charlotte.id)).all()
    assert {d.state for d in charlotte.all_domains} == {DomainState.VERIFIED, DomainState.PENDING}


# --- open outputs and final reports --------------------------------------------------------------


def test_the_demo_shows_every_state_of_final_reports(demo: Session) -> None:
    """Every active project owes a report at its end: one due within the month, one overdue, one
    submitted, one returned with the program's note, one accepted; the reminders went out."""
    today = utcnow().date()
    active = demo.scalars(select(Proposal).where(Proposal.state == ProposalState.ACTIVE)).all()
    reports = {r.proposal_id: r for r in demo.scalars(select(FinalReport))}
    assert set(reports) == {p.id for p in active}
    assert set(_states(demo, FinalReport.state)) == set(ReportState)
    due = [r for r in reports.values() if r.state == ReportState.DUE]
    assert any(0 <= (r.due_on - today).days <= 30 for r in due)
    assert any(r.due_on < today for r in due)
    (returned,) = [r for r in reports.values() if r.state == ReportState.RETURNED]
    assert returned.decision_note and "CC-BY-NC-4.0" in returned.decision_note
    for report in reports.values():
        if report.state != ReportState.DUE:
            assert report.submitted_at is not None and report.summary
        if report.state in (ReportState.ACCEPTED, ReportState.RETURNED):
            assert report.decided_by is not None and report.decided_by.has_role(
                Role.PROGRAM_OFFICER
            )
    assert all(v == 0 for v in outputs.sweep(demo).values())
    sent = {r.last_reminder for r in reports.values() if r.last_reminder}
    assert {"30", "overdue"} <= sent


def test_released_outputs_check_off_plans_and_look_like_nothing_real(demo: Session) -> None:
    """Some releases check off planned outputs, some were not planned, one licence is not open,
    a project in use has released nothing yet; addresses are example.org/.com, DOIs use the
    test prefix 10.5072."""
    released = demo.scalars(select(ReleasedOutput)).all()
    assert set(_states(demo, ReleasedOutput.kind)) == set(OutputKind)
    assert any(o.planned_output_id is not None for o in released)
    assert any(o.planned_output_id is None for o in released)
    assert [o.license for o in released if not is_open_licence(o.license)] == ["CC-BY-NC-4.0"]
    for o in released:
        host = urlsplit(o.url).hostname or ""
        assert host.endswith((".example.org", ".example.com")), o.url
        assert o.doi is None or o.doi.startswith("10.5072/"), o.doi
        if o.planned_output_id is not None:
            assert o.planned_output is not None and o.planned_output.kind == o.kind
    nothing = _allocation(demo, NOTHING_YET)
    assert nothing.used_gpu_seconds > 0
    assert not [o for o in released if o.proposal_id == nothing.proposal_id]


def test_some_demo_pis_agree_to_be_named_publicly_and_some_do_not(demo: Session) -> None:
    pis = {
        p.pi.display_name: p.pi.public_name
        for p in demo.scalars(select(Proposal).where(Proposal.state == ProposalState.ACTIVE))
        if p.pi is not None
    }
    assert set(pis.values()) == {True, False}
    assert pis["Ada Lovelace"] and not pis["Rafael Reviewer"]
    declined = demo.scalars(select(Proposal).where(Proposal.state == ProposalState.DECLINED)).all()
    assert [p.title for p in declined] == ["Distilling a commercial chat model into a small one"]
    assert declined[0].pi is not None and declined[0].pi.public_name
    assert demo.scalars(select(Proposal).where(Proposal.state == ProposalState.DRAFT)).all()
