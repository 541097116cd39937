"""No input makes any route answer 500, on SQLite and PostgreSQL (security report, item 5).

Hypothesis sends every route of the app — including routes added later — path values (ids far
beyond any column's range, negative, text with NUL and Unicode digits), query arguments and form
fields built from the names the portal's forms and lists read, as an anonymous visitor and as an
administrator (who reaches every page). Whatever it sends, the answer is below 500.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from portal.auth.models import Role
from tests.factories import make_user
from tests.support.app import login

#: Every query argument and form field name the portal reads somewhere.
FIELDS = [
    "page", "per_page", "q", "state", "sort", "next", "code", "iss", "error", "action", "reason",
    "decision", "note", "institution_id", "title", "name", "short_name", "country", "ror_id",
    "website", "email_domains", "slug", "kind", "issuer", "client_id", "discovery_url", "scopes",
    "algorithms", "enabled", "served_text", "List-Unsubscribe", "format", "tier", "dataset",
    "intended_use", "accepted", "proposal_id", "expiring", "show", "ends_on", "licence", "size",
    "statement", "officials", "technical_contact_name", "technical_contact_email",
    "idp_entity_id", "answer", "ror", "entity_id", "provider_id", "url", "doi", "license",
    "released_on", "planned_output_id", "summary", "outcomes", "public_name", "field",
]  # fmt: skip

#: Values known to break careless code: NUL (PostgreSQL refuses it in text), Unicode digits
#: (``"²".isdigit()`` is true, ``int("²")`` fails), numbers beyond any column, LIKE wildcards.
TROUBLE = ["\x00", "a\x00b", "²", "٣", "9" * 30, "-1", "%", "_", "' OR 1=1 --", "é" * 300, ""]

#: Text a person (or an attacker) might send: the known troublemakers, and anything at all.
nasty = st.one_of(
    st.sampled_from(TROUBLE),
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
#: Every field at once, each with its own value (a request carries what it likes).
params = st.fixed_dictionaries({f: nasty for f in FIELDS})
ids = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63]),
)


def _routes(app: Flask) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, method))
    return sorted(out)


def _all_routes() -> list[tuple[str, str]]:
    from portal import create_app
    from tests.support.app import TEST_CONFIG

    return _routes(create_app({**TEST_CONFIG, "DATABASE_URL": "sqlite://"}))


ROUTES = _all_routes()


def _path(rule: str, data: st.DataObject) -> str:
    def fill(match: re.Match[str]) -> str:
        if match.group(1) == "int":
            return str(data.draw(ids))
        return quote(data.draw(st.text(min_size=1, max_size=30)).replace("/", ""), safe="") or "x"

    return re.sub(r"<(?:(\w+):)?\w+>", fill, rule)


@pytest.mark.parametrize("who", ["anonymous", "admin"])
@pytest.mark.parametrize(("rule", "method"), ROUTES, ids=[f"{m} {r}" for r, m in ROUTES])
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_input_makes_a_route_fail(
    client: FlaskClient, db: Session, who: str, rule: str, method: str, data: st.DataObject
) -> None:
    if who == "admin" and not client.get_cookie("atom_session", domain="portal.test"):
        login(client, make_user(db, Role.ADMIN))
    path = _path(rule, data)
    query: dict[str, Any] = data.draw(params)
    form: dict[str, Any] = data.draw(params) if method == "POST" else {}
    resp = client.open(path, method=method, query_string=query, data=form)
    assert resp.status_code < 500, (method, path, query, form, resp.get_data(as_text=True)[:300])
