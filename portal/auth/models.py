"""Users, their login identities (keyed by issuer and subject, never by e-mail) and role grants."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.core.models import (
    Base,
    LabelledEnum,
    TimestampMixin,
    enum_type,
    partial_unique_index,
    utcnow,
)
from portal.core.roles import INSTITUTION_ROLES as INSTITUTION_ROLES
from portal.core.roles import Role as Role

if TYPE_CHECKING:
    from portal.institutions.models import Affiliation, Institution


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
    #: The person set their name in the portal: logins no longer replace it with the provider's.
    name_edited: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: The person agreed to be named on the program's public pages (as a project's PI).
    public_name: Mapped[bool] = mapped_column(default=False, server_default=false())
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
        partial_unique_index(
            "uq_role_grants_lab_wide", "user_id", "role", where="institution_id IS NULL"
        ),
        # An institution's holders of a role (its signing officials: who decides on joining it).
        Index("ix_role_grants_institution_role", "institution_id", "role"),
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


class ProviderKind(LabelledEnum):
    #: An institution's own OpenID provider: it serves the institutions linked to it.
    INSTITUTION = "institution", "Institution's own IdP"
    #: A federation proxy such as CILogon: one issuer fronts many campuses, and the campus is
    #: named by the ``idp`` claim (its SAML entity id), mapped to institutions here.
    FEDERATION = "federation", "Federation proxy"


class UserinfoMode(LabelledEnum):
    """When the portal asks a provider's UserInfo endpoint for the person's claims."""

    #: After every login (the claims are fresh; providers that put them in UserInfo only work).
    ALWAYS = "always", "After every login"
    #: Only when the ID token lacks e-mail or name.
    WHEN_MISSING = "when_missing", "When the ID token lacks e-mail or name"
    NEVER = "never", "Never"


class TokenAuthMethod(LabelledEnum):
    """How the portal authenticates itself at the provider's token endpoint."""

    CLIENT_SECRET_BASIC = "client_secret_basic", "Client secret (HTTP Basic)"
    CLIENT_SECRET_POST = "client_secret_post", "Client secret (in the request body)"
    #: A JWT signed with the portal's own key, whose public half it serves at /.well-known/jwks.json.
    PRIVATE_KEY_JWT = "private_key_jwt", "Signed JWT with the portal's key (private_key_jwt)"


class IdentityProvider(TimestampMixin, Base):
    """An OpenID Connect provider people may log in with. Its client secret is never stored here:
    it comes from the environment or the instance config (see ``portal.auth.oidc.client_secret``)."""

    __tablename__ = "identity_providers"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Short name used in the provider's own redirect URI, ``/auth/callback/<slug>``.
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[ProviderKind] = mapped_column(
        enum_type(ProviderKind, "provider_kind"), default=ProviderKind.INSTITUTION
    )
    #: The issuer identifier, pinned: discovery documents and ID tokens must name exactly this.
    issuer: Mapped[str] = mapped_column(String(500), unique=True)
    #: Where the discovery document is; empty means ``<issuer>/.well-known/openid-configuration``.
    discovery_url: Mapped[str | None] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[str] = mapped_column(String(300), default="openid email profile")
    #: Space-separated ID-token signing algorithms accepted from this provider (pinned here,
    #: never taken from the provider's metadata).
    id_token_algs: Mapped[str] = mapped_column(String(100), default="RS256")
    enabled: Mapped[bool] = mapped_column(default=True)
    userinfo_mode: Mapped[UserinfoMode] = mapped_column(
        enum_type(UserinfoMode, "userinfo_mode"),
        default=UserinfoMode.ALWAYS,
        server_default=UserinfoMode.ALWAYS.value,
    )
    token_auth_method: Mapped[TokenAuthMethod] = mapped_column(
        enum_type(TokenAuthMethod, "token_auth_method"),
        default=TokenAuthMethod.CLIENT_SECRET_BASIC,
        server_default=TokenAuthMethod.CLIENT_SECRET_BASIC.value,
    )
    #: "Log out" also ends the session at the provider (RP-initiated logout), where it offers that.
    logout_at_provider: Mapped[bool] = mapped_column(default=False, server_default=false())

    served: Mapped[list[ProviderInstitution]] = relationship(
        back_populates="provider", cascade="all, delete-orphan", order_by="ProviderInstitution.id"
    )

    @property
    def metadata_url(self) -> str:
        return self.discovery_url or (self.issuer.rstrip("/") + "/.well-known/openid-configuration")

    @property
    def algorithms(self) -> list[str]:
        return self.id_token_algs.split()

    def __repr__(self) -> str:
        return f"<IdentityProvider {self.slug} {self.issuer}>"


class ProviderInstitution(Base):
    """An institution a provider serves; for a federation proxy, with the campus's entity id (the
    value of the ``idp`` claim, also sent as ``idphint`` when someone picks that institution)."""

    __tablename__ = "provider_institutions"
    __table_args__ = (
        UniqueConstraint("provider_id", "institution_id"),
        UniqueConstraint("provider_id", "entity_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(
        ForeignKey("identity_providers.id", ondelete="CASCADE"), index=True
    )
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="CASCADE"), index=True
    )
    entity_id: Mapped[str | None] = mapped_column(String(500))

    provider: Mapped[IdentityProvider] = relationship(back_populates="served")
    institution: Mapped[Institution] = relationship()


class LoginSession(Base):
    """A server-side record of one logged-in browser session. The cookie holds a random token whose
    SHA-256 is kept here, so logging out, an admin disabling the user, or a timeout ends the session
    for good: a replayed old cookie finds its record ended."""

    __tablename__ = "login_sessions"
    __table_args__ = (
        CheckConstraint("(ended_at IS NULL) = (end_reason IS NULL)", name="ended_with_reason"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: SHA-256 (hex) of the token in the session cookie.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: The identity used to log in (None for sessions started by tests or tools).
    identity_id: Mapped[int | None] = mapped_column(
        ForeignKey("identities.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]
    #: ``logout``, ``idle``, ``expired``, ``disabled``, ``replaced``, ``provider`` (back-channel).
    end_reason: Mapped[str | None] = mapped_column(String(20))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    #: The ID token of the login (``id_token_hint`` when logging out at the provider too).
    id_token: Mapped[str | None] = mapped_column(Text)
    #: The provider's own session id (``sid``), which its back-channel logout names.
    provider_sid: Mapped[str | None] = mapped_column(String(255), index=True)

    user: Mapped[User] = relationship()
    identity: Mapped[Identity | None] = relationship()


class OAuthLoginState(Base):
    """An OIDC login in progress (state, nonce, PKCE verifier, where to go afterwards), kept here
    instead of in the cookie so abandoned logins never grow it. Bound to the browser by the hash of
    one fixed-size random value in its session; deleted when used, so a state works once."""

    __tablename__ = "oauth_login_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: ``<provider slug>:<state>``.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    #: SHA-256 (hex) of the browser binding value in the session cookie.
    binding: Mapped[str] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
