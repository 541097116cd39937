"""Configuration: defaults here, then ``instance/portal.cfg`` if present, then the environment.

Every setting can be given as an environment variable of the same name prefixed with ``PORTAL_``
(``PORTAL_MAIL_SERVER=smtp.example.org``); values are parsed as JSON when they are valid JSON, so
``PORTAL_SESSION_IDLE_MINUTES=30`` is an integer. ``SECRET_KEY`` and ``DATABASE_URL`` are also read
without the prefix, as most hosting platforms set them that way. README.md lists every setting.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

from flask import Flask

#: The development key; the app refuses to start in production with it (or with any short key).
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"  # noqa: S105
MIN_SECRET_KEY_LENGTH = 32
#: Estimated entropy a production key must carry: 32 random hex digits (128 bits) estimate at
#: ~115 (the lowest of 300,000 draws: 92 — so the bar stays well below), ``secrets.token_urlsafe(48)``
#: at ~320; ``changeme`` four times at 22.
MIN_SECRET_KEY_BITS = 80

DEFAULTS: dict[str, Any] = {
    # "development" (make run), "testing" (pytest) or "production".
    "ENV": "production",
    "SECRET_KEY": None,
    "DATABASE_URL": None,
    "SQLALCHEMY_ENGINE_OPTIONS": {},
    "SQLALCHEMY_RECORD_QUERIES": False,
    "SITE_NAME": "ATOM Partner Portal",
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    "WTF_CSRF_TIME_LIMIT": None,  # tokens live as long as the session
    "PAGE_SIZE": 25,
    "RATELIMIT_STORAGE_URI": "memory://",
    "RATELIMIT_HEADERS_ENABLED": True,
    "SESSION_COOKIE_NAME": "atom_session",
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": True,
    "PREFERRED_URL_SCHEME": "https",
    # Show the demo banner and demo-only pages (local mail viewer).
    "DEMO_MODE": False,
    # Refused requests: the first of each kind per person (or address) and window is an audit
    # event, repeats are counted; beyond the limit in a window the answer is 429.
    "REFUSAL_WINDOW_SECONDS": 60,
    "REFUSAL_LIMIT": 60,
    # --- Public pages (portal/public) ---
    # How long a public page is kept by the app and may be kept by browsers (0: not at all).
    "PUBLIC_CACHE_SECONDS": 300,
    # --- Peer review (portal/reviews) ---
    # Past affiliations count as a conflict of interest for this many years after they ended.
    "CONFLICT_YEARS": 3,
    # A reviewer with a proposal of their own in a call reviews no other proposal of that call.
    "OWN_PROPOSAL_IS_CONFLICT": True,
    # --- Operator API (portal/api) ---
    # Requests per token (Flask-Limiter notation).
    "API_RATE_LIMIT": "120 per minute",
    # --- Agreements (portal/agreements) ---
    # Who the lab is in agreements' text and signature blocks ("for the lab").
    "LAB_NAME": "ATOM Lab",
    # Minutes after logging in within which one may sign; an older login logs in again first.
    "SIGN_REAUTH_MINUTES": 15,
    # --- Institutional login (portal/auth) ---
    # Minutes without a request after which a login session ends.
    "SESSION_IDLE_MINUTES": 60,
    # Hours after login at which a session ends however active it is.
    "SESSION_ABSOLUTE_HOURS": 12,
    # Seconds of clock skew accepted on ID-token exp/iat (Authlib's default would be 120).
    "OIDC_LEEWAY_SECONDS": 30,
    # ID-token algorithms an admin may allow for a provider; never "none" or HS*.
    "OIDC_ALLOWED_ALGORITHMS": ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"],
    # Seconds a discovery document (and its keys) is cached per process.
    "OIDC_METADATA_TTL_SECONDS": 600,
    # Seconds an unfinished login (state, nonce, PKCE verifier) stays valid.
    "OIDC_LOGIN_STATE_SECONDS": 600,
    # Seconds to wait for an identity provider's answer.
    "OIDC_HTTP_TIMEOUT_SECONDS": 10,
    # Client secrets by provider slug, e.g. {"cilogon": "..."}; or PORTAL_OIDC_SECRET_<SLUG>.
    # Put them in instance/portal.cfg or the environment, never in the database.
    "OIDC_CLIENT_SECRETS": {},
    # The portal's private key (PEM) for private_key_jwt client authentication; unset: generated
    # once in instance/oidc-client-key.pem (portal/auth/keys.py).
    "OIDC_CLIENT_KEY": None,
    # Providers created or updated at startup (devserver) and by `flask auth seed-providers`:
    # a list of {"slug", "name", "issuer", "client_id", "kind", "discovery_url", "scopes",
    # "algorithms", "userinfo", "token_auth_method", "logout_at_provider",
    # "institutions": [{"ror_id", "entity_id"}]}.
    "OIDC_PROVIDERS": [],
    # Flask-Limiter limit on the login endpoints, per client address.
    "AUTH_RATE_LIMIT": "20 per minute",
    # Hours a "verify your e-mail address" link stays valid.
    "EMAIL_VERIFY_MAX_AGE_HOURS": 48,
    # How many reverse proxies stand in front of the app; their X-Forwarded-For/-Proto/-Host
    # headers are trusted for that many hops (client IP in the audit log and rate limits, https URLs).
    "TRUSTED_PROXIES": 0,
    # Add an X-SQL-Statements header (the request's SQL statement count) to every response; for
    # `make bench`, which reads it over HTTP. Leave off in production.
    "SQL_COUNT_HEADER": False,
    # One log line per request on standard error: "json" (one object per line), "text" or "none"
    # (logging left as it is). Unset: json in production, text in development, none in tests.
    "LOG_FORMAT": None,
    # Bearer token that /metrics (Prometheus) asks for; unset: /metrics answers 404.
    "METRICS_TOKEN": None,
    # --- Institutions (portal/institutions) ---
    # Nameservers asked when checking a domain's TXT record ("Check DNS now"), e.g.
    # ["9.9.9.9", "[2620:fe::fe]:53", "10.0.0.2:5353"]; empty: the system's resolvers.
    "DNS_NAMESERVERS": [],
    # Seconds to wait for DNS before telling the person to try again later.
    "DNS_TIMEOUT_SECONDS": 5,
    # --- Proposals (portal/proposals) ---
    # Days a team invitation's link stays valid (it also works only once).
    "INVITATION_DAYS": 14,
    # --- E-mail (portal/notifications) ---
    # Where people reach the portal; e-mails link there (the mail worker runs outside requests).
    "BASE_URL": "http://127.0.0.1:5000",
    # The SMTP server the outbox worker (`flask --app portal mail worker`) sends through.
    "MAIL_SERVER": "localhost",
    "MAIL_PORT": 25,
    # "none" (plain SMTP, e.g. a local relay), "starttls" (usually port 587) or "ssl" (port 465).
    "MAIL_SECURITY": "none",
    # SMTP login; leave unset for a relay that needs none.
    "MAIL_USERNAME": None,
    "MAIL_PASSWORD": None,
    # Seconds to wait for the SMTP server at each step.
    "MAIL_TIMEOUT": 30,
    # The From header; its domain is also the right-hand side of every Message-ID.
    "MAIL_DEFAULT_SENDER": "ATOM Partner Portal <noreply@atom-lab.org>",
    # Tries before a mail that keeps failing temporarily becomes "dead" (an SMTP 5xx is at once).
    "MAIL_MAX_ATTEMPTS": 8,
    # Back-off after a failed try: base, 2 x base, 4 x base ... seconds, never more than the maximum.
    "MAIL_RETRY_BASE_SECONDS": 60,
    "MAIL_RETRY_MAX_SECONDS": 6 * 3600,
    # Mails a worker claims at once, and how long it holds them before another worker may take over.
    "MAIL_BATCH_SIZE": 50,
    "MAIL_CLAIM_SECONDS": 600,
    # Seconds between passes of `mail worker` (and of the delivery thread in `make run`).
    "MAIL_WORKER_INTERVAL": 10,
    # `make run`: the local SMTP sink's Maildir folder (default: instance/mail-sink).
    "MAIL_SINK_DIR": None,
    # --- Proposals (portal/proposals) ---
    # Where attached PDFs are kept, outside static/ (relative paths: inside the instance folder);
    # created owner-only (0o700) at the first upload. Unset: instance/attachments.
    "ATTACHMENT_FOLDER": None,
    # Largest PDF attachment in bytes; a larger file is refused with a reason on the proposal page
    # (MAX_CONTENT_LENGTH still caps the whole request with a 413 page).
    "ATTACHMENT_MAX_BYTES": 10 * 1024 * 1024,
}


class ConfigError(RuntimeError):
    """The configuration is unsafe or incomplete; the app refuses to start."""


def _parse(value: str) -> Any:
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


def load_config(app: Flask, overrides: dict[str, Any] | None) -> None:
    """Fill ``app.config`` from defaults, the instance file, the environment and ``overrides``."""
    app.config.update(DEFAULTS)
    app.config.from_pyfile("portal.cfg", silent=True)
    for key in ("SECRET_KEY", "DATABASE_URL"):
        if os.environ.get(key):
            app.config[key] = os.environ[key]
    app.config.from_prefixed_env("PORTAL", loads=_parse)
    if overrides:
        app.config.update(overrides)

    env = app.config["ENV"]
    if env not in {"development", "testing", "production"}:
        raise ConfigError(f"ENV must be development, testing or production, not {env!r}")
    if env != "production":
        app.config["SESSION_COOKIE_SECURE"] = False
        app.config["PREFERRED_URL_SCHEME"] = "http"
        if not app.config["SECRET_KEY"]:
            app.config["SECRET_KEY"] = DEV_SECRET_KEY
    if app.config["LOG_FORMAT"] is None:
        app.config["LOG_FORMAT"] = {"production": "json", "development": "text"}.get(env, "none")
    if app.config["LOG_FORMAT"] not in {"json", "text", "none"}:
        raise ConfigError(
            f"LOG_FORMAT must be json, text or none, not {app.config['LOG_FORMAT']!r}"
        )
    _check_secret_key(app.config["SECRET_KEY"], env)
    if env == "production" and (app.debug or app.config.get("DEBUG")):
        raise ConfigError(
            "Debug mode is on (FLASK_DEBUG); it must be off in production: the debugger runs code."
        )
    if env == "production":
        # Browsers send __Host- cookies only over HTTPS, for this host, for every path.
        app.config["SESSION_COOKIE_NAME"] = "__Host-" + app.config[
            "SESSION_COOKIE_NAME"
        ].removeprefix("__Host-")

    url = app.config["DATABASE_URL"] or f"sqlite:///{Path(app.instance_path) / 'portal.sqlite3'}"
    app.config["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(url)


def _check_secret_key(key: str | None, env: str) -> None:
    if env != "production":
        return
    if not key:
        raise ConfigError("SECRET_KEY is not set; production needs a long random secret.")
    if key == DEV_SECRET_KEY:
        raise ConfigError("SECRET_KEY is the development default; set a long random secret.")
    advice = 'use e.g. python -c "import secrets; print(secrets.token_urlsafe(48))".'
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters; {advice}"
        )
    if secret_key_bits(key) < MIN_SECRET_KEY_BITS:
        raise ConfigError(f"SECRET_KEY is too predictable (repeated or few characters); {advice}")


def secret_key_bits(key: str) -> float:
    """A conservative estimate of a key's entropy: the Shannon entropy of its characters times the
    length of its shortest repeating unit (``changeme`` four times counts once)."""
    unit = key
    for size in range(1, len(key) // 2 + 1):
        if len(key) % size == 0 and key[:size] * (len(key) // size) == key:
            unit = key[:size]
            break
    counts = Counter(unit)
    per_char = -sum(n / len(unit) * math.log2(n / len(unit)) for n in counts.values())
    return per_char * len(unit)


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for ``postgres://`` and ``postgresql://`` URLs (SQLAlchemy assumes psycopg2)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
