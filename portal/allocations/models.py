"""Allocations (GPU-hours awarded to a project on one resource for a period) and the usage the
clusters report against them, one scheduler job per record."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
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
from portal.proposals.models import Award, Call, CallResource, Proposal, Resource

#: GPU-seconds in a GPU-hour: usage is kept in GPU-seconds (exact integers), shown in hours.
SECONDS_PER_HOUR = 3600


class AllocationState(LabelledEnum):
    PENDING = "pending", "Waiting on the agreement", Tone.PENDING
    ACTIVE = "active", None, Tone.SUCCESS
    EXHAUSTED = "exhausted", "Used up", Tone.WARNING
    EXPIRED = "expired", None, Tone.NEUTRAL
    SUSPENDED = "suspended", None, Tone.WARNING


#: The states in which an allocation holds capacity on its resource (an expired one gave it back).
HOLDING = (
    AllocationState.PENDING,
    AllocationState.ACTIVE,
    AllocationState.EXHAUSTED,
    AllocationState.SUSPENDED,
)


class Allocation(TimestampMixin, Base):
    """GPU-hours on one resource for a period, from one award of an approved proposal."""

    __tablename__ = "allocations"
    __table_args__ = (
        CheckConstraint("hours > 0", name="hours_positive"),
        CheckConstraint("used_gpu_seconds >= 0", name="used_not_negative"),
        CheckConstraint("ends_on > starts_on", name="period"),
        UniqueConstraint("cluster", "account", name="uq_allocations_cluster_account"),
        Index("ix_allocations_resource_state", "resource_id", "state"),
        # One allocation per award decision; a renewal continues its predecessor's award.
        partial_unique_index("uq_allocations_award", "award_id", where="renewed_from_id IS NULL"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: One allocation per award (a decision is allocated once), and its renewals after it.
    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id", ondelete="RESTRICT"))
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="RESTRICT"), index=True
    )
    call_resource_id: Mapped[int] = mapped_column(
        ForeignKey("call_resources.id", ondelete="RESTRICT"), index=True
    )
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id", ondelete="RESTRICT"))
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="RESTRICT"), index=True
    )
    #: GPU-hours allocated.
    hours: Mapped[int]
    #: GPU-seconds charged by the clusters' usage records.
    used_gpu_seconds: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    starts_on: Mapped[dt.date] = mapped_column(Date)
    ends_on: Mapped[dt.date] = mapped_column(Date)
    #: The scheduler account its jobs run under, on the resource's cluster (``cluster`` copied
    #: here so that usage maps (cluster, account) to one allocation with one index).
    cluster: Mapped[str] = mapped_column(String(80))
    account: Mapped[str] = mapped_column(String(64))
    state: Mapped[AllocationState] = mapped_column(
        enum_type(AllocationState, "allocation_state"), default=AllocationState.PENDING
    )
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: Suspended because its institution was (suspended or withdrawn), not for a reason of its
    #: own: reinstating the institution resumes only these.
    suspended_with_institution: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: The allocation this one renews (a new period on the same call's budget); renewed once.
    renewed_from_id: Mapped[int | None] = mapped_column(
        ForeignKey("allocations.id", ondelete="RESTRICT"), unique=True
    )

    award: Mapped[Award] = relationship()
    proposal: Mapped[Proposal] = relationship()
    call_resource: Mapped[CallResource] = relationship()
    resource: Mapped[Resource] = relationship()
    institution: Mapped[Institution] = relationship()

    @property
    def used_hours(self) -> float:
        return self.used_gpu_seconds / SECONDS_PER_HOUR

    @property
    def left_hours(self) -> float:
        return max(0.0, self.hours - self.used_hours)

    @property
    def used_fraction(self) -> float:
        return self.used_hours / self.hours if self.hours else 0.0

    def __repr__(self) -> str:
        return f"<Allocation {self.id} {self.account}@{self.cluster} {self.state.value}>"


class UsageRecord(Base):
    """One scheduler job charged to an allocation: GPUs times elapsed seconds. A job is identified by
    (cluster, job id): reported again, it is updated (a longer elapsed time), never counted twice."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("cluster", "job_id", name="uq_usage_records_job"),
        CheckConstraint("gpus >= 0 AND elapsed_seconds >= 0", name="not_negative"),
        Index("ix_usage_records_allocation_end", "allocation_id", "ended_at"),
    )

    #: Millions of rows: a 64-bit key (SQLite's INTEGER PRIMARY KEY is 64-bit already).
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id", ondelete="CASCADE"))
    cluster: Mapped[str] = mapped_column(String(80))
    job_id: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int]
    elapsed_seconds: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    #: Slurm's job state (COMPLETED, FAILED, TIMEOUT, CANCELLED …).
    job_state: Mapped[str] = mapped_column(String(40), default="")
    imported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    allocation: Mapped[Allocation] = relationship()

    @property
    def gpu_seconds(self) -> int:
        return self.gpus * self.elapsed_seconds


# --- follow-up requests: more hours, more time, a renewal, hours given back ---------------------


class FollowUpKind(LabelledEnum):
    #: More GPU-hours on the allocation, out of the call's budget on its resource.
    SUPPLEMENT = "supplement", "More hours"
    #: A later end date (at most ``MAX_EXTENSION_MONTHS`` more).
    EXTENSION = "extension", "More time"
    #: A new allocation for a new period, on the same call's budget, linked to this one.
    RENEWAL = "renewal", "Renewal"
    #: Unused hours given back to the pool: needs nobody's decision.
    RETURN = "return", "Hours given back"


class FollowUpState(LabelledEnum):
    SUBMITTED = "submitted", "Waiting for a decision", Tone.PENDING
    APPROVED = "approved", None, Tone.SUCCESS
    DECLINED = "declined", None, Tone.NEUTRAL
    WITHDRAWN = "withdrawn", None, Tone.NEUTRAL


#: The longest extension one request may ask for, in months past the present end date.
MAX_EXTENSION_MONTHS = 12


class FollowUpRequest(TimestampMixin, Base):
    """The PI's (or a co-PI's) request about one allocation: more hours, more time, a renewal, or
    hours given back. What it asks for depends on its kind, and the database says so."""

    __tablename__ = "allocation_requests"
    __table_args__ = (
        CheckConstraint("hours IS NULL OR hours > 0", name="hours_positive"),
        CheckConstraint("(hours IS NULL) = (kind = 'extension')", name="hours_by_kind"),
        CheckConstraint("(ends_on IS NOT NULL) = (kind = 'extension')", name="ends_on_by_kind"),
        CheckConstraint("(months IS NOT NULL) = (kind = 'renewal')", name="months_by_kind"),
        CheckConstraint("months IS NULL OR months BETWEEN 1 AND 60", name="months_sane"),
        CheckConstraint(
            "(state IN ('approved', 'declined')) = (decided_at IS NOT NULL)", name="decided"
        ),
        CheckConstraint(
            "renewal_id IS NULL OR (kind = 'renewal' AND state = 'approved')", name="renewal"
        ),
        # One open request of each kind per allocation: a second one waits for the first.
        partial_unique_index(
            "uq_allocation_requests_open", "allocation_id", "kind", where="state = 'submitted'"
        ),
        Index("ix_allocation_requests_state", "state", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    allocation_id: Mapped[int] = mapped_column(
        ForeignKey("allocations.id", ondelete="RESTRICT"), index=True
    )
    kind: Mapped[FollowUpKind] = mapped_column(enum_type(FollowUpKind, "allocation_request_kind"))
    state: Mapped[FollowUpState] = mapped_column(
        enum_type(FollowUpState, "allocation_request_state"), default=FollowUpState.SUBMITTED
    )
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: GPU-hours: more (supplement), of the new period (renewal), given back (return).
    hours: Mapped[int | None]
    #: The new end date an extension asks for.
    ends_on: Mapped[dt.date | None] = mapped_column(Date)
    #: The length of a renewal's new period.
    months: Mapped[int | None]
    justification: Mapped[str] = mapped_column(Text, default="")
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[dt.datetime | None]
    #: The decider's note (approval) or reason (decline).
    decision_note: Mapped[str | None] = mapped_column(String(1000))
    #: The allocation an approved renewal made.
    renewal_id: Mapped[int | None] = mapped_column(
        ForeignKey("allocations.id", ondelete="SET NULL")
    )

    allocation: Mapped[Allocation] = relationship(foreign_keys=[allocation_id])
    renewal: Mapped[Allocation | None] = relationship(foreign_keys=[renewal_id])
    requested_by: Mapped[User | None] = relationship(foreign_keys=[requested_by_id])
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])

    @property
    def hours_asked(self) -> int:
        """The GPU-hours a decider commits by approving (what an allocation reviewer's ceiling
        is compared with): none for an extension."""
        return self.hours or 0

    @property
    def summary(self) -> str:
        """What it asks for, in a few words."""
        if self.kind == FollowUpKind.EXTENSION and self.ends_on is not None:
            return f"Until {self.ends_on.strftime('%d %B %Y')}"
        if self.kind == FollowUpKind.RENEWAL:
            return f"{self.hours_asked:,} GPU-hours over {self.months} months"
        if self.kind == FollowUpKind.RETURN:
            return f"{self.hours_asked:,} GPU-hours given back"
        return f"{self.hours_asked:,} GPU-hours more"

    def __repr__(self) -> str:
        return f"<FollowUpRequest {self.id} {self.kind.value} {self.state.value}>"


class AllocationReviewer(TimestampMixin, Base):
    """A reviewer whom program staff let decide follow-up requests on one resource, or on the
    allocations of one call, each request up to a ceiling in GPU-hours (none: any size)."""

    __tablename__ = "allocation_reviewers"
    __table_args__ = (
        CheckConstraint("(resource_id IS NULL) <> (call_id IS NULL)", name="one_scope"),
        CheckConstraint("ceiling_hours IS NULL OR ceiling_hours > 0", name="ceiling_positive"),
        UniqueConstraint("user_id", "resource_id"),
        UniqueConstraint("user_id", "call_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    resource_id: Mapped[int | None] = mapped_column(
        ForeignKey("resources.id", ondelete="CASCADE"), index=True
    )
    call_id: Mapped[int | None] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), index=True
    )
    #: The largest request (in GPU-hours) this reviewer decides; None: any.
    ceiling_hours: Mapped[int | None]
    assigned_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    resource: Mapped[Resource | None] = relationship()
    call: Mapped[Call | None] = relationship()

    @property
    def scope(self) -> str:
        """What this reviewer decides on: "H100 on cluster-1" or "call: Open models 2027"."""
        if self.resource is not None:
            return self.resource.name
        return f"Call: {self.call.title}" if self.call is not None else "—"

    def covers(self, allocation: Allocation, hours: int) -> bool:
        """Whether this assignment lets its reviewer decide ``hours`` on ``allocation``."""
        in_scope = (
            self.resource_id == allocation.resource_id
            or self.call_id == allocation.call_resource.call_id
        )
        return in_scope and (self.ceiling_hours is None or hours <= self.ceiling_hours)
