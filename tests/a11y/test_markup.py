"""Table headers in every template: each ``<th>`` says what it heads (``scope``), and none is empty.

axe-core (tests/a11y/test_axe.py) only sees the pages the demo data renders, and rates a missing
scope or an empty header as minor; these are checked here over the template source instead."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates"
TH = re.compile(r"<th(?=[\s>])([^>]*)>(.*?)</th>", re.S)
SCOPE = re.compile(r"""\bscope=["'](col|row|colgroup|rowgroup)["']""")


def table_headers() -> list[tuple[str, str, str]]:
    return [
        (str(path.relative_to(TEMPLATES)), m.group(1), m.group(2))
        for path in sorted(TEMPLATES.rglob("*.html"))
        for m in TH.finditer(path.read_text(encoding="utf-8"))
    ]


def test_templates_have_table_headers() -> None:
    assert len(table_headers()) > 20  # the pattern still finds them


def test_every_table_header_has_a_scope() -> None:
    missing = [
        f"{name}: <th{attrs}>" for name, attrs, _ in table_headers() if not SCOPE.search(attrs)
    ]
    assert missing == []


def test_no_table_header_is_empty() -> None:
    """A column of buttons still gets a name (``<span class="visually-hidden">Actions</span>``)."""
    empty = [
        f"{name}: <th{attrs}>{body}</th>"
        for name, attrs, body in table_headers()
        if not body.strip()
    ]
    assert empty == []
