"""A signature is bound to the exact text its signer saw: the stored hash is the SHA-256 of that
text; signing a text with another hash is refused; a published version's wording never changes
(neither through the service nor by a raw UPDATE, on SQLite and PostgreSQL); tampering with a
stored agreement's text is detected; the public hash check accepts only SHA-256s."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from portal.agreements import services
from portal.agreements.models import (
    AgreementKind,
    AgreementState,
    SignatureState,
    TemplateVersion,
    VersionState,
)
from portal.agreements.text import sha256
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import ConflictError, ValidationError
from portal.institutions.models import InstitutionState
from tests.factories import make_agreement, make_agreement_template, make_institution, make_user


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def _sign(db: Session, slot: object, user: User, shown: str) -> None:
    services.sign(
        db,
        slot,  # type: ignore[arg-type]
        actor=user,
        typed_name=user.display_name,
        confirmed=True,
        shown_sha256=shown,
        ip="198.51.100.4",
        user_agent="Mozilla/5.0 (pytest)",
    )


def test_the_stored_hash_is_the_sha256_of_the_text_the_signer_saw(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    inst = make_institution(db, state=InstitutionState.UNDER_REVIEW, name="Ostrava Tech — “ÖT”")
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    template = make_agreement_template(db, kind=AgreementKind.PARTNERSHIP)
    agreement = services.issue(db, template, services.institution_subject(inst), actor=officer)
    # What the signing page shows is the frozen text, with the institution's name filled in.
    seen = agreement.text
    assert "Ostrava Tech — “ÖT”" in seen and "{{" not in seen
    digest = hashlib.sha256(seen.encode("utf-8")).hexdigest()
    assert agreement.text_sha256 == digest

    # The hash the page sent back may come in upper case with stray spaces.
    _sign(db, agreement.signatures[0], official, f" {digest.upper()} ")
    _sign(db, agreement.signatures[1], officer, digest)

    assert agreement.state == AgreementState.ACTIVE
    assert [s.text_sha256 for s in agreement.signatures] == [digest, digest]
    first = agreement.signatures[0]
    assert (first.signed_by_id, first.ip, first.user_agent) == (
        official.id,
        "198.51.100.4",
        "Mozilla/5.0 (pytest)",
    )
    (event,) = db.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "signature.sign", AuditEvent.object_id == first.id
        )
    )
    assert event.details["sha256"] == digest
    assert services.verify(agreement).ok


def test_signing_with_another_hash_is_refused_and_changes_nothing(db: Session) -> None:
    agreement = make_agreement(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=agreement.institution)
    slot = agreement.signatures[0]
    other_text = agreement.text + "\n\nAnd one more clause nobody read."
    for shown in (sha256(other_text), "", "not a hash", agreement.text_sha256[:-1]):
        with pytest.raises(ConflictError, match="not this agreement's text"):
            _sign(db, slot, official, shown)
    db.expire_all()
    assert slot.state == SignatureState.PENDING
    assert slot.signed_by_id is None and slot.text_sha256 is None
    assert agreement.state == AgreementState.AWAITING
    assert (
        db.scalar(
            select(AuditEvent.id).where(
                AuditEvent.action == "signature.sign", AuditEvent.object_id == slot.id
            )
        )
        is None
    )


def test_saving_a_draft_never_touches_the_published_version(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    template = make_agreement_template(db, kind=AgreementKind.PARTNERSHIP)
    (published,) = template.versions
    body, digest = published.body, published.text_sha256

    draft = services.save_draft(
        db, template, actor=officer, body=body + "\n\nA new clause.", change_note="Clause added"
    )
    assert draft.id != published.id and draft.number == 2 and draft.state == VersionState.DRAFT
    again = services.save_draft(db, template, actor=officer, body=body + "\n\nA better clause.")
    assert again.id == draft.id and again.body.endswith("A better clause.")

    db.expire_all()
    assert (published.body, published.text_sha256, published.state) == (
        body,
        digest,
        VersionState.PUBLISHED,
    )


def _published_and_draft(db: Session) -> tuple[TemplateVersion, TemplateVersion]:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    template = make_agreement_template(db, kind=AgreementKind.PARTNERSHIP)
    draft = services.save_draft(db, template, actor=officer, body="{{ institution }} agrees.")
    return template.versions[0], draft


@pytest.mark.parametrize("column", ["body", "text_sha256"])
def test_the_database_refuses_to_change_a_published_version(db: Session, column: str) -> None:
    published, draft = _published_and_draft(db)
    before = (published.body, published.text_sha256)
    value = "Quietly changed." if column == "body" else "0" * 64
    change = text(f"UPDATE agreement_versions SET {column} = :v WHERE id = :id")
    # Inside a savepoint: on PostgreSQL the refused statement aborts the transaction it is in.
    refused = pytest.raises(DBAPIError, match="a published agreement version never changes")
    with refused, db.begin_nested():
        db.execute(change, {"v": value, "id": published.id})
    # A draft's wording is still being written.
    db.execute(
        text("UPDATE agreement_versions SET body = :v WHERE id = :id"), {"v": value, "id": draft.id}
    )
    db.expire_all()
    assert (published.body, published.text_sha256) == before
    assert before[1] == sha256(before[0])
    assert draft.body == value


def test_the_database_refuses_to_change_a_superseded_version(db: Session) -> None:
    template = make_agreement_template(db, state=VersionState.SUPERSEDED)
    with pytest.raises(DBAPIError, match="never changes"), db.begin_nested():
        db.execute(
            text("UPDATE agreement_versions SET body = 'x' WHERE id = :id"),
            {"id": template.versions[0].id},
        )


def test_verification_passes_untouched_and_fails_after_tampering(db: Session) -> None:
    agreement = make_agreement(db, state=AgreementState.ACTIVE)
    check = services.verify(agreement)
    assert check.ok and check.recomputed == check.recorded == agreement.text_sha256
    assert [ok for _, ok in check.signatures] == [True, True]

    db.execute(
        text("UPDATE agreements SET text = :t WHERE id = :id"),
        {"t": agreement.text.replace("agree", "do not agree"), "id": agreement.id},
    )
    db.expire_all()
    check = services.verify(agreement)
    assert not check.ok
    assert check.recorded == agreement.text_sha256 != check.recomputed
    assert [ok for _, ok in check.signatures] == [False, False]


def test_verification_fails_when_a_signatures_hash_was_rewritten(db: Session) -> None:
    agreement = make_agreement(db, state=AgreementState.ACTIVE)
    slot = agreement.signatures[1]
    db.execute(
        text("UPDATE agreement_signatures SET text_sha256 = :h WHERE id = :id"),
        {"h": "f" * 64, "id": slot.id},
    )
    db.expire_all()
    check = services.verify(agreement)
    assert not check.ok
    assert check.recomputed == check.recorded
    assert [(s.id, ok) for s, ok in check.signatures] == [
        (agreement.signatures[0].id, True),
        (slot.id, False),
    ]


def test_find_by_hash_accepts_only_sha256s_and_finds_only_signed_agreements(db: Session) -> None:
    signed = make_agreement(db, state=AgreementState.ACTIVE)
    superseded = make_agreement(db, state=AgreementState.SUPERSEDED)
    unsigned = make_agreement(db)
    for bad in ("", "abc", "g" * 64, "a" * 63, "a" * 65, "' OR 1=1 --", "a" * 32 + " " + "a" * 31):
        with pytest.raises(ValidationError, match="64 hexadecimal characters"):
            services.find_by_hash(db, bad)
    assert services.find_by_hash(db, f"  {signed.text_sha256.upper()}\n") == [signed]
    assert services.find_by_hash(db, superseded.text_sha256) == [superseded]
    assert services.find_by_hash(db, unsigned.text_sha256) == []
    assert services.find_by_hash(db, "0" * 64) == []


def test_the_database_refuses_to_turn_a_published_version_back_into_a_draft(db: Session) -> None:
    """Else two statements would edit published wording: back to draft, then a new body."""
    published, _ = _published_and_draft(db)
    with (
        pytest.raises(DBAPIError, match="never changes"),
        db.begin_nested(),
    ):
        db.execute(
            text("UPDATE agreement_versions SET state = 'draft' WHERE id = :id"),
            {"id": published.id},
        )
    db.expire_all()
    assert published.state == VersionState.PUBLISHED
