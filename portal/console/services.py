"""What a signing official changes from the console besides the other domains' own actions: the
campus entity id by which a federation login (a proxy such as CILogon) names their institution.

Officials never register providers nor change a provider's settings (administrators do, in
``portal.auth``): they set the entity id of an existing mapping of their institution, or map it
to another enabled federation provider — only under one of their institution's verified domains,
since a login naming the entity id vouches for affiliation. Services flush; the caller commits."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from portal.auth.models import IdentityProvider, ProviderInstitution, ProviderKind, User
from portal.auth.permissions import is_admin
from portal.console.permissions import can_map_login
from portal.core import audit
from portal.core.errors import ConflictError, ValidationError
from portal.core.models import AnySession
from portal.core.permissions import check
from portal.institutions.models import Institution

#: The most an entity id may hold (the column's length).
MAX_ENTITY_ID = 500

#: A SAML entity id as federations publish them: an https URL, or a URN (RFC 8141).
_HTTPS_RE = re.compile(r"https://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[^\s]*)?")
_URN_RE = re.compile(r"urn:[A-Za-z0-9][A-Za-z0-9\-]{0,31}:[^\s]+", re.IGNORECASE)


def normalise_entity_id(raw: str | None) -> str:
    """The entity id, stripped; a ValidationError unless it is an https URL or a URN."""
    value = (raw or "").strip()
    if not value:
        raise ValidationError("Enter the campus entity id.")
    if len(value) > MAX_ENTITY_ID:
        raise ValidationError(f"An entity id has at most {MAX_ENTITY_ID} characters.")
    if not (_HTTPS_RE.fullmatch(value) or _URN_RE.fullmatch(value)):
        raise ValidationError(
            "An entity id is an https URL (https://idp.example.edu/idp/shibboleth) "
            "or a URN (urn:mace:incommon:example.edu)."
        )
    return value


def entity_id_host(entity_id: str) -> str:
    """The DNS name an entity id is published under: an https URL's host, or a URN's last part
    (``urn:mace:incommon:example.edu`` → ``example.edu``), lower case."""
    if entity_id.lower().startswith("urn:"):
        return entity_id.rsplit(":", 1)[-1].lower()
    return entity_id.removeprefix("https://").split("/", 1)[0].split(":", 1)[0].lower()


def _check_vouched(institution: Institution, entity_id: str, actor: User) -> None:
    """A signing official maps only entity ids published under one of their institution's
    verified e-mail domains (a login naming the entity id is evidence of affiliation, so an id of
    another campus must never be claimable); administrators map any."""
    if is_admin(actor):
        return
    host = entity_id_host(entity_id)
    verified = [d.domain for d in institution.domains]
    if not any(host == d or host.endswith("." + d) for d in verified):
        raise ValidationError(
            f"The entity id must be published under one of {institution.name}'s verified "
            f"domains ({', '.join(verified) or 'none yet'}); {host or 'it'} is not. "
            "Ask an administrator to map another entity id."
        )


def _entity_id_taken(
    session: AnySession, provider_id: int, entity_id: str, besides: int | None
) -> bool:
    q = select(ProviderInstitution.id).where(
        ProviderInstitution.provider_id == provider_id,
        ProviderInstitution.entity_id == entity_id,
    )
    if besides is not None:
        q = q.where(ProviderInstitution.id != besides)
    return session.scalar(q.limit(1)) is not None


_TAKEN = (
    "{provider} already names another institution by this entity id. "
    "If it is yours, ask program staff to settle it."
)


def set_entity_id(
    session: AnySession, mapping: ProviderInstitution, raw: str | None, *, actor: User
) -> ProviderInstitution:
    """Set the campus entity id by which a federation provider names the mapped institution (its
    ``idp`` claim). Only federation mappings carry one, and each entity id names one institution
    per provider."""
    institution = mapping.institution
    check(can_map_login, actor, institution)
    provider = mapping.provider
    if provider.kind != ProviderKind.FEDERATION:
        raise ValidationError(
            f"{provider.name} is an institution's own login: it names no campus entity id."
        )
    entity_id = normalise_entity_id(raw)
    _check_vouched(institution, entity_id, actor)
    before = mapping.entity_id
    if entity_id == before:
        raise ValidationError("That is the entity id already mapped: nothing changed.")
    if _entity_id_taken(session, provider.id, entity_id, mapping.id):
        raise ConflictError(_TAKEN.format(provider=provider.name))
    try:
        with session.begin_nested():
            mapping.entity_id = entity_id
            session.flush()
    except IntegrityError:
        raise ConflictError(_TAKEN.format(provider=provider.name)) from None
    audit.record(
        session,
        "institution.login_mapping_change",
        actor=actor,
        obj=institution,
        provider=provider.slug,
        before=before,
        after=entity_id,
    )
    return mapping


def mappable_providers(session: AnySession, institution: Institution) -> list[IdentityProvider]:
    """The providers an official may map their institution to: enabled federation proxies that do
    not serve it yet (an institution's own login is registered with its institution by
    administrators)."""
    served = select(ProviderInstitution.provider_id).where(
        ProviderInstitution.institution_id == institution.id
    )
    return list(
        session.scalars(
            select(IdentityProvider)
            .where(
                IdentityProvider.enabled.is_(True),
                IdentityProvider.kind == ProviderKind.FEDERATION,
                IdentityProvider.id.not_in(served),
            )
            .order_by(IdentityProvider.name, IdentityProvider.id)
        )
    )


def add_mapping(
    session: AnySession,
    institution: Institution,
    provider: IdentityProvider,
    raw: str | None,
    *,
    actor: User,
) -> ProviderInstitution:
    """Map the institution to an enabled federation provider under the campus entity id the
    federation publishes for it: logins through that provider naming this entity id then speak
    for the institution. A provider serves an institution once, and names one institution by an
    entity id."""
    check(can_map_login, actor, institution)
    if not provider.enabled or provider.kind != ProviderKind.FEDERATION:
        raise ValidationError(
            "Choose an enabled federation login; an institution's own login is registered by "
            "administrators."
        )
    entity_id = normalise_entity_id(raw)
    _check_vouched(institution, entity_id, actor)
    already = session.scalar(
        select(ProviderInstitution.id).where(
            ProviderInstitution.provider_id == provider.id,
            ProviderInstitution.institution_id == institution.id,
        )
    )
    if already is not None:
        raise ConflictError(f"{provider.name} already serves {institution.name}.")
    if _entity_id_taken(session, provider.id, entity_id, None):
        raise ConflictError(_TAKEN.format(provider=provider.name))
    mapping = ProviderInstitution(
        provider_id=provider.id, institution_id=institution.id, entity_id=entity_id
    )
    try:
        with session.begin_nested():
            session.add(mapping)
            session.flush()
    except IntegrityError:
        raise ConflictError(
            f"{provider.name} already serves {institution.name}, or names another institution "
            "by this entity id."
        ) from None
    session.expire(provider, ["served"])
    audit.record(
        session,
        "institution.login_mapping_add",
        actor=actor,
        obj=institution,
        provider=provider.slug,
        entity_id=entity_id,
    )
    return mapping
