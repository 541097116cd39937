"""Each public page shows exactly what the program makes public — partners, their awarded
projects, the consenting PIs' names, released outputs, open calls — and nothing else: no
applicant, suspended, declined or withdrawn institution, no draft, submitted, declined or
withdrawn proposal, no person who did not agree to be named, no reviewer or review, no e-mail
address. Anonymous visitors and logged-in people see the same content."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.models import utcnow
from tests.factories import make_user
from tests.public.conftest import World
from tests.public.pages import hrefs, main_html, table, text_of
from tests.support.app import login

PARTNER_ROWS = [
    ["Kyoto Example Institute", "Japan", "—", "May 2026", "1", "0 %"],
    ["Universität Beispielstadt", "Germany", "www.uni-beispiel.de", "March 2026", "1", "100 %"],
]
PROJECT_ROWS = [
    ["Multilingual speech corpora", "Kyoto Example Institute", "PI not named", "1,000",
     "None yet", "0 %"],
    ["Open reasoning models for science", "Universität Beispielstadt", "Ada Consenting", "1,000",
     "Model weights: 1, Paper: 1", "100 %"],
]  # fmt: skip


def _get(client: FlaskClient, path: str, status: int = 200) -> str:
    resp = client.get(path)
    body = resp.get_data(as_text=True)
    assert resp.status_code == status, body[-2000:]
    return body


def _assert_clean(body: str, world: World) -> None:
    leaked = [text for text in world.forbidden if text and text in body]
    assert not leaked, f"the public page shows {leaked}"


def _pages(world: World) -> list[str]:
    return [
        "/program/",
        "/program/partners",
        "/program/projects",
        "/program/calls",
        f"/program/institutions/{world.partner.id}",
        f"/program/institutions/{world.other_partner.id}",
        f"/program/projects/{world.shown.id}",
        f"/program/projects/{world.unnamed.id}",
    ]


def test_every_public_page_answers_anonymous_visitors_and_leaks_nothing(
    client: FlaskClient, world: World
) -> None:
    for path in _pages(world):
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert "Set-Cookie" not in resp.headers, f"{path} set a cookie for an anonymous visitor"
        _assert_clean(resp.get_data(as_text=True), world)


def test_logged_in_people_see_the_same_pages(
    client: FlaskClient, db: Session, world: World
) -> None:
    anonymous = {path: main_html(_get(client, path)) for path in _pages(world)}
    login(client, world.reviewer)
    for path, content in anonymous.items():
        assert main_html(_get(client, path)) == content, path


def test_the_partner_directory_lists_partners_only(client: FlaskClient, world: World) -> None:
    body = _get(client, "/program/partners")
    assert table(body, "Partner institutions") == PARTNER_ROWS
    assert f"/program/institutions/{world.partner.id}" in hrefs(body)
    # The country filter offers the partners' countries only.
    assert '<option value="DE">Germany</option>' in body
    assert 'value="FR"' not in body


def test_the_directory_filters_by_country_and_searches_by_name(
    client: FlaskClient, world: World
) -> None:
    assert table(_get(client, "/program/partners?country=JP"), "Partner institutions") == [
        PARTNER_ROWS[0]
    ]
    assert table(_get(client, "/program/partners?q=beispiel"), "Partner institutions") == [
        PARTNER_ROWS[1]
    ]
    # A non-partner's name finds nothing; a search for it names nothing either.
    body = _get(client, "/program/partners?q=Suspended")
    assert table(body, "Partner institutions") == [["No partner matches this search."]]
    # A country no partner is in is a form error, not a filter that reveals anything.
    body = _get(client, "/program/partners?country=FR")
    assert "Not a valid choice" in body
    assert table(body, "Partner institutions") == PARTNER_ROWS
    # Wildcards are taken literally.
    body = _get(client, "/program/partners?q=%25")
    assert table(body, "Partner institutions") == [["No partner matches this search."]]


def test_the_directory_sorts_by_newest_partner(client: FlaskClient, world: World) -> None:
    body = _get(client, "/program/partners?sort=since")
    assert table(body, "Partner institutions") == PARTNER_ROWS
    body = _get(client, "/program/partners?sort=nonsense")
    assert table(body, "Partner institutions") == PARTNER_ROWS


def test_a_partners_page(client: FlaskClient, world: World) -> None:
    body = _get(client, f"/program/institutions/{world.partner.id}")
    assert table(body, "Awarded projects of Universität Beispielstadt") == [
        ["Open reasoning models for science", "Ada Consenting", "1,000",
         "Model weights: 1, Paper: 1", "100 %"],
    ]  # fmt: skip
    text = text_of(main_html(body))
    for fact in (
        "Country Germany",
        "Website www.uni-beispiel.de",
        "Partner since 01 March 2026",
        "Awarded projects 1",
        "GPU-hours awarded 1,000",
        "Open outputs released 2",
        "Openness 100 % open (1 of 1 planned released; 2 of 2 open licences)",
        "Paper Reasoning at scale · licence CC-BY-4.0 · DOI 10.5281/zenodo.1234567",
        "Model weights Reasoner 1B weights · licence Apache-2.0",
    ):
        assert fact in text, fact
    other = _get(client, f"/program/institutions/{world.other_partner.id}")
    assert table(other, "Awarded projects of Kyoto Example Institute") == [
        ["Multilingual speech corpora", "PI not named", "1,000", "None yet", "0 %"],
    ]
    assert "Nothing released yet." in other


@pytest.mark.parametrize("which", ["applied", "approved", "suspended", "declined", "withdrawn"])
def test_institutions_that_are_not_partners_have_no_public_page(
    client: FlaskClient, world: World, which: str
) -> None:
    institution = getattr(world, which)
    body = _get(client, f"/program/institutions/{institution.id}", 404)
    assert institution.name not in body


def test_missing_ids_are_404(client: FlaskClient, world: World) -> None:
    for path in ("/program/institutions/999999", "/program/projects/999999"):
        _get(client, path, 404)
    for path in ("/program/institutions/0", "/program/projects/99999999999"):
        _get(client, path, 404)


def test_the_projects_list_shows_awarded_projects_of_partners_only(
    client: FlaskClient, world: World
) -> None:
    body = _get(client, "/program/projects")
    assert table(body, "Awarded projects") == PROJECT_ROWS
    assert set(hrefs(body)) >= {
        f"/program/projects/{world.shown.id}",
        f"/program/projects/{world.unnamed.id}",
        f"/program/institutions/{world.partner.id}",
    }
    for hidden in world.hidden.values():
        assert f"/program/projects/{hidden.id}" not in hrefs(body)


def test_the_projects_list_searches_and_filters(client: FlaskClient, world: World) -> None:
    assert table(_get(client, "/program/projects?q=speech"), "Awarded projects") == [
        PROJECT_ROWS[0]
    ]
    # By institution name.
    assert table(_get(client, "/program/projects?q=beispielstadt"), "Awarded projects") == [
        PROJECT_ROWS[1]
    ]
    body = _get(client, "/program/projects?q=Hidden")
    assert table(body, "Awarded projects") == [["No project matches this search."]]
    body = _get(client, "/program/projects?field=Natural+language+processing")
    assert table(body, "Awarded projects") == PROJECT_ROWS
    body = _get(client, "/program/projects?field=Robotics")
    assert table(body, "Awarded projects") == [["No project matches this search."]]
    body = _get(client, "/program/projects?field=Astrology")
    assert "Not a valid choice" in body
    assert table(body, "Awarded projects") == PROJECT_ROWS


def test_a_projects_page(client: FlaskClient, world: World) -> None:
    body = _get(client, f"/program/projects/{world.shown.id}")
    text = text_of(main_html(body))
    for fact in (
        "Open reasoning models for science",
        "We study how open language models learn to reason",
        "Institution Universität Beispielstadt",
        "Principal investigator Ada Consenting",
        "Field of research Natural language processing",
        "Start 01 January 2027",
        "Duration 12 months (to 01 January 2028)",
        "GPU-hours awarded 1,000 (H100 on cluster-",
        "Openness 100 % open (1 of 1 planned released; 2 of 2 open licences)",
        "Paper Reasoning at scale · licence CC-BY-4.0 · DOI 10.5281/zenodo.1234567 · "
        "released 02 Apr 2027",
        "Model weights Reasoner 1B weights · licence Apache-2.0 · released 01 Mar 2027",
    ):
        assert fact in text, fact
    assert "https://example.net/reasoner-1b-weights" in hrefs(body)
    assert "https://doi.org/10.5281/zenodo.1234567" in hrefs(body)
    # Only the consenting PI: the co-investigator agreed to be named too, but is not the PI.
    assert "Carol Teammate" not in body
    unnamed = text_of(main_html(_get(client, f"/program/projects/{world.unnamed.id}")))
    assert "Principal investigator PI not named" in unnamed
    assert "Nothing released yet." in unnamed


def test_no_other_proposal_has_a_public_page(client: FlaskClient, world: World) -> None:
    for name, proposal in world.hidden.items():
        body = _get(client, f"/program/projects/{proposal.id}", 404)
        assert proposal.title not in body, name


def test_the_calls_page_lists_open_calls_with_deadlines_and_resources(
    client: FlaskClient, world: World
) -> None:
    body = _get(client, "/program/calls")
    text = text_of(main_html(body))
    # Deadlines first, then rolling calls.
    assert text.index("Spring call with a deadline") < text.index("Open models call 2027")
    assert "Deadline:" in text and "Rolling call:" in text
    rows = table(body, "Resources offered by Spring call with a deadline")
    assert len(rows) == 1 and rows[0][1:] == ["100,000", "10,000"]
    assert rows[0][0].startswith("H100 on cluster-")
    # Each links to the call's own page (where a logged-in researcher proposes).
    links = [h for h in hrefs(body) if h.startswith("/calls/")]
    assert len(set(links)) == 2


def test_the_overview_charts_with_their_tables(client: FlaskClient, world: World) -> None:
    body = _get(client, "/program/")
    assert table(body, "Partner institutions by country (the chart's figures)") == [
        ["Germany", "1"],
        ["Japan", "1"],
    ]
    assert table(body, "GPU-hours awarded per month (the chart's figures)") == [
        [utcnow().strftime("%B %Y"), "2,000"]
    ]
    assert table(body, "Open outputs released, by kind (the chart's figures)") == [
        ["Model weights", "1"],
        ["Code", "0"],
        ["Dataset", "0"],
        ["Paper", "1"],
    ]
    text = text_of(main_html(body))
    for fact in (
        "Partner institutions 2",
        "Countries 2",
        "Awarded projects 2",
        "GPU-hours awarded 2,000",
        "Open outputs released 2",
    ):
        assert fact in text, fact
    # Three charts, each named and described for assistive technology.
    assert body.count('role="img"') == 3
    for name in (
        "Partner institutions by country",
        "GPU-hours awarded per month",
        "Open outputs released, by kind",
    ):
        assert f">{name}</title>" in body
    assert "<desc id=" in body


def test_the_overview_of_an_empty_program(client: FlaskClient, db: Session) -> None:
    body = _get(client, "/program/")
    assert table(body, "Partner institutions by country (the chart's figures)") == [
        ["No partner institutions yet."]
    ]
    assert "Nothing to show yet." in body
    for path in ("/program/partners", "/program/projects", "/program/calls"):
        _get(client, path)


def test_pages_link_to_each_other_and_the_site_links_to_them(
    client: FlaskClient, db: Session, world: World
) -> None:
    body = _get(client, "/")
    assert 'href="/program/"' in body and 'href="/program/partners"' in body
    login(client, make_user(db, Role.RESEARCHER))
    body = _get(client, "/dashboard")
    footer = body[body.index("<footer") :]
    assert 'href="/program/"' in footer and 'href="/program/projects"' in footer


TROUBLE = ["\x00", "²", "9" * 30, "-1", "%", "_", "' OR 1=1 --", "é" * 300, ""]


@pytest.mark.parametrize("value", TROUBLE)
def test_no_query_argument_breaks_a_public_page(
    client: FlaskClient, world: World, value: str
) -> None:
    for path in ("/program/", "/program/partners", "/program/projects", "/program/calls"):
        for name in ("q", "country", "field", "sort", "page"):
            resp = client.get(path, query_string={name: value})
            assert resp.status_code in (200, 400), (path, name, value, resp.status_code)
