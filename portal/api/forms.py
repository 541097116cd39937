"""The administrators' form for a new API token."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from flask_wtf import FlaskForm
from wtforms import DateField, Field, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length
from wtforms.validators import ValidationError as FieldError

from portal.api.models import MAX_DAYS, TokenScope
from portal.datasets.models import Dataset
from portal.proposals.models import Resource

#: How long a new token lives unless the administrator says otherwise.
DEFAULT_DAYS = 90


class TokenForm(FlaskForm):
    """An operator's token: what it is for, its role (a resource operator's with its resources,
    or a storage operator's with its datasets), when it expires."""

    name = StringField(
        "Name",
        validators=[DataRequired(), Length(max=200)],
        description="What uses it, e.g. “Slurm accounting on cluster-1”.",
    )
    scope = SelectField(
        "Role",
        choices=[SelectChoice(s.value, s.label) for s in TokenScope],
        default=TokenScope.RESOURCE_OPERATOR.value,
        description="A resource operator's token reads the allocations of its resources and "
        "charges their usage; a storage operator's token reads who may use its datasets.",
    )
    resources = SelectMultipleField(
        "Resources",
        coerce=int,
        description="A resource operator's token reads and charges the allocations on these "
        "resources only.",
    )
    datasets = SelectMultipleField(
        "Datasets",
        coerce=int,
        description="A storage operator's token reads who may use these datasets only.",
    )
    expires_on = DateField(
        "Expires on",
        validators=[DataRequired()],
        description=f"The last day it works (UTC); at most {MAX_DAYS} days from today.",
    )

    def __init__(
        self,
        *args: object,
        resources: Sequence[Resource],
        datasets: Sequence[Dataset] = (),
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("expires_on", dt.date.today() + dt.timedelta(days=DEFAULT_DAYS))
        super().__init__(*args, **kwargs)
        self.resources.choices = [SelectChoice(r.id, r.name) for r in resources]
        self.datasets.choices = [SelectChoice(d.id, f"{d.name} ({d.slug})") for d in datasets]

    @property
    def chosen_scope(self) -> TokenScope:
        return TokenScope(self.scope.data)

    def validate_resources(self, field: Field) -> None:
        self._check_covers(field, TokenScope.RESOURCE_OPERATOR, "Choose at least one resource.")

    def validate_datasets(self, field: Field) -> None:
        self._check_covers(field, TokenScope.DATASET_OPERATOR, "Choose at least one dataset.")

    def _check_covers(self, field: Field, scope: TokenScope, missing: str) -> None:
        """The chosen role's objects: at least one; the other role's: none."""
        if self.scope.data not in {s.value for s in TokenScope}:
            return  # the role's own error says so
        if self.chosen_scope == scope and not field.data:
            raise FieldError(missing)
        if self.chosen_scope != scope and field.data:
            raise FieldError(
                f"A {self.chosen_scope.label.lower()}'s token has no {field.label.text.lower()}: "
                "leave this empty."
            )
