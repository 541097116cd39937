"""Factories that build only valid objects, flushed into the test's session."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.orm import Session

from portal.auth.models import Identity, Role, RoleGrant, User
from portal.core.models import utcnow
from portal.institutions.models import (
    Affiliation,
    AffiliationSource,
    AffiliationState,
    Institution,
    InstitutionDomain,
    InstitutionState,
)
from portal.institutions.services import ror_checksum

_seq = itertools.count(1)
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def make_ror(n: int) -> str:
    base = "0" + "".join(_CROCKFORD[(n >> (5 * i)) % 32] for i in range(6))[::-1]
    return f"https://ror.org/{base}{ror_checksum(base):02d}"


def make_institution(
    session: Session, *, state: InstitutionState = InstitutionState.PARTNER, **kw: Any
) -> Institution:
    n = next(_seq)
    inst = Institution(
        name=kw.pop("name", f"University {n}"),
        country=kw.pop("country", "US"),
        ror_id=kw.pop("ror_id", make_ror(n + 1000)),
        state=state,
        **kw,
    )
    inst.domains.append(InstitutionDomain(domain=f"uni{n}.edu"))
    session.add(inst)
    session.flush()
    return inst


def make_user(
    session: Session,
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
            session.add(
                Affiliation(
                    user=user,
                    institution=institution,
                    state=AffiliationState.ACTIVE,
                    source=AffiliationSource.STAFF,
                    decided_at=utcnow(),
                )
            )
    session.flush()
    session.refresh(user)
    return user


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


def make_actor(session: Session, role_name: str, own: Institution) -> User | None:
    """A visitor of kind ``role_name`` (None for anonymous); researchers and signing officials
    belong to ``own``."""
    if role_name == "anonymous":
        return None
    return make_user(session, _ROLE_OF[role_name], institution=own)
