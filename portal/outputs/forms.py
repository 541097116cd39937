"""Forms of the outputs pages: a released output (new or edited), the final report, and a staff
decision on it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from flask_wtf import FlaskForm
from wtforms import DateField, Field, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional
from wtforms.validators import ValidationError as FieldError

from portal.core.workflow import MAX_REASON
from portal.outputs.checklist import (
    date_problem,
    doi_problem,
    license_problem,
    normalize_doi,
    planned_problem,
    url_problem,
)
from portal.outputs.models import FinalReport, ReleasedOutput
from portal.proposals.models import OutputKind, PlannedOutput


def planned_label(planned: PlannedOutput) -> str:
    """``Model weights (Apache-2.0): the 7B checkpoints``."""
    text = f"{planned.kind.label} ({planned.license})"
    return f"{text}: {planned.description}" if planned.description else text


class OutputForm(FlaskForm):
    """A released output (``services.OUTPUT_FIELDS``), new or edited."""

    kind = SelectField(
        "Kind",
        choices=[SelectChoice(k.value, k.label) for k in OutputKind],
        validators=[DataRequired()],
    )
    title = StringField("Title", validators=[DataRequired(), Length(max=300)])
    url = StringField(
        "Address",
        validators=[DataRequired(), Length(max=500)],
        description="Where it can be found: a Hugging Face or GitHub page, a repository, a paper.",
        render_kw={"inputmode": "url"},
    )
    license = StringField(
        "Licence",
        validators=[DataRequired(), Length(max=200)],
        description="An SPDX licence expression, e.g. Apache-2.0, CC-BY-4.0 or MIT OR Apache-2.0.",
    )
    doi = StringField(
        "DOI",
        validators=[Optional(), Length(max=200)],
        description="If it has one, e.g. 10.5281/zenodo.1234567 (a https://doi.org/ link is fine).",
    )
    released_on = DateField("Released on", validators=[DataRequired()])
    planned_output_id = SelectField(
        "Fulfils the planned output",
        validators=[Optional()],
        validate_choice=False,  # validate_planned_output_id says what is wrong
        description="The output the proposal planned that this release delivers, if any.",
    )

    def __init__(
        self,
        *args: Any,
        planned: Sequence[PlannedOutput],
        taken: Iterable[int],
        proposal_id: int,
        today: dt.date,
        output: ReleasedOutput | None = None,
        **kw: Any,
    ) -> None:
        """``planned``: the project's planned outputs; ``taken``: those other releases check off
        already; ``output``: the release edited (its values fill the form)."""
        super().__init__(*args, **kw)
        self._planned = {p.id: p for p in planned}
        self._taken = set(taken)
        self._proposal_id = proposal_id
        self._today = today
        self.planned_output_id.choices = [SelectChoice("", "None")] + [
            SelectChoice(str(p.id), planned_label(p)) for p in planned if p.id not in self._taken
        ]
        if self.is_submitted() or output is None:
            return
        for name in ("title", "url", "license", "doi", "released_on"):
            self[name].data = getattr(output, name)
        self.kind.data = output.kind.value
        self.planned_output_id.data = str(output.planned_output_id or "")

    def validate_url(self, field: Field) -> None:
        problem = url_problem(field.data or "")
        if problem:
            raise FieldError(problem)

    def validate_license(self, field: Field) -> None:
        problem = license_problem((field.data or "").strip())
        if problem:
            raise FieldError(problem)

    def validate_doi(self, field: Field) -> None:
        problem = doi_problem(normalize_doi(field.data))
        if problem:
            raise FieldError(problem)

    def validate_released_on(self, field: Field) -> None:
        problem = date_problem(field.data, self._today)
        if problem:
            raise FieldError(problem)

    def validate_planned_output_id(self, field: Field) -> None:
        raw = (field.data or "").strip()
        if not raw:
            return
        if not raw.isdigit() or int(raw) not in self._planned:
            raise FieldError("That planned output is not one of this project's.")
        try:
            kind = OutputKind(self.kind.data)
        except ValueError:
            return  # the kind's own error says it
        problem = planned_problem(
            self._planned[int(raw)], proposal_id=self._proposal_id, kind=kind, taken=self._taken
        )
        if problem:
            raise FieldError(problem)

    def values(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``record_output`` / ``update_output``."""
        raw = (self.planned_output_id.data or "").strip()
        return {
            "kind": OutputKind(self.kind.data),
            "title": (self.title.data or "").strip(),
            "url": (self.url.data or "").strip(),
            "license": (self.license.data or "").strip(),
            "doi": normalize_doi(self.doi.data),
            "released_on": self.released_on.data,
            "planned_output_id": int(raw) if raw else None,
        }


class ReportForm(FlaskForm):
    """The final report: what the project did, and what came of it."""

    summary = TextAreaField(
        "Summary",
        validators=[DataRequired(), Length(min=50, max=20_000)],
        description="What the project did, in a paragraph or two (50 characters or more).",
        render_kw={"rows": 6},
    )
    outcomes = TextAreaField(
        "Outcomes",
        validators=[Optional(), Length(max=20_000)],
        description="What worked, what did not, and what the GPU-hours made possible.",
        render_kw={"rows": 6},
    )

    def __init__(self, *args: Any, report: FinalReport | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if report is not None and not self.is_submitted():
            self.summary.data = report.summary
            self.outcomes.data = report.outcomes


class DecisionForm(FlaskForm):
    """Program staff accept a submitted report or return it, with the reasons."""

    action = HiddenField(validators=[DataRequired()])
    reason = TextAreaField(
        "Reasons",
        validators=[Optional(), Length(max=MAX_REASON)],
        description="Sent to the team. Needed to return the report; optional when accepting.",
        render_kw={"rows": 3},
    )

    def validate_action(self, field: Field) -> None:
        if field.data not in ("accept", "return"):
            raise FieldError("Choose to accept or return the report.")
