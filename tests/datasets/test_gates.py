"""The gate on controlled data: a person is in ``services.current_grants(dataset)`` — what the
operators' API tells the storage — only with an approved request and a fully signed data-use
agreement in force, at a partner in good standing, within the access's period. Every way of not
having it (yet, or any more) is enumerated: no request, a request still open or refused, an
agreement unsigned, half signed, declined or lapsed at a re-consent date; an end date passed
(listed out at once, before the sweep), a revocation; the institution suspended (back on
reinstatement) or withdrawn; the person removed from the project, their affiliation ended, their
account disabled. Where the data is kept is shown by the same facts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.agreements import services as agreements
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    Signature,
    SubjectType,
)
from portal.auth.models import Role, User
from portal.core.errors import ConflictError
from portal.core.models import utcnow
from portal.datasets import permissions, services
from portal.datasets.models import AccessTier, Dataset, Grant, GrantState, RequestState
from portal.datasets.workflow import GRANT_WORKFLOW
from portal.institutions import services as institutions
from portal.institutions.models import InstitutionState
from portal.proposals import team
from portal.proposals.models import ProposalState, TeamMember, TeamRole
from tests.factories import (
    make_agreement,
    make_dataset,
    make_grant,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.mail import outbox

USE = "Training a small open model on the corpus and publishing the evaluation."


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.test_request_context():
        yield


def listed(db: Session, dataset: Dataset) -> set[int]:
    """The people the operators' API says may use ``dataset`` now (user ids)."""
    return {g.user_id for g in db.scalars(services.current_grants(dataset))}


def sign(db: Session, slot: Signature, user: User) -> None:
    agreements.sign(
        db,
        slot,
        actor=user,
        typed_name=user.display_name,
        confirmed=True,
        shown_sha256=slot.agreement.text_sha256,
        ip="192.0.2.3",
        user_agent="pytest",
    )


def approved(db: Session, dataset: Dataset, researcher: User, **kw: object) -> Grant:
    """``researcher`` asks and a steward approves for 90 days: pending access."""
    request = services.request_access(db, dataset, actor=researcher, intended_use=USE, **kw)  # type: ignore[arg-type]
    services.approve(
        db,
        request,
        actor=dataset.stewards[0].user,
        ends_on=utcnow().date() + dt.timedelta(days=90),
    )
    assert request.grant is not None
    return request.grant


def test_without_any_request_nobody_is_listed(db: Session) -> None:
    dataset = make_dataset(db)
    make_user(db, Role.RESEARCHER)
    other = make_grant(db)  # access to another dataset says nothing about this one
    assert listed(db, dataset) == set()
    assert listed(db, other.dataset) == {other.user_id}


@pytest.mark.parametrize(
    "state",
    [
        RequestState.SUBMITTED,
        RequestState.CHANGES_REQUESTED,
        RequestState.DECLINED,
        RequestState.WITHDRAWN,
    ],
)
def test_a_request_not_approved_gives_nothing(db: Session, state: RequestState) -> None:
    dataset = make_dataset(db)
    steward = dataset.stewards[0].user
    researcher = make_user(db, Role.RESEARCHER)
    request = services.request_access(db, dataset, actor=researcher, intended_use=USE)
    if state == RequestState.CHANGES_REQUESTED:
        services.request_changes(db, request, actor=steward, reason="Which subset?")
    elif state == RequestState.DECLINED:
        services.decline(db, request, actor=steward, reason="Not for this purpose.")
    elif state == RequestState.WITHDRAWN:
        services.withdraw(db, request, actor=researcher)
    assert request.state == state
    assert db.scalars(select(Grant).where(Grant.user_id == researcher.id)).all() == []
    assert listed(db, dataset) == set()
    assert not permissions.can_see_location(researcher, dataset)


def test_approved_but_unsigned_gives_nothing_until_the_researcher_signs(db: Session) -> None:
    dataset = make_dataset(db)
    researcher = make_user(db, Role.RESEARCHER)
    grant = approved(db, dataset, researcher)
    assert grant.state == GrantState.PENDING
    assert listed(db, dataset) == set()
    assert not permissions.holds_access(researcher, dataset)
    assert grant.agreement is not None
    (slot,) = grant.agreement.signatures
    assert slot.user_id == researcher.id
    sign(db, slot, researcher)
    assert grant.state == GrantState.ACTIVE
    assert listed(db, dataset) == {researcher.id}
    assert permissions.can_see_location(researcher, dataset)


def test_where_the_institution_signs_the_researchers_signature_is_not_enough(
    db: Session,
) -> None:
    dataset = make_dataset(db, institution_signs=True)
    researcher = make_user(db, Role.RESEARCHER)
    institution = researcher.affiliations[0].institution
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=institution)
    grant = approved(db, dataset, researcher)
    assert grant.agreement is not None
    mine, theirs = grant.agreement.signatures
    assert (theirs.role.value, theirs.on_behalf_of) == ("signing_official", institution.name)
    sign(db, mine, researcher)
    assert grant.agreement.state == AgreementState.AWAITING
    assert grant.state == GrantState.PENDING
    assert listed(db, dataset) == set()
    # The institution's official is asked next, and their signature starts the access.
    assert official.id in [m.recipient_id for m in outbox(db, "agreements/to_sign")]
    sign(db, theirs, official)
    assert grant.state == GrantState.ACTIVE
    assert listed(db, dataset) == {researcher.id}


def test_a_declined_agreement_ends_the_access(db: Session) -> None:
    dataset = make_dataset(db)
    researcher = make_user(db, Role.RESEARCHER)
    grant = approved(db, dataset, researcher)
    assert grant.agreement is not None
    agreements.decline(db, grant.agreement, actor=researcher, reason="I cannot accept clause 3.")
    assert grant.state == GrantState.ENDED
    assert grant.ended_reason == "The data-use agreement was declined."
    assert listed(db, dataset) == set()
    (mail,) = outbox(db, "datasets/access_stopped")
    assert mail.recipient_id == researcher.id and mail.context["why"] == "end"


def test_an_agreement_lapsed_at_its_reconsent_date_takes_the_access_out(db: Session) -> None:
    grant = make_grant(db)
    dataset, holder = grant.dataset, grant.user
    officer = make_user(db, Role.PROGRAM_OFFICER)
    old = grant.agreement
    assert old is not None and dataset.dua_template is not None
    by = utcnow().date() + dt.timedelta(days=30)
    draft = agreements.save_draft(
        db,
        dataset.dua_template,
        actor=officer,
        body=dataset.dua_template.versions[0].body + "\n\nNo re-identification, ever.",
        change_note="Re-identification clause",
        reconsent_by=by,
    )
    agreements.publish_version(db, draft, actor=officer)
    new = db.scalars(select(Agreement).where(Agreement.replaces_id == old.id)).one()
    assert new.state == AgreementState.AWAITING and old.reconsent_by == by
    # Within the grace period the old agreement still counts.
    assert listed(db, dataset) == {holder.id}

    old.reconsent_by = utcnow().date() - dt.timedelta(days=1)
    db.flush()
    assert listed(db, dataset) == set()
    assert grant.state == GrantState.ACTIVE  # the state alone would say otherwise
    assert not permissions.holds_access(holder, dataset)
    assert not permissions.can_see_location(holder, dataset)

    (slot,) = new.signatures
    sign(db, slot, holder)
    assert new.state == AgreementState.ACTIVE and old.state == AgreementState.SUPERSEDED
    assert listed(db, dataset) == {holder.id}
    assert permissions.can_see_location(holder, dataset)
    in_force = agreements.in_force(db, AgreementKind.DATA_USE, SubjectType.DATASET_ACCESS, grant.id)
    assert in_force == new


def test_access_past_its_end_date_is_out_at_once_and_the_sweep_expires_it(db: Session) -> None:
    grant = make_grant(db)
    dataset = grant.dataset
    today = utcnow().date()
    grant.starts_on, grant.ends_on = today - dt.timedelta(days=60), today
    db.flush()
    # Its last day still counts.
    assert listed(db, dataset) == {grant.user_id}
    assert services.sweep(db)["expired"] == 0

    grant.ends_on = today - dt.timedelta(days=1)
    db.flush()
    assert grant.state == GrantState.ACTIVE
    assert listed(db, dataset) == set()
    assert not permissions.can_see_location(grant.user, dataset)
    assert services.sweep(db)["expired"] == 1
    assert grant.state == GrantState.EXPIRED
    assert listed(db, dataset) == set()
    (mail,) = outbox(db, "datasets/access_stopped")
    assert mail.recipient_id == grant.user_id and mail.context["why"] == "expire"


def test_a_revocation_takes_effect_at_once(db: Session) -> None:
    dataset = make_dataset(db)
    keeps, loses = make_grant(db, dataset=dataset), make_grant(db, dataset=dataset)
    assert listed(db, dataset) == {keeps.user_id, loses.user_id}
    services.revoke(db, loses, actor=dataset.stewards[0].user, reason="Shared outside the project.")
    assert listed(db, dataset) == {keeps.user_id}
    (mail,) = outbox(db, "datasets/access_stopped")
    assert mail.recipient_id == loses.user_id
    assert mail.context["reason"] == "Shared outside the project."


def test_a_suspended_institutions_people_lose_access_until_it_is_reinstated(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    dataset = make_dataset(db)
    institution = make_institution(db)
    elsewhere = make_grant(db, dataset=dataset)
    active = make_grant(
        db, dataset=dataset, user=make_user(db, Role.RESEARCHER, institution=institution)
    )
    lapsing = make_grant(
        db, dataset=dataset, user=make_user(db, Role.RESEARCHER, institution=institution)
    )
    pending = make_grant(
        db,
        dataset=dataset,
        user=make_user(db, Role.RESEARCHER, institution=institution),
        signed=False,
    )
    registered = make_dataset(db, tier=AccessTier.REGISTERED)
    terms = services.accept_terms(db, registered, actor=active.user, accepted=True)

    make_agreement(db, institution=institution, state=AgreementState.ACTIVE)  # to reinstate
    institutions.transition(db, institution, "suspend", actor=officer, reason="Audit pending.")
    assert (active.state, lapsing.state, terms.state) == (GrantState.SUSPENDED,) * 3
    assert active.suspended_with_institution
    assert pending.state == GrantState.PENDING
    assert listed(db, dataset) == {elsewhere.user_id}
    assert listed(db, registered) == set()
    assert sorted(m.recipient_id or 0 for m in outbox(db, "datasets/access_stopped")) == sorted(
        [active.user_id, lapsing.user_id, active.user_id]
    )

    # While it is suspended, one access reaches its end date: it does not come back.
    lapsing.starts_on, lapsing.ends_on = (
        utcnow().date() - dt.timedelta(days=100),
        utcnow().date() - dt.timedelta(days=1),
    )
    db.flush()
    institutions.transition(db, institution, "reinstate", actor=officer)
    assert (active.state, terms.state) == (GrantState.ACTIVE, GrantState.ACTIVE)
    assert not active.suspended_with_institution
    assert lapsing.state == GrantState.SUSPENDED
    assert listed(db, dataset) == {elsewhere.user_id, active.user_id}
    assert listed(db, registered) == {active.user_id}
    services.sweep(db)
    assert lapsing.state == GrantState.EXPIRED


def test_a_grant_a_steward_suspended_does_not_resume_with_the_institution(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    grant = make_grant(db)
    make_agreement(db, institution=grant.institution, state=AgreementState.ACTIVE)
    GRANT_WORKFLOW.run(db, grant, "suspend", actor=officer, reason="Looking into a complaint.")
    institutions.transition(db, grant.institution, "suspend", actor=officer, reason="Audit.")
    institutions.transition(db, grant.institution, "reinstate", actor=officer)
    assert grant.state == GrantState.SUSPENDED
    assert listed(db, grant.dataset) == set()


def test_a_withdrawn_institutions_access_ends(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    grant = make_grant(db)
    pending = make_grant(
        db, user=make_user(db, Role.RESEARCHER, institution=grant.institution), signed=False
    )
    institutions.transition(
        db, grant.institution, "withdraw", actor=officer, reason="Left the program."
    )
    assert (grant.state, pending.state) == (GrantState.ENDED, GrantState.ENDED)
    assert grant.ended_reason == f"{grant.institution.name} is no longer a partner."
    assert pending.agreement is not None
    assert pending.agreement.state == AgreementState.WITHDRAWN
    assert listed(db, grant.dataset) == set()


def test_a_person_removed_from_the_project_loses_its_access(db: Session) -> None:
    dataset = make_dataset(db)
    project = make_proposal(db, state=ProposalState.ACTIVE)
    pi = project.pi
    assert pi is not None
    member = make_user(db, Role.RESEARCHER, institution=project.institution)
    db.add(TeamMember(proposal_id=project.id, user_id=member.id, role=TeamRole.MEMBER))
    db.flush()
    db.expire(project, ["team"])
    for_project = approved(db, dataset, member, proposal=project)
    own_work = make_grant(db, user=member)  # another dataset, for their own work
    pis = approved(db, dataset, pi, proposal=project)
    for g in (for_project, pis):
        assert g.agreement is not None
        sign(db, g.agreement.signatures[0], g.user)
    assert listed(db, dataset) == {member.id, pi.id}

    (membership,) = [m for m in project.team if m.user_id == member.id]
    team.remove_member(db, project, actor=pi, member_id=membership.id)
    assert for_project.state == GrantState.ENDED
    assert for_project.ended_reason == (
        f"{member.display_name} is no longer on the project “{project.title}”."
    )
    assert listed(db, dataset) == {pi.id}
    assert own_work.state == GrantState.ACTIVE and pis.state == GrantState.ACTIVE


def test_a_person_whose_affiliation_ends_loses_access(db: Session) -> None:
    institution = make_institution(db)
    person = make_user(db)
    aff = institutions.affiliate_from_idp(
        db, person, institution, title="Postdoc", basis="email_domain", value="uni.edu"
    )
    assert aff is not None
    grant = make_grant(db, user=person)
    registered = make_dataset(db, tier=AccessTier.REGISTERED)
    terms = services.accept_terms(db, registered, actor=person, accepted=True)
    assert listed(db, grant.dataset) == {person.id}

    institutions.end_idp_affiliations(
        db, person, {institution.id: "The login no longer says you work there."}, provider="idp"
    )
    assert (grant.state, terms.state) == (GrantState.ENDED, GrantState.ENDED)
    assert (
        grant.ended_reason == f"{person.display_name} is no longer a member of {institution.name}."
    )
    assert listed(db, grant.dataset) == set() and listed(db, registered) == set()


def test_a_disabled_account_is_not_listed(db: Session) -> None:
    grant = make_grant(db)
    grant.user.is_disabled = True
    db.flush()
    assert grant.state == GrantState.ACTIVE
    assert listed(db, grant.dataset) == set()
    grant.user.is_disabled = False
    db.flush()
    assert listed(db, grant.dataset) == {grant.user_id}


def test_a_registered_datasets_terms_are_its_gate(db: Session) -> None:
    dataset = make_dataset(db, tier=AccessTier.REGISTERED)
    researcher = make_user(db, Role.RESEARCHER)
    assert listed(db, dataset) == set()
    grant = services.accept_terms(db, dataset, actor=researcher, accepted=True)
    assert grant.agreement_id is None and grant.terms_accepted_at is not None
    assert listed(db, dataset) == {researcher.id}
    # Not a partner in good standing (suspended by hand here, without the follow-up): out.
    grant.institution.state = InstitutionState.SUSPENDED
    db.flush()
    assert listed(db, dataset) == set()


def test_expired_access_is_not_renewed_for_someone_who_has_left(db: Session) -> None:
    """Only live access ends when its holder leaves; access that had already expired stays
    expired — asking to renew it, or accepting the terms again, does not bring it back."""
    old_home, new_home = make_institution(db), make_institution(db)
    person = make_user(db)
    institutions.affiliate_from_idp(
        db, person, old_home, title=None, basis="email_domain", value="uni.edu"
    )
    controlled = make_grant(db, user=person)
    registered = make_dataset(db, tier=AccessTier.REGISTERED)
    terms = services.accept_terms(db, registered, actor=person, accepted=True)
    for grant in (controlled, terms):
        grant.starts_on, grant.ends_on = (
            utcnow().date() - dt.timedelta(days=100),
            utcnow().date() - dt.timedelta(days=1),
        )
    db.flush()
    assert services.sweep(db)["expired"] == 2
    institutions.end_idp_affiliations(db, person, {old_home.id: "Left."}, provider="idp")
    institutions.affiliate_from_idp(
        db, person, new_home, title=None, basis="email_domain", value="new.edu"
    )

    with pytest.raises(ConflictError, match=r"no longer a member of .* Ask for new access"):
        services.request_renewal(db, controlled, actor=person, intended_use=USE)
    with pytest.raises(ConflictError, match="cannot start or go on"):
        GRANT_WORKFLOW.run(
            db,
            controlled,
            "renew",
            actor=controlled.dataset.stewards[0].user,
            values={"ends_on": utcnow().date() + dt.timedelta(days=30)},
        )
    assert controlled.state == GrantState.EXPIRED
    # Registered data: accepting the terms again gives access through the new institution.
    fresh = services.accept_terms(db, registered, actor=person, accepted=True)
    assert fresh.id != terms.id and fresh.institution_id == new_home.id
    assert terms.state == GrantState.EXPIRED
    assert listed(db, registered) == {person.id} and listed(db, controlled.dataset) == set()
