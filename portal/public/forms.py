"""The search forms of the public lists (GET: they change nothing, so they carry no CSRF token
and set no cookie)."""

from __future__ import annotations

from collections.abc import Sequence

from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional

from portal.proposals.models import FIELDS


class PartnerFilterForm(FlaskForm):
    class Meta:
        csrf = False

    q = StringField("Search by name", validators=[Optional(), Length(max=200)])
    country = SelectField("Country", validators=[Optional()])

    @classmethod
    def for_countries(cls, countries: Sequence[tuple[str, str]], data: object) -> PartnerFilterForm:
        """The filter offering ``countries`` ((code, name)), from the request's ``data``."""
        form = cls(data)
        form.country.choices = [SelectChoice("", "Any country")] + [
            SelectChoice(code, name) for code, name in countries
        ]
        form.q.render_kw = {"placeholder": "Institution name"}
        return form


class ProjectFilterForm(FlaskForm):
    class Meta:
        csrf = False

    q = StringField("Search by title or institution", validators=[Optional(), Length(max=200)])
    field = SelectField(
        "Field of research",
        choices=[SelectChoice("", "Any field")] + [SelectChoice(f, f) for f in FIELDS],
        validators=[Optional()],
    )

    @classmethod
    def from_args(cls, data: object) -> ProjectFilterForm:
        form = cls(data)
        form.q.render_kw = {"placeholder": "Title or institution"}
        return form
