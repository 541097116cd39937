"""Many clients at once over real HTTP get correct answers, and every refusal is counted in the audit
log — on SQLite (the default) as on PostgreSQL (security report, item 2).

The report: with five clients, 90 of 200 refused page loads and 9 of 10 logins answered 500
("database is locked"), because a GET read first and then wrote (the refusal's audit row, the
OIDC callback, the session's last-seen time) after another request had committed. Here ten
clients — two logging in through a real identity provider, four refused, two whose sessions must
be touched, two writing — start each round together at a barrier, in a threaded server.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select, update
from werkzeug.serving import make_server

from portal.auth.models import LoginSession, Role
from portal.core.audit import AuditEvent, RefusalTally
from portal.core.models import utcnow
from tests.factories import make_institution, make_user
from tests.support.live import LIVE_DATABASES, live_app, live_session, logged_in_client
from tests.support.oidc import add_provider, set_claims
from tests.support.race import race

ROUNDS = 8


@pytest.fixture(scope="module", params=LIVE_DATABASES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, idp_a_url: str
) -> Iterator[tuple[Flask, str]]:
    """An app on its own committed database, served by a threaded HTTP server."""
    config = {
        "SERVER_NAME": None,
        "OIDC_CLIENT_SECRETS": {"idp-a": "secret-a"},
        "REFUSAL_LIMIT": 10_000,  # this test is about correctness, not the flood limit
    }
    with live_app(request.param, tmp_path_factory.mktemp("http"), config) as app:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield app, f"http://127.0.0.1:{server.port}"
        finally:
            server.shutdown()
            thread.join()


def _browser(app: Flask, user_id: int) -> requests.Session:
    """A real HTTP client carrying the session cookie of a logged-in user."""
    cookie = logged_in_client(app, user_id).get_cookie("atom_session")
    assert cookie is not None
    browser = requests.Session()
    browser.cookies.set("atom_session", cookie.value)
    return browser


def _oidc_login(base: str, idp_url: str, sub: str) -> Callable[[], list[int]]:
    def go() -> list[int]:
        browser = requests.Session()
        start = browser.post(f"{base}/auth/login/idp-a", data={"next": ""}, allow_redirects=False)
        if start.status_code != 302:
            return [start.status_code]
        authorized = requests.post(
            start.headers["Location"], data={"sub": sub}, allow_redirects=False, timeout=10
        )
        back = urlsplit(authorized.headers["Location"])
        callback = browser.get(f"{base}{back.path}?{back.query}", allow_redirects=False)
        dashboard = browser.get(f"{base}/dashboard", allow_redirects=False)
        return [start.status_code, callback.status_code, dashboard.status_code]

    return go


def test_ten_clients_at_once_get_no_500_and_every_refusal_is_counted(
    served: tuple[Flask, str], idp_a_url: str
) -> None:
    app, base = served
    with live_session(app) as s:
        inst = make_institution(s)
        add_provider(s, "idp-a", idp_a_url, served=[(inst, None)])
        refused = [make_user(s, Role.RESEARCHER, institution=inst).id for _ in range(4)]
        touched = [make_user(s, Role.REVIEWER).id for _ in range(2)]
        writers = [make_user(s).id for _ in range(2)]
        partner_id = inst.id
    for sub in ("ada-http", "bob-http"):
        set_claims(
            idp_a_url, sub, {"email": f"{sub}@example.org", "email_verified": True, "name": sub}
        )
    browsers = {uid: _browser(app, uid) for uid in refused + touched + writers}

    def get(uid: int, path: str) -> Callable[[], list[int]]:
        return lambda: [browsers[uid].get(f"{base}{path}", allow_redirects=False).status_code]

    def ask_to_join(uid: int) -> Callable[[], list[int]]:
        def go() -> list[int]:
            asked = browsers[uid].post(
                f"{base}/affiliations/request",
                data={"institution_id": partner_id},
                allow_redirects=False,
            )
            mine = browsers[uid].get(f"{base}/affiliations/", allow_redirects=False).text
            # Withdraw again so the next round can ask again.
            ids = [
                p.split("/")[0]
                for p in mine.split("/affiliations/")[1:]
                if p.split("/")[0].isdigit()
            ]
            out = [asked.status_code]
            for aff in ids[:1]:
                out.append(
                    browsers[uid]
                    .post(f"{base}/affiliations/{aff}/withdraw", allow_redirects=False)
                    .status_code
                )
            return out

        return go

    statuses: Counter[int] = Counter()
    refusals_sent = 0
    for round_no in range(ROUNDS):
        with live_session(app) as s:  # every session must write its last-seen time this round
            s.execute(update(LoginSession).values(last_seen_at=utcnow() - dt.timedelta(minutes=5)))
        actions = [
            *(
                get(uid, ["/admin/audit", "/auth/admin/users", "/admin/mail/"][i % 3])
                for i, uid in enumerate(refused)
            ),
            *(get(uid, "/dashboard") for uid in touched),
            *(ask_to_join(uid) for uid in writers),
            _oidc_login(base, idp_a_url, "ada-http"),
            _oidc_login(base, idp_a_url, "bob-http"),
        ]
        for result in race(*actions):
            statuses.update(result)
        refusals_sent += len(refused)
        assert statuses[500] == 0, f"round {round_no}: {statuses}"

    assert statuses[500] == 0 and statuses[403] == refusals_sent, statuses
    with live_session(app) as s:
        counted = s.scalar(select(func.sum(RefusalTally.count)).where(RefusalTally.path != "*"))
        unaudited = s.scalar(
            select(func.count())
            .select_from(RefusalTally)
            .where(RefusalTally.path != "*", RefusalTally.event_id.is_(None))
        )
        events = s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "permission.denied")
        )
        logins = s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "auth.login")
        )
    assert counted == refusals_sent, "every refused request is counted"
    assert unaudited == 0 and events and events >= 1, "and every kind of refusal has its event"
    assert logins == 2 * ROUNDS, "every login completed"
