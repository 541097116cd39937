"""Logging in through real OpenID providers in tests: an oidc-provider-mock process, a provider
in the registry, and the whole browser-less login (portal → provider's form → portal callback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import requests
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from portal.auth.models import IdentityProvider, ProviderInstitution, ProviderKind
from portal.institutions.models import Institution


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mock_idp_process(*args: str) -> Iterator[str]:
    """A real oidc-provider-mock process on 127.0.0.1; yields its issuer URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "oidc_provider_mock", "-p", str(port), "-H", "127.0.0.1"),
            *("--require-nonce", "true", *args),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{url}/.well-known/openid-configuration", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("oidc-provider-mock did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def add_provider(
    db: Session,
    slug: str,
    issuer: str,
    *,
    kind: ProviderKind = ProviderKind.INSTITUTION,
    served: list[tuple[Institution, str | None]] = (),  # type: ignore[assignment]
    discovery_url: str | None = None,
) -> IdentityProvider:
    p = IdentityProvider(
        slug=slug,
        name=f"Provider {slug}",
        kind=kind,
        issuer=issuer,
        discovery_url=discovery_url,
        client_id=f"portal-{slug}",
    )
    p.served = [ProviderInstitution(institution=i, entity_id=e) for i, e in served]
    db.add(p)
    db.flush()
    return p


def set_claims(idp_url: str, sub: str, claims: dict[str, Any]) -> None:
    """Tell oidc-provider-mock what to say about ``sub`` (its PUT /users/{sub} API)."""
    resp = requests.put(f"{idp_url}/users/{sub}", json=claims, timeout=5)
    assert resp.status_code == 204, resp.text


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def start_login(
    client: FlaskClient, slug: str, *, next: str | None = None, institution_id: int | None = None
) -> str:
    """Press "Log in" for ``slug``; returns the provider's authorization URL."""
    data: dict[str, Any] = {"next": next or ""}
    if institution_id:
        data["institution_id"] = str(institution_id)
    resp = client.post(f"/auth/login/{slug}", data=data)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return resp.headers["Location"]


def authorize_at_mock(authorize_url: str, sub: str) -> str:
    """Log in as ``sub`` on oidc-provider-mock's real authorization form; returns the callback URL."""
    resp = requests.post(authorize_url, data={"sub": sub}, allow_redirects=False, timeout=5)
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"]


def authorize_at_stub(authorize_url: str) -> str:
    resp = requests.get(authorize_url, allow_redirects=False, timeout=5)
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"]


def oidc_login(
    client: FlaskClient, slug: str, idp_url: str, sub: str, *, next: str | None = None
) -> TestResponse:
    """The whole login: portal → real IdP form → portal callback. Returns the callback's response."""
    callback = authorize_at_mock(start_login(client, slug, next=next), sub)
    return client.get(path_of(callback))


def logged_in_user_id(client: FlaskClient) -> int | None:
    """Who the portal thinks is logged in (asks the portal, not the cookie)."""
    resp = client.get("/auth/account")
    if resp.status_code != 200:
        return None
    with client.session_transaction() as s:
        uid = s.get("_user_id")
    return int(uid) if uid else None
