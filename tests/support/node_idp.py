"""A second, independent and strict OpenID Provider for tests: node-oidc-provider (the certified
implementation) as a real process on 127.0.0.1, in its specification-conformant defaults: PKCE
(S256) required, RFC 9207 ``iss`` in the authorization response, ID-token claims limited to the
specification's (``email``/``name``/affiliation only from UserInfo), UserInfo plain or signed.

    with node_idp({"alice": {"email": "alice@uni.example", "email_verified": True}},
                  standard_clients(["http://127.0.0.1:5000/auth/callback/node"])) as idp:
        callback_url = login_at_node_idp(authorize_url_built_for(idp), "alice")

``tests/node_idp/README.md`` describes the provider, its options and its login pages. Without
``node``/``npm`` the tests using it skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from tests.databases import require_or_skip

NODE_IDP_DIR = Path(__file__).resolve().parents[1] / "node_idp"
#: node-oidc-provider 9 runs on Node 20.19+ (it warns that only 22 LTS and later are supported).
MINIMUM_NODE = (20, 19)

#: Client ids and the shared secret of ``standard_clients``.
CLIENT_SECRET_BASIC = "portal-secret-basic"
CLIENT_SECRET_POST = "portal-secret-post"
CLIENT_PRIVATE_KEY_JWT = "portal-private-key-jwt"
CLIENT_SIGNED_USERINFO = "portal-signed-userinfo"
CLIENT_SECRET = "node-idp-test-secret-0123456789abcdef"

_READY = re.compile(r"^NODE_IDP_READY (\{.*\})$", re.MULTILINE)
#: Polls (x 25 ms) for node to load the provider and generate its keys: up to 2 minutes, since
#: a loaded 2-core machine running the suite on every core may take far longer than the usual 1 s;
#: a provider that exits early is reported at once.
_START_TRIES = 4800
_POLL_INTERVAL = 0.025
_NPM_CI_TIMEOUT = 300


@dataclass(frozen=True)
class NodeIdP:
    """A running provider: its issuer (``http://127.0.0.1:<port>``), port and discovery document."""

    issuer: str
    port: int
    discovery: dict[str, Any]
    log_path: Path

    def log(self) -> str:
        """What the provider wrote to stdout/stderr so far (its warnings and errors)."""
        return self.log_path.read_text(errors="replace")


def node_problem() -> str | None:
    """None if ``node`` (new enough) and ``npm`` are on PATH, else why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "node and npm are needed for the node-oidc-provider tests (tests/node_idp/)"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    match = re.match(r"v(\d+)\.(\d+)", out.stdout.strip())
    if not match or (int(match[1]), int(match[2])) < MINIMUM_NODE:
        wanted = ".".join(map(str, MINIMUM_NODE))
        return f"node {out.stdout.strip() or '?'} is too old for oidc-provider 9 (needs {wanted}+)"
    return None


def ensure_node_modules() -> None:
    """Run ``npm ci`` in tests/node_idp when node_modules is missing or older than the lock file.

    Serialised with a file lock, so parallel test processes install once."""
    lock = NODE_IDP_DIR / "package-lock.json"
    stamp = NODE_IDP_DIR / "node_modules" / ".package-lock.json"  # npm writes it on each install

    def stale() -> bool:
        return not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime

    if not stale():
        return
    with (NODE_IDP_DIR / ".npm-ci.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not stale():
            return
        try:
            result = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=NODE_IDP_DIR,
                capture_output=True,
                text=True,
                timeout=_NPM_CI_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            require_or_skip(f"npm ci in {NODE_IDP_DIR} took over {_NPM_CI_TIMEOUT} s")
        if result.returncode != 0:
            require_or_skip(f"npm ci in {NODE_IDP_DIR} failed: {result.stderr.strip()[-800:]}")


@contextmanager
def node_idp(
    accounts: dict[str, dict[str, Any]], clients: list[dict[str, Any]], **options: Any
) -> Iterator[NodeIdP]:
    """A node-oidc-provider process on 127.0.0.1 and a free port, stopped when the block ends.

    ``accounts``: sub → claims (``email``, ``email_verified``, ``name``, ``given_name``,
    ``family_name``, ``eduperson_scoped_affiliation``). ``clients``: client metadata as the
    provider takes it (snake_case, e.g. from ``standard_clients``). ``options`` (see
    tests/node_idp/README.md): ``consent`` ("always" — the default —, "once" or "skip"),
    ``userinfo_sub_override`` ({sub: other sub} for the UserInfo JSON), ``ttl``, ``extra_scopes``,
    ``port`` (default 0: a free port chosen by the kernel)."""
    problem = node_problem()
    if problem:
        require_or_skip(problem)
    ensure_node_modules()
    config = {"accounts": accounts, "clients": clients, **options}
    with tempfile.TemporaryDirectory(prefix="node-idp-") as folder:
        log_path = Path(folder) / "node-idp.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                ["node", "server.mjs"],
                cwd=NODE_IDP_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NODE_IDP_CONFIG": json.dumps(config)},
            )
        try:
            issuer, port = _wait_until_ready(proc, log_path)
            yield NodeIdP(issuer, port, _discovery(proc, issuer, log_path), log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_ready(proc: subprocess.Popen[bytes], log_path: Path) -> tuple[str, int]:
    for _ in range(_START_TRIES):
        found = _READY.search(log_path.read_text(errors="replace"))
        if found:
            ready = json.loads(found[1])
            return str(ready["issuer"]), int(ready["port"])
        if proc.poll() is not None:
            break
        time.sleep(_POLL_INTERVAL)
    raise RuntimeError(f"node-oidc-provider did not start:\n{log_path.read_text(errors='replace')}")


def _discovery(proc: subprocess.Popen[bytes], issuer: str, log_path: Path) -> dict[str, Any]:
    url = f"{issuer}/.well-known/openid-configuration"
    for _ in range(_START_TRIES):
        try:
            response = requests.get(url, timeout=5)
            if response.ok:
                document: dict[str, Any] = response.json()
                return document
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(_POLL_INTERVAL)
    raise RuntimeError(f"{url} never answered:\n{log_path.read_text(errors='replace')}")


def standard_clients(
    redirect_uris: Sequence[str],
    *,
    post_logout_redirect_uris: Sequence[str] = (),
    backchannel_logout_uri: str | None = None,
    jwks: dict[str, Any] | None = None,
    jwks_uri: str | None = None,
) -> list[dict[str, Any]]:
    """The four confidential clients: ``client_secret_basic``, ``client_secret_post``, signed
    UserInfo (``userinfo_signed_response_alg: RS256``, client_secret_basic) and — only when
    ``jwks`` (a public JWK set) or ``jwks_uri`` is given — ``private_key_jwt``."""
    common: dict[str, Any] = {
        "redirect_uris": list(redirect_uris),
        "post_logout_redirect_uris": list(post_logout_redirect_uris),
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "id_token_signed_response_alg": "RS256",
    }
    if backchannel_logout_uri:
        common["backchannel_logout_uri"] = backchannel_logout_uri
        common["backchannel_logout_session_required"] = True
    secret = {"client_secret": CLIENT_SECRET}
    clients = [
        {**common, **secret, "client_id": CLIENT_SECRET_BASIC},
        {
            **common,
            **secret,
            "client_id": CLIENT_SECRET_POST,
            "token_endpoint_auth_method": "client_secret_post",
        },
        {
            **common,
            **secret,
            "client_id": CLIENT_SIGNED_USERINFO,
            "userinfo_signed_response_alg": "RS256",
        },
    ]
    if jwks is not None or jwks_uri is not None:
        keys: dict[str, Any] = {"jwks": jwks} if jwks is not None else {"jwks_uri": jwks_uri}
        clients.append(
            {
                **common,
                **keys,
                "client_id": CLIENT_PRIVATE_KEY_JWT,
                "token_endpoint_auth_method": "private_key_jwt",
                "token_endpoint_auth_signing_alg": "RS256",
            }
        )
    return clients


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE ``(code_verifier, code_challenge)`` for the S256 method."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class _Forms(HTMLParser):
    """The forms of a page: action, method, id and their named inputs' values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append({**attributes, "inputs": {}})
        elif tag == "input" and self.forms and attributes.get("name"):
            self.forms[-1]["inputs"][attributes["name"]] = attributes.get("value", "")


def _forms(html: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def answer_node_idp_pages(
    session: requests.Session,
    response: requests.Response,
    answer: dict[str, dict[str, str]],
    steps: int = 12,
) -> str:
    """Follow the provider's redirects from ``response`` on, and submit its pages, until it
    redirects off the provider; return that URL (not followed). ``answer`` maps the pages to
    submit — by their form's hidden ``prompt`` ("login", "consent") or the form's id
    ("op.logoutForm") — to the fields to send besides the form's own; any other page is an error
    (RuntimeError), which lets a test assert which pages a flow shows."""
    provider = _origin(response.url)
    for _ in range(steps):
        if response.is_redirect:
            target = urljoin(response.url, response.headers["Location"])
            if _origin(target) != provider:
                return target
            response = session.get(target, allow_redirects=False, timeout=10)
            continue
        if response.status_code != 200 or "html" not in response.headers.get("Content-Type", ""):
            raise RuntimeError(
                f"node-oidc-provider answered {response.status_code} at {response.url}:\n"
                f"{response.text[:2000]}"
            )
        page = _forms(response.text)
        chosen = next((f for f in page if f["inputs"].get("prompt") in answer), None)
        chosen = chosen or next((f for f in page if f.get("id") in answer), None)
        if chosen is None and urlsplit(response.url).path == "/session/end/success":
            return response.url  # logged out, and no post_logout_redirect_uri to go back to
        if chosen is None:
            raise RuntimeError(f"no form to answer at {response.url}:\n{response.text[:2000]}")
        key = chosen["inputs"].get("prompt") or chosen["id"]
        response = session.post(
            urljoin(response.url, chosen["action"]),
            data={**chosen["inputs"], **answer[key]},
            allow_redirects=False,
            timeout=10,
        )
    raise RuntimeError(f"node-oidc-provider kept redirecting after {steps} steps")


def login_at_node_idp(
    authorize_url: str,
    login: str,
    password: str = "any",  # noqa: S107 - devInteractions accepts any password
    *,
    session: requests.Session | None = None,
) -> str:
    """Log in through the provider's devInteractions pages without a browser and return the URL
    it finally redirects to (the client's redirect_uri with ``code``, ``state``, ``iss`` — or
    ``error``); that redirect is not followed.

    GET ``authorize_url`` → 303 to ``/interaction/<uid>`` → the login form (POST ``prompt=login``,
    ``login``, ``password``; any password is accepted, ``login`` becomes ``sub``) → back to the
    authorization endpoint → the consent form if shown (POST ``prompt=consent``) → back again →
    the redirect to the client. Pages already satisfied (an existing provider session in
    ``session``, a remembered grant) are skipped. The query response mode only."""
    answers = {"login": {"login": login, "password": password}, "consent": {}}
    if session is not None:
        first = session.get(authorize_url, allow_redirects=False, timeout=10)
        return answer_node_idp_pages(session, first, answers)
    with requests.Session() as own:
        first = own.get(authorize_url, allow_redirects=False, timeout=10)
        return answer_node_idp_pages(own, first, answers)


def logout_at_node_idp(end_session_url: str, *, session: requests.Session) -> str:
    """RP-initiated logout without a browser: GET ``end_session_url`` (``id_token_hint``,
    ``post_logout_redirect_uri``, ``state``…) with the ``session`` that logged in, confirm the
    provider's "Yes, sign me out" form, and return the URL it redirects to: the
    post_logout_redirect_uri, or without one the provider's ``/session/end/success`` page.
    Back-channel logout requests have been sent (and answered) before that redirect."""
    first = session.get(end_session_url, allow_redirects=False, timeout=10)
    return answer_node_idp_pages(session, first, {"op.logoutForm": {"logout": "yes"}})
