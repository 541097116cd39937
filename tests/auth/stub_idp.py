"""A tiny OpenID provider that signs ID tokens by hand (joserfc), for the bad cases a real provider
(oidc-provider-mock) never produces: a wrong audience or issuer, ``alg: none``, HS256 keyed with
the provider's public key, a token signed by another key, no ID token, a lying discovery document,
a wrong RFC 9207 ``iss`` parameter. It serves real HTTP; the portal talks to it like to any IdP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import Flask, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class StubIdP:
    base: str = ""
    #: What the next ID token looks like: ok, wrong_aud, wrong_aud_with_azp, wrong_iss, expired, alg_none,
    #: hs256_pubkey, other_key, no_id_token.
    mode: str = "ok"
    #: The issuer the discovery document claims (None: the real one).
    discovery_issuer: str | None = None
    #: The ``iss`` parameter added to the authorization response (None: none sent).
    iss_param: str | None = None
    #: Whether discovery says the ``iss`` parameter is always sent (RFC 9207).
    advertise_iss: bool = False
    claims: dict[str, Any] = field(default_factory=dict)
    #: What UserInfo answers: json, jwt (signed with the provider's key), jwt_other_key,
    #: sub_mismatch, down (HTTP 500), garbage (not JSON); and with which claims.
    userinfo_mode: str = "json"
    userinfo: dict[str, Any] = field(default_factory=dict)
    userinfo_calls: int = 0
    #: The form of the last token request (to inspect the client's authentication).
    last_token_request: dict[str, str] = field(default_factory=dict)
    #: The ``sid`` put in ID tokens (the provider's session).
    sid: str = "stub-session-1"
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    other_key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"})
    )
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def reset(self) -> None:
        self.mode, self.discovery_issuer, self.iss_param, self.claims = "ok", None, None, {}
        self.advertise_iss = False
        self.userinfo_mode, self.userinfo, self.userinfo_calls = "json", {}, 0
        self.last_token_request = {}

    def logout_token(self, client_id: str, **overrides: Any) -> str:
        """A Back-Channel Logout token for this provider's session ``sid`` (overrides change or,
        with None, remove claims)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.base,
            "aud": client_id,
            "iat": now,
            "jti": secrets.token_urlsafe(8),
            "sid": self.sid,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode({"alg": "RS256", "kid": "k1", "typ": "logout+jwt"}, claims, self.key)

    def id_token(self, client_id: str, nonce: str | None, sub: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.base,
            "sub": sub,
            "aud": client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "sid": self.sid,
            **self.claims,
        }
        if self.mode == "wrong_aud":
            claims["aud"] = "someone-else"
        if self.mode == "wrong_aud_with_azp":
            # azp names the portal, so only a real audience check catches it.
            claims["aud"], claims["azp"] = ["someone-else"], client_id
        if self.mode == "wrong_iss":
            claims["iss"] = "https://evil.example"
        if self.mode == "expired":
            claims["iat"], claims["exp"] = now - 3600, now - 600
        header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
        if self.mode == "alg_none":
            h = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            return f"{h}.{_b64(json.dumps(claims).encode())}."
        if self.mode == "hs256_pubkey":
            h = _b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
            body = f"{h}.{_b64(json.dumps(claims).encode())}"
            pem = self.key.as_pem(private=False)
            sig = hmac.new(pem, body.encode(), hashlib.sha256).digest()
            return f"{body}.{_b64(sig)}"
        key = self.other_key if self.mode == "other_key" else self.key
        return jwt.encode(header, claims, key)

    def app(self) -> Flask:
        app = Flask("stub_idp")

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            return jsonify(
                {
                    "issuer": self.discovery_issuer or self.base,
                    "authorization_endpoint": f"{self.base}/authorize",
                    "token_endpoint": f"{self.base}/token",
                    "jwks_uri": f"{self.base}/jwks",
                    # Advertises weak algorithms too: the portal must not take them from here.
                    "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "authorization_response_iss_parameter_supported": self.advertise_iss,
                    "userinfo_endpoint": f"{self.base}/userinfo",
                    "end_session_endpoint": f"{self.base}/logout",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_basic",
                        "client_secret_post",
                        "private_key_jwt",
                    ],
                    "backchannel_logout_supported": True,
                }
            )

        @app.get("/userinfo")
        def userinfo() -> Any:
            self.userinfo_calls += 1
            if request.headers.get("Authorization") != "Bearer at":
                return jsonify({"error": "invalid_token"}), 401
            claims = {"sub": self.userinfo.get("sub", "stub-user"), **self.userinfo}
            if self.userinfo_mode == "sub_mismatch":
                claims["sub"] = "somebody-else"
            if self.userinfo_mode == "down":
                return "upstream broke", 500
            if self.userinfo_mode == "garbage":
                return "<html>not json</html>", 200, {"Content-Type": "text/html"}
            if self.userinfo_mode in ("jwt", "jwt_other_key"):
                key = self.key if self.userinfo_mode == "jwt" else self.other_key
                body = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)
                return body, 200, {"Content-Type": "application/jwt"}
            return jsonify(claims)

        @app.get("/jwks")
        def jwks() -> Any:
            return jsonify(KeySet([self.key]).as_dict(private=False))

        @app.get("/authorize")
        def authorize() -> Any:
            code = secrets.token_urlsafe(16)
            self.codes[code] = {
                "nonce": request.args.get("nonce"),
                "client_id": request.args.get("client_id"),
                "sub": request.args.get("login_hint") or "stub-user",
            }
            params = {"code": code, "state": request.args.get("state", "")}
            if self.iss_param is not None:
                params["iss"] = self.iss_param
            return redirect(f"{request.args['redirect_uri']}?{urlencode(params)}")

        @app.post("/token")
        def token() -> Any:
            self.last_token_request = {
                **request.form.to_dict(),
                "authorization": request.headers.get("Authorization", ""),
            }
            data = self.codes.pop(request.form.get("code", ""), None)
            if data is None:
                return jsonify({"error": "invalid_grant"}), 400
            body: dict[str, Any] = {"access_token": "at", "token_type": "Bearer", "expires_in": 300}
            if self.mode != "no_id_token":
                body["id_token"] = self.id_token(data["client_id"], data["nonce"], data["sub"])
            return jsonify(body)

        return app


@contextmanager
def run_stub() -> Iterator[StubIdP]:
    stub = StubIdP()
    server = make_server("127.0.0.1", 0, stub.app(), threaded=True)
    stub.base = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        thread.join(5)
