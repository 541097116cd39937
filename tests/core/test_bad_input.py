"""The report's inputs that answered 500 (security report, item 5), each on both databases; the
fuzz test (tests/test_fuzz.py) covers every route with many more."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role
from tests.factories import make_user
from tests.support.app import login


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/institutions/2147483648", 404),
        ("/institutions/9223372036854775808", 404),
        ("/institutions/0", 404),
        ("/affiliations/99999999999999999999/decide", 404),
        ("/institutions/?page=9223372036854775807", 200),
        ("/auth/login?q=%00", 400),
        ("/auth/callback/demo?state=a%00&code=x", 400),
        ("/auth/callback/a%00b?state=x&code=y", 400),
    ],
)
def test_out_of_range_ids_huge_pages_and_nul_bytes_are_refused_cleanly(
    client: FlaskClient, db: Session, path: str, status: int
) -> None:
    if not path.startswith("/auth/"):
        login(client, make_user(db, Role.PROGRAM_OFFICER))
    method = "POST" if path.endswith("/decide") else "GET"
    assert client.open(path, method=method).status_code == status


def test_a_form_field_with_a_nul_byte_is_refused(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.post("/institutions/new", data={"name": "A\x00B", "country": "US"})
    assert resp.status_code == 400 and "NUL" in resp.get_data(as_text=True)


@pytest.mark.parametrize("cookie", ["demo:²", "demo:٣٣", "demo:\x00", "nothing:12"])
def test_a_strange_last_choice_cookie_is_ignored(
    client: FlaskClient, db: Session, cookie: str
) -> None:
    client.set_cookie("atom_last_idp", cookie, domain="portal.test")
    assert client.get("/auth/login").status_code in (200, 400)
