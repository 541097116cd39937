"""The list kit: search takes the user's wildcards literally, pages are clamped, CSV is safe."""

from __future__ import annotations

import csv
import io

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.listing import csv_response, like_pattern
from tests.factories import make_institution, make_user
from tests.support.app import login


def test_like_pattern_takes_wildcards_literally() -> None:
    assert like_pattern(" 50%_Off\\ ") == "%50\\%\\_off\\\\%"


def test_directory_search_for_a_wildcard_finds_only_literal_matches(
    client: FlaskClient, db: Session
) -> None:
    make_institution(db, name="Plain University")
    make_institution(db, name="Institute 100% Open")
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    html = client.get("/institutions/?q=%25").get_data(as_text=True)
    assert "Institute 100% Open" in html and "Plain University" not in html
    html = client.get("/institutions/?q=_").get_data(as_text=True)
    assert "Plain University" not in html and "Institute 100% Open" not in html


def test_a_page_number_beyond_any_list_is_an_empty_page_not_an_error(
    client: FlaskClient, db: Session
) -> None:
    login(client, make_user(db, Role.ADMIN))
    for path in ("/institutions/", "/admin/audit", "/auth/admin/users", "/admin/mail/"):
        assert client.get(f"{path}?page=9223372036854775807").status_code == 200, path
        assert client.get(f"{path}?page=-3").status_code == 200, path


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(app: Flask) -> None:
    with app.test_request_context():
        resp = csv_response(
            "x.csv", ["name", "n"], [("=HYPERLINK(1)", 1), ("plain", None)], lambda r: r
        )
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert rows == [["name", "n"], ["'=HYPERLINK(1)", "1"], ["plain", ""]]
    assert resp.headers["Content-Disposition"] == 'attachment; filename="x.csv"'
