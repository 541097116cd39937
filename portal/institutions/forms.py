"""Forms for registering and editing institutions, and for asking to join one and deciding."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import Field, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import URL, DataRequired, Length, Optional, Regexp
from wtforms.validators import ValidationError as FieldError

from portal.institutions.models import is_public_webmail

#: Shown under the vetted fields to those who may not change them.
VETTED_NOTE = "Vetted by program staff: changes go through program staff."


class InstitutionForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=300)])
    short_name = StringField("Short name", validators=[Optional(), Length(max=40)])
    ror_id = StringField(
        "ROR id",
        validators=[Optional(), Length(max=60)],
        description="From ror.org, e.g. https://ror.org/042nb2s44. Required before approval.",
    )
    country = StringField(
        "Country",
        validators=[
            DataRequired(),
            Regexp(r"^[A-Za-z]{2}$", message="Use the two-letter ISO code, e.g. US or DE."),
        ],
        description="Two-letter ISO 3166 code.",
    )
    website = StringField(
        "Website", validators=[Optional(), URL(message="Enter a full URL."), Length(max=300)]
    )
    email_domains = TextAreaField(
        "E-mail domains",
        validators=[Optional(), Length(max=4000)],
        description=(
            "One per line or separated by commas, e.g. mit.edu. Sub-domains are included. "
            "A new domain vouches for nobody until it is proven by a DNS record or program staff."
        ),
    )

    def __init__(
        self,
        *args: Any,
        domains: list[str] | None = None,
        vetted_locked: bool = False,
        **kw: Any,
    ) -> None:
        """``vetted_locked``: the person may not change name, ROR id and country (they are shown
        read-only; the service refuses a change whatever the form sends)."""
        super().__init__(*args, **kw)
        if domains is not None and not self.is_submitted():
            self.email_domains.data = "\n".join(domains)
        self.vetted_locked = vetted_locked
        if vetted_locked:
            for f in (self.name, self.ror_id, self.country):
                f.render_kw = {"readonly": True}
                f.description = VETTED_NOTE

    def validate_email_domains(self, field: Field) -> None:
        webmail = [d for d in self._raw_domains() if is_public_webmail(d)]
        if webmail:
            raise FieldError(
                f"{', '.join(webmail)}: public webmail domains belong to no institution."
            )

    def _raw_domains(self) -> list[str]:
        raw = (self.email_domains.data or "").replace(",", "\n").splitlines()
        return [d.strip().lower().lstrip("@").rstrip(".") for d in raw if d.strip()]

    def details(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``register_institution`` / ``update_institution``."""
        raw = (self.email_domains.data or "").replace(",", "\n").splitlines()
        return {
            "name": self.name.data or "",
            "country": self.country.data or "",
            "ror_id": self.ror_id.data,
            "short_name": self.short_name.data,
            "website": self.website.data,
            "domains": [d for d in raw if d.strip()],
        }


class AffiliationRequestForm(FlaskForm):
    """Ask to join an institution; choices are built from the institutions that take requests."""

    institution_id = SelectField("Institution", coerce=int, validators=[DataRequired()])
    title = StringField(
        "Your position",
        validators=[Optional(), Length(max=100)],
        description="For example faculty, postdoc, PhD student, staff.",
    )

    def __init__(self, *args: object, institutions: list[tuple[int, str]], **kw: object) -> None:
        super().__init__(*args, **kw)
        self.institution_id.choices = [SelectChoice(i, name) for i, name in institutions]


class AffiliationDecisionForm(FlaskForm):
    decision = SelectField(
        "Decision",
        choices=[SelectChoice("approve", "Approve"), SelectChoice("reject", "Reject")],
        validators=[DataRequired()],
    )
    note = TextAreaField("Note (required to reject)", validators=[Optional(), Length(max=1000)])
