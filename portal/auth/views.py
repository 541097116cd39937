"""Login pages: find your institution, the OIDC redirect and callback, logout, your account (linked
identities and sessions), and the admin pages for identity providers and users."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from portal.auth import oidc, services
from portal.auth.forms import (
    DisableUserForm,
    FindInstitutionForm,
    NameForm,
    ProviderForm,
    StartLoginForm,
)
from portal.auth.keys import public_jwks
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
from portal.auth.oidc import LoginError, safe_next
from portal.auth.permissions import (
    as_user,
    can_disable_user,
    can_manage_identity_providers,
    can_manage_users,
    can_view_audit_log,
)
from portal.auth.sessions import SESSION_TOKEN_KEY, current_token
from portal.core import signals
from portal.core.audit import PRUNABLE_ACTION, AuditEvent, RefusalTally
from portal.core.errors import DomainError, ValidationError
from portal.core.forms import ConfirmForm
from portal.core.listing import ListSpec, list_page
from portal.core.permissions import check
from portal.core.web import (
    allow_form_action,
    form_page,
    load,
    login_required,
    post_action,
    require_valid,
    writes_on_get,
)
from portal.extensions import csrf, db, limiter
from portal.institutions.models import Institution
from portal.public.services import set_public_name

bp = Blueprint("auth", __name__, url_prefix="/auth")
#: Administration pages that are not about logging in (the audit log).
admin_bp = Blueprint("admin", __name__)

#: Cookie remembering the last provider (and institution) chosen on the login page.
LAST_CHOICE_COOKIE = "atom_last_idp"


def _last_choice_cookie() -> str:
    """Its name: with the ``__Host-`` prefix wherever cookies are secure (production)."""
    secure = current_app.config["SESSION_COOKIE_SECURE"]
    return f"__Host-{LAST_CHOICE_COOKIE}" if secure else LAST_CHOICE_COOKIE


def _rate_limit() -> str:
    return str(current_app.config["AUTH_RATE_LIMIT"])


def _enabled_provider(slug: str) -> IdentityProvider:
    provider = db.session.scalar(
        select(IdentityProvider)
        .where(IdentityProvider.slug == slug, IdentityProvider.enabled.is_(True))
        .options(selectinload(IdentityProvider.served))
    )
    if provider is None:
        abort(404, description="There is no such identity provider.")
    return provider


def _last_choice() -> tuple[IdentityProvider, Institution | None] | None:
    raw = request.cookies.get(_last_choice_cookie(), "")[:80]
    slug, _, inst = raw.partition(":")
    if not slug:
        return None
    provider = db.session.scalar(
        select(IdentityProvider).where(
            IdentityProvider.slug == slug, IdentityProvider.enabled.is_(True)
        )
    )
    if provider is None:
        return None
    institution = (
        db.session.get(Institution, int(inst))
        if inst.isascii() and inst.isdecimal() and len(inst) < 10
        else None
    )
    if institution is not None and institution.id not in {
        pi.institution_id for pi in provider.served
    }:
        institution = None
    return provider, institution


def _reauth_asked(values: Any) -> bool:
    """``reauth=1``: log in again even when logged in (a fresh login before signing)."""
    return bool(values.get("reauth") == "1")


@bp.get("/login")
@limiter.limit(_rate_limit)
def login() -> ResponseReturnValue:
    """Choose where to log in. Someone logged in goes on to ``next`` — unless asked to log in
    again (``reauth=1``), when the page is shown to them too and the login starts afresh."""
    reauth = _reauth_asked(request.args)
    if as_user(current_user) is not None and not reauth:
        return redirect(safe_next(request.args.get("next")) or url_for("core.dashboard"))
    form = FindInstitutionForm(request.args)
    query = form.q.data if form.validate() else None
    choices = services.providers_for_login(db.session, query)
    last = _last_choice()
    allow_form_action(*oidc.login_origins([p for p, _ in choices] + ([last[0]] if last else [])))
    return render_template(
        "auth/login.html",
        form=form,
        query=query,
        choices=choices,
        last=last,
        start_form=StartLoginForm(),
        next=safe_next(request.args.get("next")) or "",
        reauth=reauth,
    )


@bp.post("/login/<slug>")
@limiter.limit(_rate_limit)
def start(slug: str) -> ResponseReturnValue:
    provider = _enabled_provider(slug)
    form = StartLoginForm()
    require_valid(form)
    institution_id = form.institution_id.data
    served = {pi.institution_id: pi for pi in provider.served}
    choice = served.get(institution_id) if institution_id else None
    idphint = choice.entity_id if choice and provider.kind == ProviderKind.FEDERATION else None
    try:
        url = oidc.begin_login(
            provider,
            url_for(".callback", slug=provider.slug, _external=True),
            extra={"next": safe_next(form.next.data)},
            idphint=idphint,
            # The login page's hidden ``reauth`` field: the provider must ask for credentials
            # again (a fresh login before signing).
            reauth=_reauth_asked(request.form),
        )
    except LoginError as e:
        return _login_failed(provider, e)
    db.session.commit()
    response = make_response(redirect(url))
    response.set_cookie(
        _last_choice_cookie(),
        f"{provider.slug}:{choice.institution_id}" if choice else provider.slug,
        max_age=365 * 24 * 3600,
        httponly=True,
        secure=current_app.config["SESSION_COOKIE_SECURE"],
        samesite="Lax",
    )
    return response


def _login_failed(provider: IdentityProvider | None, e: DomainError) -> ResponseReturnValue:
    db.session.rollback()
    services.record_login_failure(
        db.session,
        provider,
        reason=e.reason if isinstance(e, LoginError) else type(e).__name__,
        actor=as_user(current_user),
    )
    db.session.commit()
    signals.emit(
        signals.login_finished,
        outcome=e.reason if isinstance(e, LoginError) else "refused",
        provider=provider.slug if provider else None,
    )
    return render_template(
        "auth/login_failed.html", message=str(e), provider=provider
    ), e.status_code


@bp.get("/callback/<slug>")
@limiter.limit(_rate_limit)
@writes_on_get
def callback(slug: str) -> ResponseReturnValue:
    provider = _enabled_provider(slug)
    try:
        login = oidc.finish_login(provider)
        link_user_id = login.data.get("link_user_id")
        link_to = None
        if link_user_id is not None:
            link_to = as_user(current_user)
            if link_to is None or link_to.id != link_user_id:
                raise LoginError("link_user_changed", "Log in again before linking a login.")
        user, identity = services.complete_login(
            db.session, provider, login.claims, link_to=link_to
        )
    except DomainError as e:
        return _login_failed(provider, e)
    if link_to is not None:
        db.session.commit()
        flash(f"Your {provider.name} login is now linked to your account.", "success")
        return redirect(url_for(".account"))
    token = services.log_in(
        db.session,
        user,
        identity,
        replacing=current_token(),
        ip=oidc.remote_addr(),
        user_agent=oidc.user_agent(),
        id_token=login.id_token,
        provider_sid=oidc.claim_text(login.claims, "sid"),
    )
    db.session.commit()
    # A new session: nothing from before the login survives in the cookie.
    session.clear()
    login_user(user)
    session[SESSION_TOKEN_KEY] = token
    session.permanent = True
    signals.emit(signals.login_finished, outcome="success", provider=provider.slug)
    return redirect(safe_next(login.data.get("next")) or url_for("core.dashboard"))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    require_valid(ConfirmForm())
    record = services.log_out(db.session, as_user(current_user), current_token())
    provider = services.provider_of(db.session, record) if record is not None else None
    end_there = (
        oidc.logout_url(provider, record.id_token, url_for("core.index", _external=True))
        if provider is not None and record is not None
        else None
    )
    db.session.commit()
    logout_user()
    session.clear()
    if end_there and provider is not None:
        # A page, not a redirect: browsers apply the form-action policy to a form's redirects,
        # and the logout button is on every page. Its link (and meta refresh) is a navigation.
        return render_template(
            "auth/logged_out.html", end_there=end_there, provider_name=provider.name
        )
    flash("You are logged out.", "info")
    return redirect(url_for("core.index"))


@bp.post("/backchannel-logout/<slug>")
def backchannel_logout(slug: str) -> ResponseReturnValue:
    """OIDC Back-Channel Logout 1.0: the provider tells the portal that a session of its ended."""
    provider = _enabled_provider(slug)
    token = request.form.get("logout_token", "")
    try:
        claims = oidc.verify_logout_token(provider, token)
    except LoginError as e:
        db.session.rollback()
        services.record_login_failure(db.session, provider, reason=e.reason, actor=None)
        db.session.commit()
        return _no_store({"error": "invalid_request", "error_description": str(e)}, 400)
    services.end_provider_sessions(
        db.session,
        provider,
        sid=oidc.claim_text(claims, "sid"),
        subject=oidc.claim_text(claims, "sub"),
    )
    db.session.commit()
    return _no_store({}, 200)


# The provider calls it server to server: no browser session, no CSRF token; the signed logout
# token is the authority.
csrf.exempt(backchannel_logout)


def _no_store(body: dict[str, Any], status: int) -> ResponseReturnValue:
    response = make_response(body, status)
    response.headers["Cache-Control"] = "no-store"
    return response


@admin_bp.get("/.well-known/jwks.json")
def jwks() -> ResponseReturnValue:
    """The portal's public key, for providers that authenticate it by ``private_key_jwt``."""
    return public_jwks()


# --- your account -------------------------------------------------------------------------------


@bp.get("/account")
@login_required
def account() -> ResponseReturnValue:
    user: User = current_user
    providers = {
        p.issuer: p
        for p in db.session.scalars(select(IdentityProvider).order_by(IdentityProvider.name))
    }
    sessions = db.session.scalars(
        select(LoginSession)
        .where(LoginSession.user_id == user.id, LoginSession.ended_at.is_(None))
        .order_by(LoginSession.id.desc())
        .limit(20)
    ).all()
    token = current_token()
    allow_form_action(*oidc.login_origins(p for p in providers.values() if p.enabled))
    return render_template(
        "auth/account.html",
        identities=user.identities,
        providers=providers,
        enabled=[p for p in providers.values() if p.enabled],
        sessions=sessions,
        current_hash=services.token_hash(token) if token else None,
        form=ConfirmForm(),
        name_form=NameForm(name=user.display_name),
        user=user,
        verify_hours=current_app.config["EMAIL_VERIFY_MAX_AGE_HOURS"],
    )


@bp.post("/account/verify-email")
@login_required
@limiter.limit(_rate_limit)
def send_verification() -> ResponseReturnValue:
    """Mail one link that verifies the account's address (mail goes to verified addresses only)."""
    return post_action(
        ConfirmForm(),
        lambda: services.send_email_verification(db.session, current_user),
        back=url_for(".account"),
        done=lambda email: f"We sent a verification link to {email}. Open it while logged in.",
    )


@bp.route("/verify-email/<token>", methods=["GET", "POST"])
@login_required
@limiter.limit(_rate_limit, methods=["POST"])
def verify_email(token: str) -> ResponseReturnValue:
    """The link from the mail: GET shows what it confirms; only the POST (a button) changes it."""
    if request.method == "POST":
        return post_action(
            ConfirmForm(),
            lambda: services.verify_email(db.session, current_user, token),
            back=url_for(".account"),
            done="Your e-mail address is verified.",
        )
    email = services.check_email_verification(current_user, token)
    return render_template(
        "auth/verify_email.html",
        email=email,
        token=token,
        already=current_user.email_verified,
        form=ConfirmForm(),
    )


@bp.post("/link/<slug>")
@login_required
@limiter.limit(_rate_limit)
def link(slug: str) -> ResponseReturnValue:
    provider = _enabled_provider(slug)
    form = ConfirmForm()
    require_valid(form)
    try:
        url = oidc.begin_login(
            provider,
            url_for(".callback", slug=provider.slug, _external=True),
            extra={"link_user_id": current_user.id, "next": None},
            idphint=None,
        )
    except LoginError as e:
        return _login_failed(provider, e)
    db.session.commit()
    return redirect(url)


@bp.post("/account/name")
@login_required
def rename() -> ResponseReturnValue:
    form = NameForm()
    return post_action(
        form,
        lambda: services.rename_user(
            db.session, current_user, actor=current_user, name=form.name.data or ""
        ),
        back=url_for(".account"),
        done=lambda u: (
            f"The portal calls you {u.display_name}."
            if u.name_edited
            else "Your name follows your identity provider again from your next login."
        ),
    )


#: What an unticked box may send instead of nothing (as WTForms' BooleanField reads it).
_NOT_TICKED = ("", "false", "0", "n", "no", "off")


@bp.post("/account/public-name")
@login_required
def public_name() -> ResponseReturnValue:
    """The consent to be named on the program's public pages (``portal.public``): the box
    ``public_name`` ticked or not, with the CSRF token."""
    consent = request.form.get("public_name", "").strip().lower() not in _NOT_TICKED
    return post_action(
        ConfirmForm(),
        lambda: set_public_name(db.session, current_user, actor=current_user, consent=consent),
        back=url_for(".account"),
        done=lambda u: (
            "The program's public pages name you as the principal investigator of your awarded "
            "projects (within a few minutes)."
            if u.public_name
            else "The program's public pages no longer name you (within a few minutes)."
        ),
    )


@bp.post("/identities/<int:identity_id>/unlink")
@login_required
def unlink(identity_id: int) -> ResponseReturnValue:
    identity = load(Identity, identity_id)
    return post_action(
        ConfirmForm(),
        lambda: services.unlink_identity(db.session, identity, actor=current_user),
        back=url_for(".account"),
        done="The login was unlinked.",
    )


# --- admin: identity providers ------------------------------------------------------------------


@bp.get("/admin/providers")
@login_required
def providers() -> ResponseReturnValue:
    check(can_manage_identity_providers, current_user)
    items = db.session.scalars(
        select(IdentityProvider)
        .options(
            selectinload(IdentityProvider.served).selectinload(ProviderInstitution.institution)
        )
        .order_by(IdentityProvider.name)
    ).all()
    return render_template(
        "auth/providers.html",
        providers=items,
        has_secret={p.id: oidc.client_secret(p) is not None for p in items},
    )


def _served_from_form(form: ProviderForm) -> list[tuple[Institution, str | None]]:
    from portal.institutions.services import normalise_ror

    out = []
    for ror, entity_id in form.served_lines():
        inst = db.session.scalar(
            select(Institution).where(Institution.ror_id == normalise_ror(ror))
        )
        if inst is None:
            raise ValidationError(f"No institution has the ROR id {ror}.")
        out.append((inst, entity_id))
    return out


def _provider_form_page(
    form: ProviderForm, provider: IdentityProvider | None
) -> ResponseReturnValue:
    def save() -> IdentityProvider:
        saved = services.save_provider(
            db.session,
            provider,
            actor=current_user,
            slug=form.slug.data or "",
            name=form.name.data or "",
            kind=ProviderKind(form.kind.data),
            issuer=form.issuer.data or "",
            client_id=form.client_id.data or "",
            discovery_url=form.discovery_url.data,
            scopes=form.scopes.data or "",
            algorithms=(form.algorithms.data or "").split(),
            allowed_algorithms=current_app.config["OIDC_ALLOWED_ALGORITHMS"],
            enabled=bool(form.enabled.data),
            served=_served_from_form(form),
            userinfo_mode=UserinfoMode(form.userinfo_mode.data),
            token_auth_method=TokenAuthMethod(form.token_auth_method.data),
            logout_at_provider=bool(form.logout_at_provider.data),
        )
        oidc.clear_metadata_cache()
        return saved

    slug = (provider.slug if provider else "<SLUG>").upper().replace("-", "_")
    return form_page(
        form,
        save,
        template="auth/provider_form.html",
        done=lambda p: (f"{p.name} is saved.", url_for(".providers")),
        provider=provider,
        secret_name=f"PORTAL_OIDC_SECRET_{slug}",
        has_secret=provider is not None and oidc.client_secret(provider) is not None,
        discovered=oidc.discovery_summary(provider) if provider is not None else None,
    )


@bp.post("/admin/providers/<int:provider_id>/test")
@login_required
def provider_test(provider_id: int) -> ResponseReturnValue:
    """Read the provider's discovery document and key set now, and say what was found."""
    check(can_manage_identity_providers, current_user)
    provider = load(IdentityProvider, provider_id)
    require_valid(ConfirmForm())
    try:
        flash(oidc.test_provider(provider), "success")
    except LoginError as e:
        flash(f"{e} ({e.reason})", "danger")
    return redirect(url_for(".provider_edit", provider_id=provider.id)), 303


@bp.route("/admin/providers/new", methods=["GET", "POST"])
@login_required
def provider_new() -> ResponseReturnValue:
    check(can_manage_identity_providers, current_user)
    return _provider_form_page(ProviderForm(), None)


@bp.route("/admin/providers/<int:provider_id>/edit", methods=["GET", "POST"])
@login_required
def provider_edit(provider_id: int) -> ResponseReturnValue:
    check(can_manage_identity_providers, current_user)
    provider = load(IdentityProvider, provider_id)
    form = ProviderForm(obj=provider)
    if request.method == "GET":
        form.kind.data = provider.kind.value
        form.userinfo_mode.data = provider.userinfo_mode.value
        form.token_auth_method.data = provider.token_auth_method.value
        form.algorithms.data = provider.id_token_algs
        form.served_text.data = "\n".join(
            f"{pi.institution.ror_id} {pi.entity_id or ''}".strip() for pi in provider.served
        )
    return _provider_form_page(form, provider)


# --- admin: users and the audit log -------------------------------------------------------------

USERS = ListSpec(
    search=(User.display_name, User.email),
    sorts={"name": (User.display_name, User.id)},
    placeholder="Name or e-mail",
)


@bp.get("/admin/users")
@login_required
def users() -> ResponseReturnValue:
    check(can_manage_users, current_user)
    listing = list_page(select(User).options(selectinload(User.identities)), USERS)
    return render_template("auth/users.html", page=listing.page, form=listing.form)


def _set_disabled(user_id: int, form: ConfirmForm, disabled: bool) -> ResponseReturnValue:
    target = load(User, user_id, can_disable_user)
    reason = getattr(form, "reason", None)
    return post_action(
        form,
        lambda: services.set_user_disabled(
            db.session,
            target,
            actor=current_user,
            disabled=disabled,
            reason=reason.data if reason else None,
        ),
        back=url_for(".users"),
        done=lambda u: (
            f"{u.display_name} is disabled and logged out everywhere."
            if disabled
            else f"{u.display_name} can log in again."
        ),
    )


@bp.post("/admin/users/<int:user_id>/disable")
@login_required
def disable_user(user_id: int) -> ResponseReturnValue:
    return _set_disabled(user_id, DisableUserForm(), disabled=True)


@bp.post("/admin/users/<int:user_id>/enable")
@login_required
def enable_user(user_id: int) -> ResponseReturnValue:
    return _set_disabled(user_id, ConfirmForm(), disabled=False)


AUDIT = ListSpec(
    search=(AuditEvent.action, AuditEvent.request_id),
    sorts={"newest": (AuditEvent.id.desc(),)},
    placeholder="Action (e.g. institution.) or request id",
)


@admin_bp.get("/admin/audit")
@login_required
def audit_log() -> ResponseReturnValue:
    check(can_view_audit_log, current_user)
    listing = list_page(select(AuditEvent), AUDIT)
    actor_ids = {e.actor_id for e in listing.page.items if e.actor_id}
    actors = (
        {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(actor_ids)))}
        if actor_ids
        else {}
    )
    refusals = [e.id for e in listing.page.items if e.action == PRUNABLE_ACTION]
    repeats = (
        dict(
            db.session.execute(
                select(RefusalTally.event_id, RefusalTally.count).where(
                    RefusalTally.event_id.in_(refusals)
                )
            ).all()
        )
        if refusals
        else {}
    )
    return render_template(
        "auth/audit.html", page=listing.page, form=listing.form, actors=actors, repeats=repeats
    )
