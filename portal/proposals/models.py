"""GPU resources, calls for proposals, and research proposals with their team, requests, planned
open outputs, submitted versions, invitations and PDF attachments."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.auth.models import User
from portal.core.models import (
    Base,
    LabelledEnum,
    TimestampMixin,
    Tone,
    enum_type,
    partial_unique_index,
    utcnow,
)
from portal.institutions.models import Institution


class Resource(TimestampMixin, Base):
    """A GPU pool: one GPU class on one cluster, with the GPU-hours it offers per period."""

    __tablename__ = "resources"
    __table_args__ = (
        CheckConstraint("capacity_hours > 0", name="capacity_positive"),
        CheckConstraint("period_months BETWEEN 1 AND 60", name="period_sane"),
        # The backstop of the guarded UPDATE in portal/allocations/budget.py.
        CheckConstraint(
            "allocated_hours >= 0 AND allocated_hours <= capacity_hours", name="within_capacity"
        ),
        UniqueConstraint("cluster", "gpu_class"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster: Mapped[str] = mapped_column(String(80))
    #: H100, H200, B200 …
    gpu_class: Mapped[str] = mapped_column(String(40))
    #: GPU-hours the pool offers per period (whole hours).
    capacity_hours: Mapped[int]
    #: GPU-hours held by allocations that have not expired (portal/allocations/budget.py).
    allocated_hours: Mapped[int] = mapped_column(default=0, server_default="0")
    period_months: Mapped[int] = mapped_column(default=12)
    description: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(default=True)

    @property
    def name(self) -> str:
        return f"{self.gpu_class} on {self.cluster}"


class CallState(LabelledEnum):
    DRAFT = "draft", None, Tone.NEUTRAL
    OPEN = "open", None, Tone.SUCCESS
    CLOSED = "closed", None, Tone.PENDING
    ARCHIVED = "archived", None, Tone.NEUTRAL


class Call(TimestampMixin, Base):
    """A round of applications: its text, dates, the resources it offers and its review rubric."""

    __tablename__ = "calls"
    __table_args__ = (
        CheckConstraint(
            "closes_at IS NULL OR opens_at IS NULL OR closes_at > opens_at", name="dates"
        ),
        CheckConstraint("reviews_wanted BETWEEN 1 AND 10", name="reviews_wanted"),
        CheckConstraint("page_limit BETWEEN 1 AND 200", name="page_limit"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    #: Markdown (rendered without HTML).
    description: Mapped[str] = mapped_column(Text, default="")
    eligibility: Mapped[str] = mapped_column(Text, default="")
    opens_at: Mapped[dt.datetime | None]
    #: None: a rolling call, open until closed by hand.
    closes_at: Mapped[dt.datetime | None]
    state: Mapped[CallState] = mapped_column(
        enum_type(CallState, "call_state"), default=CallState.DRAFT
    )
    reviews_wanted: Mapped[int] = mapped_column(default=2)
    single_blind: Mapped[bool] = mapped_column(default=True)
    endorsement_required: Mapped[bool] = mapped_column(default=True)
    #: Most pages an attached PDF may have.
    page_limit: Mapped[int] = mapped_column(default=10)
    #: A reviewer sees the others' reviews of a proposal only after submitting their own.
    reviews_hidden_until_own: Mapped[bool] = mapped_column(default=True, server_default=true())
    #: Decisions are taken by the call's allocation committee (``CommitteeMember``), not staff.
    committee_decides: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: When reviews are due, and when the panel decides (shown to applicants).
    reviews_due_at: Mapped[dt.datetime | None]
    panel_at: Mapped[dt.datetime | None]

    resources: Mapped[list[CallResource]] = relationship(
        back_populates="call", cascade="all, delete-orphan", order_by="CallResource.id"
    )
    criteria: Mapped[list[RubricCriterion]] = relationship(
        back_populates="call", cascade="all, delete-orphan", order_by="RubricCriterion.position"
    )
    committee: Mapped[list[CommitteeMember]] = relationship(
        back_populates="call", cascade="all, delete-orphan", order_by="CommitteeMember.id"
    )

    @property
    def is_rolling(self) -> bool:
        return self.closes_at is None

    def accepts_submissions(self, now: dt.datetime | None = None) -> bool:
        """Open, and (for a call with a deadline) before it."""
        now = now or utcnow()
        return (
            self.state == CallState.OPEN
            and (self.opens_at is None or self.opens_at <= now)
            and (self.closes_at is None or now < self.closes_at)
        )


class CallResource(Base):
    """A resource a call offers, with its budget and the most one proposal may ask for."""

    __tablename__ = "call_resources"
    __table_args__ = (
        UniqueConstraint("call_id", "resource_id"),
        CheckConstraint("budget_hours > 0", name="budget_positive"),
        CheckConstraint("max_request_hours > 0 AND max_request_hours <= budget_hours", name="cap"),
        # The backstop of the guarded UPDATE in portal/allocations/budget.py.
        CheckConstraint(
            "allocated_hours >= 0 AND allocated_hours <= budget_hours", name="within_budget"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id", ondelete="RESTRICT"))
    budget_hours: Mapped[int]
    max_request_hours: Mapped[int]
    #: GPU-hours of the budget allocated to projects (portal/allocations/budget.py).
    allocated_hours: Mapped[int] = mapped_column(default=0, server_default="0")

    call: Mapped[Call] = relationship(back_populates="resources")
    resource: Mapped[Resource] = relationship()


class CommitteeMember(Base):
    """A reviewer on a call's allocation committee, which decides that call's proposals."""

    __tablename__ = "committee_members"
    __table_args__ = (UniqueConstraint("call_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)

    call: Mapped[Call] = relationship(back_populates="committee")
    user: Mapped[User] = relationship()


class RubricCriterion(Base):
    """One criterion reviewers score, with its weight and the top of its scale (1 … scale_max)."""

    __tablename__ = "rubric_criteria"
    __table_args__ = (
        CheckConstraint("weight BETWEEN 1 AND 100", name="weight"),
        CheckConstraint("scale_max BETWEEN 2 AND 10", name="scale"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(default=0)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    weight: Mapped[int] = mapped_column(default=1)
    scale_max: Mapped[int] = mapped_column(default=5)

    call: Mapped[Call] = relationship(back_populates="criteria")


class ProposalState(LabelledEnum):
    DRAFT = "draft", None, Tone.NEUTRAL
    #: Submitted to a call that wants the institution's endorsement first.
    AWAITING_ENDORSEMENT = "awaiting_endorsement", "Awaiting endorsement", Tone.PENDING
    #: Sent back by the signing official, with a reason; editable again.
    RETURNED = "returned", None, Tone.WARNING
    #: Complete, endorsed where needed; waits for review.
    SUBMITTED = "submitted", None, Tone.INFO
    WITHDRAWN = "withdrawn", None, Tone.NEUTRAL
    #: Reviewers are assigned; decided after their reviews.
    IN_REVIEW = "in_review", "In review", Tone.PENDING
    #: Back to the team with the reviewers' reasons; its next version goes to the same reviewers.
    REVISE = "revise", "Revise and resubmit", Tone.WARNING
    DECLINED = "declined", None, Tone.NEUTRAL
    #: Approved, with awarded GPU-hours: an active project.
    ACTIVE = "active", None, Tone.SUCCESS


#: States in which the team may edit the proposal.
EDITABLE = frozenset({ProposalState.DRAFT, ProposalState.RETURNED, ProposalState.REVISE})

#: Fields of research (a controlled list, as funders use).
FIELDS = (
    "Computer vision",
    "Natural language processing",
    "Speech and audio",
    "Robotics",
    "Reinforcement learning",
    "Machine learning theory",
    "AI safety and alignment",
    "Scientific machine learning",
    "Computational biology",
    "Climate and earth science",
    "Healthcare and medicine",
    "Other",
)


class Proposal(TimestampMixin, Base):
    """A research project proposed to a call by a team at one partner institution."""

    __tablename__ = "proposals"
    __table_args__ = (
        CheckConstraint(
            "duration_months IS NULL OR duration_months BETWEEN 1 AND 60", name="duration"
        ),
        CheckConstraint("version >= 0", name="version"),
        CheckConstraint(
            "state IN ('draft', 'withdrawn') OR submitted_at IS NOT NULL",
            name="submitted_when_submitted",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="RESTRICT"), index=True)
    #: The PI's institution when the proposal was started.
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="RESTRICT"), index=True
    )
    title: Mapped[str] = mapped_column(String(300))
    abstract: Mapped[str] = mapped_column(Text, default="")
    field: Mapped[str] = mapped_column(String(80), default="")
    plan: Mapped[str] = mapped_column(Text, default="")
    #: Free text until the datasets catalog exists.
    requested_datasets: Mapped[str] = mapped_column(Text, default="")
    start_date: Mapped[dt.date | None] = mapped_column(Date)
    duration_months: Mapped[int | None]
    state: Mapped[ProposalState] = mapped_column(
        enum_type(ProposalState, "proposal_state"), default=ProposalState.DRAFT
    )
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: The number of the last submitted version (0: never submitted).
    version: Mapped[int] = mapped_column(default=0)
    submitted_at: Mapped[dt.datetime | None]
    #: The signing official's endorsement or return, and why.
    endorsed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    endorsed_at: Mapped[dt.datetime | None]
    decision_note: Mapped[str | None] = mapped_column(String(1000))
    #: The review decision (approve, revise, decline), who took it and why.
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[dt.datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(String(2000))

    call: Mapped[Call] = relationship()
    institution: Mapped[Institution] = relationship()
    team: Mapped[list[TeamMember]] = relationship(
        back_populates="proposal", cascade="all, delete-orphan", order_by="TeamMember.id"
    )
    requests: Mapped[list[ResourceRequest]] = relationship(
        back_populates="proposal", cascade="all, delete-orphan", order_by="ResourceRequest.id"
    )
    outputs: Mapped[list[PlannedOutput]] = relationship(
        back_populates="proposal", cascade="all, delete-orphan", order_by="PlannedOutput.id"
    )
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="proposal", cascade="all, delete-orphan", order_by="Attachment.id"
    )
    awards: Mapped[list[Award]] = relationship(
        back_populates="proposal", cascade="all, delete-orphan", order_by="Award.id"
    )
    versions: Mapped[list[ProposalVersion]] = relationship(
        back_populates="proposal", cascade="all, delete-orphan", order_by="ProposalVersion.number"
    )
    invitations: Mapped[list[Invitation]] = relationship(
        back_populates="proposal", cascade="all, delete-orphan", order_by="Invitation.id"
    )

    @property
    def pi(self) -> User | None:
        return next((m.user for m in self.team if m.role == TeamRole.PI), None)

    @property
    def is_editable(self) -> bool:
        return self.state in EDITABLE


class TeamRole(LabelledEnum):
    PI = "pi", "Principal investigator"
    CO_PI = "co_pi", "Co-investigator"
    MEMBER = "member", "Member"


#: Team roles that may edit the proposal.
EDITORS = frozenset({TeamRole.PI, TeamRole.CO_PI})


class TeamMember(Base):
    """A person on a proposal's team, in one role; exactly one PI."""

    __tablename__ = "team_members"
    __table_args__ = (
        UniqueConstraint("proposal_id", "user_id"),
        partial_unique_index("uq_team_members_one_pi", "proposal_id", where="role = 'pi'"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    role: Mapped[TeamRole] = mapped_column(enum_type(TeamRole, "team_role"))
    joined_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    proposal: Mapped[Proposal] = relationship(back_populates="team")
    user: Mapped[User] = relationship()


class ResourceRequest(Base):
    """GPU-hours a proposal asks for on one resource its call offers, and why."""

    __tablename__ = "resource_requests"
    __table_args__ = (
        UniqueConstraint("proposal_id", "call_resource_id"),
        CheckConstraint("hours > 0", name="hours_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="CASCADE"), index=True
    )
    call_resource_id: Mapped[int] = mapped_column(
        ForeignKey("call_resources.id", ondelete="RESTRICT")
    )
    hours: Mapped[int]
    justification: Mapped[str] = mapped_column(Text, default="")

    proposal: Mapped[Proposal] = relationship(back_populates="requests")
    call_resource: Mapped[CallResource] = relationship()


class Award(Base):
    """GPU-hours awarded to an approved proposal on one resource (at most what it asked for);
    approving the proposal turns each award into an allocation (portal/allocations)."""

    __tablename__ = "awards"
    __table_args__ = (
        UniqueConstraint("proposal_id", "call_resource_id"),
        CheckConstraint("hours > 0", name="hours_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="CASCADE"), index=True
    )
    call_resource_id: Mapped[int] = mapped_column(
        ForeignKey("call_resources.id", ondelete="RESTRICT")
    )
    hours: Mapped[int]

    proposal: Mapped[Proposal] = relationship(back_populates="awards")
    call_resource: Mapped[CallResource] = relationship()


class OutputKind(LabelledEnum):
    WEIGHTS = "weights", "Model weights"
    CODE = "code", "Code"
    DATASET = "dataset", "Dataset"
    PAPER = "paper", "Paper"


class PlannedOutput(Base):
    """An open output the project commits to release, with its intended SPDX licence."""

    __tablename__ = "planned_outputs"

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[OutputKind] = mapped_column(enum_type(OutputKind, "output_kind"))
    #: An SPDX licence expression, e.g. ``Apache-2.0`` or ``CC-BY-4.0 OR MIT``.
    license: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(500), default="")

    proposal: Mapped[Proposal] = relationship(back_populates="outputs")


class ProposalVersion(Base):
    """What was submitted, frozen: the version reviewers see, and the history of revisions."""

    __tablename__ = "proposal_versions"
    __table_args__ = (UniqueConstraint("proposal_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int]
    submitted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    submitted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: Every text field, the requests, outputs, team and attachments as they were.
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)

    proposal: Mapped[Proposal] = relationship(back_populates="versions")


class InvitationState(LabelledEnum):
    PENDING = "pending", None, Tone.PENDING
    ACCEPTED = "accepted", None, Tone.SUCCESS
    REVOKED = "revoked", None, Tone.NEUTRAL


class Invitation(TimestampMixin, Base):
    """An invitation to join a proposal's team, sent by e-mail; its link works once, until it
    expires, for a logged-in person whose verified address is the invited one."""

    __tablename__ = "invitations"
    __table_args__ = (
        CheckConstraint("role != 'pi'", name="not_pi"),
        CheckConstraint(
            "(state = 'accepted') = (accepted_by_id IS NOT NULL)", name="accepted_by_someone"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[TeamRole] = mapped_column(enum_type(TeamRole, "invitation_role"))
    #: SHA-256 of the token in the link (the link itself is only in the mail).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[dt.datetime]
    state: Mapped[InvitationState] = mapped_column(
        enum_type(InvitationState, "invitation_state"), default=InvitationState.PENDING
    )
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    accepted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[dt.datetime | None]

    proposal: Mapped[Proposal] = relationship(back_populates="invitations")
    invited_by: Mapped[User | None] = relationship(foreign_keys=[invited_by_id])


class AttachmentKind(LabelledEnum):
    DESCRIPTION = "description", "Project description"
    SUPPORT_LETTER = "support_letter", "Letter of support"
    OTHER = "other", "Other"


class Attachment(Base):
    """A PDF attached to a proposal, stored outside ``static/`` under a name the server chose."""

    __tablename__ = "attachments"
    __table_args__ = (CheckConstraint("size_bytes > 0 AND pages > 0", name="sane"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[AttachmentKind] = mapped_column(enum_type(AttachmentKind, "attachment_kind"))
    #: The file's name in the storage folder (random; never derived from the upload).
    stored_name: Mapped[str] = mapped_column(String(64), unique=True)
    #: The uploader's file name, kept only to show and to suggest when downloading.
    original_name: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int]
    pages: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    uploaded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    proposal: Mapped[Proposal] = relationship(back_populates="attachments")
