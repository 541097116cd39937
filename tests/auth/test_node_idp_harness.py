"""The node-oidc-provider harness on its own, without the portal: what the provider announces, a
whole authorization-code + PKCE login done by hand with ``requests``, and the behaviours other
tests rely on (claims only from UserInfo, a lying UserInfo ``sub``, signed UserInfo, predictable
consent pages, RP-initiated and back-channel logout)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from tests.support.node_idp import (
    CLIENT_PRIVATE_KEY_JWT,
    CLIENT_SECRET,
    CLIENT_SECRET_BASIC,
    CLIENT_SECRET_POST,
    CLIENT_SIGNED_USERINFO,
    NodeIdP,
    answer_node_idp_pages,
    login_at_node_idp,
    logout_at_node_idp,
    node_idp,
    pkce_pair,
    standard_clients,
)

REDIRECT_URI = (
    "http://127.0.0.1:9/auth/callback/node"  # never contacted: the redirect is not followed
)
POST_LOGOUT_URI = "http://127.0.0.1:9/logged-out"
SCOPE = "openid email profile eduperson"
ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {
        "email": "alice@northlake.example",
        "email_verified": True,
        "name": "Alice Archer",
        "given_name": "Alice",
        "family_name": "Archer",
        "eduperson_scoped_affiliation": ["faculty@northlake.example"],
    },
    "mallory": {
        "email": "mallory@northlake.example",
        "email_verified": True,
        "name": "Mallory Mole",
    },
}
CLIENT_KEY = RSAKey.generate_key(2048, parameters={"kid": "client-key", "alg": "RS256"})


@pytest.fixture(scope="module")
def idp() -> Iterator[NodeIdP]:
    public_jwks = {"keys": [CLIENT_KEY.as_dict(private=False)]}
    clients = standard_clients(
        [REDIRECT_URI], post_logout_redirect_uris=[POST_LOGOUT_URI], jwks=public_jwks
    )
    with node_idp(ACCOUNTS, clients, userinfo_sub_override={"mallory": "mallory-elsewhere"}) as p:
        yield p


def authorize_url(
    idp: NodeIdP, client_id: str, *, challenge: str | None, state: str, nonce: str
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": SCOPE,
        "state": state,
        "nonce": nonce,
    }
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    return f"{idp.discovery['authorization_endpoint']}?{urlencode(params)}"


def callback_params(url: str) -> dict[str, str]:
    assert url.startswith(REDIRECT_URI + "?"), url
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def log_in(
    idp: NodeIdP, client_id: str, login: str, session: requests.Session | None = None
) -> tuple[dict[str, str], str, str]:
    """Authorize with PKCE and log in; returns the callback parameters, the verifier and nonce."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    url = authorize_url(idp, client_id, challenge=challenge, state=state, nonce=nonce)
    params = callback_params(login_at_node_idp(url, login, session=session))
    assert params["state"] == state
    return params, verifier, nonce


def provider_keys(idp: NodeIdP) -> KeySet:
    return KeySet.import_key_set(requests.get(idp.discovery["jwks_uri"], timeout=10).json())


def exchange(idp: NodeIdP, data: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    response = requests.post(
        idp.discovery["token_endpoint"],
        data={"grant_type": "authorization_code", "redirect_uri": REDIRECT_URI, **data},
        timeout=10,
        **kwargs,
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def userinfo(idp: NodeIdP, access_token: str) -> requests.Response:
    return requests.get(
        idp.discovery["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=10,
    )


def test_discovery_announces_the_strict_profile(idp: NodeIdP) -> None:
    d = idp.discovery
    assert d["issuer"] == idp.issuer == f"http://127.0.0.1:{idp.port}"
    assert d["code_challenge_methods_supported"] == ["S256"]
    assert d["authorization_response_iss_parameter_supported"] is True
    assert d["end_session_endpoint"].startswith(idp.issuer)
    assert d["backchannel_logout_supported"] is True
    assert d["userinfo_endpoint"].startswith(idp.issuer)
    assert "RS256" in d["userinfo_signing_alg_values_supported"]
    assert {"email", "profile", "eduperson"} <= set(d["scopes_supported"])
    assert "eduperson_scoped_affiliation" in d["claims_supported"]


def test_code_flow_with_pkce_and_client_secret_basic(idp: NodeIdP) -> None:
    params, verifier, nonce = log_in(idp, CLIENT_SECRET_BASIC, "alice")
    assert params["iss"] == idp.issuer  # RFC 9207

    tokens = exchange(
        idp,
        {"code": params["code"], "code_verifier": verifier},
        auth=(CLIENT_SECRET_BASIC, CLIENT_SECRET),
    )
    id_token = jwt.decode(tokens["id_token"], provider_keys(idp), algorithms=["RS256"])
    claims = id_token.claims
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == CLIENT_SECRET_BASIC
    assert claims["sub"] == "alice"
    assert claims["nonce"] == nonce
    # ID-token claims are only the specification's: everything else comes from UserInfo.
    assert not {"email", "email_verified", "name", "eduperson_scoped_affiliation"} & set(claims)

    info = userinfo(idp, tokens["access_token"])
    assert info.status_code == 200
    assert info.headers["Content-Type"].startswith("application/json")
    assert info.json() == {"sub": "alice", **ACCOUNTS["alice"]}


def test_the_code_is_refused_without_the_verifier(idp: NodeIdP) -> None:
    params, _, _ = log_in(idp, CLIENT_SECRET_BASIC, "alice")
    response = requests.post(
        idp.discovery["token_endpoint"],
        data={"grant_type": "authorization_code", "redirect_uri": REDIRECT_URI, **params},
        auth=(CLIENT_SECRET_BASIC, CLIENT_SECRET),
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_pkce_is_required_of_confidential_clients(idp: NodeIdP) -> None:
    url = authorize_url(idp, CLIENT_SECRET_BASIC, challenge=None, state="s", nonce="n")
    params = callback_params(login_at_node_idp(url, "alice"))
    assert params["error"] == "invalid_request"
    assert "PKCE" in params["error_description"]
    assert params["iss"] == idp.issuer


def test_an_unknown_login_is_denied(idp: NodeIdP) -> None:
    _, challenge = pkce_pair()
    url = authorize_url(idp, CLIENT_SECRET_BASIC, challenge=challenge, state="s", nonce="n")
    params = callback_params(login_at_node_idp(url, "nobody"))
    assert params["error"] == "access_denied"
    assert params["state"] == "s"


def test_client_secret_post(idp: NodeIdP) -> None:
    params, verifier, _ = log_in(idp, CLIENT_SECRET_POST, "alice")
    tokens = exchange(
        idp,
        {
            "code": params["code"],
            "code_verifier": verifier,
            "client_id": CLIENT_SECRET_POST,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert userinfo(idp, tokens["access_token"]).json()["email"] == "alice@northlake.example"


def private_key_jwt(idp: NodeIdP, code: str, verifier: str) -> dict[str, str]:
    """Token-request fields authenticating the private_key_jwt client with CLIENT_KEY."""
    now = int(time.time())
    assertion = jwt.encode(
        {"alg": "RS256", "kid": "client-key"},
        {
            "iss": CLIENT_PRIVATE_KEY_JWT,
            "sub": CLIENT_PRIVATE_KEY_JWT,
            "aud": idp.discovery["token_endpoint"],
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + 60,
        },
        CLIENT_KEY,
    )
    return {
        "code": code,
        "code_verifier": verifier,
        "client_id": CLIENT_PRIVATE_KEY_JWT,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }


def test_private_key_jwt_with_inline_keys(idp: NodeIdP) -> None:
    params, verifier, _ = log_in(idp, CLIENT_PRIVATE_KEY_JWT, "alice")
    tokens = exchange(idp, private_key_jwt(idp, params["code"], verifier))
    assert "id_token" in tokens


def test_a_flagged_account_gets_another_sub_from_userinfo(idp: NodeIdP) -> None:
    params, verifier, _ = log_in(idp, CLIENT_SECRET_BASIC, "mallory")
    tokens = exchange(
        idp,
        {"code": params["code"], "code_verifier": verifier},
        auth=(CLIENT_SECRET_BASIC, CLIENT_SECRET),
    )
    id_token = jwt.decode(tokens["id_token"], provider_keys(idp), algorithms=["RS256"])
    assert id_token.claims["sub"] == "mallory"
    info = userinfo(idp, tokens["access_token"]).json()
    assert info["sub"] == "mallory-elsewhere"
    assert info["email"] == "mallory@northlake.example"


def test_signed_userinfo(idp: NodeIdP) -> None:
    params, verifier, _ = log_in(idp, CLIENT_SIGNED_USERINFO, "alice")
    tokens = exchange(
        idp,
        {"code": params["code"], "code_verifier": verifier},
        auth=(CLIENT_SIGNED_USERINFO, CLIENT_SECRET),
    )
    info = userinfo(idp, tokens["access_token"])
    assert info.status_code == 200
    assert info.headers["Content-Type"].startswith("application/jwt")
    signed = jwt.decode(info.text, provider_keys(idp), algorithms=["RS256"])
    assert signed.claims["iss"] == idp.issuer
    assert signed.claims["aud"] == CLIENT_SIGNED_USERINFO
    assert signed.claims["sub"] == "alice"
    assert signed.claims["email"] == "alice@northlake.example"
    assert signed.claims["eduperson_scoped_affiliation"] == ["faculty@northlake.example"]


def test_consent_is_shown_on_every_authorization_by_default(idp: NodeIdP) -> None:
    with requests.Session() as session:
        log_in(idp, CLIENT_SECRET_BASIC, "alice", session=session)
        # Logged in at the provider now: the login page is skipped, the consent page is not.
        _, challenge = pkce_pair()
        url = authorize_url(idp, CLIENT_SECRET_BASIC, challenge=challenge, state="again", nonce="n")
        first = session.get(url, allow_redirects=False, timeout=10)
        with pytest.raises(RuntimeError, match="no form to answer"):
            answer_node_idp_pages(session, first, {"login": {"login": "alice", "password": "x"}})
        first = session.get(url, allow_redirects=False, timeout=10)
        assert (
            callback_params(answer_node_idp_pages(session, first, {"consent": {}}))["state"]
            == "again"
        )


def test_consent_can_be_skipped() -> None:
    with node_idp(ACCOUNTS, standard_clients([REDIRECT_URI]), consent="skip") as idp:
        verifier, challenge = pkce_pair()
        url = authorize_url(idp, CLIENT_SECRET_BASIC, challenge=challenge, state="s", nonce="n")
        with requests.Session() as session:
            first = session.get(url, allow_redirects=False, timeout=10)
            callback = answer_node_idp_pages(
                session, first, {"login": {"login": "alice", "password": "x"}}
            )
        tokens = exchange(
            idp,
            {"code": callback_params(callback)["code"], "code_verifier": verifier},
            auth=(CLIENT_SECRET_BASIC, CLIENT_SECRET),
        )
        assert userinfo(idp, tokens["access_token"]).json()["name"] == "Alice Archer"


def test_an_unknown_option_stops_the_provider() -> None:
    with pytest.raises(RuntimeError, match="unknown option"), node_idp({}, [], consentt="skip"):
        pass


class _ClientSide(BaseHTTPRequestHandler):
    """The client's own endpoints: its JWK set at /jwks, and a back-channel logout receiver."""

    jwks: dict[str, Any] = {"keys": [CLIENT_KEY.as_dict(private=False)]}
    logout_tokens: list[str] = []

    def do_GET(self) -> None:
        body = json.dumps(self.jwks).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.logout_tokens.append(parse_qs(body)["logout_token"][0])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def client_side() -> Iterator[str]:
    _ClientSide.logout_tokens.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ClientSide)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_private_key_jwt_with_keys_from_a_jwks_uri(client_side: str) -> None:
    clients = standard_clients([REDIRECT_URI], jwks_uri=f"{client_side}/jwks")
    with node_idp(ACCOUNTS, clients) as idp:
        params, verifier, _ = log_in(idp, CLIENT_PRIVATE_KEY_JWT, "alice")
        tokens = exchange(idp, private_key_jwt(idp, params["code"], verifier))
        assert "id_token" in tokens


def test_rp_initiated_and_backchannel_logout(client_side: str) -> None:
    clients = standard_clients(
        [REDIRECT_URI],
        post_logout_redirect_uris=[POST_LOGOUT_URI],
        backchannel_logout_uri=f"{client_side}/backchannel",
    )
    with node_idp(ACCOUNTS, clients) as idp, requests.Session() as session:
        params, verifier, _ = log_in(idp, CLIENT_SECRET_BASIC, "alice", session=session)
        tokens = exchange(
            idp,
            {"code": params["code"], "code_verifier": verifier},
            auth=(CLIENT_SECRET_BASIC, CLIENT_SECRET),
        )
        sid = jwt.decode(tokens["id_token"], provider_keys(idp)).claims["sid"]
        query = urlencode(
            {
                "id_token_hint": tokens["id_token"],
                "post_logout_redirect_uri": POST_LOGOUT_URI,
                "state": "bye",
            }
        )
        end = logout_at_node_idp(
            f"{idp.discovery['end_session_endpoint']}?{query}", session=session
        )
        assert end == f"{POST_LOGOUT_URI}?state=bye"
        (logout_token,) = _ClientSide.logout_tokens
        claims = jwt.decode(logout_token, provider_keys(idp)).claims
        assert claims["iss"] == idp.issuer
        assert claims["aud"] == CLIENT_SECRET_BASIC
        assert claims["sub"] == "alice"
        assert claims["sid"] == sid
        assert "http://schemas.openid.net/event/backchannel-logout" in claims["events"]
        assert "nonce" not in claims

        # The provider session is gone: the next authorization asks for a login again.
        _, challenge = pkce_pair()
        url = authorize_url(idp, CLIENT_SECRET_BASIC, challenge=challenge, state="s", nonce="n")
        first = session.get(url, allow_redirects=False, timeout=10)
        with pytest.raises(RuntimeError, match="no form to answer"):
            answer_node_idp_pages(session, first, {"consent": {}})
