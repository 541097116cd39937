"""Agreement templates and versions, issuing agreements for a subject, signing and declining, and
re-consent. The acting user is passed in; services flush, the caller commits."""

from __future__ import annotations

import datetime as dt
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from flask import current_app
from sqlalchemy import Select, func, select

from portal.agreements import emails
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    PartyRole,
    Signature,
    SignatureState,
    SubjectType,
    TemplateVersion,
    VersionState,
)
from portal.agreements.permissions import can_manage_agreements, subject_ended
from portal.agreements.text import check_body, fill, institution_fields, project_fields, sha256
from portal.agreements.workflow import AGREEMENT_WORKFLOW, SIGNATURE_WORKFLOW, VERSION_WORKFLOW
from portal.auth.models import User
from portal.core import audit
from portal.core.errors import ConflictError, NotFoundError, ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.institutions.models import Institution, InstitutionState
from portal.institutions.workflow import INSTITUTION_WORKFLOW
from portal.proposals.models import Proposal, ProposalState, TeamRole

_T = TypeVar("_T")

# --- templates and versions --------------------------------------------------------------------


def create_template(
    session: AnySession,
    *,
    actor: User,
    kind: AgreementKind,
    title: str,
    description: str = "",
    body: str,
    auto_issue: bool = False,
) -> AgreementTemplate:
    """A new template with its first version as a draft."""
    check(can_manage_agreements, actor)
    check_body(kind, body)
    template = AgreementTemplate(
        kind=kind, title=title.strip(), description=description.strip(), created_by_id=actor.id
    )
    session.add(template)
    session.flush()
    _set_auto_issue(session, template, auto_issue)
    session.add(
        TemplateVersion(template_id=template.id, number=1, body=body, state=VersionState.DRAFT)
    )
    session.flush()
    session.expire(template, ["versions"])
    audit.record(session, "agreement_template.create", actor=actor, obj=template, kind=kind.value)
    return template


def _set_auto_issue(session: AnySession, template: AgreementTemplate, auto_issue: bool) -> None:
    """At most one template of a kind is issued automatically: choosing this one unsets the other."""
    if auto_issue:
        for other in session.scalars(
            select(AgreementTemplate).where(
                AgreementTemplate.kind == template.kind,
                AgreementTemplate.auto_issue.is_(True),
                AgreementTemplate.id != template.id,
            )
        ):
            other.auto_issue = False
        session.flush()
    template.auto_issue = auto_issue
    session.flush()


def update_template(
    session: AnySession,
    template: AgreementTemplate,
    *,
    actor: User,
    title: str,
    description: str,
    auto_issue: bool,
) -> AgreementTemplate:
    check(can_manage_agreements, actor)
    template.title = title.strip()
    template.description = description.strip()
    _set_auto_issue(session, template, auto_issue)
    audit.record(session, "agreement_template.update", actor=actor, obj=template)
    return template


def save_draft(
    session: AnySession,
    template: AgreementTemplate,
    *,
    actor: User,
    body: str,
    change_note: str = "",
    reconsent_by: dt.date | None = None,
) -> TemplateVersion:
    """Write the template's draft version (a new one, numbered after the last, if there is none).
    A published version is never edited: changing the text means a new version."""
    check(can_manage_agreements, actor)
    check_body(template.kind, body)
    if reconsent_by is not None and reconsent_by <= utcnow().date():
        raise ValidationError("Give a re-consent date in the future (the grace period).")
    draft = template.draft
    if draft is None:
        last = session.scalar(
            select(func.max(TemplateVersion.number)).where(
                TemplateVersion.template_id == template.id
            )
        )
        number = (last or 0) + 1
        draft = TemplateVersion(template_id=template.id, number=number, state=VersionState.DRAFT)
        session.add(draft)
    draft.body = body
    draft.change_note = change_note.strip()
    draft.reconsent_by = reconsent_by
    session.flush()
    session.expire(template, ["versions"])
    audit.record(session, "agreement_version.save", actor=actor, obj=draft, number=draft.number)
    return draft


def publish_version(
    session: AnySession, version: TemplateVersion, *, actor: User
) -> TemplateVersion:
    """Publish a draft: new agreements of the template are issued from it; if it asks for
    re-consent, every agreement signed on an earlier version is re-issued on it, counts only until
    the re-consent date, and its signers are asked to sign again."""
    VERSION_WORKFLOW.run(session, version, "publish", actor=actor, number=version.number)
    if version.reconsent_by is not None:
        for old in affected_by(session, version):
            if not subject_ended(old):
                reissue(session, old, version, actor=actor)
    return version


def affected_by(session: AnySession, version: TemplateVersion) -> Sequence[Agreement]:
    """The signed agreements of the template on an earlier version (one still being re-signed on
    an earlier version too: ``reissue`` replaces that re-consent)."""
    return session.scalars(
        select(Agreement)
        .join(TemplateVersion, TemplateVersion.id == Agreement.version_id)
        .where(
            TemplateVersion.template_id == version.template_id,
            TemplateVersion.number < version.number,
            Agreement.state == AgreementState.ACTIVE,
        )
        .order_by(Agreement.id)
    ).all()


# --- subjects and parties ----------------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    """One signer an agreement needs: a role, the named person (or anyone holding the role), for
    whom, and when (parties with a lower position sign first)."""

    position: int
    role: PartyRole
    user_id: int | None = None
    on_behalf_of: str | None = None


def lab_name() -> str:
    return str(current_app.config["LAB_NAME"])


def _institution_parties(institution: Institution) -> list[Party]:
    return [
        Party(1, PartyRole.SIGNING_OFFICIAL, on_behalf_of=institution.name),
        Party(2, PartyRole.PROGRAM, on_behalf_of=lab_name()),
    ]


def _project_parties(proposal: Proposal) -> list[Party]:
    pi = next((m for m in proposal.team if m.role == TeamRole.PI), None)
    if pi is None:
        raise ValidationError("The project has no principal investigator to sign.")
    return [
        Party(1, PartyRole.PI, user_id=pi.user_id),
        Party(2, PartyRole.SIGNING_OFFICIAL, on_behalf_of=proposal.institution.name),
        Party(3, PartyRole.PROGRAM, on_behalf_of=lab_name()),
    ]


@dataclass(frozen=True)
class Subject:
    """What an agreement is about, as the engine needs it: its type and id, the institution party,
    the project (for contribution agreements), its title, its fields and its parties."""

    type: SubjectType
    id: int
    name: str
    fields: dict[str, str]
    parties: list[Party]
    institution: Institution | None = None
    proposal: Proposal | None = None


def institution_subject(institution: Institution) -> Subject:
    return Subject(
        SubjectType.INSTITUTION,
        institution.id,
        institution.name,
        institution_fields(institution, lab=lab_name(), today=utcnow().date()),
        _institution_parties(institution),
        institution=institution,
    )


def project_subject(proposal: Proposal) -> Subject:
    return Subject(
        SubjectType.PROJECT,
        proposal.id,
        proposal.title,
        project_fields(proposal, lab=lab_name(), today=utcnow().date()),
        _project_parties(proposal),
        institution=proposal.institution,
        proposal=proposal,
    )


#: How to rebuild the subject of an agreement (re-consent), by subject type. The datasets domain
#: adds dataset access when it registers (and ``permissions.SUBJECT_ENDED`` for it).
SUBJECT_LOADERS: dict[SubjectType, Callable[[AnySession, int], Subject]] = {
    SubjectType.INSTITUTION: lambda s, i: institution_subject(_get(s, Institution, i)),
    SubjectType.PROJECT: lambda s, i: project_subject(_get(s, Proposal, i)),
}

#: The subject type each kind of agreement is about.
SUBJECT_OF_KIND = {
    AgreementKind.PARTNERSHIP: SubjectType.INSTITUTION,
    AgreementKind.CONTRIBUTION: SubjectType.PROJECT,
    AgreementKind.DATA_USE: SubjectType.DATASET_ACCESS,
}


def _get(session: AnySession, model: type[_T], id_: int) -> _T:
    obj = session.get(model, id_)
    if obj is None:
        raise NotFoundError("The agreement's subject no longer exists.")
    return obj


# --- issuing -----------------------------------------------------------------------------------


def issue(
    session: AnySession,
    template: AgreementTemplate,
    subject: Subject,
    *,
    actor: User,
    replaces: Agreement | None = None,
    version: TemplateVersion | None = None,
) -> Agreement:
    """Issue an agreement of ``template``'s current version for ``subject``: its text filled in
    and frozen, its parties in order; the first party is asked to sign."""
    check(can_manage_agreements, actor)
    return _issue(session, template, subject, actor=actor, replaces=replaces, version=version)


def issue_in_step(
    session: AnySession, template: AgreementTemplate, subject: Subject, *, actor: User
) -> Agreement:
    """Issue as part of another domain's step its actor was allowed (a steward approving access
    to a dataset issues its data-use agreement): the issuer's permission is not asked again."""
    return _issue(session, template, subject, actor=actor)


def _issue(
    session: AnySession,
    template: AgreementTemplate,
    subject: Subject,
    *,
    actor: User,
    replaces: Agreement | None = None,
    version: TemplateVersion | None = None,
) -> Agreement:
    version = version or template.current
    if version is None:
        raise ValidationError(f"“{template.title}” has no published version to issue.")
    if SUBJECT_OF_KIND[template.kind] != subject.type:
        raise ValidationError(
            f"A {template.kind.label.lower()} is about a {SUBJECT_OF_KIND[template.kind].label.lower()}."
        )
    if open_agreement(session, template.kind, subject.type, subject.id) is not None:
        raise ConflictError(
            f"{subject.name} already has a {template.kind.label.lower()} being signed; withdraw "
            "it first to issue another."
        )
    text = fill(version.body, subject.fields)
    agreement = Agreement(
        version_id=version.id,
        kind=template.kind,
        title=f"{template.title} — {subject.name}"[:300],
        subject_type=subject.type,
        subject_id=subject.id,
        institution_id=subject.institution.id if subject.institution else None,
        proposal_id=subject.proposal.id if subject.proposal else None,
        text=text,
        text_sha256=sha256(text),
        issued_by_id=actor.id,
        replaces_id=replaces.id if replaces else None,
        signatures=[
            Signature(
                position=p.position, role=p.role, user_id=p.user_id, on_behalf_of=p.on_behalf_of
            )
            for p in subject.parties
        ],
    )
    session.add(agreement)
    session.flush()
    audit.record(
        session,
        "agreement.issue",
        actor=actor,
        obj=agreement,
        version=version.number,
        sha256=agreement.text_sha256,
        replaces=replaces.id if replaces else None,
    )
    emails.ask_to_sign(session, agreement)
    return agreement


def reissue(
    session: AnySession, old: Agreement, version: TemplateVersion, *, actor: User
) -> Agreement:
    """Re-consent: ``old`` counts until the version's date; a new agreement on ``version`` for the
    same subject and parties asks them to sign again. An agreement of the subject still being
    signed on an earlier wording (an earlier re-consent, a corrected issue) is withdrawn: the
    parties sign the newest wording only."""
    assert version.reconsent_by is not None
    earlier = open_agreement(session, old.kind, old.subject_type, old.subject_id)
    if earlier is not None:
        AGREEMENT_WORKFLOW.run(
            session,
            earlier,
            "withdraw",
            actor=actor,
            reason=f"Replaced by version {version.number}, which asks for re-consent.",
        )
    old.reconsent_by = version.reconsent_by
    subject = SUBJECT_LOADERS[old.subject_type](session, old.subject_id)
    audit.record(
        session, "agreement.reconsent", actor=actor, obj=old, by=version.reconsent_by.isoformat()
    )
    return issue(session, version.template, subject, actor=actor, replaces=old, version=version)


def auto_template(session: AnySession, kind: AgreementKind) -> AgreementTemplate | None:
    """The template of ``kind`` issued automatically, if it has a published version."""
    template = session.scalar(
        select(AgreementTemplate).where(
            AgreementTemplate.kind == kind, AgreementTemplate.auto_issue.is_(True)
        )
    )
    return template if template is not None and template.current is not None else None


def issue_automatically(
    session: AnySession,
    kind: AgreementKind,
    subject: Callable[[], Subject],
    subject_id: int,
    *,
    actor: User,
) -> Agreement | None:
    """Issue the kind's automatic template for the subject unless there is none, or the subject
    already has one being signed or in force. Part of the step that calls for it (``actor`` was
    allowed that step — an allocation committee member approving a project need not be program
    staff), so the issuer's permission is not asked again."""
    template = auto_template(session, kind)
    if template is None or standing(session, kind, SUBJECT_OF_KIND[kind], subject_id) is not None:
        return None
    return _issue(session, template, subject(), actor=actor)


def _of_subject(
    kind: AgreementKind, subject_type: SubjectType, subject_id: int, *states: AgreementState
) -> Select[Agreement]:
    """The subject's agreements of ``kind`` in ``states``, newest first."""
    return (
        select(Agreement)
        .where(
            Agreement.kind == kind,
            Agreement.subject_type == subject_type,
            Agreement.subject_id == subject_id,
            Agreement.state.in_(states),
        )
        .order_by(Agreement.id.desc())
    )


def open_agreement(
    session: AnySession, kind: AgreementKind, subject_type: SubjectType, subject_id: int
) -> Agreement | None:
    """The agreement of ``kind`` being signed for the subject, if any (there is one at most)."""
    return session.scalar(_of_subject(kind, subject_type, subject_id, AgreementState.AWAITING))


def standing(
    session: AnySession, kind: AgreementKind, subject_type: SubjectType, subject_id: int
) -> Agreement | None:
    """The subject's agreement of ``kind`` that matters now: the newest one being signed or in
    force (None when there is none, or only declined and withdrawn ones)."""
    return session.scalar(
        _of_subject(
            kind, subject_type, subject_id, AgreementState.AWAITING, AgreementState.ACTIVE
        ).limit(1)
    )


def in_force(
    session: AnySession, kind: AgreementKind, subject_type: SubjectType, subject_id: int
) -> Agreement | None:
    """The subject's fully signed agreement of ``kind`` that counts today (within any re-consent
    grace), if any."""
    today = utcnow().date()
    signed = session.scalars(_of_subject(kind, subject_type, subject_id, AgreementState.ACTIVE))
    return next((a for a in signed if a.counts_on(today)), None)


def issue_for_approved_institution(session: AnySession, step: object) -> None:
    """Follow-up of ``institution.approve``: the partnership agreement goes out."""
    institution = getattr(step, "obj")  # noqa: B009 - a workflow step
    issue_automatically(
        session,
        AgreementKind.PARTNERSHIP,
        lambda: institution_subject(institution),
        institution.id,
        actor=getattr(step, "actor"),  # noqa: B009
    )


def join_on_partnership_signed(session: AnySession, step: object) -> None:
    """Follow-up of ``agreement.complete``: an approved institution whose partnership agreement is
    now signed by both sides becomes a partner (the last signer takes the step)."""
    agreement = getattr(step, "obj")  # noqa: B009 - a workflow step
    institution = agreement.institution
    if (
        agreement.kind == AgreementKind.PARTNERSHIP
        and institution is not None
        and institution.state == InstitutionState.APPROVED
    ):
        INSTITUTION_WORKFLOW.run(
            session,
            institution,
            "join",
            actor=getattr(step, "actor"),  # noqa: B009
            agreement=agreement.id,
        )


def institution_ended(session: AnySession, institution_id: int) -> bool:
    """Whether an institution is out of the program (declined or withdrawn): its agreements are
    not asked for again, and may be withdrawn by the step that ended it."""
    state = session.scalar(select(Institution.state).where(Institution.id == institution_id))
    return state is None or state in (InstitutionState.DECLINED, InstitutionState.WITHDRAWN)


def withdraw_for_ended_institution(session: AnySession, step: object) -> None:
    """Follow-up of ``institution.withdraw``: an agreement still being signed for the institution
    goes with it — nobody is left asked to sign for a partnership that will not be."""
    institution = getattr(step, "obj")  # noqa: B009 - a workflow step
    waiting = session.scalars(
        _of_subject(
            AgreementKind.PARTNERSHIP,
            SubjectType.INSTITUTION,
            institution.id,
            AgreementState.AWAITING,
        )
    ).all()
    for agreement in waiting:
        AGREEMENT_WORKFLOW.run(
            session,
            agreement,
            "withdraw",
            actor=getattr(step, "actor"),  # noqa: B009
            reason=f"{institution.name} was withdrawn from the program.",
        )


def issue_for_approved_project(session: AnySession, step: object) -> None:
    """Follow-up of ``proposal.approve``: the project's contribution agreement goes out."""
    proposal = getattr(step, "obj")  # noqa: B009 - a workflow step
    if proposal.state == ProposalState.ACTIVE:
        issue_automatically(
            session,
            AgreementKind.CONTRIBUTION,
            lambda: project_subject(proposal),
            proposal.id,
            actor=getattr(step, "actor"),  # noqa: B009
        )


# --- signing -----------------------------------------------------------------------------------

_SPACES = re.compile(r"\s+")


def _same_name(typed: str, name: str) -> bool:
    def norm(s: str) -> str:
        return _SPACES.sub(" ", s).strip().casefold()

    return bool(norm(typed)) and norm(typed) == norm(name)


def _locked(session: AnySession, agreement: Agreement) -> Agreement:
    """Take the agreement's row lock (PostgreSQL; SQLite serialises writers) and re-read its
    signatures, so two parties signing at once see each other's signature.

    The institution party's row is locked first: a step on the institution (withdrawing it, say)
    holds that row and then changes its agreements, and the last signature changes the
    institution (it joins) — both take the two locks in the same order, so neither deadlocks."""
    if agreement.institution_id is not None:
        session.execute(
            select(Institution.id)
            .where(Institution.id == agreement.institution_id)
            .with_for_update()
        )
    session.execute(select(Agreement.id).where(Agreement.id == agreement.id).with_for_update())
    session.execute(
        select(Agreement)
        .where(Agreement.id == agreement.id)
        .execution_options(populate_existing=True)
    )
    session.execute(
        select(Signature)
        .where(Signature.agreement_id == agreement.id)
        .execution_options(populate_existing=True)
    )
    if agreement.institution is not None:
        session.refresh(agreement.institution, ["state"])
    return agreement


def sign(
    session: AnySession,
    signature: Signature,
    *,
    actor: User,
    typed_name: str,
    confirmed: bool,
    shown_sha256: str,
    ip: str | None,
    user_agent: str | None,
) -> Signature:
    """Sign: the signer confirms, types their full name, and the text they were shown (its hash)
    must be the agreement's. The signature records who, for whom, when, from where and the hash."""
    agreement = _locked(session, signature.agreement)
    if not confirmed:
        raise ValidationError(
            "Tick the box to confirm that you have read the agreement and sign it."
        )
    if not _same_name(typed_name, actor.display_name):
        raise ValidationError(
            f"Type your full name exactly as the portal knows it ({actor.display_name}) to sign."
        )
    if not hmac.compare_digest(shown_sha256.strip().lower(), agreement.text_sha256):
        raise ConflictError(
            "The text you were shown is not this agreement's text. Reload the page, read it, and "
            "sign again."
        )
    SIGNATURE_WORKFLOW.run(
        session,
        signature,
        "sign",
        actor=actor,
        values={
            "signed_by_id": actor.id,
            "signed_at": utcnow(),
            "typed_name": " ".join(typed_name.split())[:200],
            "ip": (ip or "")[:45] or None,
            "user_agent": (user_agent or "")[:300] or None,
            "text_sha256": agreement.text_sha256,
        },
        agreement=agreement.id,
        role=signature.role.value,
        on_behalf_of=signature.on_behalf_of,
        sha256=agreement.text_sha256,
    )
    return signature


def decline(session: AnySession, agreement: Agreement, *, actor: User, reason: str) -> Agreement:
    """A party whose turn it is declines to sign, with a reason: the agreement is declined."""
    _locked(session, agreement)
    mine = [s for s in agreement.next_signatures if SIGNATURE_WORKFLOW.may(actor, s, "decline")]
    if not mine:
        # The runner gives the precise refusal (not yours, not your turn, no longer open).
        target = next(iter(agreement.next_signatures), None) or agreement.signatures[0]
        SIGNATURE_WORKFLOW.run(session, target, "decline", actor=actor, reason=reason)
        raise ConflictError("Nothing was changed.")  # pragma: no cover - the runner refused
    SIGNATURE_WORKFLOW.run(session, mine[0], "decline", actor=actor, reason=reason)
    return agreement


def withdraw(session: AnySession, agreement: Agreement, *, actor: User, reason: str) -> Agreement:
    """Program staff withdraw an agreement still being signed."""
    return AGREEMENT_WORKFLOW.run(session, agreement, "withdraw", actor=actor, reason=reason)


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """The agreement's text hashed again, against the hash recorded at issue and each signature."""

    recomputed: str
    recorded: str
    #: (signature, whether its recorded hash equals the recomputed one), signed slots only.
    signatures: list[tuple[Signature, bool]]

    @property
    def ok(self) -> bool:
        return self.recomputed == self.recorded and all(ok for _, ok in self.signatures)


def verify(agreement: Agreement) -> Verification:
    recomputed = sha256(agreement.text)
    return Verification(
        recomputed,
        agreement.text_sha256,
        [
            (s, s.text_sha256 == recomputed)
            for s in agreement.signatures
            if s.state == SignatureState.SIGNED
        ],
    )


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def find_by_hash(session: AnySession, digest: str) -> Sequence[Agreement]:
    """Fully signed agreements whose text has this SHA-256 (the public check of a PDF's hash)."""
    digest = digest.strip().lower()
    if not _HEX64.match(digest):
        raise ValidationError("A SHA-256 is 64 hexadecimal characters.")
    return session.scalars(
        select(Agreement).where(
            Agreement.text_sha256 == digest,
            Agreement.state.in_((AgreementState.ACTIVE, AgreementState.SUPERSEDED)),
        )
    ).all()
