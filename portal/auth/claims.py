"""What verified ID-token claims say about a person: name, e-mail, and which institutions vouch for
them.

The rule for affiliation evidence: a provider vouches only for the institutions it serves. An
institution's own IdP speaks for the institutions linked to it in the registry; a federation proxy
(CILogon) speaks for the one campus named by its ``idp`` claim, mapped by entity id. Within that:
a *verified* e-mail address in one of the institution's domains, or an ``eduPersonScopedAffiliation``
scoped to one of them, or (federation) the campus itself, is evidence. An unverified e-mail is never
evidence of anything, and neither is an e-mail domain of an institution the provider does not serve
(that is how CVE-2022-31027 let a GitHub account with a university address in through CILogon).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from portal.auth.models import IdentityProvider, ProviderKind
from portal.institutions.models import Institution

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}$")
#: eduPerson affiliation values worth keeping as a title.
_TITLES = {"faculty", "student", "staff", "employee", "member", "affiliate", "researcher"}


@dataclass(frozen=True)
class Evidence:
    institution: Institution
    title: str | None
    #: ``federation_idp``, ``scoped_affiliation`` or ``verified_email``.
    basis: str
    value: str


def claim_str(claims: dict[str, Any], name: str, max_len: int = 320) -> str | None:
    value = claims.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:max_len] if value else None


def email_of(claims: dict[str, Any]) -> tuple[str | None, bool]:
    """(e-mail, verified). Verified only when the provider says ``email_verified`` is true."""
    email = claim_str(claims, "email")
    if email is None or not _EMAIL_RE.match(email):
        return None, False
    return email.lower(), claims.get("email_verified") is True


def real_name_of(claims: dict[str, Any]) -> str | None:
    """The person's name as the provider states it (``name``, or given and family name), if any."""
    name = claim_str(claims, "name", 200)
    if name:
        return name
    parts = [claim_str(claims, "given_name", 100), claim_str(claims, "family_name", 100)]
    return " ".join(p for p in parts if p) or None


def display_name_of(claims: dict[str, Any]) -> str:
    """A name to show for a new person: their real name, else their user name, else the subject."""
    return (
        real_name_of(claims)
        or claim_str(claims, "preferred_username", 200)
        or str(claims.get("sub", ""))[:200]
    )


def scoped_affiliations(claims: dict[str, Any]) -> list[tuple[str, str]]:
    """(affiliation, scope domain) pairs from ``eduPersonScopedAffiliation`` (list or string)."""
    raw = claims.get("eduPersonScopedAffiliation") or claims.get("eduperson_scoped_affiliation")
    values = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
    out = []
    for v in values:
        if isinstance(v, str) and v.count("@") == 1:
            aff, scope = v.lower().split("@")
            if aff and scope:
                out.append((aff, scope))
    return out


def _domain_matches(domain: str, institution: Institution) -> bool:
    return any(domain == d.domain or domain.endswith("." + d.domain) for d in institution.domains)


def speaks_for(provider: IdentityProvider, claims: dict[str, Any]) -> list[Institution]:
    """The partner institutions this login may vouch for, or stop vouching for: those ``provider``
    serves; for a federation proxy, only the campus named by the ``idp`` claim."""
    if provider.kind == ProviderKind.FEDERATION:
        idp = claim_str(claims, "idp", 500)
        candidates = [pi.institution for pi in provider.served if idp and pi.entity_id == idp]
    else:
        candidates = [pi.institution for pi in provider.served]
    return [i for i in candidates if i.is_partner]


def missing_evidence(
    provider: IdentityProvider, claims: dict[str, Any], institution: Institution
) -> str:
    """Why these claims from ``provider`` no longer vouch for ``institution``, in words for the
    person and the audit log (which evidence is gone)."""
    domains = ", ".join(d.domain for d in institution.domains) or "none"
    email, verified = email_of(claims)
    if email is None:
        about_email = "it sends no e-mail address"
    elif not verified:
        about_email = f"it does not state that your address {email} is verified"
    else:
        about_email = f"your verified address {email} is in none of them"
    return (
        f"{provider.name} no longer vouches for your membership of {institution.name} "
        f"(domains: {domains}): {about_email}, and it sends no eduPersonScopedAffiliation "
        "scoped to them."
    )


def affiliation_evidence(provider: IdentityProvider, claims: dict[str, Any]) -> list[Evidence]:
    """Institutions (partners only) that these verified claims from ``provider`` vouch for."""
    candidates = speaks_for(provider, claims)
    found: dict[int, Evidence] = {}
    for aff, scope in scoped_affiliations(claims):
        for inst in candidates:
            if inst.id not in found and _domain_matches(scope, inst):
                title = aff if aff in _TITLES else None
                found[inst.id] = Evidence(inst, title, "scoped_affiliation", f"{aff}@{scope}")
    email, verified = email_of(claims)
    if email and verified:
        domain = email.rsplit("@", 1)[1]
        for inst in candidates:
            if inst.id not in found and _domain_matches(domain, inst):
                found[inst.id] = Evidence(inst, None, "verified_email", domain)
    if provider.kind == ProviderKind.FEDERATION:
        for inst in candidates:
            if inst.id not in found:
                found[inst.id] = Evidence(
                    inst, None, "federation_idp", claim_str(claims, "idp") or ""
                )
    return list(found.values())
