"""The signed PDF: the agreement's text, every signature and the SHA-256 are in it as text a
reader (or a program) can extract, in any script; the same agreement always gives the same bytes."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from pypdf import PdfReader
from sqlalchemy.orm import Session

from portal.agreements.models import Agreement, AgreementKind, AgreementState
from portal.agreements.pdf import agreement_pdf
from portal.core.errors import ConflictError
from portal.institutions.models import InstitutionState
from tests.factories import make_agreement, make_agreement_template, make_institution

BODY = """# Partnership agreement

{{ institution }} ({{ ror_id }}) and {{ lab }} agree to work together from {{ today }}.

## 1. Obligations

The partner **shall**:

1. name a signing official;
2. keep its members' affiliations current, and
   - tell the lab when someone leaves;
   - answer within *thirty* days.

> Nothing here creates a joint venture.

See [the portal](https://portal.example.org/terms) for the terms. <script>alert(1)</script>
![a logo](/etc/passwd)

---

## 2. Term

This agreement runs for three years.
"""


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Links in the PDF are built from ``BASE_URL``, outside any request."""
    with app.app_context():
        yield


def _signed(db: Session) -> Agreement:
    institution = make_institution(
        db, name="Université Grenoble Alpes", state=InstitutionState.UNDER_REVIEW
    )
    template = make_agreement_template(db, kind=AgreementKind.PARTNERSHIP, body=BODY)
    agreement = make_agreement(
        db, institution=institution, template=template, state=AgreementState.ACTIVE
    )
    official, officer = agreement.signatures
    assert official.signed_by is not None and officer.signed_by is not None
    official.signed_by.display_name = "Ольга Шевченко"
    official.typed_name = "Ольга Шевченко"
    officer.signed_by.display_name = "Ζωή Παπαδοπούλου"
    officer.typed_name = "Ζωή Παπαδοπούλου"
    official.signed_at = dt.datetime(2026, 11, 2, 9, 15, 30, tzinfo=dt.UTC)
    officer.signed_at = dt.datetime(2026, 11, 3, 16, 5, 0, tzinfo=dt.UTC)
    official.ip = "2001:db8::17"
    agreement.completed_at = officer.signed_at
    db.flush()
    return agreement


def _text(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def _flat(text: str) -> str:
    """Extracted text with runs of whitespace (line wraps) as one space."""
    return re.sub(r"\s+", " ", text)


def test_signed_pdf_holds_the_text_every_signature_and_the_hash(db: Session) -> None:
    agreement = _signed(db)
    pdf = agreement_pdf(agreement)
    assert pdf.startswith(b"%PDF-")
    text = _text(pdf)
    flat = _flat(text)

    assert agreement.title in flat
    assert "Partnership agreement" in flat and "Version: 1" in flat
    # The agreement's own words, rendered from Markdown (no Markdown syntax left over).
    assert "Université Grenoble Alpes" in flat
    assert "agree to work together from" in flat
    assert "name a signing official;" in flat and "tell the lab when someone leaves;" in flat
    assert "Nothing here creates a joint venture." in flat
    assert "This agreement runs for three years." in flat
    assert "# Partnership" not in flat and "**shall**" not in flat
    # Raw HTML stays text; an image is only its description (nothing is loaded).
    assert "<script>alert(1)</script>" in flat
    assert "a logo" in flat and "/etc/passwd" not in flat
    assert "(https://portal.example.org/terms)" in flat

    # Each signature: party, signer, typed name, time in UTC, address, the hash signed.
    for name in ("Ольга Шевченко", "Ζωή Παπαδοπούλου"):
        assert flat.count(name) == 2, name
    assert "Signing official for Université Grenoble Alpes" in flat
    assert "Program officer for ATOM Lab" in flat
    assert "02 November 2026, 09:15:30 UTC" in flat
    assert "03 November 2026, 16:05:00 UTC" in flat
    assert "2001:db8::17" in flat and "192.0.2.1" in flat

    # The agreement's SHA-256 in full (once as the agreement's, once per signature) and where
    # to check it.
    assert text.count(agreement.text_sha256) == 3
    assert "http://127.0.0.1:5000/agreements/verify" in flat
    assert f"http://127.0.0.1:5000/agreements/{agreement.id}/verify" in flat


def test_the_same_agreement_gives_the_same_bytes(db: Session) -> None:
    agreement = _signed(db)
    first = agreement_pdf(agreement)
    assert agreement_pdf(agreement) == first
    reader = PdfReader(io.BytesIO(first))
    assert reader.metadata is not None
    assert reader.metadata.title == agreement.title
    assert reader.metadata.creation_date == dt.datetime(2026, 11, 3, 16, 5, 0, tzinfo=dt.UTC)


def test_a_long_text_runs_over_several_pages(db: Session) -> None:
    body = "# Terms\n\n" + "\n\n".join(
        f"{i}. Clause {i}: {{{{ institution }}}} keeps this promise." for i in range(1, 120)
    )
    template = make_agreement_template(db, body=body)
    agreement = make_agreement(db, template=template, state=AgreementState.ACTIVE)
    reader = PdfReader(io.BytesIO(agreement_pdf(agreement)))
    assert len(reader.pages) > 2
    text = _flat(_text(agreement_pdf(agreement)))
    assert "Clause 119:" in text and agreement.text_sha256 in text
    assert f"page 1 of {len(reader.pages)}" in text


@pytest.mark.parametrize("state", [AgreementState.AWAITING, AgreementState.DECLINED])
def test_only_a_fully_signed_agreement_has_a_pdf(db: Session, state: AgreementState) -> None:
    agreement = make_agreement(db, state=state, signed=1)
    with pytest.raises(ConflictError):
        agreement_pdf(agreement)
