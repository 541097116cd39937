"""Factories that build only valid objects, flushed into the test's session."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from portal.auth.models import Identity, Role, RoleGrant, User
from portal.core.models import AnySession, utcnow
from portal.institutions.models import (
    Affiliation,
    AffiliationSource,
    AffiliationState,
    DomainProof,
    DomainState,
    Institution,
    InstitutionDomain,
    InstitutionState,
)
from portal.institutions.services import ror_checksum
from portal.notifications.models import OutboxMessage, OutboxState

_seq = itertools.count(1)
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def make_ror(n: int) -> str:
    base = "0" + "".join(_CROCKFORD[(n >> (5 * i)) % 32] for i in range(6))[::-1]
    return f"https://ror.org/{base}{ror_checksum(base):02d}"


def make_institution(
    session: AnySession, *, state: InstitutionState = InstitutionState.PARTNER, **kw: Any
) -> Institution:
    n = next(_seq)
    inst = Institution(
        name=kw.pop("name", f"University {n}"),
        country=kw.pop("country", "US"),
        ror_id=kw.pop("ror_id", make_ror(n + 1000)),
        state=state,
        **kw,
    )
    inst.all_domains.append(make_domain(f"uni{n}.edu"))
    session.add(inst)
    session.flush()
    return inst


def make_domain(domain: str, *, state: DomainState = DomainState.VERIFIED) -> InstitutionDomain:
    """A claimed e-mail domain, verified (by staff) unless told otherwise; add it to an
    institution's ``all_domains``."""
    if state == DomainState.PENDING:
        return InstitutionDomain(domain=domain, state=state)
    return InstitutionDomain(
        domain=domain, state=state, method=DomainProof.STAFF, verified_at=utcnow()
    )


def make_user(
    session: AnySession,
    *roles: Role,
    institution: Institution | None = None,
    issuer: str = "https://idp.test",
    **kw: Any,
) -> User:
    """A user holding ``roles``; institution roles (researcher, signing official) are held at
    ``institution`` (made if not given), with an active affiliation there."""
    n = next(_seq)
    user = User(
        display_name=kw.pop("display_name", f"Person {n}"),
        email=kw.pop("email", f"person{n}@example.org"),
        email_verified=kw.pop("email_verified", True),
        **kw,
    )
    user.identities.append(Identity(issuer=issuer, subject=f"sub-{n}", email=user.email))
    session.add(user)
    for role in roles:
        scoped = role in (Role.RESEARCHER, Role.SIGNING_OFFICIAL)
        if scoped and institution is None:
            institution = make_institution(session)
        session.add(RoleGrant(user=user, role=role, institution=institution if scoped else None))
        if (
            scoped
            and institution is not None
            and not any(a.institution_id == institution.id for a in user.affiliations)
        ):
            make_affiliation(
                session,
                user=user,
                institution=institution,
                state=AffiliationState.ACTIVE,
                source=AffiliationSource.STAFF,
            )
    session.flush()
    session.refresh(user)
    return user


def make_affiliation(
    session: AnySession,
    *,
    user: User | None = None,
    institution: Institution | None = None,
    state: AffiliationState = AffiliationState.REQUESTED,
    source: AffiliationSource = AffiliationSource.OFFICIAL_APPROVAL,
    **kw: Any,
) -> Affiliation:
    """``user``'s affiliation with ``institution`` (each made if not given); a decided one (any
    state but requested) gets ``decided_at`` now unless given, as the model's CHECK demands."""
    if state != AffiliationState.REQUESTED:
        kw.setdefault("decided_at", utcnow())
    aff = Affiliation(
        user=make_user(session) if user is None else user,
        institution=make_institution(session) if institution is None else institution,
        state=state,
        source=source,
        **kw,
    )
    session.add(aff)
    session.flush()
    return aff


def make_outbox_message(
    session: AnySession, *, state: OutboxState = OutboxState.QUEUED, **kw: Any
) -> OutboxMessage:
    """A welcome mail in the outbox in ``state``, consistent with the model's CHECKs: ``sent_at``
    is set iff sent, ``digest_id`` (a digest mail, made if not given) iff digested, and a message
    that was tried (failed, dead or sent) counts one attempt unless told otherwise."""
    n = next(_seq)
    if state == OutboxState.SENT:
        kw.setdefault("sent_at", utcnow())
    if state == OutboxState.DIGESTED and "digest_id" not in kw:
        digest = make_outbox_message(
            session,
            template="notifications/digest",
            to_addr=kw.get("to_addr", f"person{n}@example.org"),
            context={"items": [], "date": utcnow().strftime("%d %B %Y")},
        )
        kw["digest_id"] = digest.id
    if state in (OutboxState.FAILED, OutboxState.DEAD, OutboxState.SENT):
        kw.setdefault("attempts", 1)
    msg = OutboxMessage(
        message_id=kw.pop("message_id", f"<test-{uuid.uuid4().hex}@atom-lab.org>"),
        template=kw.pop("template", "auth/welcome"),
        to_addr=kw.pop("to_addr", f"person{n}@example.org"),
        context=kw.pop("context", {"name": f"Person {n}", "has_affiliation": False}),
        state=state,
        **kw,
    )
    session.add(msg)
    session.flush()
    return msg


#: The kinds of visitor every route-by-role matrix test covers.
ROLE_NAMES = ["anonymous", "researcher", "official", "reviewer", "steward", "officer", "admin"]
LOGGED_IN = frozenset(ROLE_NAMES) - {"anonymous"}
_ROLE_OF = {
    "researcher": Role.RESEARCHER,
    "official": Role.SIGNING_OFFICIAL,
    "reviewer": Role.REVIEWER,
    "steward": Role.DATA_STEWARD,
    "officer": Role.PROGRAM_OFFICER,
    "admin": Role.ADMIN,
}


def make_actor(session: AnySession, role_name: str, own: Institution) -> User | None:
    """A visitor of kind ``role_name`` (None for anonymous); researchers and signing officials
    belong to ``own``."""
    if role_name == "anonymous":
        return None
    return make_user(session, _ROLE_OF[role_name], institution=own)
