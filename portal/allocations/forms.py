"""Forms of the allocation pages: the allocations list's resource filter and its sort order,
beside the search box and state filter every list has (``portal.core.forms.FilterForm``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from flask_wtf import FlaskForm
from wtforms import SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Optional

from portal.proposals.models import Resource


class AllocationFilterForm(FlaskForm):
    """The allocations list's resource filter and sort order (GET: changes nothing)."""

    class Meta:
        csrf = False

    resource = SelectField("Resource", validators=[Optional()])
    sort = SelectField("Sort", validators=[Optional()])

    def __init__(
        self,
        formdata: Any = None,
        *,
        resources: Iterable[Resource] = (),
        sorts: Sequence[tuple[str, str]] = (),
        **kw: Any,
    ) -> None:
        super().__init__(formdata, **kw)
        self.resource.choices = [SelectChoice("", "Any resource")] + [
            SelectChoice(str(r.id), r.name) for r in resources
        ]
        self.sort.choices = [SelectChoice(key, label) for key, label in sorts]

    def chosen_resource(self) -> int | None:
        """The id of the resource chosen (None: any, or a value that is not one of the choices)."""
        if not self.resource.data or not self.resource.validate(self):
            return None
        return int(self.resource.data)
