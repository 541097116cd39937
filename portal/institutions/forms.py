"""Forms for registering and editing institutions, and for asking to join one and deciding."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import URL, DataRequired, Length, Optional, Regexp


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
        description="One per line or separated by commas, e.g. mit.edu. Sub-domains are included.",
    )

    def __init__(self, *args: Any, domains: list[str] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if domains is not None and not self.is_submitted():
            self.email_domains.data = "\n".join(domains)

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
