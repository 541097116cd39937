"""The permission rules of agreements agree with their list filters and with whom the mails ask to
sign, for users of every role and agreements in every state at two institutions: a list never shows
an agreement its page would refuse, "Agreements to sign" lists exactly the slots their holder may
sign now, and the "please sign" mail goes to exactly those who may sign."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask_login import AnonymousUserMixin
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    PartyRole,
    Signature,
    SignatureState,
    SubjectType,
    VersionState,
)
from portal.agreements.permissions import (
    can_decline_agreement,
    can_manage_agreements,
    can_publish_version,
    can_sign,
    can_view_agreement,
    can_view_version,
    can_withdraw_agreement,
    signable_signatures,
    signers_of,
    visible_agreements,
)
from portal.agreements.text import sha256
from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.institutions.models import Institution, InstitutionState
from portal.proposals.models import ProposalState, TeamMember, TeamRole
from tests.factories import (
    make_agreement,
    make_agreement_template,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.visibility import disagreements, recipients_disagree


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def _data_use(db: Session, inst: Institution, researcher: User, *, signed: bool) -> Agreement:
    """A data-use agreement (made by hand: its subject, a dataset access, belongs to a later
    domain): the named researcher signs first (``signed``: has signed), then any data steward."""
    template = make_agreement_template(db, kind=AgreementKind.DATA_USE)
    body = template.versions[0].body
    agreement = Agreement(
        version_id=template.versions[0].id,
        kind=AgreementKind.DATA_USE,
        title="Data use — corpus",
        subject_type=SubjectType.DATASET_ACCESS,
        subject_id=researcher.id,
        institution_id=inst.id,
        text=body,
        text_sha256=sha256(body),
        signatures=[
            Signature(position=1, role=PartyRole.RESEARCHER, user_id=researcher.id),
            Signature(position=2, role=PartyRole.DATA_STEWARD, on_behalf_of="ATOM Lab"),
        ],
    )
    if signed:
        first = agreement.signatures[0]
        first.state, first.signed_by_id, first.signed_at = (
            SignatureState.SIGNED,
            researcher.id,
            utcnow(),
        )
        first.typed_name, first.text_sha256 = researcher.display_name, agreement.text_sha256
    db.add(agreement)
    db.flush()
    return agreement


def _world(db: Session) -> tuple[list[User], list[Agreement]]:
    """Two institutions, each with signing officials (one disabled, one also on a project team),
    a PI and a team member; partnership, contribution and data-use agreements in every state and
    at every turn; people of every other role. Everyone in the database is a user to check
    (the factories' signers too: someone who signed stays a party)."""
    agreements: list[Agreement] = []
    for name in ("North", "South"):
        inst = make_institution(db, name=f"{name} University")
        pi = make_user(db, Role.RESEARCHER, institution=inst)
        member = make_user(db, Role.RESEARCHER, institution=inst)
        make_user(db, Role.RESEARCHER, institution=inst)  # not on any team
        make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
        make_user(db, Role.SIGNING_OFFICIAL, institution=inst, is_disabled=True)
        on_team = make_user(db, Role.SIGNING_OFFICIAL, Role.RESEARCHER, institution=inst)
        for state in AgreementState:
            # One partnership agreement awaiting signatures per institution at a time.
            if state != AgreementState.AWAITING:
                agreements.append(make_agreement(db, institution=inst, state=state))
        agreements.append(make_agreement(db, institution=inst, signed=1 if name == "South" else 0))
        for state, signed in [
            (AgreementState.AWAITING, 0),
            (AgreementState.AWAITING, 1),
            (AgreementState.AWAITING, 2),
            (AgreementState.ACTIVE, 0),
            (AgreementState.DECLINED, 1),
            (AgreementState.WITHDRAWN, 0),
        ]:
            proposal = make_proposal(db, pi=pi, institution=inst, state=ProposalState.ACTIVE)
            proposal.team.append(TeamMember(user=member, role=TeamRole.MEMBER))
            proposal.team.append(TeamMember(user=on_team, role=TeamRole.CO_PI))
            agreements.append(
                make_agreement(
                    db,
                    kind=AgreementKind.CONTRIBUTION,
                    proposal=proposal,
                    state=state,
                    signed=signed,
                )
            )
        agreements.append(_data_use(db, inst, member, signed=name == "South"))
    for role in (Role.REVIEWER, Role.DATA_STEWARD, Role.PROGRAM_OFFICER, Role.ADMIN):
        make_user(db, role)
    make_user(db)
    make_user(db, Role.SIGNING_OFFICIAL)  # at a third institution
    make_user(db, Role.PROGRAM_OFFICER, is_disabled=True)
    db.flush()
    users = list(db.scalars(select(User).order_by(User.id)))
    return users, agreements


def _signatures(agreements: list[Agreement]) -> list[Signature]:
    return [s for a in agreements for s in a.signatures]


def test_the_agreement_list_shows_exactly_what_the_agreement_page_allows(db: Session) -> None:
    users, agreements = _world(db)
    everyone: list[object] = [AnonymousUserMixin(), *users]
    assert disagreements(db, visible_agreements, can_view_agreement, everyone, agreements) == []
    # Not vacuous: some see everything, some some, some nothing.
    seen = {u.id: sum(can_view_agreement(u, a) for a in agreements) for u in users}
    assert max(seen.values()) == len(agreements)
    assert 0 < sorted(set(seen.values()))[1] < len(agreements)
    assert min(seen.values()) == 0


def test_agreements_to_sign_lists_exactly_the_slots_whose_turn_has_come(db: Session) -> None:
    users, agreements = _world(db)
    slots = _signatures(agreements)

    def may_sign_now(user: object, slot: Signature) -> bool:
        return can_sign(user, slot) and slot in slot.agreement.next_signatures

    everyone: list[object] = [AnonymousUserMixin(), *users]
    assert disagreements(db, signable_signatures, may_sign_now, everyone, slots) == []
    turns = [s for s in slots if s in s.agreement.next_signatures]
    # Every kind of party has a turn somewhere: a PI, a signing official, the lab, a researcher
    # and a data steward.
    assert {s.role for s in turns} == set(PartyRole)
    assert all(any(may_sign_now(u, s) for u in users) for s in turns)


def test_the_please_sign_mail_asks_exactly_those_who_may_sign(db: Session) -> None:
    users, agreements = _world(db)
    active = [u for u in users if not u.is_disabled]
    slots = _signatures(agreements)
    assert recipients_disagree(db, signers_of, can_sign, active, slots) == []
    # A disabled signing official may not sign and is never asked.
    disabled = [u for u in users if u.is_disabled]
    assert disabled
    for slot in slots:
        mailed = set(db.scalars(signers_of(slot)))
        assert not mailed & set(disabled)
        assert not any(can_sign(u, slot) for u in disabled)


def test_only_a_party_whose_turn_it_is_may_decline(db: Session) -> None:
    users, agreements = _world(db)
    for agreement in agreements:
        for user in users:
            turn = any(can_sign(user, s) for s in agreement.next_signatures)
            declined = any(
                can_sign(user, s)
                for s in agreement.signatures
                if s.state == SignatureState.DECLINED
            )
            assert can_decline_agreement(user, agreement) == (turn or declined), (user, agreement)


def test_only_program_staff_manage_agreements_and_read_drafts(db: Session) -> None:
    users, agreements = _world(db)
    draft = make_agreement_template(db, state=VersionState.DRAFT).versions[0]
    published = make_agreement_template(db).versions[0]
    superseded = make_agreement_template(db, state=VersionState.SUPERSEDED).versions[0]
    for user in users:
        staff = not user.is_disabled and bool(user.roles & {Role.PROGRAM_OFFICER, Role.ADMIN})
        assert can_manage_agreements(user) == staff
        assert can_publish_version(user, draft) == staff
        assert can_withdraw_agreement(user, agreements[0]) == staff
        assert can_view_version(user, draft) == staff
        assert (
            can_view_version(user, published)
            == can_view_version(user, superseded)
            == (not user.is_disabled)
        )
    anonymous = AnonymousUserMixin()
    assert not can_view_version(anonymous, published) and not can_manage_agreements(anonymous)


def test_a_signing_official_sees_their_institutions_agreements_only(db: Session) -> None:
    north = make_institution(db, state=InstitutionState.UNDER_REVIEW)
    south = make_institution(db, state=InstitutionState.UNDER_REVIEW)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=north)
    ours, theirs = make_agreement(db, institution=north), make_agreement(db, institution=south)
    assert can_view_agreement(official, ours) and not can_view_agreement(official, theirs)
    assert can_sign(official, ours.signatures[0]) and not can_sign(official, theirs.signatures[0])
    # The lab's countersignature is not the institution's to give.
    assert not can_sign(official, ours.signatures[1])
    assert list(db.scalars(signable_signatures(official))) == [ours.signatures[0]]
