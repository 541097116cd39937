"""Proving that an institution owns an e-mail domain, before the domain vouches for anyone.

A domain an institution claims starts pending. It is proven either by a DNS TXT record — the
institution publishes ``atom-portal-verification=<token>`` at ``_atom-portal.<domain>`` and someone
who may manage its domains presses "Check DNS now" — or, where DNS cannot be changed or reached, by
a program officer vouching for it. Only verified domains feed automatic affiliation at login.

The DNS look-up is a plain function (``TxtLookup``) passed to :func:`check_domain_dns`, so tests
give it a stand-in; :func:`dns_txt_lookup` builds the real one on dnspython.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dns.exception
import dns.nameserver
import dns.resolver

from portal.auth.models import User
from portal.core import audit
from portal.core.errors import ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.core.workflow import Step, Transition, Workflow
from portal.institutions import permissions
from portal.institutions.models import DomainProof, InstitutionDomain
from portal.institutions.models import DomainState as D

#: The TXT strings published at a DNS name ([] when there are none); raises DnsUnavailableError
#: when no answer could be had at all.
TxtLookup = Callable[[str], list[str]]


#: Where a test registers a stand-in ``TxtLookup`` in ``app.extensions`` (the views use it).
LOOKUP_EXTENSION = "portal.institutions.dns_txt_lookup"


class DnsUnavailableError(ValidationError):
    """DNS gave no answer (timeout, no reachable nameserver): nothing can be concluded."""


DOMAIN_TRANSITIONS: dict[str, Transition[D]] = {
    "verify_dns": Transition(frozenset({D.PENDING}), D.VERIFIED, "Check DNS now"),
    "verify_staff": Transition(frozenset({D.PENDING}), D.VERIFIED, "Verify (staff)"),
}


def _proof(step: Step[InstitutionDomain, D]) -> dict[str, object]:
    by_staff = step.action == "verify_staff"
    return {
        "verified_at": utcnow(),
        "method": DomainProof.STAFF if by_staff else DomainProof.DNS,
        "verified_by_id": step.actor.id if by_staff else None,
    }


DOMAIN_WORKFLOW: Workflow[InstitutionDomain, D] = Workflow(
    name="institution_domain",
    noun="domain",
    model=InstitutionDomain,
    transitions=DOMAIN_TRANSITIONS,
    permissions={
        "verify_dns": permissions.can_check_domain_dns,
        "verify_staff": permissions.can_verify_domain,
    },
    mails={},
    # The person proving the domain sees the result at once, on the institution's page, where
    # everyone who manages its domains sees it too; nobody else has anything to do.
    silent=frozenset(DOMAIN_TRANSITIONS),
    fields=_proof,
)


def _verified(session: AnySession, domain: InstitutionDomain) -> None:
    """A verified domain starts to vouch for people: refresh the institution's verified list."""
    session.expire(domain.institution, ["domains"])


def check_domain_dns(
    session: AnySession, domain: InstitutionDomain, *, actor: User, lookup: TxtLookup
) -> InstitutionDomain:
    """Verify a pending domain by its TXT record: ``_atom-portal.<domain>`` must hold
    ``atom-portal-verification=<token>``. A missing or wrong record, or DNS out of reach, changes
    nothing (ValidationError saying which)."""
    check(permissions.can_check_domain_dns, actor, domain)
    if domain.is_verified:
        raise ValidationError(f"{domain.domain} is already verified.")
    try:
        found = lookup(domain.txt_name)
    except DnsUnavailableError as e:
        raise DnsUnavailableError(
            f"DNS could not be checked for {domain.domain} ({e}). Nothing was changed; "
            "try again later, or ask program staff to verify the domain."
        ) from e
    if domain.txt_value not in {v.strip() for v in found}:
        raise ValidationError(
            f"No TXT record {domain.txt_value} was found at {domain.txt_name}"
            + (f" (found: {', '.join(sorted(found))[:300]})" if found else "")
            + ". Nothing was changed. DNS changes can take a while to be seen."
        )
    DOMAIN_WORKFLOW.run(
        session,
        domain,
        "verify_dns",
        actor=actor,
        domain=domain.domain,
        institution_id=domain.institution_id,
    )
    _verified(session, domain)
    return domain


def verify_domain_by_staff(
    session: AnySession, domain: InstitutionDomain, *, actor: User, reason: str | None = None
) -> InstitutionDomain:
    """A program officer vouches that a pending domain belongs to its institution."""
    DOMAIN_WORKFLOW.run(
        session,
        domain,
        "verify_staff",
        actor=actor,
        reason=reason,
        domain=domain.domain,
        institution_id=domain.institution_id,
    )
    _verified(session, domain)
    return domain


def remove_domain(session: AnySession, domain: InstitutionDomain, *, actor: User) -> None:
    """Whoever may manage the institution's domains removes one, pending or verified (it no
    longer vouches for anyone; people already affiliated stay affiliated)."""
    inst = domain.institution
    check(permissions.can_manage_domains, actor, inst)
    audit.record(
        session,
        "institution.domain_remove",
        actor=actor,
        obj=inst,
        domain=domain.domain,
        state=domain.state.value,
    )
    inst.all_domains.remove(domain)
    session.flush()
    session.expire(inst, ["domains"])


def _nameserver(spec: str) -> dns.nameserver.Nameserver:
    """``1.2.3.4``, ``1.2.3.4:5353``, ``::1`` or ``[::1]:5353``."""
    host, port = spec.strip(), 53
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif host.count(":") == 1:
        host, _, p = host.partition(":")
        port = int(p)
    return dns.nameserver.Do53Nameserver(host, port)


def dns_txt_lookup(nameservers: Sequence[str] = (), timeout: float = 5.0) -> TxtLookup:
    """The real look-up, on dnspython: the system's resolvers, or ``nameservers`` when given
    (``DNS_NAMESERVERS``), giving up after ``timeout`` seconds."""

    def lookup(name: str) -> list[str]:
        try:
            resolver = dns.resolver.Resolver(configure=not nameservers)
            if nameservers:
                resolver.nameservers = [_nameserver(s) for s in nameservers]
            resolver.lifetime = timeout
            resolver.timeout = timeout
            answer = resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise DnsUnavailableError("no answer in time") from None
        except dns.resolver.NoNameservers:
            raise DnsUnavailableError("no nameserver answered") from None
        except dns.exception.DNSException as e:
            raise DnsUnavailableError(type(e).__name__) from None
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]

    return lookup
