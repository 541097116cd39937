"""Markdown written by program staff (call descriptions), rendered safely: CommonMark with raw
HTML disabled, so whatever the text holds comes out escaped; link targets such as
``javascript:`` are refused by the parser's own link check."""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markupsafe import Markup


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False})


def render_markdown(text: str | None) -> Markup:
    """``text`` as HTML, safe to place in a page: raw HTML in it is shown as text."""
    return Markup(_parser().render(text or ""))  # noqa: S704 - the parser escapes; HTML is off
