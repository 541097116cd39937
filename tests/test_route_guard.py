"""A safety net over every route the app has, including ones added later: nobody anonymous gets in
where they should not, and no role can make any route fail with a 500.

Each domain's own tests check the exact answer for every role; this test checks that no route was
forgotten (a missing ``login_required``, a view that crashes on an id it does not know).
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.routing import IntegerConverter

from portal.auth.models import Role
from tests.factories import make_user
from tests.support.app import login

#: Routes that anonymous visitors may load, and why.
PUBLIC = {
    "core.index",  # the start page
    "ops.healthz",  # load-balancer liveness check, says only "ok"
    "ops.readyz",  # readiness: which checks pass, the outbox backlog; no configuration
    "metrics.scrape",  # Prometheus; 404 unless METRICS_TOKEN is set, then a bearer token
    "auth.login",  # the login page ("find your institution")
    "admin.jwks",  # the portal's public key, for providers (private_key_jwt)
    "proposals.calls",  # published calls: how researchers discover the program
    "proposals.call_detail",  # one published call (a draft sends anonymous visitors to log in)
    "agreements.check",  # does a signed agreement have this text? (the hash on its PDF)
    "datasets.index",  # the dataset catalog: open and registered datasets are listed publicly
    "datasets.detail",  # one open or registered dataset (others send anonymous visitors to log in)
    "api.openapi",  # the operator API's OpenAPI document
    "api.docs",  # the operator API's operations, as a page
    "public.overview",  # the program's public face: overview with charts
    "public.partners",  # the partner directory
    "public.institution",  # one partner (others: 404)
    "public.projects",  # awarded projects (consenting PIs named)
    "public.project",  # one awarded project (others: 404)
    "public.calls",  # open calls
    "static",
}
ROLES = [None, *Role]


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, path) for every rule, ids filled with one that does not exist."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        values = {}
        for arg in rule.arguments:
            conv = rule._converters[arg]  # a rule keeps its converters only here
            values[arg] = 987654 if isinstance(conv, IntegerConverter) else "nothing-here"
        path = rule.build(values, append_unknown=False)[1]  # type: ignore[index]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, path))
    return out


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value if r else "anonymous")
def test_no_route_lets_anonymous_in_or_fails_for_any_role(
    app: Flask, client: FlaskClient, db: Session, role: Role | None
) -> None:
    if role is not None:
        login(client, make_user(db, role))
    for endpoint, method, path in _routes(app):
        resp = client.open(path, method=method, data={})
        assert resp.status_code < 500, f"{method} {path} as {role}: {resp.status_code}"
        if role is None and endpoint not in PUBLIC:
            assert resp.status_code in (302, 400, 401, 403, 404, 405), (
                f"{method} {path}: {resp.status_code}"
            )
            if resp.status_code == 302:
                assert "next=" in resp.headers["Location"] or endpoint.startswith("auth."), path
