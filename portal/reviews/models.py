"""The reviewer pool, declared conflicts of interest and their waivers, assignments of reviewers to
proposals, and the reviews themselves."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, String, Text, UniqueConstraint
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
from portal.proposals.models import Proposal

#: The controlled list of expertise keywords (reviewers may add free ones too).
EXPERTISE = (
    "large language models",
    "computer vision",
    "speech",
    "robotics",
    "reinforcement learning",
    "optimisation",
    "evaluation and benchmarks",
    "safety and alignment",
    "data curation",
    "multilingual NLP",
    "scientific ML",
    "biology",
    "climate",
    "health",
    "HPC and systems",
)


class ReviewerProfile(TimestampMixin, Base):
    """What a reviewer knows and how much they take on."""

    __tablename__ = "reviewer_profiles"
    __table_args__ = (CheckConstraint("load_limit BETWEEN 1 AND 50", name="load_limit"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    #: Keywords, lower case: from EXPERTISE and the reviewer's own.
    expertise: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Most proposals per call the reviewer reviews.
    load_limit: Mapped[int] = mapped_column(default=5)

    user: Mapped[User] = relationship()


class DeclaredConflict(Base):
    """A person or an institution a reviewer must not review, as they declared it."""

    __tablename__ = "declared_conflicts"
    __table_args__ = (
        CheckConstraint(
            "(person_id IS NULL) != (institution_id IS NULL)", name="person_or_institution"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    institution_id: Mapped[int | None] = mapped_column(
        ForeignKey("institutions.id", ondelete="CASCADE")
    )
    reason: Mapped[str] = mapped_column(String(500), default="")
    declared_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    person: Mapped[User | None] = relationship(foreign_keys=[person_id])
    institution: Mapped[Institution | None] = relationship()


class ConflictWaiver(Base):
    """A program officer lets a reviewer review a proposal despite a conflict, with a reason."""

    __tablename__ = "conflict_waivers"
    __table_args__ = (UniqueConstraint("proposal_id", "reviewer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="CASCADE"), index=True
    )
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(1000))
    waived_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    waived_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AssignmentState(LabelledEnum):
    #: Asked; waits for the reviewer to accept or decline.
    INVITED = "invited", None, Tone.PENDING
    ACCEPTED = "accepted", None, Tone.INFO
    DECLINED = "declined", None, Tone.NEUTRAL
    #: The reviewer declared a conflict, which withdrew the assignment.
    CONFLICT = "conflict", "Withdrawn (conflict)", Tone.WARNING
    #: Staff took the assignment back.
    REMOVED = "removed", None, Tone.NEUTRAL


#: Assignments that count: a reviewer holds at most one per proposal.
OPEN_ASSIGNMENTS = (AssignmentState.INVITED, AssignmentState.ACCEPTED)


class Assignment(TimestampMixin, Base):
    """A reviewer asked to review one proposal, by a date."""

    __tablename__ = "assignments"
    __table_args__ = (
        partial_unique_index(
            "uq_assignments_open",
            "proposal_id",
            "reviewer_id",
            where="state IN ('invited', 'accepted')",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="CASCADE"), index=True
    )
    reviewer_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    state: Mapped[AssignmentState] = mapped_column(
        enum_type(AssignmentState, "assignment_state"), default=AssignmentState.INVITED
    )
    due_at: Mapped[dt.datetime]
    assigned_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[dt.datetime | None]
    reason: Mapped[str | None] = mapped_column(String(1000))

    proposal: Mapped[Proposal] = relationship()
    reviewer: Mapped[User] = relationship(foreign_keys=[reviewer_id])
    reviews: Mapped[list[Review]] = relationship(
        back_populates="assignment", cascade="all, delete-orphan", order_by="Review.version"
    )


class ReviewState(LabelledEnum):
    DRAFT = "draft", None, Tone.NEUTRAL
    SUBMITTED = "submitted", None, Tone.SUCCESS


class Review(TimestampMixin, Base):
    """A reviewer's scores and comments on one version of a proposal."""

    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("assignment_id", "version"),
        CheckConstraint("(state = 'submitted') = (submitted_at IS NOT NULL)", name="submitted"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(
        ForeignKey("assignments.id", ondelete="CASCADE"), index=True
    )
    #: The proposal version reviewed (a revised proposal is reviewed again).
    version: Mapped[int]
    state: Mapped[ReviewState] = mapped_column(
        enum_type(ReviewState, "review_state"), default=ReviewState.DRAFT
    )
    #: Criterion id (as text) → score (1 … the criterion's scale).
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Criterion id (as text) → comment.
    comments: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Shown to the applicants (without the reviewer's name in single-blind calls).
    to_applicant: Mapped[str] = mapped_column(Text, default="")
    #: Only for program staff.
    confidential: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[dt.datetime | None]

    assignment: Mapped[Assignment] = relationship(back_populates="reviews")
