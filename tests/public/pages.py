"""Reading the public pages in tests: the content of ``<main>``, a table's rows as text, links."""

from __future__ import annotations

import re
from html.parser import HTMLParser


def main_html(body: str) -> str:
    """The page's ``<main>`` element (what the public pages cache: the same for everyone)."""
    start, end = body.index("<main"), body.index("</main>")
    return body[start:end]


def text_of(html: str) -> str:
    """Visible text, whitespace collapsed (SVG drawings left out: their text is in the tables)."""
    html = re.sub(r"<svg.*?</svg>", " ", html, flags=re.S)
    parser = _Text()
    parser.feed(html)
    return " ".join("".join(parser.parts).split())


#: Elements whose edges separate words (inline ones, such as links and times, do not).
_BLOCKS = frozenset(
    {"p", "div", "section", "dl", "dt", "dd", "ul", "ol", "li", "table", "caption", "tr", "td"}
    | {"th", "h1", "h2", "h3", "h4", "h5", "h6", "nav", "br"}
)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


class _Tables(HTMLParser):
    """Each table's caption and body rows (cells' text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._caption: list[str] | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append(("", []))
        elif tag == "caption":
            self._caption = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption" and self._caption is not None:
            caption = " ".join(" ".join(self._caption).split())
            self.tables[-1] = (caption, self.tables[-1][1])
            self._caption = None
        elif tag == "tbody":
            self._in_body = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join(" ".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1][1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._caption is not None:
            self._caption.append(data)
        if self._cell is not None:
            self._cell.append(data)


def tables(body: str) -> dict[str, list[list[str]]]:
    """Caption → body rows (each a list of its cells' text), for every table of the page."""
    parser = _Tables()
    parser.feed(main_html(body))
    return dict(parser.tables)


def table(body: str, caption: str) -> list[list[str]]:
    return tables(body)[caption]


def hrefs(body: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', main_html(body))
