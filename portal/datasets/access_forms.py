"""Forms of the access pages: asking for a controlled dataset (or for more time on it), accepting
a registered dataset's terms, a steward's decision (approve until a date, ask for changes,
decline), sending a request again, revoking; and the filters of the requests and access lists."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, Optional, StopValidation

from portal.core.workflow import MAX_REASON
from portal.datasets.models import Dataset
from portal.proposals.models import Proposal

#: The shortest and longest intended use (the service's own bounds: ``services.request_access``).
MIN_USE, MAX_USE = 30, 5000

USE_HELP = (
    "What you will do with the data, and how you will keep it safe: the dataset's stewards decide "
    "on it, and it is written into the data-use agreement you sign."
)


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _use_field(label: str, description: str, rows: int) -> TextAreaField:
    return TextAreaField(
        label,
        filters=[_strip],
        validators=[
            DataRequired(message="Say what you will do with the data."),
            Length(
                min=MIN_USE,
                max=MAX_USE,
                message=f"Say what you will do with the data in {MIN_USE} to {MAX_USE:,} "
                "characters: the steward decides on it.",
            ),
        ],
        description=description,
        render_kw={"rows": rows},
    )


class _UseForm(FlaskForm):
    intended_use = _use_field("Intended use", USE_HELP, 6)


class RequestForm(_UseForm):
    """Ask for access to a controlled dataset: what for, and optionally for which of one's active
    projects."""

    proposal_id = SelectField("For a project (optional)", validators=[Optional()])

    def __init__(self, *args: Any, projects: Iterable[Proposal] = (), **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._projects = {p.id: p for p in projects}
        self.proposal_id.choices = [SelectChoice("", "None: my own research")] + [
            SelectChoice(str(p.id), p.title) for p in self._projects.values()
        ]
        self.proposal_id.description = (
            "One of your active projects, if the data is for it: access then ends if you leave it."
            if self._projects
            else "You are on no active project; access is for your own research."
        )

    def project(self) -> Proposal | None:
        """The project chosen (validated: one of the choices), or None."""
        value = self.proposal_id.data or ""
        return self._projects.get(int(value)) if value.isdigit() else None


class RenewalForm(_UseForm):
    """Ask the stewards for more time on access to a controlled dataset."""

    intended_use = _use_field(
        "Why you need more time", "What the data is still needed for, and until when.", 5
    )


class ResubmitForm(_UseForm):
    """Send a request back to the stewards with its intended use changed as they asked."""


class AcceptForm(FlaskForm):
    """Accept a registered dataset's terms (access starts at once)."""

    accepted = BooleanField(
        "I accept the terms of use",
        validators=[InputRequired(message="Tick the box to accept the terms of use.")],
    )


class _NotAfter:
    """A date no later than ``latest`` and after ``today``, said in the words of the service."""

    def __init__(self, dataset: Dataset, latest: dt.date, today: dt.date) -> None:
        self.dataset, self.latest, self.today = dataset, latest, today

    def __call__(self, form: FlaskForm, field: DateField) -> None:
        if field.data is None:
            return
        if field.data <= self.today:
            raise StopValidation("Give the last day of access, after today.")
        if field.data > self.latest:
            raise StopValidation(
                f"Access to “{self.dataset.name}” lasts at most {self.dataset.max_months} months: "
                f"until {self.latest:%d %B %Y} at the latest."
            )


class ApproveForm(FlaskForm):
    """A steward approves, until a date (at most the dataset's longest period), with an optional
    note."""

    ends_on = DateField(
        "Last day of access",
        validators=[InputRequired(message="Give the last day of access.")],
    )
    note = TextAreaField(
        "Note for the requester (optional)",
        validators=[Optional(), Length(max=MAX_REASON)],
        description="Conditions of the approval, if any; it is sent to the requester.",
        render_kw={"rows": 2},
    )

    def __init__(
        self, *args: Any, dataset: Dataset, latest: dt.date, today: dt.date, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.ends_on.validators = [*self.ends_on.validators, _NotAfter(dataset, latest, today)]
        self.ends_on.render_kw = {
            "min": (today + dt.timedelta(days=1)).isoformat(),
            "max": latest.isoformat(),
        }
        self.ends_on.description = (
            f"At most {dataset.max_months} months: {latest:%d %B %Y} at the latest."
        )


class ReasonForm(FlaskForm):
    """An action that needs a reason: asking for changes, declining, revoking."""

    reason = TextAreaField(
        "Reason",
        filters=[_strip],
        validators=[DataRequired(message="Give a reason."), Length(max=MAX_REASON)],
        render_kw={"rows": 3},
    )

    def __init__(self, *args: Any, label: str = "Reason", help: str = "", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.reason.label.text = label
        self.reason.description = help


# --- list filters (GET: change nothing) ----------------------------------------------------------


class _ListFilterForm(FlaskForm):
    class Meta:
        csrf = False

    dataset = SelectField("Dataset", validators=[Optional()])

    def __init__(self, formdata: Any = None, *, datasets: Sequence[Dataset] = (), **kw: Any):
        super().__init__(formdata, **kw)
        self.dataset.choices = [SelectChoice("", "Any dataset")] + [
            SelectChoice(str(d.id), d.name) for d in datasets
        ]

    def chosen_dataset(self) -> int | None:
        """The id of the dataset chosen (None: any, or a value that is not one of the choices)."""
        if not self.dataset.data or not self.dataset.validate(self):
            return None
        return int(self.dataset.data)


class RequestFilterForm(_ListFilterForm):
    """The requests list's dataset and kind filters, beside its search and state filter."""

    kind = SelectField(
        "Kind",
        choices=[
            SelectChoice("", "New and renewals"),
            SelectChoice("new", "New access"),
            SelectChoice("renewal", "Renewals"),
        ],
        validators=[Optional()],
    )

    def chosen_kind(self) -> bool | None:
        """True: renewals only; False: new access only; None: both (or a value not offered)."""
        if not self.kind.data or not self.kind.validate(self):
            return None
        return bool(self.kind.data == "renewal")


class GrantFilterForm(_ListFilterForm):
    """The access list's dataset filter and "ending within 30 days", beside its search and state
    filter."""

    expiring = BooleanField("Ending within 30 days")
