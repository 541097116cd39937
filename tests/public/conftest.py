"""The public pages' fixtures: the server-side cache off (except where a test turns it on), and a
program holding every kind of thing the public pages must leave out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.institutions.models import Institution, InstitutionState
from portal.outputs.models import ReleasedOutput
from portal.proposals.models import (
    CallState,
    OutputKind,
    Proposal,
    ProposalState,
    TeamMember,
    TeamRole,
)
from portal.public.views import CACHE_KEY
from portal.reviews.models import AssignmentState, Review, ReviewState
from tests.factories import (
    make_assignment,
    make_call,
    make_institution,
    make_proposal,
    make_reviewer,
    make_user,
)


@pytest.fixture(autouse=True)
def _public_cache_off(app: Flask) -> Iterator[None]:
    """Each test sees the database as it left it: no page kept from another test."""
    before = app.config.get("PUBLIC_CACHE_SECONDS")
    app.config["PUBLIC_CACHE_SECONDS"] = 0
    app.extensions[CACHE_KEY].clear()
    yield
    app.extensions[CACHE_KEY].clear()
    if before is None:
        app.config.pop("PUBLIC_CACHE_SECONDS", None)
    else:
        app.config["PUBLIC_CACHE_SECONDS"] = before


@dataclass
class World:
    """A program with what the public pages show and what they must never show."""

    partner: Institution  # Germany: the consenting PI's project
    other_partner: Institution  # Japan: the non-consenting PI's project
    applied: Institution
    approved: Institution
    suspended: Institution
    declined: Institution
    withdrawn: Institution
    consenting_pi: User
    private_pi: User
    member: User  # on the consenting PI's team, consenting, but not the PI
    reviewer: User
    shown: Proposal  # active, PI named
    unnamed: Proposal  # active, PI not named
    hidden: dict[str, Proposal]  # every other state, and an active one of a suspended institution
    outputs: list[ReleasedOutput]

    #: Text that must never appear on any public page.
    @property
    def forbidden(self) -> list[str]:
        people = [self.private_pi, self.member, self.reviewer]
        return [
            *(p.title for p in self.hidden.values()),
            *(p.display_name for p in people),
            *(
                u.email or ""
                for u in (self.consenting_pi, self.private_pi, self.member, self.reviewer)
            ),
            self.applied.name,
            self.approved.name,
            self.suspended.name,
            self.declined.name,
            self.withdrawn.name,
            "Draft call nobody may see",
            "Closed call of last year",
            "Call whose deadline passed",
            "Reviewer comment nobody outside may read",
            "Confidential note for staff",
            "Decision reason for staff only",
            "Sam Suspended",
            "Code of a declined proposal",
            "Dataset of a suspended institution",
            "@example.org",
        ]


def _released(
    db: Session, proposal: Proposal, kind: OutputKind, title: str, licence: str, day: dt.date
) -> ReleasedOutput:
    planned = next((p for p in proposal.outputs if p.kind == kind), None)
    out = ReleasedOutput(
        proposal_id=proposal.id,
        planned_output_id=planned.id if planned is not None else None,
        kind=kind,
        title=title,
        url=f"https://example.net/{title.lower().replace(' ', '-')}",
        license=licence,
        doi="10.5281/zenodo.1234567" if kind == OutputKind.PAPER else None,
        released_on=day,
    )
    db.add(out)
    db.flush()
    return out


def make_world(db: Session) -> World:
    partner = make_institution(
        db,
        name="Universität Beispielstadt",
        country="DE",
        website="https://www.uni-beispiel.de",
        partner_since=dt.date(2026, 3, 1),
    )
    other = make_institution(
        db, name="Kyoto Example Institute", country="JP", partner_since=dt.date(2026, 5, 15)
    )
    states = {}
    for state, name in [
        (InstitutionState.APPLIED, "Applied Polytechnic"),
        (InstitutionState.APPROVED, "Approved But Unsigned College"),
        (InstitutionState.SUSPENDED, "Suspended Institute of Technology"),
        (InstitutionState.DECLINED, "Declined Academy"),
        (InstitutionState.WITHDRAWN, "Withdrawn University"),
    ]:
        states[state] = make_institution(db, name=name, state=state, country="FR")
    consenting = make_user(
        db,
        Role.RESEARCHER,
        institution=partner,
        display_name="Ada Consenting",
        email="ada.consenting@example.org",
        public_name=True,
    )
    private = make_user(
        db,
        Role.RESEARCHER,
        institution=other,
        display_name="Bob Private",
        email="bob.private@example.org",
    )
    member = make_user(
        db,
        Role.RESEARCHER,
        institution=partner,
        display_name="Carol Teammate",
        email="carol.teammate@example.org",
        public_name=True,
    )
    call = make_call(db, title="Open models call 2027")
    shown = make_proposal(
        db,
        call=call,
        pi=consenting,
        state=ProposalState.ACTIVE,
        title="Open reasoning models for science",
        decision_reason="Decision reason for staff only",
    )
    shown.team.append(TeamMember(user=member, role=TeamRole.CO_PI))
    unnamed = make_proposal(
        db, call=call, pi=private, state=ProposalState.ACTIVE, title="Multilingual speech corpora"
    )
    hidden = {
        state.value: make_proposal(
            db, call=call, pi=consenting, state=state, title=f"Hidden {state.value} proposal"
        )
        for state in ProposalState
        if state != ProposalState.ACTIVE
    }
    suspended_pi = make_user(
        db,
        Role.RESEARCHER,
        institution=states[InstitutionState.SUSPENDED],
        display_name="Sam Suspended",
        public_name=True,
    )
    hidden["suspended institution"] = make_proposal(
        db,
        call=call,
        pi=suspended_pi,
        institution=states[InstitutionState.SUSPENDED],
        state=ProposalState.ACTIVE,
        title="Project of a suspended institution",
    )
    reviewer = make_reviewer(db, display_name="Rita Reviewer", email="rita.reviewer@example.org")
    for proposal in (shown, unnamed, hidden["in_review"], hidden["declined"]):
        assignment = make_assignment(
            db, proposal=proposal, reviewer=reviewer, state=AssignmentState.ACCEPTED
        )
        db.add(
            Review(
                assignment_id=assignment.id,
                version=1,
                state=ReviewState.SUBMITTED,
                scores={"1": 5},
                comments={"1": "Reviewer comment nobody outside may read"},
                to_applicant="Reviewer comment nobody outside may read",
                confidential="Confidential note for staff",
                submitted_at=utcnow(),
            )
        )
    outputs = [
        _released(
            db, shown, OutputKind.WEIGHTS, "Reasoner 1B weights", "Apache-2.0", dt.date(2027, 3, 1)
        ),
        _released(
            db, shown, OutputKind.PAPER, "Reasoning at scale", "CC-BY-4.0", dt.date(2027, 4, 2)
        ),
        _released(
            db,
            hidden["declined"],
            OutputKind.CODE,
            "Code of a declined proposal",
            "MIT",
            dt.date(2027, 4, 3),
        ),
        _released(
            db,
            hidden["suspended institution"],
            OutputKind.DATASET,
            "Dataset of a suspended institution",
            "CC0-1.0",
            dt.date(2027, 4, 4),
        ),
    ]
    make_call(db, title="Draft call nobody may see", state=CallState.DRAFT)
    make_call(db, title="Closed call of last year", state=CallState.CLOSED)
    make_call(
        db,
        title="Call whose deadline passed",
        opens_at=utcnow() - dt.timedelta(days=60),
        closes_at=utcnow() - dt.timedelta(days=1),
    )
    make_call(
        db,
        title="Spring call with a deadline",
        opens_at=utcnow() - dt.timedelta(days=10),
        closes_at=utcnow() + dt.timedelta(days=30),
    )
    db.flush()
    return World(
        partner=partner,
        other_partner=other,
        applied=states[InstitutionState.APPLIED],
        approved=states[InstitutionState.APPROVED],
        suspended=states[InstitutionState.SUSPENDED],
        declined=states[InstitutionState.DECLINED],
        withdrawn=states[InstitutionState.WITHDRAWN],
        consenting_pi=consenting,
        private_pi=private,
        member=member,
        reviewer=reviewer,
        shown=shown,
        unnamed=unnamed,
        hidden=hidden,
        outputs=outputs,
    )


@pytest.fixture
def world(db: Session) -> World:
    return make_world(db)
