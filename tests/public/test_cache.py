"""Public pages are cached: on the server (a page asked for again within ``PUBLIC_CACHE_SECONDS``
costs no query), in browsers and shared caches (``Cache-Control: public`` for anonymous
visitors), and revalidated by ``ETag`` (304). A logged-in person's page names them: never
stored by a shared cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from portal.public.views import CACHE_KEY
from tests.public.conftest import World
from tests.public.pages import main_html, table
from tests.support.app import login

Count = Callable[[Callable[[], object]], int]


@pytest.fixture
def cache_on(app: Flask) -> Iterator[int]:
    app.config["PUBLIC_CACHE_SECONDS"] = 300
    app.extensions[CACHE_KEY].clear()
    yield 300
    app.extensions[CACHE_KEY].clear()
    app.config["PUBLIC_CACHE_SECONDS"] = 0


def test_a_cached_page_costs_no_query(
    client: FlaskClient, world: World, cache_on: int, count_queries: Count
) -> None:
    first: dict[str, TestResponse] = {}
    assert count_queries(lambda: first.setdefault("r", client.get("/program/partners"))) > 0
    again: dict[str, TestResponse] = {}
    assert count_queries(lambda: again.setdefault("r", client.get("/program/partners"))) == 0
    assert again["r"].get_data() == first["r"].get_data()
    assert again["r"].headers["ETag"] == first["r"].headers["ETag"]


def test_anonymous_answers_are_public_and_revalidate_with_their_etag(
    client: FlaskClient, world: World, cache_on: int, count_queries: Count
) -> None:
    resp = client.get("/program/projects")
    assert resp.status_code == 200
    assert resp.cache_control.public and resp.cache_control.max_age == cache_on
    assert "Cookie" in resp.vary
    assert "Set-Cookie" not in resp.headers
    etag = resp.headers["ETag"]
    got: dict[str, TestResponse] = {}
    queries = count_queries(
        lambda: got.setdefault(
            "r", client.get("/program/projects", headers={"If-None-Match": etag})
        )
    )
    assert got["r"].status_code == 304 and got["r"].get_data() == b""
    assert got["r"].headers["ETag"] == etag
    assert queries == 0
    # Another ETag: the whole page again.
    assert client.get("/program/projects", headers={"If-None-Match": '"other"'}).status_code == 200


def test_the_cache_is_kept_per_path_and_query(
    client: FlaskClient, world: World, cache_on: int, count_queries: Count
) -> None:
    client.get("/program/partners")
    assert count_queries(lambda: client.get("/program/partners?country=JP")) > 0
    body = client.get("/program/partners?country=JP").get_data(as_text=True)
    assert [r[0] for r in table(body, "Partner institutions")] == ["Kyoto Example Institute"]


def test_a_cached_page_shows_changes_once_it_expires(
    app: Flask, client: FlaskClient, db: Session, world: World, cache_on: int
) -> None:
    """Within the time the old page is served (that is the cache's purpose); after it, the new
    one (here the cache is emptied as time would)."""
    assert "Ada Consenting" in client.get("/program/projects").get_data(as_text=True)
    world.consenting_pi.public_name = False
    db.commit()
    assert "Ada Consenting" in client.get("/program/projects").get_data(as_text=True)
    app.extensions[CACHE_KEY].clear()
    assert "Ada Consenting" not in client.get("/program/projects").get_data(as_text=True)


def test_zero_seconds_turns_the_cache_off(
    client: FlaskClient, world: World, count_queries: Count
) -> None:
    client.get("/program/")
    assert count_queries(lambda: client.get("/program/")) > 0
    resp = client.get("/program/")
    assert resp.cache_control.max_age == 0 and "ETag" in resp.headers


def test_logged_in_people_get_the_cached_content_in_a_page_that_is_not_stored(
    client: FlaskClient, db: Session, world: World, cache_on: int
) -> None:
    anonymous = client.get("/program/partners").get_data(as_text=True)
    login(client, world.private_pi)
    resp = client.get("/program/partners")
    assert resp.status_code == 200
    assert "no-store" in resp.headers["Cache-Control"] and not resp.cache_control.public
    body = resp.get_data(as_text=True)
    assert main_html(body) == main_html(anonymous)
    # The layout is this person's own: their menu, never in the cached content.
    assert world.private_pi.display_name in body
    assert world.private_pi.display_name not in main_html(body)


def test_errors_are_not_cached(
    client: FlaskClient, world: World, cache_on: int, count_queries: Count
) -> None:
    path = f"/program/institutions/{world.applied.id}"
    assert client.get(path).status_code == 404
    assert count_queries(lambda: client.get(path)) > 0
