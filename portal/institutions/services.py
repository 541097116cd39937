"""Business rules for institutions. Services flush; the caller commits."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import selectinload

from portal.auth.models import Identity, IdentityProvider, ProviderKind, User
from portal.core import audit
from portal.core.errors import ConflictError, ValidationError
from portal.core.listing import contains, matches
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.institutions import emails
from portal.institutions.models import (
    Affiliation,
    AffiliationSource,
    AffiliationState,
    DomainState,
    Institution,
    InstitutionDomain,
    is_public_webmail,
)
from portal.institutions.permissions import (
    can_edit_institution,
    can_edit_vetted_details,
    can_register_institution,
    can_request_affiliation,
)
from portal.institutions.workflow import (
    AFFILIATION_WORKFLOW,
    INSTITUTION_WORKFLOW,
    grant_researcher_role,
)

_DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_ROR_RE = re.compile(r"^https://ror\.org/0[a-hj-km-np-tv-z0-9]{6}[0-9]{2}$")


def normalise_domains(raw: Iterable[str]) -> list[str]:
    """Lower-case, strip ``@``, drop duplicates; raise ValidationError naming any invalid domain."""
    out: list[str] = []
    for item in raw:
        d = item.strip().lower().lstrip("@").rstrip(".")
        if not d:
            continue
        if not _DOMAIN_RE.match(d):
            raise ValidationError(f"{item.strip()!r} is not an e-mail domain like example.edu.")
        if d not in out:
            out.append(d)
    return out


def normalise_ror(raw: str | None) -> str | None:
    """Accept ``https://ror.org/…``, ``ror.org/…`` or the bare id; return the canonical URL."""
    if not raw or not raw.strip():
        return None
    value = raw.strip().lower()
    value = value.removeprefix("https://").removeprefix("http://").removeprefix("ror.org/")
    url = f"https://ror.org/{value}"
    if not _ROR_RE.match(url) or ror_checksum(value[:7]) != int(value[7:]):
        raise ValidationError(f"{raw.strip()!r} is not a ROR id like https://ror.org/042nb2s44.")
    return url


def ror_checksum(base: str) -> int:
    """ROR's check digits: ISO 7064 Mod 97-10 over the Crockford base-32 number of the id's first
    seven characters (so a mistyped id is caught before anyone approves a partner with it)."""
    n = 0
    for c in base:
        n = n * 32 + _CROCKFORD.index(c)
    return 98 - (n * 100) % 97


def _set_domains(
    session: AnySession, institution: Institution, domains: list[str]
) -> tuple[list[str], list[str]]:
    """Make ``domains`` the institution's claimed domains; returns (added, removed). A new claim
    is pending until proven (see ``portal.institutions.domains``); a public webmail domain is
    refused, and so is a domain another institution claims — verified there, or pending proof
    there (program staff settle who owns it)."""
    webmail = [d for d in domains if is_public_webmail(d)]
    if webmail:
        raise ValidationError(
            f"{', '.join(webmail)}: public webmail domains belong to no institution."
        )
    taken = session.scalars(
        select(InstitutionDomain).where(
            InstitutionDomain.domain.in_(domains),
            InstitutionDomain.institution_id != (institution.id or 0),
        )
    ).all()
    verified = sorted(d.domain for d in taken if d.state == DomainState.VERIFIED)
    if verified:
        raise ConflictError(
            "These domains already belong to another institution: " + ", ".join(verified)
        )
    if taken:
        raise ConflictError(
            "These domains are claimed by another institution, pending proof there: "
            + ", ".join(sorted(d.domain for d in taken))
            + ". Ask program staff to settle who owns them."
        )
    existing = {d.domain: d for d in institution.all_domains}
    institution.all_domains = [existing.get(d) or InstitutionDomain(domain=d) for d in domains]
    return [d for d in domains if d not in existing], [d for d in existing if d not in domains]


def _audit_domains(
    session: AnySession,
    institution: Institution,
    actor: User,
    changed: tuple[list[str], list[str]],
) -> None:
    added, removed = changed
    for d in added:
        audit.record(session, "institution.domain_add", actor=actor, obj=institution, domain=d)
    for d in removed:
        audit.record(session, "institution.domain_remove", actor=actor, obj=institution, domain=d)
    if added or removed:
        session.expire(institution, ["domains"])


def _check_unique_ror(session: AnySession, institution: Institution, ror_id: str | None) -> None:
    if ror_id is None:
        return
    other = session.scalar(
        select(Institution.id).where(
            Institution.ror_id == ror_id, Institution.id != (institution.id or 0)
        )
    )
    if other is not None:
        raise ConflictError(f"Another institution already has the ROR id {ror_id}.")


def register_institution(
    session: AnySession,
    *,
    actor: User,
    name: str,
    country: str,
    ror_id: str | None = None,
    short_name: str | None = None,
    website: str | None = None,
    domains: Iterable[str] = (),
) -> Institution:
    """Record an institution that applies to become a partner; it starts in the ``applied`` state."""
    check(can_register_institution, actor)
    inst = Institution(
        name=name.strip(),
        short_name=(short_name or "").strip() or None,
        country=country.strip().upper(),
        website=(website or "").strip() or None,
    )
    inst.ror_id = normalise_ror(ror_id)
    _check_unique_ror(session, inst, inst.ror_id)
    changed = _set_domains(session, inst, normalise_domains(domains))
    session.add(inst)
    session.flush()
    audit.record(session, "institution.register", actor=actor, obj=inst, name=inst.name)
    _audit_domains(session, inst, actor, changed)
    return inst


def update_institution(
    session: AnySession,
    institution: Institution,
    *,
    actor: User,
    name: str,
    country: str,
    ror_id: str | None,
    short_name: str | None,
    website: str | None,
    domains: Iterable[str],
) -> Institution:
    """Change an institution's details. Its name, ROR id and country are vetted once it is under
    review: after that only program staff change them (``can_edit_vetted_details``). A partner
    keeps its ROR id (the CHECK constraint says so too). New e-mail domains are pending until
    proven; removed ones stop vouching for anyone."""
    check(can_edit_institution, actor, institution)
    new_ror = normalise_ror(ror_id)
    if (name.strip(), country.strip().upper(), new_ror) != (
        institution.name,
        institution.country,
        institution.ror_id,
    ):
        check(can_edit_vetted_details, actor, institution)
    if institution.is_partner and new_ror is None:
        raise ValidationError("A partner institution must keep a ROR id.")
    _check_unique_ror(session, institution, new_ror)
    before = {
        "name": institution.name,
        "ror_id": institution.ror_id,
        "country": institution.country,
        "domains": [d.domain for d in institution.all_domains],
    }
    institution.name = name.strip()
    institution.short_name = (short_name or "").strip() or None
    institution.country = country.strip().upper()
    institution.website = (website or "").strip() or None
    institution.ror_id = new_ror
    changed = _set_domains(session, institution, normalise_domains(domains))
    session.flush()
    audit.record(session, "institution.update", actor=actor, obj=institution, before=before)
    _audit_domains(session, institution, actor, changed)
    return institution


def transition(
    session: AnySession,
    institution: Institution,
    action: str,
    *,
    actor: User,
    reason: str | None = None,
) -> Institution:
    """Move an institution through its lifecycle (``INSTITUTION_WORKFLOW``). Approving needs a ROR
    id; suspending and withdrawing need a reason, which is kept in the audit log."""
    return INSTITUTION_WORKFLOW.run(session, institution, action, actor=actor, reason=reason)


def matching_institutions(text: str) -> ColumnElement[bool]:
    """Institutions whose name, short name or one of whose verified e-mail domains contains
    ``text`` (an e-mail address matches by its domain; a pending claim points nobody anywhere)."""
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    return or_(
        matches(text, Institution.name, Institution.short_name),
        Institution.id.in_(
            select(InstitutionDomain.institution_id).where(
                contains(InstitutionDomain.domain, text),
                InstitutionDomain.state == DomainState.VERIFIED,
            )
        ),
    )


def find_by_email_domain(session: AnySession, email: str) -> Institution | None:
    """The institution owning the domain of ``email`` (or a parent domain: cs.mit.edu → mit.edu).
    Only verified domains count: a claim pending proof speaks for nobody."""
    domain = email.rsplit("@", 1)[-1].strip().lower()
    parts = domain.split(".")
    candidates = [".".join(parts[i:]) for i in range(len(parts) - 1)]
    if not candidates:
        return None
    row = session.execute(
        select(InstitutionDomain)
        .where(
            InstitutionDomain.domain.in_(candidates),
            InstitutionDomain.state == DomainState.VERIFIED,
        )
        .order_by(func.length(InstitutionDomain.domain).desc())
        .limit(1)
    ).scalar_one_or_none()
    return row.institution if row else None


# --- Affiliations -------------------------------------------------------------------------------

_OPEN = (AffiliationState.REQUESTED, AffiliationState.ACTIVE)


def _open_affiliation(
    session: AnySession, user: User, institution: Institution
) -> Affiliation | None:
    return session.scalar(
        select(Affiliation).where(
            Affiliation.user_id == user.id,
            Affiliation.institution_id == institution.id,
            Affiliation.state.in_(_OPEN),
        )
    )


def affiliate_from_idp(
    session: AnySession,
    user: User,
    institution: Institution,
    *,
    title: str | None,
    basis: str,
    value: str,
) -> Affiliation | None:
    """The institution's identity provider vouches for ``user`` in verified claims (see
    ``portal.auth.claims``): the affiliation becomes active (an open request is settled by it) and
    the person is a researcher there. Only partner institutions; an active affiliation stays as is."""
    if not institution.is_partner:
        return None
    evidence: dict[str, Any] = {"institution_id": institution.id, "basis": basis, "value": value}
    aff = _open_affiliation(session, user, institution)
    if aff is not None and aff.state == AffiliationState.ACTIVE:
        return aff
    if aff is not None:
        return AFFILIATION_WORKFLOW.run(
            session,
            aff,
            "confirm_by_idp",
            actor=user,
            values={"source": AffiliationSource.IDP_CLAIM, "title": aff.title or title},
            **evidence,
        )
    aff = Affiliation(
        user_id=user.id,
        institution_id=institution.id,
        title=title,
        state=AffiliationState.ACTIVE,
        source=AffiliationSource.IDP_CLAIM,
        decided_at=utcnow(),
    )
    session.add(aff)
    session.flush()
    grant_researcher_role(session, aff)
    audit.record(session, "affiliation.idp_claim", actor=user, obj=aff, **evidence)
    return aff


def end_idp_affiliations(
    session: AnySession, user: User, unsupported: Mapping[int, str], *, provider: str
) -> list[Affiliation]:
    """A login through ``provider`` speaks for the institutions in ``unsupported`` (id → which
    evidence is gone) but no longer vouches for ``user`` there: every active affiliation there that
    came from identity-provider claims ends (the researcher role with it; the person is told why).
    Affiliations an official approved or staff recorded are never ended by a login."""
    if not unsupported:
        return []
    ended = []
    for aff in session.scalars(
        select(Affiliation)
        .where(
            Affiliation.user_id == user.id,
            Affiliation.institution_id.in_(list(unsupported)),
            Affiliation.state == AffiliationState.ACTIVE,
            Affiliation.source == AffiliationSource.IDP_CLAIM,
        )
        .order_by(Affiliation.id)
    ).all():
        ended.append(
            AFFILIATION_WORKFLOW.run(
                session,
                aff,
                "end",
                actor=user,
                reason=unsupported[aff.institution_id],
                institution_id=aff.institution_id,
                provider=provider,
            )
        )
    return ended


@dataclass(frozen=True)
class AddressCheck:
    """What backs the address of the person behind an affiliation request, for those deciding it."""

    email: str | None
    #: Whether the portal treats the address as verified (a provider said so, or a link confirmed it).
    verified: bool
    #: Names of the identity providers whose claims verified this very address.
    vouched_by: tuple[str, ...]
    #: Names of those that serve the request's institution (for a federation proxy: its campus).
    serving: tuple[str, ...]


def address_checks(
    session: AnySession, affiliations: Sequence[Affiliation]
) -> dict[int, AddressCheck]:
    """For each affiliation (by id): the person's address, and which identity providers vouched
    for it and whether they serve the institution. A provider's "verified" means something only
    for the domains it has authority over. One query for every person on the page."""
    user_ids = {a.user_id for a in affiliations}
    rows = (
        session.execute(
            select(Identity, IdentityProvider)
            .join(IdentityProvider, IdentityProvider.issuer == Identity.issuer)
            .where(Identity.user_id.in_(user_ids), Identity.email_verified.is_(True))
            .options(selectinload(IdentityProvider.served))
            .order_by(Identity.id)
        ).all()
        if user_ids
        else []
    )
    out = {}
    for aff in affiliations:
        email = aff.user.email
        vouched: dict[str, bool] = {}
        for identity, provider in rows:
            if identity.user_id != aff.user_id or not email or identity.email != email:
                continue
            serves = any(
                pi.institution_id == aff.institution_id
                and (
                    provider.kind != ProviderKind.FEDERATION
                    or (pi.entity_id is not None and pi.entity_id == identity.upstream_idp)
                )
                for pi in provider.served
            )
            vouched[provider.name] = vouched.get(provider.name, False) or serves
        out[aff.id] = AddressCheck(
            email=email,
            verified=bool(email) and aff.user.email_verified,
            vouched_by=tuple(vouched),
            serving=tuple(name for name, serves in vouched.items() if serves),
        )
    return out


def request_affiliation(
    session: AnySession, institution: Institution, *, actor: User, title: str | None = None
) -> Affiliation:
    """Ask to join ``institution``; its signing official approves or rejects the request."""
    check(can_request_affiliation, actor, institution)
    existing = _open_affiliation(session, actor, institution)
    if existing is not None:
        raise ConflictError(
            f"You already have an affiliation with {institution.name} "
            f"({existing.state.label.lower()})."
        )
    aff = Affiliation(
        user_id=actor.id,
        institution_id=institution.id,
        title=(title or "").strip()[:100] or None,
        state=AffiliationState.REQUESTED,
        source=AffiliationSource.OFFICIAL_APPROVAL,
    )
    session.add(aff)
    session.flush()
    session.expire(actor, ["affiliations"])
    audit.record(
        session, "affiliation.request", actor=actor, obj=aff, institution_id=institution.id
    )
    emails.affiliation_requested(session, aff)
    return aff


def decide_affiliation(
    session: AnySession,
    affiliation: Affiliation,
    action: str,
    *,
    actor: User,
    reason: str | None = None,
) -> Affiliation:
    """The institution's signing official approves (``approve``: the person becomes a researcher
    there) or rejects (``reject``, with a reason) a request to join. Only open requests can be
    decided, and only once: of two officials deciding at the same moment, one wins."""
    if action not in ("approve", "reject"):
        raise ValidationError("Choose to approve or to reject the request.")
    return AFFILIATION_WORKFLOW.run(
        session,
        affiliation,
        action,
        actor=actor,
        reason=reason,
        user_id=affiliation.user_id,
        institution_id=affiliation.institution_id,
    )


def withdraw_affiliation_request(
    session: AnySession, affiliation: Affiliation, *, actor: User
) -> Affiliation:
    """The person who asked to join takes the request back (it ends, undecided by anyone else)."""
    return AFFILIATION_WORKFLOW.run(session, affiliation, "withdraw", actor=actor)
