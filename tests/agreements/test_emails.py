"""The agreement e-mails: who is asked to sign (only those who may), who hears that it is signed or
declined, re-consent and the weekly reminder; and their rendered text compared with stored files
(``tests/notifications/expected/agreement_*.txt``; ``UPDATE_EXPECTED=1`` rewrites them)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.agreements import services
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    Signature,
)
from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.institutions.models import Institution
from portal.notifications.models import OutboxMessage
from portal.notifications.reminders import ReminderRule, all_rules, run_reminders
from tests.factories import (
    make_agreement,
    make_agreement_template,
    make_institution,
    make_user,
)
from tests.support.mail import check_expected, outbox, rendered

BODY = "# Partnership\n\n{{ institution }} and {{ lab }} agree to work together."


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Services read the lab's name and write e-mails to the outbox."""
    with app.app_context():
        yield


def _check(name: str, msg: OutboxMessage, **dynamic: str) -> None:
    """The rendered mail against ``expected/<name>.txt``, with ids and the values that change
    from run to run (``dynamic``: value → placeholder) replaced."""
    text = re.sub(r"/(agreements|signatures)/\d+", r"/\1/<id>", rendered(msg))
    for value, placeholder in dynamic.items():
        text = text.replace(value, placeholder)
    check_expected(name, text)


def _to(msgs: list[OutboxMessage]) -> set[str]:
    return {m.to_addr for m in msgs}


def _template(db: Session) -> AgreementTemplate:
    return make_agreement_template(
        db, kind=AgreementKind.PARTNERSHIP, title="Partnership with ATOM Lab", body=BODY
    )


def _official(db: Session, institution: Institution, name: str, email: str) -> User:
    return make_user(
        db, Role.SIGNING_OFFICIAL, institution=institution, display_name=name, email=email
    )


def _sign(db: Session, signature: Signature, user: User) -> None:
    services.sign(
        db,
        signature,
        actor=user,
        typed_name=user.display_name,
        confirmed=True,
        shown_sha256=signature.agreement.text_sha256,
        ip="192.0.2.10",
        user_agent="pytest",
    )


@pytest.fixture
def northlake(db: Session) -> Institution:
    return make_institution(db, name="Northlake University")


@pytest.fixture
def officer(db: Session) -> User:
    return make_user(
        db, Role.PROGRAM_OFFICER, display_name="Otto Officer", email="otto@atom-lab.org"
    )


def test_issuing_asks_the_institutions_signing_officials_and_nobody_else(
    db: Session, northlake: Institution, officer: User
) -> None:
    sofia = _official(db, northlake, "Sofia Signer", "sofia@northlake.edu")
    _official(db, northlake, "Sam Second", "sam@northlake.edu")
    # Not asked: a researcher of the institution, another institution's official, a disabled
    # official, an official whose address is not verified, program staff (not their turn yet).
    make_user(db, Role.RESEARCHER, institution=northlake, email="rita@northlake.edu")
    make_user(db, Role.SIGNING_OFFICIAL, email="other@elsewhere.edu")
    make_user(
        db,
        Role.SIGNING_OFFICIAL,
        institution=northlake,
        email="gone@northlake.edu",
        is_disabled=True,
    )
    make_user(
        db,
        Role.SIGNING_OFFICIAL,
        institution=northlake,
        email="unverified@northlake.edu",
        email_verified=False,
    )
    make_user(db, Role.ADMIN, email="admin@atom-lab.org")

    services.issue(db, _template(db), services.institution_subject(northlake), actor=officer)

    asked = outbox(db, "agreements/to_sign")
    assert _to(asked) == {"sofia@northlake.edu", "sam@northlake.edu"}
    (to_sofia,) = [m for m in asked if m.recipient_id == sofia.id]
    _check("agreement_to_sign", to_sofia)
    assert not outbox(db, "agreements/reconsent")


def test_each_signature_asks_the_next_party_and_the_last_sends_the_pdf_to_every_party(
    db: Session, northlake: Institution, officer: User
) -> None:
    sofia = _official(db, northlake, "Sofia Signer", "sofia@northlake.edu")
    olga = make_user(
        db, Role.PROGRAM_OFFICER, display_name="Olga Officer", email="olga@atom-lab.org"
    )
    bystander = _official(db, northlake, "Sam Second", "sam@northlake.edu")
    agreement = services.issue(
        db, _template(db), services.institution_subject(northlake), actor=officer
    )
    first, second = agreement.signatures
    assert len(outbox(db, "agreements/to_sign")) == 2

    _sign(db, first, sofia)
    asked = outbox(db, "agreements/to_sign")[2:]
    # The lab's countersignature: any program officer may give it, so each is asked.
    assert _to(asked) == {"otto@atom-lab.org", "olga@atom-lab.org"}
    assert {m.context["party"] for m in asked} == {"Program officer for ATOM Lab"}
    assert not outbox(db, "agreements/signed")

    _sign(db, second, olga)
    assert agreement.state == AgreementState.ACTIVE
    signed = outbox(db, "agreements/signed")
    # Every signer and the issuer; not the official who might have signed but did not.
    assert _to(signed) == {"sofia@northlake.edu", "olga@atom-lab.org", "otto@atom-lab.org"}
    assert bystander.email not in _to(signed)
    assert all(m.context["pdf_url"].endswith(f"/agreements/{agreement.id}.pdf") for m in signed)
    assert all(m.context["sha256"] == agreement.text_sha256 for m in signed)
    (to_sofia,) = [m for m in signed if m.recipient_id == sofia.id]
    _check("agreement_signed", to_sofia, **{agreement.text_sha256: "<sha256>"})
    # Nobody is asked to sign a finished agreement.
    assert len(outbox(db, "agreements/to_sign")) == 4


def test_declining_tells_the_issuer_and_earlier_signers_why(
    db: Session, northlake: Institution, officer: User
) -> None:
    sofia = _official(db, northlake, "Sofia Signer", "sofia@northlake.edu")
    olga = make_user(
        db, Role.PROGRAM_OFFICER, display_name="Olga Officer", email="olga@atom-lab.org"
    )
    _official(db, northlake, "Sam Second", "sam@northlake.edu")
    agreement = services.issue(
        db, _template(db), services.institution_subject(northlake), actor=officer
    )
    _sign(db, agreement.signatures[0], sofia)

    services.decline(
        db, agreement, actor=olga, reason="Clause 2 names the wrong <lab> & must change."
    )

    assert agreement.state == AgreementState.DECLINED
    told = outbox(db, "agreements/declined")
    # The issuer and the official who signed; not the decliner, not the official who did not sign.
    assert _to(told) == {"otto@atom-lab.org", "sofia@northlake.edu"}
    assert all(m.context["declined_by"] == "Olga Officer" for m in told)
    (to_otto,) = [m for m in told if m.recipient_id == officer.id]
    _check("agreement_declined", to_otto)
    assert "&lt;lab&gt; &amp; must change" in rendered(to_otto)


def test_a_new_version_asking_for_re_consent_asks_the_signers_of_each_agreement_again(
    db: Session, officer: User
) -> None:
    template = _template(db)
    signed: dict[str, Agreement] = {}
    for name, email in [
        ("Northlake University", "sofia@northlake.edu"),
        ("Southmoor College", "sven@southmoor.edu"),
    ]:
        institution = make_institution(db, name=name)
        _official(db, institution, f"Official of {name}", email)
        signed[email] = make_agreement(
            db, institution=institution, template=template, state=AgreementState.ACTIVE
        )
    # A declined one is not re-issued.
    make_agreement(db, template=template, state=AgreementState.DECLINED)
    by = utcnow().date() + dt.timedelta(days=60)
    version = services.save_draft(
        db,
        template,
        actor=officer,
        body=BODY + "\n\nData are deleted after the project ends.",
        change_note="Adds the deletion of data after the project.",
        reconsent_by=by,
    )

    services.publish_version(db, version, actor=officer)

    asked = outbox(db, "agreements/reconsent")
    # The first party of each re-issued agreement: that institution's signing officials (the
    # factory's signers among them), not the other institution's.
    for email, old in signed.items():
        to_them = [m for m in asked if m.to_addr == email]
        assert len(to_them) == 1
        new = services.open_agreement(db, old.kind, old.subject_type, old.subject_id)
        assert new is not None and new.replaces_id == old.id
        assert to_them[0].context["sign_url"].endswith(f"/signatures/{new.signatures[0].id}/sign")
        assert old.reconsent_by == by
    assert not {m.to_addr for m in asked} & {"otto@atom-lab.org"}
    assert not outbox(db, "agreements/to_sign")
    (to_sofia,) = [m for m in asked if m.to_addr == "sofia@northlake.edu"]
    _check("agreement_reconsent", to_sofia, **{by.strftime("%d %B %Y"): "<date>"})


def _reminder_rule() -> ReminderRule:
    return next(r for r in all_rules() if r.key == "agreements.unsigned")


def test_the_party_waited_on_is_reminded_after_three_days_and_once_a_week(
    db: Session, northlake: Institution, officer: User
) -> None:
    sofia = _official(db, northlake, "Sofia Signer", "sofia@northlake.edu")
    agreement = services.issue(
        db, _template(db), services.institution_subject(northlake), actor=officer
    )
    # Issued on a Monday morning.
    agreement.state_changed_at = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC)
    db.flush()
    rule = _reminder_rule()

    def remind(now: dt.datetime) -> list[OutboxMessage]:
        before = len(outbox(db, "agreements/reminder"))
        run_reminders(db, now=now, rules=[rule])
        return outbox(db, "agreements/reminder")[before:]

    assert remind(dt.datetime(2027, 3, 3, 9, 0, tzinfo=dt.UTC)) == []  # two days: not yet
    (first,) = remind(dt.datetime(2027, 3, 4, 10, 0, tzinfo=dt.UTC))  # three days and more
    assert first.to_addr == "sofia@northlake.edu"
    _check("agreement_reminder", first)
    assert remind(dt.datetime(2027, 3, 6, 10, 0, tzinfo=dt.UTC)) == []  # same week
    (again,) = remind(dt.datetime(2027, 3, 8, 10, 0, tzinfo=dt.UTC))  # the next week
    assert again.to_addr == "sofia@northlake.edu"

    # Once the official has signed, the agreement waits on the lab: its officers are reminded.
    _sign(db, agreement.signatures[0], sofia)
    later = remind(dt.datetime(2027, 3, 15, 10, 0, tzinfo=dt.UTC))
    assert _to(later) == {"otto@atom-lab.org"}
    assert {m.context["party"] for m in later} == {"Program officer for ATOM Lab"}

    # A fully signed agreement is not reminded of.
    _sign(db, agreement.signatures[1], officer)
    assert remind(dt.datetime(2027, 3, 22, 10, 0, tzinfo=dt.UTC)) == []
