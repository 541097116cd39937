"""Applying to become a partner: the application, program staff's decisions on it, and the
invitations to be the institution's signing official. Services flush; the caller commits.

An application is an ``Institution`` in the ``applied`` state with its ``Application`` (the rest of
the form) and its claimed e-mail domains, pending proof. Every proposed signing official gets a
one-time link by mail; only the token's SHA-256 is stored, so a copy of the database opens no
invitation. Accepting — logged in — makes that person a signing official of the institution.

Accepting under another address: the link went only to the invited address, so whoever opens it
read that mailbox. People often log in with an identity whose address differs from the one their
colleague typed (``j.doe@`` and ``jane.doe@``, a department sub-domain), so a login whose verified
address differs is allowed to accept; both addresses are kept in the audit event, and the
application page shows program staff the difference before they approve the institution.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Iterable
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select

from portal.auth.models import User
from portal.core import audit
from portal.core.errors import ConflictError, DomainError, NotFoundError, ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.institutions import emails
from portal.institutions.models import (
    OPEN_APPLICATION_STATES,
    Application,
    Institution,
    InstitutionState,
    OfficialInvitation,
    OfficialInvitationState,
    is_public_webmail,
)
from portal.institutions.permissions import (
    EDITABLE_APPLICATION_STATES,
    can_answer_invitation,
    can_apply,
    can_resubmit_application,
)
from portal.institutions.services import (
    _audit_domains,
    _set_domains,
    normalise_domains,
    normalise_ror,
)
from portal.institutions.workflow import INSTITUTION_WORKFLOW, OFFICIAL_INVITATION_WORKFLOW
from portal.notifications.rendering import check_address

#: How long an invitation's link works.
INVITATION_DAYS = 30
#: Most signing officials one application proposes.
MAX_OFFICIALS = 5
#: Most e-mail domains one application claims.
MAX_DOMAINS = 20
#: Longest token accepted from a link (``secrets.token_urlsafe(32)`` makes 43 characters).
MAX_TOKEN = 100

#: Program staff's decisions on an application (``decide``).
DECISIONS = ("request_changes", "start_review", "approve", "decline")

MIN_STATEMENT, MAX_STATEMENT = 50, 5000
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)


class InvitationGoneError(DomainError):
    """The invitation's link no longer works (used, declined, cancelled or expired)."""

    status_code = 410


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which an invitation's token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalised_email(raw: str, what: str = "That") -> str:
    """``raw`` as one usable address, lower case, or ValidationError saying why not (no DNS look-up:
    the invitation itself proves the address works)."""
    try:
        address = validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as e:
        raise ValidationError(f"{what} is not a usable e-mail address: {e}") from None
    return check_address(address).lower()


def _domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1].lower()


def _within(domain: str, claimed: Iterable[str]) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in claimed)


# --- checking the form ---------------------------------------------------------------------------


def _text(value: str | None, label: str, *, required: bool, longest: int) -> str | None:
    text = (value or "").strip()
    if not text:
        if required:
            raise ValidationError(f"{label} is required.")
        return None
    if len(text) > longest:
        raise ValidationError(f"{label} is too long (at most {longest:,} characters).")
    return text


def _country(value: str) -> str:
    code = (value or "").strip().upper()
    if not _COUNTRY.match(code):
        raise ValidationError("Give the country as its two-letter ISO code, e.g. US or DE.")
    return code


def _website(value: str | None) -> str | None:
    url = _text(value, "The website", required=False, longest=300)
    if url is not None and not _URL.match(url):
        raise ValidationError("Give the website as a full address starting with https://.")
    return url


def _domains(raw: Iterable[str]) -> list[str]:
    """The claimed domains, checked: one to ``MAX_DOMAINS``, no public webmail (a domain another
    institution claims is refused, by name, when they are set: ``services._set_domains``)."""
    domains = normalise_domains(raw)
    if not domains:
        raise ValidationError("Give at least one e-mail domain of the institution, e.g. mit.edu.")
    if len(domains) > MAX_DOMAINS:
        raise ValidationError(f"Give at most {MAX_DOMAINS} e-mail domains.")
    webmail = [d for d in domains if is_public_webmail(d)]
    if webmail:
        raise ValidationError(
            f"{', '.join(webmail)}: public webmail domains belong to no institution."
        )
    return domains


def _officials(raw: Iterable[str], domains: list[str]) -> list[str]:
    """The proposed signing officials' addresses: one to ``MAX_OFFICIALS``, each at one of the
    institution's domains (so the portal mails only the institution's own people)."""
    out: list[str] = []
    for item in raw:
        if not item.strip():
            continue
        address = normalised_email(item, repr(item.strip()))
        if address not in out:
            out.append(address)
    if not out:
        raise ValidationError(
            "Propose at least one signing official (your own address if you sign for the "
            "institution yourself)."
        )
    if len(out) > MAX_OFFICIALS:
        raise ValidationError(f"Propose at most {MAX_OFFICIALS} signing officials.")
    outside = [a for a in out if not _within(_domain_of(a), domains)]
    if outside:
        raise ValidationError(
            f"{', '.join(outside)}: a signing official's address must be at one of the "
            f"institution's e-mail domains ({', '.join(domains)})."
        )
    return out


def _check_ror(
    session: AnySession, institution: Institution, ror_id: str | None, actor: User
) -> None:
    """A ROR id names one institution in the portal: refuse one another institution has (saying
    what to do), and above all a second open application by the same person."""
    if ror_id is None:
        return
    other = session.scalar(
        select(Institution).where(
            Institution.ror_id == ror_id, Institution.id != (institution.id or 0)
        )
    )
    if other is None:
        return
    application = other.application
    if (
        application is not None
        and application.applicant_id == actor.id
        and other.state in OPEN_APPLICATION_STATES
    ):
        raise ConflictError(
            f"You already have an open application for {other.name} ({ror_id}, "
            f"{other.state.label.lower()}). Change that application instead of applying again."
        )
    if other.state == InstitutionState.PARTNER:
        raise ConflictError(
            f"{other.name} ({ror_id}) is already a partner. Ask to join it from the "
            "Affiliations page instead of applying."
        )
    if other.state in (InstitutionState.DECLINED, InstitutionState.WITHDRAWN):
        raise ConflictError(
            f"An earlier application for the institution with the ROR id {ror_id} was "
            f"{other.state.label.lower()}. Ask program staff to reopen it."
        )
    raise ConflictError(
        f"Another institution in the portal already has the ROR id {ror_id}. If it is yours, "
        "ask its signing official or program staff instead of applying again."
    )


def _details(
    session: AnySession,
    institution: Institution,
    actor: User,
    *,
    name: str,
    ror_id: str | None,
    country: str,
    website: str | None,
    domains: Iterable[str],
    statement: str,
    technical_contact_name: str,
    technical_contact_email: str,
    idp_entity_id: str | None,
    officials: Iterable[str],
) -> dict[str, Any]:
    """Every field of the form, checked and normalised (ValidationError or ConflictError naming
    the first problem); the officials are checked once the domains are set (``_officials``)."""
    clean_name = _text(name, "The institution's name", required=True, longest=300)
    ror = normalise_ror(ror_id)
    _check_ror(session, institution, ror, actor)
    claimed = _domains(domains)
    text = _text(statement, "The statement", required=True, longest=MAX_STATEMENT) or ""
    if len(text) < MIN_STATEMENT:
        raise ValidationError(
            f"Say in at least {MIN_STATEMENT} characters why the institution wants to join and "
            "what it would work on."
        )
    return {
        "name": clean_name,
        "ror_id": ror,
        "country": _country(country),
        "website": _website(website),
        "domains": claimed,
        "statement": text,
        "technical_contact_name": _text(
            technical_contact_name, "The technical contact's name", required=True, longest=200
        ),
        "technical_contact_email": normalised_email(
            technical_contact_email or "", "The technical contact's address"
        ),
        "idp_entity_id": _text(
            idp_entity_id, "The identity provider's entity id", required=False, longest=500
        ),
        "officials": list(officials),
    }


# --- invitations ---------------------------------------------------------------------------------


def _invite(
    session: AnySession, institution: Institution, address: str, actor: User
) -> OfficialInvitation:
    token = secrets.token_urlsafe(32)
    invitation = OfficialInvitation(
        institution_id=institution.id,
        email=address,
        token_hash=token_hash(token),
        expires_at=utcnow() + dt.timedelta(days=INVITATION_DAYS),
        invited_by_id=actor.id,
    )
    session.add(invitation)
    session.flush()
    audit.record(
        session,
        "institution.official_invite",
        actor=actor,
        obj=institution,
        invitation_id=invitation.id,
        email=address,
    )
    emails.official_invited(session, institution, address, token, actor)
    return invitation


def _cancel(session: AnySession, invitation: OfficialInvitation, actor: User) -> None:
    OFFICIAL_INVITATION_WORKFLOW.run(
        session, invitation, "cancel", actor=actor, email=invitation.email
    )


def _sync_invitations(
    session: AnySession, institution: Institution, addresses: list[str], actor: User
) -> None:
    """Invite each address without a live invitation (pending and unexpired, or accepted); an
    expired one is replaced by a fresh link; pending invitations of addresses taken off the list
    are cancelled."""
    now = utcnow()
    current: dict[str, OfficialInvitation] = {}
    for inv in institution.official_invitations:
        if inv.state == OfficialInvitationState.PENDING:
            if inv.email not in addresses or inv.expires_at <= now:
                _cancel(session, inv, actor)
            else:
                current[inv.email] = inv
        elif inv.state == OfficialInvitationState.ACCEPTED:
            current.setdefault(inv.email, inv)
    for address in addresses:
        if address not in current:
            _invite(session, institution, address, actor)
    session.expire(institution, ["official_invitations"])


# --- the application -----------------------------------------------------------------------------


def apply(
    session: AnySession,
    *,
    actor: User,
    name: str,
    ror_id: str | None,
    country: str,
    website: str | None,
    domains: Iterable[str],
    statement: str,
    technical_contact_name: str,
    technical_contact_email: str,
    idp_entity_id: str | None,
    officials: Iterable[str],
) -> Institution:
    """Apply for an institution to become a partner. It starts ``applied``, with its e-mail
    domains pending proof and each proposed signing official invited by mail; program officers
    are asked to review it and the applicant gets a receipt.

    Refused: a domain another institution claims (named), public webmail domains, a ROR id another
    institution has (and a second open application of the same person for it), a signing
    official's address outside the institution's domains."""
    check(can_apply, actor)
    inst = Institution(state=InstitutionState.APPLIED, country="XX", name="")
    fields = _details(
        session,
        inst,
        actor,
        name=name,
        ror_id=ror_id,
        country=country,
        website=website,
        domains=domains,
        statement=statement,
        technical_contact_name=technical_contact_name,
        technical_contact_email=technical_contact_email,
        idp_entity_id=idp_entity_id,
        officials=officials,
    )
    changed = _set_domains(session, inst, fields["domains"])
    addresses = _officials(fields["officials"], fields["domains"])
    inst.name = fields["name"]
    inst.ror_id = fields["ror_id"]
    inst.country = fields["country"]
    inst.website = fields["website"]
    inst.application = Application(
        applicant_id=actor.id,
        statement=fields["statement"],
        technical_contact_name=fields["technical_contact_name"],
        technical_contact_email=fields["technical_contact_email"],
        idp_entity_id=fields["idp_entity_id"],
        submitted_at=utcnow(),
    )
    session.add(inst)
    session.flush()
    audit.record(
        session,
        "institution.apply",
        actor=actor,
        obj=inst,
        name=inst.name,
        ror_id=inst.ror_id,
        domains=fields["domains"],
        officials=addresses,
    )
    _audit_domains(session, inst, actor, changed)
    for address in addresses:
        _invite(session, inst, address, actor)
    session.expire(inst, ["official_invitations"])
    emails.application_received(session, inst)
    return inst


def update_application(
    session: AnySession,
    institution: Institution,
    *,
    actor: User,
    name: str,
    ror_id: str | None,
    country: str,
    website: str | None,
    domains: Iterable[str],
    statement: str,
    technical_contact_name: str,
    technical_contact_email: str,
    idp_entity_id: str | None,
    officials: Iterable[str],
) -> Institution:
    """The applicant (or a signing official of the institution) changes the application while it
    is ``applied`` or sent back for changes; the same rules as applying hold. New officials are
    invited, an expired invitation is sent again, and pending invitations of officials taken off
    the list are cancelled. Audited with what it was before."""
    check(can_resubmit_application, actor, institution)
    application = institution.application
    if application is None:
        raise ValidationError(
            "This institution was registered by program staff: it has no application to change."
        )
    if institution.state not in EDITABLE_APPLICATION_STATES:
        raise ConflictError(
            f"The application is {institution.state.label.lower()}: it can only be changed while "
            "it waits for review or changes are asked for."
        )
    fields = _details(
        session,
        institution,
        actor,
        name=name,
        ror_id=ror_id,
        country=country,
        website=website,
        domains=domains,
        statement=statement,
        technical_contact_name=technical_contact_name,
        technical_contact_email=technical_contact_email,
        idp_entity_id=idp_entity_id,
        officials=officials,
    )
    before = {
        "name": institution.name,
        "ror_id": institution.ror_id,
        "country": institution.country,
        "website": institution.website,
        "domains": [d.domain for d in institution.all_domains],
        "technical_contact_email": application.technical_contact_email,
        "idp_entity_id": application.idp_entity_id,
    }
    # The caller rolls back when a rule refuses (the domains may be set already then).
    changed = _set_domains(session, institution, fields["domains"])
    addresses = _officials(fields["officials"], fields["domains"])
    institution.name = fields["name"]
    institution.ror_id = fields["ror_id"]
    institution.country = fields["country"]
    institution.website = fields["website"]
    application.statement = fields["statement"]
    application.technical_contact_name = fields["technical_contact_name"]
    application.technical_contact_email = fields["technical_contact_email"]
    application.idp_entity_id = fields["idp_entity_id"]
    session.flush()
    audit.record(
        session, "institution.application_update", actor=actor, obj=institution, before=before
    )
    _audit_domains(session, institution, actor, changed)
    _sync_invitations(session, institution, addresses, actor)
    return institution


def resubmit(session: AnySession, institution: Institution, *, actor: User) -> Institution:
    """Send an application back to program staff after they asked for changes (the applicant or
    a signing official of the institution); program officers are asked to look at it again."""
    INSTITUTION_WORKFLOW.run(session, institution, "resubmit", actor=actor)
    if institution.application is not None:
        institution.application.submitted_at = utcnow()
        session.flush()
    return institution


def decide(
    session: AnySession,
    institution: Institution,
    action: str,
    *,
    actor: User,
    reason: str | None = None,
) -> Institution:
    """Program staff ask for changes (with what to change), start the review, approve (needs a ROR
    id; the partnership agreement goes out) or decline (with the reason; the pending domains are
    released and open invitations cancelled). The applicant hears of every decision but the
    start of the review. Of two people deciding at once, one decision stands."""
    if action not in DECISIONS:
        raise ValidationError("Choose to ask for changes, start the review, approve or decline.")
    return INSTITUTION_WORKFLOW.run(session, institution, action, actor=actor, reason=reason)


def official_invitations(session: AnySession, institution: Institution) -> list[OfficialInvitation]:
    """The institution's invitations to be signing official, oldest first."""
    return list(
        session.scalars(
            select(OfficialInvitation)
            .where(OfficialInvitation.institution_id == institution.id)
            .order_by(OfficialInvitation.id)
        )
    )


# --- answering an invitation ---------------------------------------------------------------------


def invitation_for_token(session: AnySession, token: str) -> OfficialInvitation | None:
    """The invitation whose link carries ``token`` (in any state), or None."""
    if not token or len(token) > MAX_TOKEN:
        return None
    return session.scalar(
        select(OfficialInvitation).where(OfficialInvitation.token_hash == token_hash(token))
    )


def is_expired(invitation: OfficialInvitation, now: dt.datetime | None = None) -> bool:
    """Whether a pending invitation's link has run out."""
    return invitation.expires_at <= (now or utcnow())


def _usable(session: AnySession, token: str, actor: User) -> OfficialInvitation:
    """The pending, unexpired invitation of ``token``; otherwise an error saying what happened
    and what to do."""
    invitation = invitation_for_token(session, token)
    if invitation is None:
        raise NotFoundError(
            "This invitation link is not valid. Copy the whole link from the e-mail, or ask the "
            "applicant to send the invitation again."
        )
    check(can_answer_invitation, actor, invitation)
    who = invitation.invited_by.display_name if invitation.invited_by else "the applicant"
    state = invitation.state
    if state == OfficialInvitationState.ACCEPTED:
        if invitation.accepted_by_id == actor.id:
            raise InvitationGoneError("You have already accepted this invitation.")
        raise InvitationGoneError(
            "This invitation has already been used: each link works once. Ask "
            f"{who} to invite your own address."
        )
    if state == OfficialInvitationState.DECLINED:
        raise InvitationGoneError(
            f"This invitation was declined. If that was a mistake, ask {who} to invite you again."
        )
    if state == OfficialInvitationState.CANCELLED or invitation.institution.state in (
        InstitutionState.DECLINED,
        InstitutionState.WITHDRAWN,
    ):
        raise InvitationGoneError(
            "This invitation was cancelled: the application was declined or withdrawn, or the "
            "applicant took your name off it."
        )
    if is_expired(invitation):
        raise InvitationGoneError(
            f"This invitation expired on {invitation.expires_at:%d %B %Y}. Ask {who} to send it "
            "again: saving the application sends a fresh link."
        )
    return invitation


def _addresses(invitation: OfficialInvitation, actor: User) -> dict[str, Any]:
    login = (actor.email or "").lower() or None
    return {
        "invitation_id": invitation.id,
        "invited_email": invitation.email,
        "login_email": login,
        "login_email_verified": bool(actor.email_verified),
        "same_address": bool(actor.email_verified) and login == invitation.email,
    }


def _answer(session: AnySession, token: str, action: str, actor: User) -> OfficialInvitation:
    """Accept or decline through the invitation's workflow (compare-and-set: of two answers at
    once, one stands; the other is told the invitation was just answered)."""
    invitation = _usable(session, token, actor)
    details = _addresses(invitation, actor)
    OFFICIAL_INVITATION_WORKFLOW.run(
        session,
        invitation,
        action,
        actor=actor,
        institution_id=invitation.institution_id,
        **details,
    )
    return invitation


def accept_invitation(session: AnySession, token: str, *, actor: User) -> OfficialInvitation:
    """The logged-in person with the link becomes a signing official of the institution, once,
    before the link expires. A login under another address than the invited one may accept: both
    addresses are audited (see the module's docstring)."""
    return _answer(session, token, "accept", actor)


def decline_invitation(session: AnySession, token: str, *, actor: User) -> OfficialInvitation:
    """The logged-in person with the link declines to be the institution's signing official; the
    link stops working (the applicant may propose someone else)."""
    return _answer(session, token, "decline", actor)
