"""The administrators' form for a new API token."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from flask_wtf import FlaskForm
from wtforms import DateField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from portal.api.models import MAX_DAYS
from portal.proposals.models import Resource

#: How long a new token lives unless the administrator says otherwise.
DEFAULT_DAYS = 90


class TokenForm(FlaskForm):
    """A resource operator's token: what it is for, its resources, when it expires."""

    name = StringField(
        "Name",
        validators=[DataRequired(), Length(max=200)],
        description="What uses it, e.g. “Slurm accounting on cluster-1”.",
    )
    resources = SelectMultipleField(
        "Resources",
        coerce=int,
        validators=[DataRequired(message="Choose at least one resource.")],
        description="The token reads and charges the allocations on these resources only.",
    )
    expires_on = DateField(
        "Expires on",
        validators=[DataRequired()],
        description=f"The last day it works (UTC); at most {MAX_DAYS} days from today.",
    )

    def __init__(self, *args: object, resources: Sequence[Resource], **kwargs: object) -> None:
        kwargs.setdefault("expires_on", dt.date.today() + dt.timedelta(days=DEFAULT_DAYS))
        super().__init__(*args, **kwargs)
        self.resources.choices = [SelectChoice(r.id, r.name) for r in resources]
