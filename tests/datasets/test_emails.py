"""The mails about datasets, each driven by the real services: who gets each (a request: the
dataset's own stewards — never the requester, never a disabled steward, never another dataset's
steward; a decision and the access: its holder only; a pre-approval decided: the proposal's PI
and co-investigators, not its other members) and what each says, in text and HTML, compared with
the stored expected texts (``tests/notifications/expected/dataset_*.txt``)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementState
from portal.agreements.services import sign
from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.datasets import services
from portal.datasets.models import AccessTier, Dataset, Grant, GrantState
from portal.institutions import services as institutions
from portal.institutions.models import Institution
from portal.notifications.models import OutboxMessage
from portal.proposals import services as proposals
from portal.proposals.models import TeamMember, TeamRole
from tests.factories import (
    make_agreement,
    make_call,
    make_dataset,
    make_grant,
    make_institution,
    make_proposal,
    make_user,
)
from tests.support.mail import check_expected, outbox, rendered

USE = "Evaluating open models on de-identified clinical notes; no attempt at re-identification."
TITLE = "Reasoning in small models"


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


@pytest.fixture
def northlake(db: Session) -> Institution:
    return make_institution(db, name="Northlake University")


@pytest.fixture
def ada(db: Session, northlake: Institution) -> User:
    return make_user(
        db,
        Role.RESEARCHER,
        institution=northlake,
        display_name="Ada Lovelace",
        email="ada@northlake.edu",
    )


@pytest.fixture
def sam(db: Session) -> User:
    return make_user(db, Role.DATA_STEWARD, display_name="Sam Steward", email="sam@atom-lab.org")


@pytest.fixture
def tess(db: Session) -> User:
    return make_user(db, Role.DATA_STEWARD, display_name="Tess Steward", email="tess@atom-lab.org")


@pytest.fixture
def notes(db: Session, sam: User, tess: User) -> Dataset:
    """The controlled dataset "Clinical notes", stewarded by Sam and Tess; and, beside it, another
    dataset whose steward (Olga) must never hear about this one."""
    make_dataset(
        db,
        stewards=[make_user(db, Role.DATA_STEWARD, display_name="Olga", email="olga@atom-lab.org")],
    )
    return make_dataset(
        db,
        slug="clinical-notes",
        name="Clinical notes",
        location="s3://atom-datasets/clinical-notes/",
        stewards=[sam, tess],
    )


@pytest.fixture
def officer(db: Session) -> User:
    return make_user(db, Role.PROGRAM_OFFICER, display_name="Otto Officer")


def day(d: dt.date) -> str:
    return d.strftime("%d %B %Y")


def _check(name: str, msg: OutboxMessage, **dynamic: str) -> None:
    """The rendered mail against ``expected/<name>.txt``, with the ids in its links and the
    values that change from run to run (``dynamic``: value → placeholder) replaced."""
    text = re.sub(r"/datasets/(requests|access)/\d+", r"/datasets/\1/<id>", rendered(msg))
    for value, placeholder in dynamic.items():
        text = text.replace(value, placeholder)
    check_expected(name, text)


def _to(msgs: list[OutboxMessage]) -> list[str]:
    return sorted(m.to_addr for m in msgs)


def _only(db: Session, kind: str) -> OutboxMessage:
    (msg,) = outbox(db, kind)
    return msg


def told(db: Session, address: str) -> list[OutboxMessage]:
    """Every mail about datasets to ``address``."""
    return list(
        db.scalars(
            select(OutboxMessage).where(
                OutboxMessage.to_addr == address, OutboxMessage.template.like("datasets/%")
            )
        )
    )


def sign_dua(db: Session, grant: Grant) -> None:
    """Everyone the data-use agreement asks signs it (the researcher; no co-signature here)."""
    agreement = grant.agreement
    assert agreement is not None
    for slot in agreement.signatures:
        assert slot.user is not None
        sign(
            db,
            slot,
            actor=slot.user,
            typed_name=slot.user.display_name,
            confirmed=True,
            shown_sha256=agreement.text_sha256,
            ip="192.0.2.1",
            user_agent="pytest",
        )
    assert agreement.state == AgreementState.ACTIVE


def test_a_request_tells_the_datasets_own_stewards_and_never_the_requester(
    db: Session, northlake: Institution, ada: User, sam: User, tess: User, notes: Dataset
) -> None:
    # A steward of the dataset who is a researcher too, and a steward who was disabled.
    sid = make_user(
        db, Role.DATA_STEWARD, Role.RESEARCHER, institution=northlake, email="sid@northlake.edu"
    )
    gone = make_user(db, Role.DATA_STEWARD, email="gone@atom-lab.org", is_disabled=True)
    for steward in (sid, gone):
        services.add_steward(db, notes, actor=make_user(db, Role.ADMIN), user=steward)

    services.request_access(db, notes, actor=ada, intended_use=USE)
    asked = outbox(db, "datasets/request_received")
    assert _to(asked) == ["sam@atom-lab.org", "sid@northlake.edu", "tess@atom-lab.org"]
    (to_sam,) = [m for m in asked if m.to_addr == "sam@atom-lab.org"]
    _check("dataset_request_received", to_sam)

    # A steward asking for their own dataset: the others decide, and only they are told.
    services.request_access(db, notes, actor=sid, intended_use=USE)
    theirs = [
        m
        for m in outbox(db, "datasets/request_received")
        if m.context["requester"] != "Ada Lovelace"
    ]
    assert _to(theirs) == ["sam@atom-lab.org", "tess@atom-lab.org"]
    assert told(db, "olga@atom-lab.org") == [] and told(db, "gone@atom-lab.org") == []


def test_changes_asked_for_then_sent_again_then_declined(
    db: Session, ada: User, sam: User, tess: User, notes: Dataset
) -> None:
    request = services.request_access(db, notes, actor=ada, intended_use=USE)
    services.request_changes(
        db, request, actor=sam, reason="Say where the <notes> will be stored & for how long."
    )
    changes = _only(db, "datasets/request_decided")
    assert changes.to_addr == "ada@northlake.edu"
    _check("dataset_request_decided_request_changes", changes)
    # The steward's own words: escaped in the HTML part.
    assert "Say where the &lt;notes&gt; will be stored &amp; for how long." in rendered(changes)

    services.resubmit(db, request, actor=ada, intended_use=USE + " Stored on the lab's cluster.")
    again = [m for m in outbox(db, "datasets/request_received") if m.context["again"]]
    assert _to(again) == ["sam@atom-lab.org", "tess@atom-lab.org"]
    _check("dataset_request_received_again", again[0])

    services.decline(db, request, actor=tess, reason="The storage plan does not meet the DUA.")
    declined = [
        m for m in outbox(db, "datasets/request_decided") if m.context["decision"] == "decline"
    ]
    assert _to(declined) == ["ada@northlake.edu"]
    _check("dataset_request_decided_decline", declined[0])


def test_approval_then_the_signature_then_a_renewal(
    db: Session, ada: User, sam: User, tess: User, notes: Dataset
) -> None:
    today = utcnow().date()
    first_end, later_end = today + dt.timedelta(days=90), today + dt.timedelta(days=300)
    dates = {day(first_end): "<end date>", day(later_end): "<new end date>", day(today): "<today>"}
    request = services.request_access(db, notes, actor=ada, intended_use=USE)
    services.approve(db, request, actor=sam, ends_on=first_end, note="Only on the lab's cluster.")
    approved = _only(db, "datasets/request_decided")
    assert approved.to_addr == "ada@northlake.edu"
    _check("dataset_request_decided_approve", approved, **dates)
    grant = request.grant
    assert grant is not None and grant.state == GrantState.PENDING
    assert outbox(db, "datasets/access_ready") == []

    sign_dua(db, grant)
    assert grant.state == GrantState.ACTIVE
    ready = _only(db, "datasets/access_ready")
    assert ready.to_addr == "ada@northlake.edu" and ready.context["why"] == "activate"
    _check("dataset_access_ready_activate", ready, **dates)

    renewal = services.request_renewal(
        db, grant, actor=ada, intended_use="The evaluation needs a second round of experiments."
    )
    asked = [m for m in outbox(db, "datasets/request_received") if m.context["renewal"]]
    assert _to(asked) == ["sam@atom-lab.org", "tess@atom-lab.org"]
    _check("dataset_request_received_renewal", asked[0], **dates)

    services.approve(db, renewal, actor=tess, ends_on=later_end)
    decided = [m for m in outbox(db, "datasets/request_decided") if m.context["renewal"]]
    assert _to(decided) == ["ada@northlake.edu"]
    _check("dataset_request_decided_approve_renewal", decided[0], **dates)
    renewed = [m for m in outbox(db, "datasets/access_ready") if m.context["why"] == "renew"]
    assert _to(renewed) == ["ada@northlake.edu"]
    _check("dataset_access_ready_renew", renewed[0], **dates)
    assert told(db, "olga@atom-lab.org") == []


def test_a_revocation_tells_the_holder_why_at_once(
    db: Session, ada: User, sam: User, notes: Dataset
) -> None:
    grant = make_grant(db, dataset=notes, user=ada)
    services.revoke(db, grant, actor=sam, reason="Data shared <outside> the project & its team.")
    stopped = _only(db, "datasets/access_stopped")
    assert stopped.to_addr == "ada@northlake.edu" and stopped.context["why"] == "revoke"
    _check("dataset_access_stopped_revoke", stopped)
    assert "Data shared &lt;outside&gt; the project &amp; its team." in rendered(stopped)


def test_suspended_and_resumed_with_the_institution(
    db: Session, northlake: Institution, ada: User, officer: User, notes: Dataset
) -> None:
    grant = make_grant(db, dataset=notes, user=ada)
    dates = {day(grant.ends_on): "<end date>"}
    make_agreement(db, institution=northlake, state=AgreementState.ACTIVE)  # may be reinstated
    institutions.transition(
        db, northlake, "suspend", actor=officer, reason="The partnership agreement lapsed."
    )
    stopped = _only(db, "datasets/access_stopped")
    assert stopped.to_addr == "ada@northlake.edu" and stopped.context["why"] == "suspend"
    _check("dataset_access_stopped_suspend", stopped, **dates)

    institutions.transition(db, northlake, "reinstate", actor=officer)
    resumed = [m for m in outbox(db, "datasets/access_ready") if m.context["why"] == "resume"]
    assert _to(resumed) == ["ada@northlake.edu"]
    _check("dataset_access_ready_resume", resumed[0], **dates)


def test_access_ends_when_the_institution_leaves_the_program(
    db: Session, northlake: Institution, ada: User, officer: User, notes: Dataset
) -> None:
    grant = make_grant(db, dataset=notes, user=ada)
    institutions.transition(db, northlake, "withdraw", actor=officer, reason="It left.")
    assert grant.state == GrantState.ENDED
    stopped = _only(db, "datasets/access_stopped")
    assert stopped.to_addr == "ada@northlake.edu" and stopped.context["why"] == "end"
    _check("dataset_access_stopped_end", stopped)


@pytest.mark.parametrize("tier", [AccessTier.CONTROLLED, AccessTier.REGISTERED])
def test_the_sweep_expires_access_and_says_how_to_go_on(
    db: Session, ada: User, notes: Dataset, tier: AccessTier
) -> None:
    if tier == AccessTier.REGISTERED:
        dataset = make_dataset(
            db, tier=tier, slug="web-corpus", name="Web corpus", location="s3://atom/web/"
        )
        grant = services.accept_terms(db, dataset, actor=ada, accepted=True)
    else:
        grant = make_grant(db, dataset=notes, user=ada)
    grant.starts_on = utcnow().date() - dt.timedelta(days=100)
    grant.ends_on = utcnow().date() - dt.timedelta(days=1)
    db.flush()
    services.sweep(db)
    stopped = _only(db, "datasets/access_stopped")
    assert stopped.to_addr == "ada@northlake.edu" and stopped.context["why"] == "expire"
    _check(
        f"dataset_access_stopped_expire_{tier.value}", stopped, **{day(grant.ends_on): "<end date>"}
    )


@pytest.mark.parametrize(
    ("tier", "days"),
    [(AccessTier.CONTROLLED, 30), (AccessTier.CONTROLLED, 7), (AccessTier.REGISTERED, 30)],
)
def test_each_notice_of_the_sweep(
    db: Session, ada: User, notes: Dataset, tier: AccessTier, days: int
) -> None:
    if tier == AccessTier.REGISTERED:
        dataset = make_dataset(db, tier=tier, slug="web-corpus", name="Web corpus")
        grant = services.accept_terms(db, dataset, actor=ada, accepted=True)
    else:
        grant = make_grant(db, dataset=notes, user=ada)
    left = 20 if days == 30 else 5
    grant.ends_on = utcnow().date() + dt.timedelta(days=left)
    db.flush()
    services.sweep(db)
    notice = _only(db, "datasets/access_expiring")
    assert notice.to_addr == "ada@northlake.edu" and notice.context["days"] == left
    # An optional kind: the mail says how to switch it off.
    assert "/notifications/unsubscribe/" in rendered(notice)
    _check(
        f"dataset_access_expiring_{tier.value}_{days}", notice, **{day(grant.ends_on): "<end date>"}
    )


def test_a_pre_approval_asks_the_stewards_and_tells_the_pi_and_co_investigators(
    db: Session, northlake: Institution, ada: User, sam: User, tess: User, notes: Dataset
) -> None:
    call = make_call(db, endorsement_required=False)
    proposal = make_proposal(db, call=call, pi=ada, complete=True, title=TITLE)
    grace = make_user(
        db,
        Role.RESEARCHER,
        institution=northlake,
        display_name="Grace",
        email="grace@northlake.edu",
    )
    mo = make_user(db, Role.RESEARCHER, institution=northlake, email="mo@northlake.edu")
    proposal.team += [
        TeamMember(user=grace, role=TeamRole.CO_PI),
        TeamMember(user=mo, role=TeamRole.MEMBER),
    ]
    other = make_dataset(db, slug="speech", name="Speech", stewards=[tess])
    db.flush()
    links = services.set_proposal_datasets(
        db,
        proposal,
        actor=ada,
        picks={notes.id: "Fine-tuning and evaluating the project's models.", other.id: ""},
    )
    assert outbox(db, "datasets/request_received") == []  # a draft asks nobody
    proposals.submit_proposal(db, proposal, actor=ada)

    asked = outbox(db, "datasets/request_received")
    assert {(m.to_addr, m.context["dataset"]) for m in asked} == {
        ("sam@atom-lab.org", "Clinical notes"),
        ("tess@atom-lab.org", "Clinical notes"),
        ("tess@atom-lab.org", "Speech"),
    }
    assert all(m.context["consent"] for m in asked)
    (to_sam,) = [m for m in asked if m.to_addr == "sam@atom-lab.org"]
    _check("dataset_request_received_consent", to_sam)

    link, other_link = links
    services.consent(db, link, actor=sam, note="Keep it on the lab's cluster.")
    services.refuse(db, other_link, actor=tess, reason="The speech data is not licensed for this.")
    decided = outbox(db, "datasets/consent_decided")
    assert {(m.to_addr, m.context["decision"]) for m in decided} == {
        ("ada@northlake.edu", "consent"),
        ("grace@northlake.edu", "consent"),
        ("ada@northlake.edu", "refuse"),
        ("grace@northlake.edu", "refuse"),
    }
    for decision in ("consent", "refuse"):
        (msg,) = [
            m
            for m in decided
            if m.to_addr == "ada@northlake.edu" and m.context["decision"] == decision
        ]
        _check(f"dataset_consent_decided_{decision}", msg)
    assert told(db, "olga@atom-lab.org") == [] and told(db, "mo@northlake.edu") == []
