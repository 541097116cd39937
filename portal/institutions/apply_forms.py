"""Forms of the application pages: the application itself (with the ROR look-up that pre-fills
it), the search of the ROR subset without JavaScript, and the answer to an invitation to be the
institution's signing official."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import Field, HiddenField, StringField, TextAreaField
from wtforms.validators import URL, AnyOf, DataRequired, Length, Optional, Regexp
from wtforms.validators import ValidationError as FieldError

from portal.core.errors import ValidationError
from portal.institutions import ror
from portal.institutions.models import Institution, is_public_webmail
from portal.institutions.onboarding import MAX_OFFICIALS, MAX_STATEMENT, MIN_STATEMENT
from portal.institutions.services import normalise_ror


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _lines(text: str | None) -> list[str]:
    """One item per line or comma."""
    return [x.strip() for x in (text or "").replace(",", "\n").splitlines() if x.strip()]


class ApplicationForm(FlaskForm):
    """Apply for an institution to become a partner (or change the application). A ROR id found
    in the shipped ROR subset fills in the name, country, website and domains left empty."""

    ror_id = StringField(
        "ROR id",
        filters=[_strip],
        validators=[Optional(), Length(max=60)],
        description=(
            "The institution's id in the Research Organization Registry, e.g. "
            "https://ror.org/042nb2s44 — search above, or look it up on ror.org."
        ),
    )
    name = StringField(
        "Institution's name", filters=[_strip], validators=[DataRequired(), Length(max=300)]
    )
    country = StringField(
        "Country",
        filters=[_strip],
        validators=[
            DataRequired(),
            Regexp(r"^[A-Za-z]{2}$", message="Use the two-letter ISO code, e.g. US or DE."),
        ],
        description="Two-letter ISO 3166 code.",
    )
    website = StringField(
        "Website",
        filters=[_strip],
        validators=[Optional(), URL(message="Enter a full URL."), Length(max=300)],
    )
    email_domains = TextAreaField(
        "E-mail domains",
        validators=[DataRequired(), Length(max=2000)],
        description=(
            "The institution's e-mail domains, one per line, e.g. mit.edu (sub-domains are "
            "included). Each is pending until proven by a DNS record or program staff."
        ),
        render_kw={"rows": 3},
    )
    statement = TextAreaField(
        "Why the institution wants to join",
        filters=[_strip],
        validators=[
            DataRequired(),
            Length(
                min=MIN_STATEMENT,
                max=MAX_STATEMENT,
                message=f"Write {MIN_STATEMENT} to {MAX_STATEMENT:,} characters.",
            ),
        ],
        description="What it would work on with the lab's compute and data; program staff read it.",
        render_kw={"rows": 6},
    )
    officials = TextAreaField(
        "Proposed signing officials",
        validators=[DataRequired(), Length(max=2000)],
        description=(
            f"E-mail addresses at the institution's domains, one per line (at most "
            f"{MAX_OFFICIALS}): the people who sign agreements for it. Each gets a link to "
            "accept. Give your own address if you sign yourself."
        ),
        render_kw={"rows": 2},
    )
    technical_contact_name = StringField(
        "Technical contact", filters=[_strip], validators=[DataRequired(), Length(max=200)]
    )
    technical_contact_email = StringField(
        "Technical contact's e-mail",
        filters=[_strip],
        validators=[DataRequired(), Length(max=320)],
        render_kw={"type": "email"},
    )
    idp_entity_id = StringField(
        "Identity provider",
        filters=[_strip],
        validators=[Optional(), Length(max=500)],
        description=(
            "Optional: the institution's OpenID issuer, or its SAML entity id in a federation "
            "(eduGAIN, InCommon), so its people can log in with it."
        ),
    )

    def __init__(
        self,
        *args: Any,
        institution: Institution | None = None,
        prefill: ror.RorRecord | None = None,
        **kw: Any,
    ) -> None:
        """``institution``: the application being changed (its fields fill the form on GET);
        ``prefill``: a ROR record chosen from the look-up (fills the empty fields on GET)."""
        super().__init__(*args, **kw)
        if self.is_submitted():
            return
        if institution is not None:
            app = institution.application
            self.ror_id.data = institution.ror_id
            self.name.data = institution.name
            self.country.data = institution.country
            self.website.data = institution.website
            self.email_domains.data = "\n".join(d.domain for d in institution.all_domains)
            if app is not None:
                self.statement.data = app.statement
                self.technical_contact_name.data = app.technical_contact_name
                self.technical_contact_email.data = app.technical_contact_email
                self.idp_entity_id.data = app.idp_entity_id
            self.officials.data = "\n".join(
                dict.fromkeys(
                    i.email
                    for i in institution.official_invitations
                    if i.state.value in ("pending", "accepted")
                )
            )
        if prefill is not None:
            self.fill_from(prefill)

    def fill_from(self, record: ror.RorRecord) -> None:
        """Fill the empty institution fields from a ROR record (never overwrite typed text)."""
        self.ror_id.data = self.ror_id.data or record.id
        self.name.data = self.name.data or record.name
        self.country.data = self.country.data or record.country_code
        self.website.data = self.website.data or record.website
        if not (self.email_domains.data or "").strip():
            self.email_domains.data = "\n".join(
                d for d in record.domains if not is_public_webmail(d)
            )

    def validate(self, extra_validators: Any = None) -> bool:
        """Before the fields are checked: a ROR id of the shipped subset fills in what was left
        empty (so the form works without JavaScript from the id alone)."""
        if self.is_submitted() and self.ror_id.data:
            record = ror.by_id(self.ror_id.data)
            if record is not None:
                self.fill_from(record)
        return bool(super().validate(extra_validators=extra_validators))

    def validate_ror_id(self, field: Field) -> None:
        try:
            normalise_ror(field.data)
        except ValidationError as e:
            raise FieldError(str(e)) from None

    def validate_email_domains(self, field: Field) -> None:
        webmail = [d.lower().lstrip("@") for d in _lines(field.data)]
        webmail = [d for d in webmail if is_public_webmail(d)]
        if webmail:
            raise FieldError(
                f"{', '.join(webmail)}: public webmail domains belong to no institution."
            )

    def validate_officials(self, field: Field) -> None:
        if len(_lines(field.data)) > MAX_OFFICIALS:
            raise FieldError(f"Propose at most {MAX_OFFICIALS} signing officials.")

    def details(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``onboarding.apply`` / ``update_application``."""
        return {
            "name": self.name.data or "",
            "ror_id": self.ror_id.data or None,
            "country": self.country.data or "",
            "website": self.website.data or None,
            "domains": _lines(self.email_domains.data),
            "statement": self.statement.data or "",
            "technical_contact_name": self.technical_contact_name.data or "",
            "technical_contact_email": self.technical_contact_email.data or "",
            "idp_entity_id": self.idp_entity_id.data or None,
            "officials": _lines(self.officials.data),
        }


class RorSearchForm(FlaskForm):
    """Search the ROR subset from the application page (a GET form: works without JavaScript)."""

    class Meta:
        csrf = False  # a search changes nothing

    q = StringField(
        "Find your institution",
        filters=[_strip],
        validators=[Optional(), Length(max=ror.MAX_QUERY)],
        description="Its name, an acronym, an e-mail domain (mit.edu) or its ROR id.",
    )


class InvitationAnswerForm(FlaskForm):
    """Accept or decline an invitation to be an institution's signing official."""

    answer = HiddenField(validators=[DataRequired(), AnyOf(["accept", "decline"])])
