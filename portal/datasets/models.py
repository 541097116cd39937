"""The lab's datasets, who stewards them, the access people ask for, the access they hold, and the
datasets a proposal plans to use.

A dataset's access tier says what it takes to use it: *open* (listed, no request), *registered*
(a researcher at a partner accepts its terms and has access), *controlled* (a steward of the
dataset approves a request, and access starts once the data-use agreement is fully signed).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.agreements.models import Agreement, AgreementTemplate
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


class AccessTier(LabelledEnum):
    #: Listed publicly; anyone may download it, no request.
    OPEN = "open", "Open", Tone.SUCCESS
    #: Any logged-in researcher at a partner institution, after accepting its terms.
    REGISTERED = "registered", "Registered", Tone.INFO
    #: A steward of the dataset approves each request; a data-use agreement is signed.
    CONTROLLED = "controlled", "Controlled", Tone.WARNING


class DatasetState(LabelledEnum):
    DRAFT = "draft", None, Tone.NEUTRAL
    PUBLISHED = "published", "In the catalog", Tone.SUCCESS
    RETIRED = "retired", None, Tone.NEUTRAL


class Dataset(TimestampMixin, Base):
    """A dataset in the lab's catalog."""

    __tablename__ = "datasets"
    __table_args__ = (
        CheckConstraint(
            "tier != 'controlled' OR dua_template_id IS NOT NULL", name="controlled_has_dua"
        ),
        CheckConstraint("max_months BETWEEN 1 AND 60", name="max_months_sane"),
        CheckConstraint("size_bytes IS NULL OR size_bytes >= 0", name="size_not_negative"),
        Index("ix_datasets_state_tier", "state", "tier"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The short name in its address and in the operators' storage (``web-corpus-ml``).
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: One line for lists.
    summary: Mapped[str] = mapped_column(String(300), default="")
    #: Markdown, rendered safely.
    description: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[str] = mapped_column(String(40), default="")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    #: An SPDX licence expression (``CC-BY-4.0``, ``ODC-By-1.0``).
    licence: Mapped[str] = mapped_column(String(200))
    tier: Mapped[AccessTier] = mapped_column(enum_type(AccessTier, "dataset_access_tier"))
    #: What a researcher accepts (registered tier) or is told besides the agreement (controlled).
    terms: Mapped[str] = mapped_column(Text, default="")
    #: The data-use agreement template signed for access to a controlled dataset.
    dua_template_id: Mapped[int | None] = mapped_column(
        ForeignKey("agreement_templates.id", ondelete="RESTRICT"), index=True
    )
    #: Whether the researcher's institution co-signs the data-use agreement (its signing
    #: official, after the researcher), as some data providers require.
    institution_signs: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: The longest access one approval or acceptance gives, in months.
    max_months: Mapped[int] = mapped_column(default=12, server_default="12")
    #: Where people with access find the data (a bucket, a path); shown to them only.
    location: Mapped[str] = mapped_column(String(500), default="")
    state: Mapped[DatasetState] = mapped_column(
        enum_type(DatasetState, "dataset_state"), default=DatasetState.DRAFT
    )
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    dua_template: Mapped[AgreementTemplate | None] = relationship()
    stewards: Mapped[list[DatasetSteward]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", order_by="DatasetSteward.id"
    )

    @property
    def needs_request(self) -> bool:
        return self.tier == AccessTier.CONTROLLED

    def __repr__(self) -> str:
        return f"<Dataset {self.slug} {self.tier.value} {self.state.value}>"


class DatasetSteward(Base):
    """A person who decides on access to one dataset (they hold the data steward role)."""

    __tablename__ = "dataset_stewards"
    __table_args__ = (UniqueConstraint("dataset_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    added_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    added_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    dataset: Mapped[Dataset] = relationship(back_populates="stewards")
    user: Mapped[User] = relationship(foreign_keys=[user_id])


# --- access requests ---------------------------------------------------------------------------


class RequestState(LabelledEnum):
    SUBMITTED = "submitted", "Waiting for a steward", Tone.PENDING
    CHANGES_REQUESTED = "changes_requested", "Changes requested", Tone.WARNING
    APPROVED = "approved", None, Tone.SUCCESS
    DECLINED = "declined", None, Tone.DANGER
    WITHDRAWN = "withdrawn", None, Tone.NEUTRAL


#: Requests still waiting on someone.
OPEN_REQUESTS = (RequestState.SUBMITTED, RequestState.CHANGES_REQUESTED)


class AccessRequest(TimestampMixin, Base):
    """A researcher's request for access to a controlled dataset (for a project or on their
    own), or for more time on access they hold (a renewal)."""

    __tablename__ = "dataset_requests"
    __table_args__ = (
        # One open request per person and dataset: a second waits for the first.
        partial_unique_index(
            "uq_dataset_requests_open",
            "dataset_id",
            "user_id",
            where="state IN ('submitted', 'changes_requested')",
        ),
        CheckConstraint("(state = 'approved') = (ends_on IS NOT NULL)", name="approved_until"),
        CheckConstraint("NOT is_renewal OR grant_id IS NOT NULL", name="renewal_of_grant"),
        CheckConstraint(
            "(state IN ('approved', 'declined')) = (decided_at IS NOT NULL)", name="decided"
        ),
        Index("ix_dataset_requests_state", "state", "created_at"),
        # The requests list's order (newest or oldest first): its first page read in order.
        Index("ix_dataset_requests_created_at", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="RESTRICT"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    #: The requester's institution when they asked (whose partnership the access depends on).
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="RESTRICT"), index=True
    )
    #: The project the data is for (None: the researcher's own work).
    proposal_id: Mapped[int | None] = mapped_column(
        ForeignKey("proposals.id", ondelete="RESTRICT"), index=True
    )
    intended_use: Mapped[str] = mapped_column(Text)
    #: Whether it asks for more time on access the person holds (``grant``) rather than new access.
    is_renewal: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: The access it renews, or the access its approval made.
    grant_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_grants.id", ondelete="RESTRICT"), index=True
    )
    #: Approved with the project, on the steward's consent (not asked for one by one).
    preapproved: Mapped[bool] = mapped_column(default=False, server_default=false())
    state: Mapped[RequestState] = mapped_column(
        enum_type(RequestState, "dataset_request_state"), default=RequestState.SUBMITTED
    )
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[dt.datetime | None]
    #: The steward's note: approval's conditions, the changes asked for, the reason to decline.
    decision_note: Mapped[str | None] = mapped_column(String(1000))
    #: The last day of access an approval gives.
    ends_on: Mapped[dt.date | None] = mapped_column(Date)

    dataset: Mapped[Dataset] = relationship()
    user: Mapped[User] = relationship(foreign_keys=[user_id])
    institution: Mapped[Institution] = relationship()
    proposal: Mapped[Proposal | None] = relationship()
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])
    grant: Mapped[Grant | None] = relationship(foreign_keys=[grant_id])

    @property
    def kind_label(self) -> str:
        return "Renewal" if self.is_renewal else "Access"

    def __repr__(self) -> str:
        return f"<AccessRequest {self.id} {self.state.value}>"


# --- grants: access a person holds --------------------------------------------------------------


class GrantState(LabelledEnum):
    PENDING = "pending", "Waiting on the data-use agreement", Tone.PENDING
    ACTIVE = "active", None, Tone.SUCCESS
    SUSPENDED = "suspended", None, Tone.WARNING
    EXPIRED = "expired", None, Tone.NEUTRAL
    REVOKED = "revoked", None, Tone.DANGER
    ENDED = "ended", None, Tone.NEUTRAL


#: Grants that may still give access (now or once their agreement is signed or they resume).
LIVE_GRANTS = (GrantState.PENDING, GrantState.ACTIVE, GrantState.SUSPENDED)


class Grant(TimestampMixin, Base):
    """One person's access to one dataset until a date: from an approved request (controlled, once
    its data-use agreement is signed; ``AccessRequest.grant_id`` names it) or from accepting the
    terms (registered)."""

    __tablename__ = "dataset_grants"
    __table_args__ = (
        # One live grant per person and dataset: a renewal extends it, never doubles it.
        partial_unique_index(
            "uq_dataset_grants_live",
            "dataset_id",
            "user_id",
            where="state IN ('pending', 'active', 'suspended')",
        ),
        CheckConstraint("ends_on >= starts_on", name="period"),
        CheckConstraint(
            "state NOT IN ('revoked', 'ended') OR ended_reason IS NOT NULL", name="ended_why"
        ),
        Index("ix_dataset_grants_dataset_state", "dataset_id", "state"),
        Index("ix_dataset_grants_state_ends", "state", "ends_on"),
        # The access list's order (ending first): its first page read in order.
        Index("ix_dataset_grants_ends_on", "ends_on", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="RESTRICT"), index=True
    )
    proposal_id: Mapped[int | None] = mapped_column(
        ForeignKey("proposals.id", ondelete="RESTRICT"), index=True
    )
    #: The data-use agreement access depends on (controlled tier).
    agreement_id: Mapped[int | None] = mapped_column(
        ForeignKey("agreements.id", ondelete="RESTRICT"), index=True
    )
    #: When the researcher accepted the dataset's terms (registered tier).
    terms_accepted_at: Mapped[dt.datetime | None]
    starts_on: Mapped[dt.date] = mapped_column(Date)
    ends_on: Mapped[dt.date] = mapped_column(Date)
    state: Mapped[GrantState] = mapped_column(
        enum_type(GrantState, "dataset_grant_state"), default=GrantState.PENDING
    )
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: Suspended because its institution was, not for a reason of its own: reinstating the
    #: institution resumes only these.
    suspended_with_institution: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: Why it was revoked or ended (told to the person).
    ended_reason: Mapped[str | None] = mapped_column(String(1000))
    ended_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    dataset: Mapped[Dataset] = relationship()
    user: Mapped[User] = relationship(foreign_keys=[user_id])
    institution: Mapped[Institution] = relationship()
    proposal: Mapped[Proposal | None] = relationship()
    agreement: Mapped[Agreement | None] = relationship()
    ended_by: Mapped[User | None] = relationship(foreign_keys=[ended_by_id])
    #: The request that made it, and the renewals asked for since.
    requests: Mapped[list[AccessRequest]] = relationship(
        foreign_keys="AccessRequest.grant_id", viewonly=True, order_by="AccessRequest.id"
    )

    @property
    def origin_request(self) -> AccessRequest | None:
        return next((r for r in self.requests if not r.is_renewal), None)

    def days_left(self, today: dt.date) -> int:
        return (self.ends_on - today).days

    def __repr__(self) -> str:
        return f"<Grant {self.id} {self.state.value}>"


# --- datasets a proposal plans to use -----------------------------------------------------------


class ConsentState(LabelledEnum):
    #: A controlled dataset: its stewards are asked whether the project may have it.
    ASKED = "asked", "Waiting for the steward", Tone.PENDING
    CONSENTED = "consented", "Pre-approved", Tone.SUCCESS
    REFUSED = "refused", "Not pre-approved", Tone.DANGER
    #: An open or registered dataset: nobody needs to agree.
    NOT_NEEDED = "not_needed", "No approval needed", Tone.NEUTRAL


class ProposalDataset(Base):
    """A catalog dataset a proposal plans to use; for a controlled one, its steward's consent that
    the project's approval also approves access for its principal investigator."""

    __tablename__ = "proposal_datasets"
    __table_args__ = (
        UniqueConstraint("proposal_id", "dataset_id"),
        CheckConstraint(
            "(state IN ('consented', 'refused')) = (decided_at IS NOT NULL)", name="decided"
        ),
        Index("ix_proposal_datasets_dataset_state", "dataset_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"))
    #: What the project will do with it (shown to the steward).
    purpose: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[ConsentState] = mapped_column(
        enum_type(ConsentState, "proposal_dataset_state"), default=ConsentState.ASKED
    )
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    added_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: When the stewards were asked (the proposal was submitted); None while it is a draft.
    asked_at: Mapped[dt.datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[dt.datetime | None]
    decision_note: Mapped[str | None] = mapped_column(String(1000))

    proposal: Mapped[Proposal] = relationship()
    dataset: Mapped[Dataset] = relationship()
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])

    def __repr__(self) -> str:
        return f"<ProposalDataset {self.proposal_id}/{self.dataset_id} {self.state.value}>"
