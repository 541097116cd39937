"""Users, their login identities (keyed by issuer and subject, never by e-mail) and role grants."""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.core.models import Base, TimestampMixin, enum_type

if TYPE_CHECKING:
    from portal.institutions.models import Affiliation, Institution


class Role(enum.StrEnum):
    RESEARCHER = "researcher"
    SIGNING_OFFICIAL = "signing_official"
    REVIEWER = "reviewer"
    DATA_STEWARD = "data_steward"
    PROGRAM_OFFICER = "program_officer"
    ADMIN = "admin"

    @property
    def label(self) -> str:
        return ROLE_LABELS[self]


ROLE_LABELS = {
    Role.RESEARCHER: "Researcher",
    Role.SIGNING_OFFICIAL: "Signing official",
    Role.REVIEWER: "Reviewer",
    Role.DATA_STEWARD: "Data steward",
    Role.PROGRAM_OFFICER: "Program officer",
    Role.ADMIN: "Administrator",
}

#: Roles held on behalf of one institution; the others are held lab-wide.
INSTITUTION_ROLES = frozenset({Role.RESEARCHER, Role.SIGNING_OFFICIAL})


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    #: Contact address. Whether the IdP verified it is kept beside it; an unverified address is
    #: never used to link accounts or to derive an affiliation.
    email: Mapped[str | None] = mapped_column(String(320))
    email_verified: Mapped[bool] = mapped_column(default=False)
    #: Admins can disable a user; a disabled user cannot log in and loses every session.
    is_disabled: Mapped[bool] = mapped_column(default=False)
    last_login_at: Mapped[dt.datetime | None]

    identities: Mapped[list[Identity]] = relationship(
        back_populates="user", cascade="all, delete-orphan", order_by="Identity.id"
    )
    role_grants: Mapped[list[RoleGrant]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        foreign_keys="RoleGrant.user_id",
        order_by="RoleGrant.id",
    )
    affiliations: Mapped[list[Affiliation]] = relationship(
        back_populates="user", foreign_keys="Affiliation.user_id", order_by="Affiliation.id"
    )

    # Flask-Login protocol.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return not self.is_disabled

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)

    def has_role(self, role: Role, institution: Institution | None = None) -> bool:
        """Whether the user holds ``role`` (for ``institution``, when given)."""
        return any(
            g.role == role and (institution is None or g.institution_id == institution.id)
            for g in self.role_grants
        )

    @property
    def roles(self) -> set[Role]:
        return {g.role for g in self.role_grants}

    def institution_ids_for(self, role: Role) -> set[int]:
        return {g.institution_id for g in self.role_grants if g.role == role and g.institution_id}

    def __repr__(self) -> str:
        return f"<User {self.id} {self.display_name!r}>"


class Identity(TimestampMixin, Base):
    """One way a user logs in: the subject an identity provider (issuer) vouches for."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    #: For a federation proxy (one issuer, many campuses), the campus IdP's entity id.
    upstream_idp: Mapped[str | None] = mapped_column(String(500))
    email: Mapped[str | None] = mapped_column(String(320))
    email_verified: Mapped[bool] = mapped_column(default=False)
    #: The last ID-token claims seen, for support and for affiliation decisions.
    claims: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    last_used_at: Mapped[dt.datetime | None]

    user: Mapped[User] = relationship(back_populates="identities")


class RoleGrant(TimestampMixin, Base):
    """A role held by a user, lab-wide or on behalf of one institution."""

    __tablename__ = "role_grants"
    __table_args__ = (
        UniqueConstraint("user_id", "role", "institution_id"),
        CheckConstraint(
            "(role IN ('researcher', 'signing_official')) = (institution_id IS NOT NULL)",
            name="scope",
        ),
        # NULLs are distinct in a unique constraint, so lab-wide grants need their own index.
        Index(
            "uq_role_grants_lab_wide",
            "user_id",
            "role",
            unique=True,
            sqlite_where=text("institution_id IS NULL"),
            postgresql_where=text("institution_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(enum_type(Role, "role"))
    institution_id: Mapped[int | None] = mapped_column(
        ForeignKey("institutions.id", ondelete="CASCADE"), index=True
    )
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    user: Mapped[User] = relationship(back_populates="role_grants", foreign_keys=[user_id])
    institution: Mapped[Institution | None] = relationship()
