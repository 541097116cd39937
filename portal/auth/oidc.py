"""The OpenID Connect client: Authlib's Flask client, one per registered identity provider, with the
checks Authlib leaves to the application (see ../shared/SECURITY-NOTES.md):

- the discovery document's ``issuer`` must equal the configured one (Authlib merges it unchecked);
- ID-token algorithms come from the provider's registry entry, never from its metadata;
- expiry is checked with a small configured leeway (Authlib's default accepts 120 s);
- a token response without an ID token fails (Authlib would skip every claim check);
- the RFC 9207 ``iss`` callback parameter must name the provider when present (and must be
  present when the provider says it sends it);
- each provider has its own redirect URI, and login state is looked up under that provider only,
  so a code from provider A sent to provider B's callback finds no state;
- login state (state, nonce, PKCE verifier) is kept in the database, bound to the browser by one
  fixed-size random value in the session, so abandoned logins never grow the cookie.

This module is the web layer's: it reads the request and the session. The business rules of what a
successful login means are in ``portal.auth.services``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from authlib.integrations.flask_client import FlaskIntegration, FlaskOAuth2App
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from flask import current_app, request, session
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import delete, select

from portal.auth.keys import client_key
from portal.auth.models import IdentityProvider, OAuthLoginState, TokenAuthMethod, UserinfoMode
from portal.core.errors import DomainError
from portal.core.models import utcnow
from portal.extensions import db

#: The one value a browser keeps in its session for logins in progress (fixed size).
BINDING_KEY = "_login_binding"


class LoginError(DomainError):
    """An OIDC login was refused. ``reason`` is a short code for the audit log; the message is
    safe to show."""

    status_code = 400

    def __init__(self, reason: str, message: str = "The login could not be completed.") -> None:
        super().__init__(message)
        self.reason = reason


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class DatabaseStateIntegration(FlaskIntegration):  # type: ignore[misc]
    """Authlib's Flask integration with the login state in ``oauth_login_states``.

    The row is found by provider and state, and only by the browser that started the login (the
    hash of its binding value must match), so a forged state, a state from another browser or a
    replayed (already used) state finds nothing.
    """

    def _key(self, state: str) -> str:
        return f"{self.name}:{state}"

    def get_state_data(self, sess: Any, state: Any) -> dict[str, Any] | None:
        if not isinstance(state, str) or not state or len(state) > 120:
            return None
        binding = sess.get(BINDING_KEY)
        if not isinstance(binding, str):
            return None
        row = db.session.scalar(
            select(OAuthLoginState).where(OAuthLoginState.key == self._key(state))
        )
        if row is None or row.expires_at < utcnow():
            return None
        if not hmac.compare_digest(row.binding, _sha256(binding)):
            return None
        data: dict[str, Any] = json.loads(row.data)
        return data

    def set_state_data(self, sess: Any, state: str, data: dict[str, Any]) -> None:
        binding = sess.get(BINDING_KEY)
        if not isinstance(binding, str):
            binding = secrets.token_urlsafe(24)
            sess[BINDING_KEY] = binding
        now = utcnow()
        # Abandoned logins are cleaned up as new ones start; the table stays small.
        db.session.execute(delete(OAuthLoginState).where(OAuthLoginState.expires_at < now))
        ttl = int(current_app.config["OIDC_LOGIN_STATE_SECONDS"])
        db.session.add(
            OAuthLoginState(
                key=self._key(state),
                binding=_sha256(binding),
                data=json.dumps(data),
                expires_at=now + dt.timedelta(seconds=ttl),
            )
        )
        db.session.flush()

    def clear_state_data(self, sess: Any, state: Any) -> None:
        if isinstance(state, str):
            db.session.execute(
                delete(OAuthLoginState).where(OAuthLoginState.key == self._key(state))
            )


# --- provider metadata, pinned and cached per process ------------------------------------------

_metadata_cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
_metadata_lock = threading.Lock()


def clear_metadata_cache() -> None:
    with _metadata_lock:
        _metadata_cache.clear()


def _fetch_metadata(provider: IdentityProvider) -> dict[str, Any]:
    """The provider's discovery document, refused unless its issuer is exactly the configured one."""
    key = (provider.metadata_url, provider.issuer)
    ttl = float(current_app.config["OIDC_METADATA_TTL_SECONDS"])
    with _metadata_lock:
        hit = _metadata_cache.get(key)
        if hit and time.monotonic() - hit[0] < ttl:
            return hit[1]
    try:
        resp = requests.get(
            provider.metadata_url,
            timeout=current_app.config["OIDC_HTTP_TIMEOUT_SECONDS"],
            headers={"Accept": "application/json"},
        )
        resp.raise_for_status()
        metadata = resp.json()
    except (requests.RequestException, ValueError) as e:
        raise LoginError(
            "discovery_unreachable",
            f"{provider.name} cannot be reached right now. Please try again later.",
        ) from e
    if not isinstance(metadata, dict) or metadata.get("issuer") != provider.issuer:
        raise LoginError(
            "discovery_issuer_mismatch",
            f"{provider.name} is misconfigured (its discovery document names another issuer).",
        )
    for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(metadata.get(field), str):
            raise LoginError("discovery_incomplete", f"{provider.name} is misconfigured.")
    with _metadata_lock:
        _metadata_cache[key] = (time.monotonic(), metadata)
    return metadata


def login_origins(providers: Iterable[IdentityProvider]) -> list[str]:
    """Where a login form on a page may send the browser on (the CSP's ``form-action``): each
    provider's issuer and discovery origins, and its authorization endpoint's origin when its
    discovery document is cached (usually the same origin)."""
    urls: list[str] = []
    with _metadata_lock:
        for p in providers:
            urls += [p.issuer, p.metadata_url]
            hit = _metadata_cache.get((p.metadata_url, p.issuer))
            if hit:
                urls.append(str(hit[1]["authorization_endpoint"]))
    origins = []
    for url in urls:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if parts.scheme in ("http", "https") and parts.netloc and origin not in origins:
            origins.append(origin)
    return origins


def client_secret(provider: IdentityProvider) -> str | None:
    """The provider's client secret: ``PORTAL_OIDC_SECRET_<SLUG>`` or ``OIDC_CLIENT_SECRETS``."""
    cfg = current_app.config
    env_name = "OIDC_SECRET_" + provider.slug.upper().replace("-", "_")
    value = cfg.get(env_name) or (cfg.get("OIDC_CLIENT_SECRETS") or {}).get(provider.slug)
    return str(value) if value else None


def client_for(provider: IdentityProvider) -> FlaskOAuth2App:
    """Authlib's Flask client for ``provider``, with pinned issuer and algorithms, and PKCE S256."""
    if not provider.algorithms or any(
        a.lower() == "none" or a.startswith("HS") for a in provider.algorithms
    ):
        raise LoginError("unsafe_algorithms", f"{provider.name} is misconfigured.")
    metadata = _fetch_metadata(provider)
    pinned = {
        **metadata,
        "issuer": provider.issuer,
        "id_token_signing_alg_values_supported": provider.algorithms,
    }
    method = provider.token_auth_method
    auth_methods: list[Any] = []
    secret: Any = client_secret(provider)
    if method == TokenAuthMethod.PRIVATE_KEY_JWT:
        key = client_key()
        secret = key
        auth_methods = [PrivateKeyJWT(metadata["token_endpoint"], headers={"kid": key.kid})]
    return FlaskOAuth2App(
        DatabaseStateIntegration(provider.slug),
        name=provider.slug,
        client_id=provider.client_id,
        client_secret=secret,
        client_auth_methods=auth_methods,
        client_kwargs={
            "scope": provider.scopes,
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": method.value,
            "default_timeout": current_app.config["OIDC_HTTP_TIMEOUT_SECONDS"],
        },
        **pinned,
    )


#: In a login's stored data: when a re-authentication was asked for (Unix time).
REAUTH_KEY = "reauth_requested_at"


def begin_login(
    provider: IdentityProvider,
    redirect_uri: str,
    *,
    extra: dict[str, Any],
    idphint: str | None,
    reauth: bool = False,
) -> str:
    """Store a new login's state for this browser and return the provider's authorization URL.

    ``reauth``: the person must authenticate again, even with a live session at the provider
    (before signing): ``prompt=login`` and ``max_age=0`` (OIDC Core 3.1.2.1), and the callback
    refuses an ID token whose ``auth_time`` is from before this request."""
    client = client_for(provider)
    params: dict[str, Any] = {}
    if idphint:
        params["idphint"] = idphint
    if reauth:
        params["prompt"] = "login"
        params["max_age"] = 0
    rv = client.create_authorization_url(redirect_uri, **params)
    if not rv.get("nonce") or not rv.get("code_verifier"):
        raise LoginError("no_nonce_or_pkce", f"{provider.name} is misconfigured.")
    if reauth:
        extra = {**extra, REAUTH_KEY: int(time.time())}
    client.save_authorize_data(redirect_uri=redirect_uri, **extra, **rv)
    return str(rv["url"])


def _check_reauthenticated(provider: IdentityProvider, claims: dict[str, Any], asked: Any) -> None:
    """A login asked with ``max_age=0`` must come from an authentication made after it was asked.

    OIDC Core 3.1.2.1 requires ``auth_time`` in the ID token then; a provider whose ``auth_time``
    is older ignored the request (it reused its session), so the login is refused. Some providers
    (oidc-provider-mock among them) send no ``auth_time`` at all: they were asked with
    ``prompt=login`` too, and nothing more can be checked here."""
    auth_time = claims.get("auth_time")
    if auth_time is None:
        return
    leeway = int(current_app.config["OIDC_LEEWAY_SECONDS"])
    if (
        not isinstance(auth_time, int | float)
        or isinstance(auth_time, bool)
        or not isinstance(asked, int)
        or auth_time < asked - leeway
    ):
        raise LoginError(
            "reauth_not_fresh",
            f"{provider.name} did not ask for your credentials again, so the portal cannot "
            "confirm that it is you. Log in again; if this keeps happening, log out of "
            f"{provider.name} first.",
        )


#: Claims the portal needs about a person; without them in the ID token, UserInfo is asked
#: (``UserinfoMode.WHEN_MISSING``).
PROFILE_CLAIMS = frozenset({"email", "name"})

#: Claims about the token itself: always the ID token's, never UserInfo's.
TOKEN_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "azp", "auth_time", "acr", "amr", "sid"}
)


@dataclass(frozen=True)
class Login:
    """A verified login: the person's claims (ID token, and UserInfo where asked), the login's
    stored data (``next``, linking), and the raw ID token (the hint when logging out there)."""

    claims: dict[str, Any]
    data: dict[str, Any]
    id_token: str


def finish_login(provider: IdentityProvider) -> Login:
    """Check the callback and the ID token, then ask UserInfo as the provider is set up to."""
    args = request.args
    if args.get("error"):
        raise LoginError("provider_error", f"{provider.name} did not log you in.")
    state, code = args.get("state"), args.get("code")
    if not state or not code:
        raise LoginError("incomplete_callback")
    client = client_for(provider)
    framework = client.framework
    data = framework.get_state_data(session, state)
    # A state works once, whatever happens next.
    framework.clear_state_data(session, state)
    db.session.commit()
    if data is None:
        raise LoginError(
            "state_mismatch", "This login link is not valid (expired, used, or not yours)."
        )
    iss = args.get("iss")
    metadata = client.load_server_metadata()
    if iss is not None and iss != provider.issuer:
        raise LoginError("iss_mismatch")
    if iss is None and metadata.get("authorization_response_iss_parameter_supported"):
        raise LoginError("iss_missing")
    params = client._format_state_params(data, {"code": code, "state": state})
    try:
        token = client.fetch_access_token(**params)
    except Exception as e:  # any failure of the token request fails the login
        raise LoginError("token_request_failed") from e
    if not isinstance(token, dict) or not token.get("id_token"):
        raise LoginError("no_id_token")
    try:
        claims = client.parse_id_token(
            token,
            nonce=data["nonce"],
            # Custom options replace Authlib's built-in issuer check, so it is stated here; and
            # without an explicit ``aud`` option only ``azp`` would be compared to our client id.
            claims_options={
                "iss": {"essential": True, "values": [provider.issuer]},
                "aud": {"essential": True, "values": [provider.client_id]},
                "sub": {"essential": True},
                "exp": {"essential": True},
                "iat": {"essential": True},
            },
            leeway=int(current_app.config["OIDC_LEEWAY_SECONDS"]),
        )
    except Exception as e:  # a bad signature, algorithm, audience, nonce, expiry … fails closed
        raise LoginError(f"id_token_invalid:{type(e).__name__}:{str(e)[:80]}") from e
    if claims is None:
        raise LoginError("no_id_token")
    verified = dict(claims)
    if REAUTH_KEY in data:
        _check_reauthenticated(provider, verified, data[REAUTH_KEY])
    endpoint = metadata.get("userinfo_endpoint")
    mode = provider.userinfo_mode
    if isinstance(endpoint, str) and (
        mode == UserinfoMode.ALWAYS
        or (mode == UserinfoMode.WHEN_MISSING and not verified.keys() >= PROFILE_CLAIMS)
    ):
        info = _userinfo(provider, client, endpoint, str(token["access_token"]))
        # OIDC Core 5.3.2: the UserInfo sub must be exactly the ID token's, or nothing is used.
        if info.get("sub") != verified["sub"]:
            raise LoginError(
                "userinfo_sub_mismatch",
                f"{provider.name} described someone else than the person who logged in.",
            )
        verified = {**verified, **{k: v for k, v in info.items() if k not in TOKEN_CLAIMS}}
    return Login(verified, data, str(token["id_token"]))


def _userinfo(
    provider: IdentityProvider, client: FlaskOAuth2App, endpoint: str, access_token: str
) -> dict[str, Any]:
    """The provider's UserInfo answer for ``access_token``: JSON, or a JWT signed with one of its
    keys and a pinned algorithm (issued by it, for this client). Anything else fails the login."""
    unreachable = LoginError(
        "userinfo_failed", f"{provider.name} did not describe you. Please try again later."
    )
    try:
        resp = requests.get(
            endpoint,
            headers={
                "Authorization": f"Bearer {access_token}",
                "Accept": "application/json, application/jwt",
            },
            timeout=current_app.config["OIDC_HTTP_TIMEOUT_SECONDS"],
        )
    except requests.RequestException as e:
        raise unreachable from e
    if resp.status_code != 200:
        raise unreachable
    if resp.headers.get("Content-Type", "").split(";")[0].strip() == "application/jwt":
        try:
            keys = KeySet.import_key_set(client.fetch_jwk_set())
            token = jwt.decode(resp.text.strip(), keys, algorithms=provider.algorithms)
            claims = dict(token.claims)
        except Exception as e:  # a bad signature, algorithm or format fails the login
            raise LoginError(f"userinfo_jwt_invalid:{type(e).__name__}", unreachable.args[0]) from e
        # OIDC Core 5.3.2: a signed answer SHOULD name its issuer and this client; if it does,
        # they must be right.
        aud = claims.get("aud", provider.client_id)
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if (
            claims.get("iss", provider.issuer) != provider.issuer
            or provider.client_id not in audiences
        ):
            raise LoginError("userinfo_jwt_invalid:issuer_or_audience", unreachable.args[0])
        return claims
    try:
        info = resp.json()
    except ValueError as e:
        raise LoginError("userinfo_not_json", unreachable.args[0]) from e
    if not isinstance(info, dict):
        raise LoginError("userinfo_not_json", unreachable.args[0])
    return info


def logout_url(provider: IdentityProvider, id_token: str | None, post_logout: str) -> str | None:
    """Where to send the browser to end its session at ``provider`` too (RP-initiated logout),
    when the provider is set up for it and offers an ``end_session_endpoint``; else None."""
    if not provider.logout_at_provider:
        return None
    try:
        endpoint = _fetch_metadata(provider).get("end_session_endpoint")
    except LoginError:
        return None  # the provider is unreachable: the portal's own logout still happened
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        return None
    params = {"client_id": provider.client_id, "post_logout_redirect_uri": post_logout}
    if id_token:
        params["id_token_hint"] = id_token
    return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)


BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def verify_logout_token(provider: IdentityProvider, logout_token: str) -> dict[str, Any]:
    """The claims of a Back-Channel Logout token (OIDC Back-Channel Logout 1.0, 2.6): signed by
    the provider with a pinned algorithm, for this client, recent, with the logout event, a
    ``sub`` or ``sid``, and no ``nonce``. Anything else raises LoginError."""
    try:
        metadata = _fetch_metadata(provider)
        jwks = requests.get(
            str(metadata["jwks_uri"]), timeout=current_app.config["OIDC_HTTP_TIMEOUT_SECONDS"]
        ).json()
        token = jwt.decode(
            logout_token, KeySet.import_key_set(jwks), algorithms=provider.algorithms
        )
        leeway = int(current_app.config["OIDC_LEEWAY_SECONDS"])
        jwt.JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": provider.issuer},
            aud={"essential": True, "value": provider.client_id},
            iat={"essential": True},
            jti={"essential": True},
        ).validate(token.claims)
    except LoginError:
        raise
    except Exception as e:  # a bad signature, issuer, audience, format …
        raise LoginError(f"logout_token_invalid:{type(e).__name__}", "Invalid logout token.") from e
    claims = dict(token.claims)
    events = claims.get("events")
    if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
        raise LoginError("logout_token_invalid:events", "Invalid logout token.")
    if "nonce" in claims or not (claims.get("sub") or claims.get("sid")):
        raise LoginError("logout_token_invalid:claims", "Invalid logout token.")
    return claims


def discovery_summary(provider: IdentityProvider) -> dict[str, Any] | None:
    """What the provider's cached discovery document says, for its admin page (no network)."""
    with _metadata_lock:
        hit = _metadata_cache.get((provider.metadata_url, provider.issuer))
    if hit is None:
        return None
    metadata = hit[1]
    keys = (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "end_session_endpoint",
        "jwks_uri",
        "id_token_signing_alg_values_supported",
        "userinfo_signing_alg_values_supported",
        "token_endpoint_auth_methods_supported",
        "code_challenge_methods_supported",
        "authorization_response_iss_parameter_supported",
        "backchannel_logout_supported",
        "backchannel_logout_session_supported",
    )
    return {k: metadata.get(k) for k in keys}


def test_provider(provider: IdentityProvider) -> str:
    """Fetch the provider's discovery document and key set afresh; a short report, or LoginError."""
    key = (provider.metadata_url, provider.issuer)
    with _metadata_lock:
        _metadata_cache.pop(key, None)
    metadata = _fetch_metadata(provider)
    try:
        jwks = requests.get(
            str(metadata["jwks_uri"]), timeout=current_app.config["OIDC_HTTP_TIMEOUT_SECONDS"]
        ).json()
        keys = KeySet.import_key_set(jwks)
    except Exception as e:  # unreachable, not JSON, not a key set
        raise LoginError("jwks_unreachable", f"{provider.name}'s key set cannot be read.") from e
    algs = metadata.get("id_token_signing_alg_values_supported") or []
    usable = [a for a in provider.algorithms if a in algs]
    if not usable:
        raise LoginError(
            "no_common_algorithm",
            f"{provider.name} signs ID tokens with {', '.join(map(str, algs)) or 'nothing stated'}; "
            f"none of them is allowed here ({', '.join(provider.algorithms)}).",
        )
    methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if provider.token_auth_method.value not in methods:
        raise LoginError(
            "auth_method_unsupported",
            f"{provider.name} does not accept {provider.token_auth_method.value} "
            f"(it offers {', '.join(map(str, methods))}).",
        )
    return (
        f"{provider.name} answers: discovery and {len(keys.keys)} signing key(s) read; "
        f"ID tokens signed with {', '.join(usable)}."
    )


def claim_text(claims: dict[str, Any], name: str, limit: int = 255) -> str | None:
    """A claim that must be a short string, or None."""
    value = claims.get(name)
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None (no open redirect)."""
    if not target or len(target) > 500:
        return None
    if any(c in target for c in "\\\r\n\t") or not target.startswith("/"):
        return None
    if target.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def remote_addr() -> str | None:
    return request.remote_addr


def user_agent() -> str | None:
    ua = request.headers.get("User-Agent")
    return ua[:300] if ua else None
