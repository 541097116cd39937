"""Institutions (universities and labs) and the affiliations of people with them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
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


class InstitutionState(LabelledEnum):
    APPLIED = "applied", None, Tone.INFO
    UNDER_REVIEW = "under_review", None, Tone.PENDING
    PARTNER = "partner", None, Tone.SUCCESS
    SUSPENDED = "suspended", None, Tone.WARNING
    WITHDRAWN = "withdrawn", None, Tone.NEUTRAL


class Institution(TimestampMixin, Base):
    __tablename__ = "institutions"
    __table_args__ = (
        CheckConstraint("length(country) = 2", name="country_iso2"),
        # A partner is a vetted organisation: it must have a ROR id.
        CheckConstraint("state != 'partner' OR ror_id IS NOT NULL", name="partner_has_ror"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300), index=True)
    short_name: Mapped[str | None] = mapped_column(String(40))
    #: Research Organization Registry id, e.g. ``https://ror.org/00f54p054``.
    ror_id: Mapped[str | None] = mapped_column(String(60), unique=True)
    #: ISO 3166-1 alpha-2 code, upper case.
    country: Mapped[str] = mapped_column(String(2))
    website: Mapped[str | None] = mapped_column(String(300))
    state: Mapped[InstitutionState] = mapped_column(
        enum_type(InstitutionState, "institution_state"), default=InstitutionState.APPLIED
    )
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    domains: Mapped[list[InstitutionDomain]] = relationship(
        back_populates="institution",
        cascade="all, delete-orphan",
        order_by="InstitutionDomain.domain",
    )
    affiliations: Mapped[list[Affiliation]] = relationship(back_populates="institution")

    @property
    def is_partner(self) -> bool:
        return self.state == InstitutionState.PARTNER

    def __repr__(self) -> str:
        return f"<Institution {self.id} {self.name!r}>"


class InstitutionDomain(Base):
    """An e-mail domain that belongs to an institution (``mit.edu``); each belongs to one only."""

    __tablename__ = "institution_domains"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="CASCADE"), index=True
    )
    #: Lower-case domain without a leading ``@``.
    domain: Mapped[str] = mapped_column(String(253), unique=True)

    institution: Mapped[Institution] = relationship(back_populates="domains")


class AffiliationState(LabelledEnum):
    REQUESTED = "requested", None, Tone.INFO
    ACTIVE = "active", None, Tone.SUCCESS
    REJECTED = "rejected", None, Tone.NEUTRAL
    ENDED = "ended", None, Tone.NEUTRAL


class AffiliationSource(LabelledEnum):
    #: Asserted by the institution's identity provider in verified claims.
    IDP_CLAIM = "idp_claim", "confirmed by your identity provider"
    #: Requested by the user and approved by the institution's signing official.
    OFFICIAL_APPROVAL = "official_approval", "decided by the signing official"
    #: Set by lab staff (demo data, migrations from other systems).
    STAFF = "staff", "recorded by lab staff"


class Affiliation(TimestampMixin, Base):
    """A person's membership of an institution, and how it was established."""

    __tablename__ = "affiliations"
    __table_args__ = (
        CheckConstraint(
            "(state = 'requested') = (decided_at IS NULL)", name="decided_when_decided"
        ),
        UniqueConstraint("user_id", "institution_id", "requested_at"),
        # At most one open (requested or active) affiliation per person and institution.
        partial_unique_index(
            "uq_affiliations_open",
            "user_id",
            "institution_id",
            where="state IN ('requested', 'active')",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[AffiliationState] = mapped_column(
        enum_type(AffiliationState, "affiliation_state"), default=AffiliationState.REQUESTED
    )
    source: Mapped[AffiliationSource] = mapped_column(
        enum_type(AffiliationSource, "affiliation_source")
    )
    #: Position at the institution as the person or the IdP states it (``faculty``, ``staff`` …).
    title: Mapped[str | None] = mapped_column(String(100))
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[dt.datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decision_note: Mapped[str | None] = mapped_column(String(1000))

    user: Mapped[User] = relationship(back_populates="affiliations", foreign_keys=[user_id])
    institution: Mapped[Institution] = relationship(back_populates="affiliations")
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])
