"""Forms every domain shares: a bare confirmation, a workflow action with its reason, and the
filter form of every list (search text and a state)."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from portal.core.workflow import MAX_REASON


class ConfirmForm(FlaskForm):
    """A POST that needs no input (log out, unlink, retry, withdraw): only the CSRF token."""


class ActionForm(FlaskForm):
    """One workflow action on one object, with the reason the action may need."""

    action = HiddenField(validators=[DataRequired()])
    reason = TextAreaField("Reason", validators=[Optional(), Length(max=MAX_REASON)])


class FilterForm(FlaskForm):
    """The search box and state filter above a list (GET; ``portal.core.listing`` applies it)."""

    class Meta:
        csrf = False  # a GET search form changes nothing

    q = StringField("Search", validators=[Optional(), Length(max=200)])
    state = SelectField("Status", validators=[Optional()])

    @classmethod
    def for_states(
        cls, states: Iterable[enum.Enum], *, data: object = None, placeholder: str = "Search"
    ) -> FilterForm:
        """The filter for a list of objects in ``states`` (``data``: the request's query args)."""
        form = cls(data)
        form.state.choices = [SelectChoice("", "Any status")] + [
            SelectChoice(str(s.value), str(getattr(s, "label", s.value))) for s in states
        ]
        form.q.render_kw = {"placeholder": placeholder}
        return form
