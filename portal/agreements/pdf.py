"""The PDF of a fully signed agreement: its title, kind and version, its frozen text (Markdown,
rendered), every signature with its evidence, and the SHA-256 that binds them, with how to check it.

The same agreement always gives the same bytes: the document's date is the agreement's completion,
and nothing else in it depends on the moment it is made (a signer who renames their account later
changes the "Signed by" line; the typed name stays as signed). Names may be in any left-to-right
script the vendored DejaVu Sans covers (Latin, Greek, Cyrillic, Armenian, Georgian …). Its limits:
no CJK glyphs (such characters are left out, and fpdf2 logs them), right-to-left scripts are not
shaped, and no italic face is vendored, so emphasis is printed upright.

The text is rendered from Markdown tokens (CommonMark, raw HTML off) by hand rather than through
``write_html``: nothing in the text can make the PDF load an image or a file, raw HTML stays text.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from flask import current_app
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from markdown_it import MarkdownIt
from markdown_it.token import Token

from portal.agreements.models import Agreement, Signature, SignatureState
from portal.core.errors import ConflictError
from portal.notifications.rendering import external_url

#: DejaVu Sans 2.37, regular and bold (Bitstream Vera licence: ``fonts/LICENSE``).
FONTS = Path(__file__).parent / "fonts"
FAMILY = "DejaVu"

#: Body text size and line height (points, millimetres).
BODY_PT = 10.5
LINE_MM = 5.2
HEADING_PT = {1: 15.0, 2: 13.0, 3: 11.5}
#: How far each list or quote level is indented (millimetres).
INDENT_MM = 6.0
MUTED = (87, 96, 106)
#: List markers by nesting level: a bullet, then an en dash, alternating.
BULLETS = ("\u2022", "\u2013")


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False})


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _when(moment: dt.datetime | None) -> str:
    return _utc(moment).strftime("%d %B %Y, %H:%M:%S UTC") if moment else "(not recorded)"


class _Document(FPDF):
    """A4 pages with the agreement's title and page number in the footer."""

    def __init__(self, footer_text: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.footer_text = footer_text
        self.add_font(FAMILY, "", str(FONTS / "DejaVuSans.ttf"))
        self.add_font(FAMILY, "B", str(FONTS / "DejaVuSans-Bold.ttf"))
        self.set_margins(20, 20, 20)
        self.set_auto_page_break(auto=True, margin=20)
        self.alias_nb_pages()

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font(FAMILY, "", 8)
        self.set_text_color(*MUTED)
        self.cell(0, 5, f"{self.footer_text} · page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0, 0, 0)


@dataclass
class _List:
    #: The next item's number; None for a bulleted list.
    number: int | None


@dataclass
class _Block:
    """Where the renderer is: list nesting and quote depth."""

    lists: list[_List] = field(default_factory=list)
    quotes: int = 0
    #: The marker of a list item whose first line is not written yet.
    marker: str | None = None


class _Markdown:
    """Writes Markdown block by block: headings, paragraphs, lists (nested, bulleted and
    numbered), quotes, code and rules; bold inline, links with their address."""

    def __init__(self, pdf: _Document) -> None:
        self.pdf = pdf
        self.at = _Block()

    def render(self, text: str) -> None:
        tokens = _parser().parse(text)
        for i, tok in enumerate(tokens):
            self._block(tok, tokens[i + 1] if i + 1 < len(tokens) else None)
        self.pdf.set_left_margin(self._margin(0))
        self.pdf.set_text_color(0, 0, 0)

    def _margin(self, depth: int) -> float:
        return 20 + INDENT_MM * depth

    def _depth(self) -> int:
        return len(self.at.lists) + self.at.quotes

    def _start_block(self, gap: float) -> None:
        pdf = self.pdf
        if pdf.get_y() > pdf.t_margin + 0.1:
            pdf.ln(gap)
        pdf.set_left_margin(self._margin(self._depth()))
        pdf.set_x(pdf.l_margin)
        pdf.set_text_color(*(MUTED if self.at.quotes else (0, 0, 0)))
        if self.at.marker is not None:
            pdf.set_font(FAMILY, "", BODY_PT)
            width = pdf.get_string_width(self.at.marker + " ")
            pdf.set_x(pdf.l_margin - width)
            pdf.write(LINE_MM, self.at.marker + " ")
            self.at.marker = None

    def _block(self, tok: Token, following: Token | None) -> None:
        pdf = self.pdf
        kind = tok.type
        if kind == "heading_open" and following is not None:
            level = int(tok.tag[1])
            self._start_block(4 if level <= 2 else 3)
            size = HEADING_PT.get(level, BODY_PT)
            pdf.set_font(FAMILY, "B", size)
            self._inline(following, bold=True, size=size, height=size * 0.5)
            pdf.ln(size * 0.5)
        elif kind == "paragraph_open" and following is not None:
            self._start_block(1.2 if tok.hidden else 2.5)
            self._inline(following, size=BODY_PT, height=LINE_MM)
            pdf.ln(LINE_MM)
        elif kind in ("bullet_list_open", "ordered_list_open"):
            start = int(tok.attrGet("start") or 1) if kind == "ordered_list_open" else None
            self.at.lists.append(_List(start))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            self.at.lists.pop()
        elif kind == "list_item_open":
            current = self.at.lists[-1]
            if current.number is None:
                self.at.marker = BULLETS[(len(self.at.lists) - 1) % 2]
            else:
                self.at.marker = f"{current.number}."
                current.number += 1
        elif kind == "list_item_close":
            self.at.marker = None
        elif kind == "blockquote_open":
            self.at.quotes += 1
        elif kind == "blockquote_close":
            self.at.quotes -= 1
        elif kind in ("fence", "code_block"):
            self._start_block(2.5)
            pdf.set_font(FAMILY, "", BODY_PT - 1)
            pdf.write(LINE_MM, tok.content.rstrip("\n"))
            pdf.ln(LINE_MM)
        elif kind == "hr":
            self._start_block(3)
            y = pdf.get_y() + 1
            pdf.set_draw_color(*MUTED)
            pdf.line(pdf.l_margin, y, pdf.w - pdf.r_margin, y)
            pdf.ln(3)

    def _inline(self, tok: Token, *, size: float, height: float, bold: bool = False) -> None:
        pdf = self.pdf
        strong = 1 if bold else 0
        links: list[str] = []

        def write(text: str) -> None:
            pdf.set_font(FAMILY, "B" if strong else "", size)
            pdf.write(height, text)

        for child in tok.children or []:
            kind = child.type
            if kind == "strong_open":
                strong += 1
            elif kind == "strong_close":
                strong -= 1
            elif kind == "link_open":
                links.append(str(child.attrGet("href") or ""))
            elif kind == "link_close":
                # On paper a link is its text and, for a web or mail address, the address.
                href = links.pop() if links else ""
                if href.startswith(("https://", "http://", "mailto:")):
                    write(f" ({href.removeprefix('mailto:')})")
            elif kind == "softbreak":
                write(" ")
            elif kind == "hardbreak":
                pdf.ln(height)
            elif kind in ("text", "code_inline", "image"):
                # An image is its description, never the image: the text fetches nothing.
                write(child.content)


def _field(pdf: _Document, label: str, value: str, *, own_line: bool = False) -> None:
    """``Label: value``; a value that must never wrap (a hash) goes on its own line."""
    pdf.set_x(pdf.l_margin)
    pdf.set_font(FAMILY, "B", BODY_PT - 1)
    pdf.write(LINE_MM, f"{label}:" + ("" if own_line else " "))
    if own_line:
        pdf.ln(LINE_MM)
    pdf.set_font(FAMILY, "", BODY_PT - 1)
    pdf.write(LINE_MM, value)
    pdf.ln(LINE_MM)


def _signature(pdf: _Document, number: int, signature: Signature) -> None:
    pdf.set_left_margin(20)
    pdf.set_x(20)
    pdf.ln(2)
    pdf.set_font(FAMILY, "B", BODY_PT)
    pdf.write(LINE_MM, f"{number}. {signature.party}")
    pdf.ln(LINE_MM)
    pdf.set_left_margin(20 + INDENT_MM)
    signer = signature.signed_by.display_name if signature.signed_by else "(account removed)"
    _field(pdf, "Signed by", signer)
    _field(pdf, "Typed name", signature.typed_name or "")
    _field(pdf, "Date and time", _when(signature.signed_at))
    _field(pdf, "IP address", signature.ip or "(not recorded)")
    _field(pdf, "SHA-256 of the text signed", signature.text_sha256 or "", own_line=True)
    pdf.set_left_margin(20)


def agreement_pdf(agreement: Agreement) -> bytes:
    """The PDF of a fully signed agreement (in force or superseded since); the same agreement
    always gives the same bytes. Raises ConflictError for one that is not fully signed."""
    if agreement.completed_at is None or not all(
        s.state == SignatureState.SIGNED for s in agreement.signatures
    ):
        raise ConflictError("Only a fully signed agreement has a signed PDF.")
    completed = _utc(agreement.completed_at)
    pdf = _Document(f"{agreement.title} — SHA-256 {agreement.text_sha256[:16]}…")
    pdf.set_title(agreement.title)
    pdf.set_subject(agreement.kind.label)
    pdf.set_author(str(current_app.config["LAB_NAME"]))
    pdf.set_creator(str(current_app.config["SITE_NAME"]))
    pdf.set_lang("en")
    pdf.set_creation_date(completed)
    pdf.add_page()

    pdf.set_font(FAMILY, "B", 17)
    pdf.multi_cell(0, 8, agreement.title, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(1)
    _field(pdf, "Kind", agreement.kind.label)
    _field(pdf, "Version", str(agreement.version.number))
    _field(pdf, "Agreement number", str(agreement.id))
    _field(pdf, "Fully signed", _when(completed))
    pdf.ln(2)
    pdf.set_draw_color(*MUTED)
    pdf.line(20, pdf.get_y(), pdf.w - 20, pdf.get_y())
    pdf.ln(2)

    _Markdown(pdf).render(agreement.text)

    pdf.ln(6)
    pdf.set_font(FAMILY, "B", 13)
    pdf.write(7, "Signatures")
    pdf.ln(7)
    signed = sorted(agreement.signatures, key=lambda s: (s.position, s.id or 0))
    for number, signature in enumerate(signed, start=1):
        _signature(pdf, number, signature)

    pdf.ln(6)
    pdf.set_font(FAMILY, "B", 13)
    pdf.write(7, "Verification")
    pdf.ln(8)
    pdf.set_font(FAMILY, "", BODY_PT - 1)
    pdf.write(LINE_MM, "SHA-256 of the agreement's text (UTF-8), as signed by every party:")
    pdf.ln(LINE_MM + 1)
    pdf.set_font(FAMILY, "B", BODY_PT)
    pdf.write(LINE_MM, agreement.text_sha256)
    pdf.ln(LINE_MM + 2)
    pdf.set_font(FAMILY, "", BODY_PT - 1)
    pdf.write(
        LINE_MM,
        "To check this document, enter the SHA-256 above at "
        f"{external_url('agreements.check')} — the portal confirms that it holds a fully signed "
        "agreement with exactly this text. Parties to the agreement can compare each "
        "signature with the text on the agreement's verification page: "
        f"{external_url('agreements.verify', agreement_id=agreement.id)}",
    )
    pdf.ln(LINE_MM)
    return bytes(pdf.output())
