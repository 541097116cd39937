"""Business rules of logging in: accounts keyed by (issuer, subject), identities linked and unlinked,
server-side sessions, disabled users, and the identity-provider registry. Services flush; the
caller commits."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select, update
from sqlalchemy.orm import joinedload

from portal.auth import claims as claim_rules
from portal.auth import emails as auth_emails
from portal.auth.models import (
    Identity,
    IdentityProvider,
    LoginSession,
    ProviderInstitution,
    ProviderKind,
    TokenAuthMethod,
    User,
    UserinfoMode,
)
from portal.auth.permissions import (
    can_disable_user,
    can_manage_identity_providers,
    can_rename_user,
    can_unlink_identity,
)
from portal.core import audit
from portal.core.errors import ConflictError, PermissionDeniedError, ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.institutions import services as institution_services
from portal.institutions.models import Affiliation, Institution

_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_URL_RE = re.compile(r"^https?://[^\s/?#]+[^\s]*$")


def _claims_to_keep(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the token bookkeeping; keep what describes the person (for support and affiliation)."""
    skip = {"nonce", "at_hash", "c_hash", "auth_time", "iat", "exp", "nbf", "jti", "aud", "azp"}
    return {k: v for k, v in claims.items() if k not in skip}


def find_identity(session: AnySession, issuer: str, subject: str) -> Identity | None:
    return session.scalar(
        select(Identity).where(Identity.issuer == issuer, Identity.subject == subject)
    )


def complete_login(
    session: AnySession,
    provider: IdentityProvider,
    claims: Mapping[str, Any],
    *,
    link_to: User | None = None,
) -> tuple[User, Identity]:
    """A provider has vouched for ``claims`` (already verified). The person is whoever holds the
    identity (issuer, subject); a first login creates a new user. E-mail never links accounts:
    a second identity joins an account only when its holder, logged in, links it (``link_to``).
    Verified claims may establish affiliations (``portal.auth.claims``)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 255:
        raise ValidationError("The identity provider sent no usable subject.")
    email, verified = claim_rules.email_of(dict(claims))
    identity = find_identity(session, provider.issuer, subject)
    now = utcnow()
    created = False
    if link_to is not None:
        if identity is not None and identity.user_id != link_to.id:
            audit.record(
                session,
                "identity.link_refused",
                actor=link_to,
                obj=identity,
                provider=provider.slug,
            )
            raise ConflictError("That login already belongs to another account.")
        user = link_to
    elif identity is not None:
        user = identity.user
    else:
        created = True
        user = User(
            display_name=claim_rules.display_name_of(dict(claims)),
            email=email,
            email_verified=verified,
        )
        session.add(user)
        session.flush()
        audit.record(session, "user.create", actor=user, obj=user, provider=provider.slug)
    if user.is_disabled:
        raise PermissionDeniedError("This account is disabled. Contact the lab's administrators.")
    if identity is None:
        identity = Identity(user_id=user.id, issuer=provider.issuer, subject=subject)
        session.add(identity)
        session.flush()
        audit.record(
            session,
            "identity.link" if link_to is not None else "identity.create",
            actor=user,
            obj=identity,
            provider=provider.slug,
        )
    identity.email = email
    identity.email_verified = verified
    identity.upstream_idp = claim_rules.claim_str(dict(claims), "idp", 500)
    identity.claims = _claims_to_keep(claims)
    identity.last_used_at = now
    # The contact address follows verified addresses only; an unverified one is kept, marked so,
    # only while the account has no address at all.
    if email and verified:
        user.email, user.email_verified = email, True
    elif email and user.email is None:
        user.email, user.email_verified = email, False
    # The name follows the provider at every login, unless the person set it in the portal.
    name = claim_rules.real_name_of(dict(claims))
    if name and not user.name_edited and link_to is None and user.display_name != name:
        user.display_name = name
    user.last_login_at = now
    session.flush()
    evidence = claim_rules.affiliation_evidence(provider, dict(claims))
    for ev in evidence:
        institution_services.affiliate_from_idp(
            session, user, ev.institution, title=ev.title, basis=ev.basis, value=ev.value
        )
    # Re-evaluated at every login: where this provider speaks for an institution but its claims
    # no longer vouch, an affiliation that rested on its claims ends.
    supported = {ev.institution.id for ev in evidence}
    institution_services.end_idp_affiliations(
        session,
        user,
        {
            inst.id: claim_rules.missing_evidence(provider, dict(claims), inst)
            for inst in claim_rules.speaks_for(provider, dict(claims))
            if inst.id not in supported
        },
        provider=provider.slug,
    )
    if created:
        auth_emails.welcome(session, user)
    if link_to is None:
        audit.record(session, "auth.login", actor=user, obj=identity, provider=provider.slug)
    return user, identity


def unlink_identity(session: AnySession, identity: Identity, *, actor: User) -> None:
    """Remove one of the actor's login identities; everyone keeps at least one."""
    check(can_unlink_identity, actor, identity)
    count = session.scalar(
        select(func.count()).select_from(Identity).where(Identity.user_id == identity.user_id)
    )
    if (count or 0) <= 1:
        raise ValidationError("This is your only way to log in; link another one first.")
    audit.record(
        session,
        "identity.unlink",
        actor=actor,
        obj=identity,
        issuer=identity.issuer,
        subject=identity.subject,
    )
    session.delete(identity)
    session.flush()
    session.expire(actor, ["identities"])


# --- verifying a contact address ---------------------------------------------------------------

#: Signs e-mail verification links (only for this purpose: other signed values never pass as one).
_VERIFY_SALT = "auth.verify-email"


def _verify_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_VERIFY_SALT)


def send_email_verification(session: AnySession, user: User) -> str:
    """Mail ``user``'s unverified address one signed link that confirms it (valid for
    ``EMAIL_VERIFY_MAX_AGE_HOURS``); returns the address. The only mail an unverified address
    ever gets, sent to the address as such."""
    if user.email is None:
        raise ValidationError("Your account has no e-mail address to verify.")
    if user.email_verified:
        raise ConflictError("Your e-mail address is already verified.")
    token = _verify_serializer().dumps({"u": user.id, "e": user.email})
    hours = int(current_app.config["EMAIL_VERIFY_MAX_AGE_HOURS"])
    auth_emails.email_verification(session, user.email, token=token, hours=hours)
    audit.record(session, "user.email_verification_sent", actor=user, obj=user, email=user.email)
    return user.email


def read_email_verification(token: str) -> tuple[int, str]:
    """(user id, address) from a verification link's token; ValidationError when it is forged,
    altered or older than ``EMAIL_VERIFY_MAX_AGE_HOURS``."""
    max_age = int(float(current_app.config["EMAIL_VERIFY_MAX_AGE_HOURS"]) * 3600)
    try:
        data = _verify_serializer().loads(token[:1000], max_age=max_age)
    except SignatureExpired:
        raise ValidationError(
            "This verification link has expired. Ask for a new one on your account page."
        ) from None
    except BadSignature:
        raise ValidationError("This verification link is not valid.") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("u"), int)
        or not isinstance(data.get("e"), str)
    ):
        raise ValidationError("This verification link is not valid.")
    return data["u"], data["e"]


def check_email_verification(user: User, token: str) -> str:
    """The address a link would verify for ``user``: refused unless it was sent for this account
    (so nobody else can confirm an address for an account they do not hold) and the address is
    still the account's."""
    user_id, email = read_email_verification(token)
    if user_id != user.id:
        raise PermissionDeniedError(
            "This verification link was sent for another account. Log in as its holder."
        )
    if (user.email or "").lower() != email.lower():
        raise ConflictError(f"{email} is no longer your address; this link verifies nothing now.")
    return email


def verify_email(session: AnySession, user: User, token: str) -> User:
    """Mark ``user``'s address verified by the link mailed to it (see ``check_email_verification``);
    confirming twice changes nothing more."""
    email = check_email_verification(user, token)
    if not user.email_verified:
        user.email_verified = True
        session.flush()
        audit.record(session, "user.email_verify", actor=user, obj=user, email=email)
    return user


# --- server-side sessions ----------------------------------------------------------------------


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    session: AnySession,
    user: User,
    *,
    identity: Identity | None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> tuple[LoginSession, str]:
    """A new login session; returns it and the token for the cookie (only its hash is stored)."""
    if user.is_disabled:
        raise PermissionDeniedError("This account is disabled.")
    token = secrets.token_urlsafe(32)
    record = LoginSession(
        token_hash=token_hash(token),
        user_id=user.id,
        identity_id=identity.id if identity is not None else None,
        ip=ip,
        user_agent=user_agent,
    )
    session.add(record)
    session.flush()
    return record, token


def session_for_token(
    session: AnySession,
    token: str,
    *,
    idle: dt.timedelta,
    absolute: dt.timedelta,
    touch_after: dt.timedelta = dt.timedelta(seconds=60),
    read_only: bool = False,
) -> tuple[LoginSession | None, bool]:
    """(the live session with this token or None, whether anything was written). A session past
    its idle or absolute timeout is ended on the spot; a live one is marked seen (at most once a
    minute, so most requests write nothing). ``read_only``: change nothing, and say whether this
    call would have written (the caller then calls again in a write transaction)."""
    person = joinedload(LoginSession.user)
    record = (
        session.scalars(
            select(LoginSession)
            .where(LoginSession.token_hash == token_hash(token))
            # Every page asks who this is, what they may do and where they belong: one query.
            .options(
                person.joinedload(User.role_grants),
                person.joinedload(User.affiliations).joinedload(Affiliation.institution),
            )
        )
        .unique()
        .one_or_none()
    )
    if record is None or record.ended_at is not None:
        return None, False
    now = utcnow()
    if read_only:
        stale = now - record.created_at > absolute or now - record.last_seen_at > idle
        return (None if stale else record), stale or now - record.last_seen_at > touch_after
    if now - record.created_at > absolute:
        end_session(session, record, reason="expired")
        return None, True
    if now - record.last_seen_at > idle:
        end_session(session, record, reason="idle")
        return None, True
    if now - record.last_seen_at > touch_after:
        record.last_seen_at = now
        session.flush()
        return record, True
    return record, False


def end_session(session: AnySession, record: LoginSession, *, reason: str) -> None:
    """End one session for good (its cookie is refused from now on)."""
    if record.ended_at is None:
        record.ended_at = utcnow()
        record.end_reason = reason
        session.flush()
        audit.record(session, f"session.{reason}", actor=None, obj=record, user_id=record.user_id)


def rename_user(session: AnySession, user: User, *, actor: User, name: str) -> User:
    """The person sets the name the portal shows for them; logins then keep it (empty: follow the
    identity provider's name again from the next login)."""
    check(can_rename_user, actor, user)
    name = " ".join(name.split())[:200]
    before = user.display_name
    if name:
        user.display_name, user.name_edited = name, True
    else:
        user.name_edited = False
    session.flush()
    audit.record(session, "user.rename", actor=actor, obj=user, before=before, after=name or None)
    return user


def log_in(
    session: AnySession,
    user: User,
    identity: Identity,
    *,
    replacing: str | None,
    ip: str | None,
    user_agent: str | None,
    id_token: str | None = None,
    provider_sid: str | None = None,
) -> str:
    """Start a new login session for ``user`` (ending the one whose token the browser still had);
    returns the new session's token for the cookie."""
    if replacing:
        record = session.scalar(
            select(LoginSession).where(LoginSession.token_hash == token_hash(replacing))
        )
        if record is not None:
            end_session(session, record, reason="replaced")
    record, token = start_session(session, user, identity=identity, ip=ip, user_agent=user_agent)
    record.id_token, record.provider_sid = id_token, provider_sid
    session.flush()
    return token


def log_out(session: AnySession, user: User | None, token: str | None) -> LoginSession | None:
    """End the session of ``token`` for good, and record the logout; returns the session record
    (the caller may also end the session at the provider with its ID token)."""
    record = None
    if token:
        record = session.scalar(
            select(LoginSession).where(LoginSession.token_hash == token_hash(token))
        )
        if record is not None:
            end_session(session, record, reason="logout")
    if user is not None:
        audit.record(session, "auth.logout", actor=user, obj=user)
    return record


def provider_of(session: AnySession, record: LoginSession) -> IdentityProvider | None:
    """The enabled provider through which the session ``record`` began, if any."""
    if record.identity is None:
        return None
    return session.scalar(
        select(IdentityProvider).where(
            IdentityProvider.issuer == record.identity.issuer, IdentityProvider.enabled.is_(True)
        )
    )


def end_provider_sessions(
    session: AnySession, provider: IdentityProvider, *, sid: str | None, subject: str | None
) -> int:
    """OIDC Back-Channel Logout: the provider ended its session ``sid`` (or every session of
    ``subject``); end the portal sessions that began with it. Returns how many."""
    live = (
        select(LoginSession)
        .join(Identity, Identity.id == LoginSession.identity_id)
        .where(LoginSession.ended_at.is_(None), Identity.issuer == provider.issuer)
    )
    if sid:
        live = live.where(LoginSession.provider_sid == sid)
    if subject:
        live = live.where(Identity.subject == subject)
    records = session.scalars(live).all()
    for record in records:
        end_session(session, record, reason="provider")
    audit.record(
        session,
        "auth.backchannel_logout",
        actor=None,
        obj=provider,
        sid=sid,
        subject=subject,
        sessions_ended=len(records),
    )
    return len(records)


def record_login_failure(
    session: AnySession, provider: IdentityProvider | None, *, reason: str, actor: User | None
) -> None:
    """A login that failed (bad state, a token that did not verify …) leaves an audit event."""
    audit.record(
        session,
        "auth.login_failed",
        actor=actor,
        provider=provider.slug if provider else None,
        reason=reason,
    )


def end_all_sessions(session: AnySession, user: User, *, reason: str) -> int:
    """End every live session of ``user``; returns how many."""
    result = session.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user.id, LoginSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)


def set_user_disabled(
    session: AnySession, user: User, *, actor: User, disabled: bool, reason: str | None = None
) -> User:
    """Admins disable a user (who can no longer log in; every session ends now) or enable them."""
    check(can_disable_user, actor, user)
    reason = (reason or "").strip()[:500] or None
    if disabled and not reason:
        raise ValidationError("Please give a reason for disabling this account.")
    if user.is_disabled == disabled:
        raise ConflictError("The account is already " + ("disabled." if disabled else "enabled."))
    user.is_disabled = disabled
    ended = end_all_sessions(session, user, reason="disabled") if disabled else 0
    audit.record(
        session,
        "user.disable" if disabled else "user.enable",
        actor=actor,
        obj=user,
        reason=reason,
        sessions_ended=ended,
    )
    return user


# --- the identity-provider registry ------------------------------------------------------------


def _check_provider_fields(
    session: AnySession,
    provider: IdentityProvider,
    *,
    slug: str,
    issuer: str,
    discovery_url: str | None,
    algorithms: Iterable[str],
    allowed_algorithms: Iterable[str],
) -> list[str]:
    if not _SLUG_RE.match(slug):
        raise ValidationError("The short name may use lower-case letters, digits and dashes.")
    for label, url in (("issuer", issuer), ("discovery URL", discovery_url)):
        if url and not _URL_RE.match(url):
            raise ValidationError(f"The {label} must be a full http(s) URL.")
    algs = [a.strip() for a in algorithms if a.strip()]
    # Whatever the configuration says: never unsigned tokens, never shared-secret (HMAC) ones,
    # which a public key could be abused to "sign".
    allowed = {a for a in allowed_algorithms if a.lower() != "none" and not a.startswith("HS")}
    bad = [a for a in algs if a not in allowed]
    if not algs or bad:
        raise ValidationError(
            "Choose ID-token algorithms from: " + ", ".join(sorted(allowed)) + "."
        )
    for column, value, label in (
        (IdentityProvider.slug, slug, "short name"),
        (IdentityProvider.issuer, issuer, "issuer"),
    ):
        other = session.scalar(
            select(IdentityProvider.id).where(
                column == value, IdentityProvider.id != (provider.id or 0)
            )
        )
        if other is not None:
            raise ConflictError(f"Another identity provider already has this {label}.")
    return algs


def _set_served(
    session: AnySession,
    provider: IdentityProvider,
    served: Iterable[tuple[Institution, str | None]],
) -> None:
    items = list(served)
    entity_ids = [e for _, e in items if e]
    if len(set(entity_ids)) != len(entity_ids):
        raise ValidationError("Each campus entity id may appear once.")
    if provider.kind == ProviderKind.FEDERATION and any(not e for _, e in items):
        raise ValidationError("A federation proxy needs the campus entity id of each institution.")
    existing = {pi.institution_id: pi for pi in provider.served}
    new: list[ProviderInstitution] = []
    for inst, entity_id in items:
        pi = existing.get(inst.id) or ProviderInstitution(institution=inst)
        pi.entity_id = entity_id or None
        new.append(pi)
    provider.served = new


def save_provider(
    session: AnySession,
    provider: IdentityProvider | None,
    *,
    actor: User | None,
    slug: str,
    name: str,
    kind: ProviderKind,
    issuer: str,
    client_id: str,
    discovery_url: str | None = None,
    scopes: str = "openid email profile",
    algorithms: Iterable[str] = ("RS256",),
    allowed_algorithms: Iterable[str] = ("RS256",),
    enabled: bool = True,
    served: Iterable[tuple[Institution, str | None]] = (),
    userinfo_mode: UserinfoMode = UserinfoMode.ALWAYS,
    token_auth_method: TokenAuthMethod = TokenAuthMethod.CLIENT_SECRET_BASIC,
    logout_at_provider: bool = False,
) -> IdentityProvider:
    """Register an identity provider or change one (``actor`` None: seeding from configuration).
    Its secret is configuration, never a field here."""
    if actor is not None:
        check(can_manage_identity_providers, actor)
    creating = provider is None
    provider = provider or IdentityProvider()
    slug, issuer = slug.strip().lower(), issuer.strip()
    discovery_url = (discovery_url or "").strip() or None
    algs = _check_provider_fields(
        session,
        provider,
        slug=slug,
        issuer=issuer,
        discovery_url=discovery_url,
        algorithms=algorithms,
        allowed_algorithms=allowed_algorithms,
    )
    scope_list = scopes.split()
    if "openid" not in scope_list:
        raise ValidationError("The scopes must include openid.")
    if not client_id.strip() or not name.strip():
        raise ValidationError("Name and client id are required.")
    before = {
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "enabled": provider.enabled,
    }
    provider.slug, provider.name, provider.kind = slug, name.strip()[:200], kind
    provider.issuer, provider.discovery_url = issuer, discovery_url
    provider.client_id, provider.scopes = client_id.strip(), " ".join(scope_list)
    provider.id_token_algs, provider.enabled = " ".join(algs), enabled
    provider.userinfo_mode, provider.token_auth_method = userinfo_mode, token_auth_method
    provider.logout_at_provider = logout_at_provider
    if creating:
        session.add(provider)
    _set_served(session, provider, served)
    session.flush()
    audit.record(
        session,
        "identity_provider.create" if creating else "identity_provider.update",
        actor=actor,
        obj=provider,
        slug=provider.slug,
        issuer=provider.issuer,
        before=None if creating else before,
    )
    return provider


def seed_providers(
    session: AnySession, configs: Iterable[Mapping[str, Any]], *, allowed_algorithms: Iterable[str]
) -> list[IdentityProvider]:
    """Create or update providers from configuration (matched by slug). Institutions are named by
    ROR id; unknown ones are a configuration error."""
    out = []
    allowed = list(allowed_algorithms)
    for cfg in configs:
        slug = str(cfg["slug"]).lower()
        provider = session.scalar(select(IdentityProvider).where(IdentityProvider.slug == slug))
        served = []
        for item in cfg.get("institutions", []):
            ror = institution_services.normalise_ror(str(item["ror_id"]))
            inst = session.scalar(select(Institution).where(Institution.ror_id == ror))
            if inst is None:
                raise ValidationError(
                    f"Provider {slug}: no institution with ROR id {item['ror_id']}."
                )
            served.append((inst, item.get("entity_id")))
        out.append(
            save_provider(
                session,
                provider,
                actor=None,
                slug=slug,
                name=str(cfg.get("name", slug)),
                kind=ProviderKind(cfg.get("kind", "institution")),
                issuer=str(cfg["issuer"]),
                client_id=str(cfg["client_id"]),
                discovery_url=cfg.get("discovery_url"),
                scopes=str(cfg.get("scopes", "openid email profile")),
                algorithms=list(cfg.get("algorithms", ["RS256"])),
                allowed_algorithms=allowed,
                enabled=bool(cfg.get("enabled", True)),
                served=served,
                userinfo_mode=UserinfoMode(cfg.get("userinfo", UserinfoMode.ALWAYS.value)),
                token_auth_method=TokenAuthMethod(
                    cfg.get("token_auth_method", TokenAuthMethod.CLIENT_SECRET_BASIC.value)
                ),
                logout_at_provider=bool(cfg.get("logout_at_provider", False)),
            )
        )
    return out


def providers_for_login(
    session: AnySession, query: str | None
) -> list[tuple[IdentityProvider, Institution | None]]:
    """(provider, institution) choices for "find your institution": enabled providers serving an
    institution whose name, short name or e-mail domain matches ``query`` (an e-mail address
    matches by its domain). Without a query: every enabled provider, by name."""
    providers_q = select(IdentityProvider).where(IdentityProvider.enabled.is_(True))
    if not query or not query.strip():
        return [(p, None) for p in session.scalars(providers_q.order_by(IdentityProvider.name))]
    rows = session.execute(
        select(IdentityProvider, Institution)
        .join(ProviderInstitution, ProviderInstitution.provider_id == IdentityProvider.id)
        .join(Institution, Institution.id == ProviderInstitution.institution_id)
        .where(
            IdentityProvider.enabled.is_(True),
            institution_services.matching_institutions(query.strip()[:100]),
        )
        .order_by(Institution.name, IdentityProvider.name)
        .limit(20)
    ).all()
    return [(p, i) for p, i in rows]
