"""The local demo identity provider for ``make run``: oidc-provider-mock on 127.0.0.1 with the demo
people (``portal.dev.demo.PEOPLE`` and ``PENDING_REQUESTS``) as one-click users. Nothing here is part of
the portal's login: it is a real OpenID provider the portal talks to over HTTP, like any other."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from portal.dev.demo import PENDING_REQUESTS, PEOPLE, DemoPerson


def demo_claims(person: DemoPerson) -> dict[str, Any]:
    """What the demo IdP says about a person: name, verified e-mail, scoped affiliation."""
    claims: dict[str, Any] = {"name": person.name, "email": person.email, "email_verified": True}
    if person.title and person.roles:
        claims["eduPersonScopedAffiliation"] = [f"{person.title}@{person.email.rsplit('@', 1)[1]}"]
    return claims


def demo_users(people: Iterable[DemoPerson] = (*PEOPLE, *PENDING_REQUESTS)) -> list[Any]:
    from oidc_provider_mock import User

    return [User(sub=p.sub, claims=demo_claims(p)) for p in people]


def start_demo_idp(host: str, port: int) -> BaseWSGIServer:
    """Serve the demo IdP in a daemon thread; its issuer is ``http://<host>:<port>``."""
    import oidc_provider_mock

    app = oidc_provider_mock.app(require_nonce=True, user_claims=demo_users())
    server = make_server(host, port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True, name="demo-idp").start()
    return server
