"""Agreement templates and their versions, agreements issued from a version for a subject, and the
parties that sign each one (a signature slot per party, in order)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
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

from portal.auth.models import User
from portal.core.models import (
    Base,
    LabelledEnum,
    TimestampMixin,
    Tone,
    enum_type,
    install_after_create,
    partial_unique_index,
    utcnow,
)
from portal.institutions.models import Institution
from portal.proposals.models import Proposal


class AgreementKind(LabelledEnum):
    PARTNERSHIP = "partnership", "Partnership agreement"
    CONTRIBUTION = "contribution", "Project contribution agreement"
    DATA_USE = "data_use", "Data-use agreement"


class VersionState(LabelledEnum):
    DRAFT = "draft", None, Tone.INFO
    PUBLISHED = "published", "Current", Tone.SUCCESS
    SUPERSEDED = "superseded", None, Tone.NEUTRAL


class AgreementTemplate(TimestampMixin, Base):
    """A text the lab asks partners to sign, of one kind; its wording lives in its versions."""

    __tablename__ = "agreement_templates"
    __table_args__ = (
        partial_unique_index("uq_agreement_templates_auto", "kind", where="auto_issue"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[AgreementKind] = mapped_column(enum_type(AgreementKind, "agreement_kind"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    #: Issued by itself when its moment comes (an institution is approved, a project is
    #: approved); at most one template of a kind is.
    auto_issue: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    versions: Mapped[list[TemplateVersion]] = relationship(
        back_populates="template", order_by="TemplateVersion.number"
    )

    @property
    def current(self) -> TemplateVersion | None:
        """The published version new agreements are issued from."""
        return next((v for v in self.versions if v.state == VersionState.PUBLISHED), None)

    @property
    def draft(self) -> TemplateVersion | None:
        return next((v for v in self.versions if v.state == VersionState.DRAFT), None)

    def __repr__(self) -> str:
        return f"<AgreementTemplate {self.id} {self.title!r}>"


class TemplateVersion(Base):
    """One wording of a template. A draft is edited; a published version's text never changes (the
    service refuses it, and a database trigger refuses any UPDATE of its body)."""

    __tablename__ = "agreement_versions"
    __table_args__ = (
        UniqueConstraint("template_id", "number", name="uq_agreement_versions_number"),
        # One draft per template; so one version is published at a time (publishing the draft
        # supersedes the one before, in the same step).
        partial_unique_index(
            "uq_agreement_versions_one_draft", "template_id", where="state = 'draft'"
        ),
        CheckConstraint(
            "state = 'draft' OR (published_at IS NOT NULL AND text_sha256 IS NOT NULL)",
            name="published_when_published",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(
        ForeignKey("agreement_templates.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int]
    #: Markdown with ``{{ field }}`` placeholders filled in from the subject at issue.
    body: Mapped[str] = mapped_column(Text, default="")
    #: What changed since the previous version (shown to people asked to sign again).
    change_note: Mapped[str] = mapped_column(String(1000), default="")
    state: Mapped[VersionState] = mapped_column(
        enum_type(VersionState, "agreement_version_state"), default=VersionState.DRAFT
    )
    #: Agreements signed on earlier versions count until this date, then need signing again.
    reconsent_by: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None]
    published_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: SHA-256 of the body as published.
    text_sha256: Mapped[str | None] = mapped_column(String(64))

    template: Mapped[AgreementTemplate] = relationship(back_populates="versions")

    def __repr__(self) -> str:
        return f"<TemplateVersion {self.template_id} v{self.number} {self.state.value}>"


class AgreementState(LabelledEnum):
    AWAITING = "awaiting", "Awaiting signatures", Tone.PENDING
    ACTIVE = "active", "Signed", Tone.SUCCESS
    DECLINED = "declined", None, Tone.DANGER
    WITHDRAWN = "withdrawn", None, Tone.NEUTRAL
    SUPERSEDED = "superseded", "Superseded by a newer version", Tone.NEUTRAL


class SubjectType(LabelledEnum):
    """What an agreement is about."""

    INSTITUTION = "institution", "Institution"
    PROJECT = "project", "Project"
    DATASET_ACCESS = "dataset_access", "Dataset access"


class Agreement(TimestampMixin, Base):
    """One agreement: a template version's text filled in for a subject, frozen at issue, with the
    parties that must sign it."""

    __tablename__ = "agreements"
    __table_args__ = (
        # At most one agreement of a kind is being signed for a subject at a time.
        partial_unique_index(
            "uq_agreements_one_open",
            "kind",
            "subject_type",
            "subject_id",
            where="state = 'awaiting'",
        ),
        Index("ix_agreements_subject", "subject_type", "subject_id"),
        # The agreements list's order (newest first): its first page read in order.
        Index("ix_agreements_created_at", "created_at", "id"),
        CheckConstraint(
            "state != 'active' OR completed_at IS NOT NULL", name="completed_when_active"
        ),
        CheckConstraint("length(text_sha256) = 64", name="sha256_hex"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("agreement_versions.id", ondelete="RESTRICT"), index=True
    )
    kind: Mapped[AgreementKind] = mapped_column(enum_type(AgreementKind, "agreement_kind"))
    title: Mapped[str] = mapped_column(String(300))
    subject_type: Mapped[SubjectType] = mapped_column(
        enum_type(SubjectType, "agreement_subject_type")
    )
    subject_id: Mapped[int]
    #: The institution party (whose signing officials sign, whose suspension blocks signing).
    institution_id: Mapped[int | None] = mapped_column(
        ForeignKey("institutions.id", ondelete="RESTRICT"), index=True
    )
    #: The project of a contribution agreement.
    proposal_id: Mapped[int | None] = mapped_column(
        ForeignKey("proposals.id", ondelete="RESTRICT"), index=True
    )
    #: The Markdown text shown and signed, frozen at issue.
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[AgreementState] = mapped_column(
        enum_type(AgreementState, "agreement_state"), default=AgreementState.AWAITING
    )
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    issued_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    completed_at: Mapped[dt.datetime | None]
    #: Why it was declined or withdrawn.
    reason: Mapped[str | None] = mapped_column(String(1000))
    #: The agreement this one replaces (re-consent to a newer version).
    replaces_id: Mapped[int | None] = mapped_column(
        ForeignKey("agreements.id", ondelete="SET NULL"), index=True
    )
    #: Set when a newer version requires re-consent: this agreement counts until then only.
    reconsent_by: Mapped[dt.date | None] = mapped_column(Date)

    version: Mapped[TemplateVersion] = relationship()
    institution: Mapped[Institution | None] = relationship()
    proposal: Mapped[Proposal | None] = relationship()
    issued_by: Mapped[User | None] = relationship()
    replaces: Mapped[Agreement | None] = relationship(remote_side="Agreement.id")
    signatures: Mapped[list[Signature]] = relationship(
        back_populates="agreement", order_by="Signature.position", cascade="all, delete-orphan"
    )

    def counts_on(self, day: dt.date) -> bool:
        """Fully signed and, if a newer version asked for re-consent, still within its grace."""
        return self.state == AgreementState.ACTIVE and (
            self.reconsent_by is None or day <= self.reconsent_by
        )

    @property
    def next_signatures(self) -> list[Signature]:
        """The slots whose turn it is: the pending ones at the lowest pending position."""
        if self.state != AgreementState.AWAITING:
            return []
        pending = [s for s in self.signatures if s.state == SignatureState.PENDING]
        if not pending:
            return []
        first = min(s.position for s in pending)
        return [s for s in pending if s.position == first]

    def __repr__(self) -> str:
        return f"<Agreement {self.id} {self.kind.value} {self.state.value}>"


class PartyRole(LabelledEnum):
    PI = "pi", "Principal investigator"
    SIGNING_OFFICIAL = "signing_official", "Signing official"
    PROGRAM = "program", "Program officer"
    RESEARCHER = "researcher", "Researcher"
    DATA_STEWARD = "data_steward", "Data steward"


class SignatureState(LabelledEnum):
    PENDING = "pending", "To sign", Tone.PENDING
    SIGNED = "signed", None, Tone.SUCCESS
    DECLINED = "declined", None, Tone.DANGER


class Signature(Base):
    """One party's place on an agreement, and — once signed — the signature: who, in which role,
    for whom, when, from where, and the SHA-256 of the exact text signed."""

    __tablename__ = "agreement_signatures"
    __table_args__ = (
        UniqueConstraint("agreement_id", "position", "role", name="uq_agreement_signatures_slot"),
        CheckConstraint(
            "state != 'signed' OR (signed_by_id IS NOT NULL AND signed_at IS NOT NULL "
            "AND length(text_sha256) = 64 AND typed_name IS NOT NULL)",
            name="signed_with_evidence",
        ),
        # The slots open to a role and still to sign ("Agreements to sign" for that role).
        Index("ix_agreement_signatures_role_state", "role", "state", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    agreement_id: Mapped[int] = mapped_column(
        ForeignKey("agreements.id", ondelete="CASCADE"), index=True
    )
    #: Signing order: a slot waits for every slot with a lower position.
    position: Mapped[int]
    role: Mapped[PartyRole] = mapped_column(enum_type(PartyRole, "agreement_party_role"))
    #: The person who must sign (the PI, the researcher); None: anyone holding the role (any
    #: signing official of the institution, any program officer).
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    #: Whom the signer binds: the institution's name, the lab; None for oneself.
    on_behalf_of: Mapped[str | None] = mapped_column(String(300))
    state: Mapped[SignatureState] = mapped_column(
        enum_type(SignatureState, "agreement_signature_state"), default=SignatureState.PENDING
    )
    signed_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    signed_at: Mapped[dt.datetime | None]
    #: The full name the signer typed.
    typed_name: Mapped[str | None] = mapped_column(String(200))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    text_sha256: Mapped[str | None] = mapped_column(String(64))
    decline_reason: Mapped[str | None] = mapped_column(String(1000))

    agreement: Mapped[Agreement] = relationship(back_populates="signatures")
    user: Mapped[User | None] = relationship(foreign_keys=[user_id])
    signed_by: Mapped[User | None] = relationship(foreign_keys=[signed_by_id])

    @property
    def party(self) -> str:
        """``Signing official for University X``."""
        return self.role.label + (f" for {self.on_behalf_of}" if self.on_behalf_of else "")

    def __repr__(self) -> str:
        return f"<Signature {self.agreement_id}#{self.position} {self.role.value}>"


#: Refuses any change of a published version's wording, and turning it back into a draft (which
#: would make it editable); installed by ``portal/migrations`` too.
PUBLISHED_TEXT_DDL = {
    "sqlite": [
        "CREATE TRIGGER agreement_versions_published_text "
        "BEFORE UPDATE OF body, text_sha256, state ON agreement_versions "
        "WHEN OLD.state != 'draft' AND (NEW.body IS NOT OLD.body "
        "OR NEW.text_sha256 IS NOT OLD.text_sha256 OR NEW.state = 'draft') "
        "BEGIN SELECT RAISE(ABORT, 'a published agreement version never changes'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION agreement_versions_published_text() RETURNS trigger AS $$ BEGIN "
        "IF OLD.state <> 'draft' AND (NEW.body IS DISTINCT FROM OLD.body "
        "OR NEW.text_sha256 IS DISTINCT FROM OLD.text_sha256 OR NEW.state = 'draft') THEN "
        "RAISE EXCEPTION 'a published agreement version never changes'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER agreement_versions_published_text BEFORE UPDATE ON agreement_versions "
        "FOR EACH ROW EXECUTE FUNCTION agreement_versions_published_text()",
    ],
}
install_after_create(TemplateVersion.__table__, PUBLISHED_TEXT_DDL)
