"""Forms for the resources catalog, calls, proposals and the endorsement decision."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    Field,
    FieldList,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.validators import ValidationError as FieldError

from portal.proposals.checklist import license_problem
from portal.proposals.models import FIELDS, CallResource, OutputKind, Proposal, Resource

#: Rows of empty rubric criteria and planned outputs offered below the filled ones.
SPARE_ROWS = 2


def _whole_hours(raw: str | None) -> int | None:
    """``raw`` as a whole number of GPU-hours, None when blank; a form error otherwise."""
    text = (raw or "").strip().replace(",", "").replace("_", "")
    if not text:
        return None
    if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 12:
        raise FieldError("Enter a whole number of GPU-hours, e.g. 5000.")
    return int(text)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A date and time typed in the form, read as UTC (the form says so)."""
    return value.replace(tzinfo=dt.UTC) if value is not None else None


# --- resources ---------------------------------------------------------------------------------


class ResourceForm(FlaskForm):
    cluster = StringField("Cluster", validators=[DataRequired(), Length(max=80)])
    gpu_class = StringField(
        "GPU class", validators=[DataRequired(), Length(max=40)], description="H100, H200, B200 …"
    )
    capacity_hours = IntegerField(
        "Capacity (GPU-hours per period)",
        validators=[DataRequired(), NumberRange(min=1, max=10**12)],
    )
    period_months = IntegerField(
        "Period (months)", default=12, validators=[DataRequired(), NumberRange(min=1, max=60)]
    )
    description = TextAreaField("Description", validators=[Optional(), Length(max=4000)])
    active = BooleanField("Offered in new calls", default=True)

    def details(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``save_resource``."""
        return {
            "cluster": self.cluster.data or "",
            "gpu_class": self.gpu_class.data or "",
            "capacity_hours": int(self.capacity_hours.data or 0),
            "period_months": int(self.period_months.data or 12),
            "description": self.description.data or "",
            "active": bool(self.active.data),
        }


# --- calls -------------------------------------------------------------------------------------


class OfferRow(Form):
    """One resource of the catalog: offered by the call when it has a budget."""

    resource_id = HiddenField()
    budget_hours = StringField("Budget (GPU-hours)", validators=[Optional(), Length(max=20)])
    max_request_hours = StringField(
        "Most per proposal (GPU-hours)", validators=[Optional(), Length(max=20)]
    )

    def validate_budget_hours(self, field: Field) -> None:
        budget = _whole_hours(field.data)
        cap = _whole_hours(self.max_request_hours.data)
        if budget is None and cap is None:
            return
        if budget is None or budget <= 0:
            raise FieldError("Give a positive budget, or leave both fields empty.")
        if cap is None or not 0 < cap <= budget:
            raise FieldError("The most per proposal is positive and at most the budget.")


class CriterionRow(Form):
    name = StringField("Criterion", validators=[Optional(), Length(max=120)])
    description = StringField("What reviewers look for", validators=[Optional(), Length(max=500)])
    weight = IntegerField("Weight", default=1, validators=[Optional(), NumberRange(1, 100)])
    scale_max = IntegerField("Scale 1 to", default=5, validators=[Optional(), NumberRange(2, 10)])


class CallForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    description = TextAreaField(
        "Description",
        validators=[Optional(), Length(max=20000)],
        description="Markdown: **bold**, lists, links. HTML is shown as text.",
    )
    eligibility = TextAreaField("Eligibility", validators=[Optional(), Length(max=4000)])
    opens_at = DateTimeLocalField("Opens (UTC)", validators=[Optional()])
    closes_at = DateTimeLocalField(
        "Closes (UTC)", validators=[Optional()], description="Leave empty for a rolling call."
    )
    reviews_wanted = IntegerField(
        "Reviews per proposal", default=2, validators=[DataRequired(), NumberRange(1, 10)]
    )
    single_blind = BooleanField("Single-blind review (reviewers are not named)", default=True)
    endorsement_required = BooleanField(
        "The institution's signing official endorses each proposal first", default=True
    )
    page_limit = IntegerField(
        "Page limit of the project description",
        default=10,
        validators=[DataRequired(), NumberRange(1, 200)],
    )
    offers = FieldList(FormField(OfferRow))
    criteria = FieldList(FormField(CriterionRow))

    def __init__(
        self, *args: Any, resources: Sequence[Resource], call: Any = None, **kw: Any
    ) -> None:
        """One offer row per catalog resource in ``resources`` (filled from ``call``)."""
        super().__init__(*args, obj=call, **kw)
        self.resources = {r.id: r for r in resources}
        if self.is_submitted():
            return
        offered = {cr.resource_id: cr for cr in (call.resources if call else [])}
        self.offers.entries = []
        for r in resources:
            cr = offered.get(r.id)
            self.offers.append_entry(
                {
                    "resource_id": str(r.id),
                    "budget_hours": str(cr.budget_hours) if cr else "",
                    "max_request_hours": str(cr.max_request_hours) if cr else "",
                }
            )
        self.criteria.entries = []
        for c in call.criteria if call else []:
            self.criteria.append_entry(
                {
                    "name": c.name,
                    "description": c.description,
                    "weight": c.weight,
                    "scale_max": c.scale_max,
                }
            )
        for _ in range(SPARE_ROWS if call else 3):
            self.criteria.append_entry({"weight": 1, "scale_max": 5})

    def validate_offers(self, field: Field) -> None:
        for row in self.offers:
            if str(row.form.resource_id.data or "") not in {str(i) for i in self.resources}:
                raise FieldError("Offer only resources of the catalog.")

    def validate_closes_at(self, field: Field) -> None:
        if self.opens_at.data and field.data and field.data <= self.opens_at.data:
            raise FieldError("The call must close after it opens.")

    def resource_of(self, row: Any) -> Resource | None:
        try:
            return self.resources.get(int(row.form.resource_id.data or 0))
        except ValueError:
            return None

    def details(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``save_call`` (offers as (resource id, budget,
        cap) and criteria as dicts: the view makes them ``Offer`` and ``Criterion``)."""
        offers = []
        for row in self.offers:
            budget = _whole_hours(row.form.budget_hours.data)
            if budget:
                offers.append(
                    (
                        int(row.form.resource_id.data),
                        budget,
                        _whole_hours(row.form.max_request_hours.data) or 0,
                    )
                )
        criteria = [
            {
                "name": row.form.name.data.strip(),
                "description": row.form.description.data or "",
                "weight": row.form.weight.data or 1,
                "scale_max": row.form.scale_max.data or 5,
            }
            for row in self.criteria
            if (row.form.name.data or "").strip()
        ]
        return {
            "title": self.title.data or "",
            "description": self.description.data or "",
            "eligibility": self.eligibility.data or "",
            "opens_at": _utc(self.opens_at.data),
            "closes_at": _utc(self.closes_at.data),
            "reviews_wanted": self.reviews_wanted.data or 2,
            "single_blind": bool(self.single_blind.data),
            "endorsement_required": bool(self.endorsement_required.data),
            "page_limit": self.page_limit.data or 10,
            "offers": offers,
            "criteria": criteria,
        }


# --- proposals ---------------------------------------------------------------------------------


class StartForm(FlaskForm):
    """Start a proposal under a call: only a working title; the rest is the edit form."""

    title = StringField("Working title", validators=[Optional(), Length(max=300)])


class RequestRow(Form):
    """GPU-hours on one resource the call offers, and why."""

    call_resource_id = HiddenField()
    hours = StringField("GPU-hours", validators=[Optional(), Length(max=20)])
    justification = TextAreaField("Justification", validators=[Optional(), Length(max=4000)])


class OutputRow(Form):
    kind = SelectField(
        "Kind",
        choices=[SelectChoice("", "—")] + [SelectChoice(k.value, k.label) for k in OutputKind],
        validators=[Optional()],
    )
    license = StringField(
        "SPDX licence", validators=[Optional(), Length(max=200)], description="e.g. Apache-2.0"
    )
    description = StringField("Description", validators=[Optional(), Length(max=500)])

    def validate_license(self, field: Field) -> None:
        text = (field.data or "").strip()
        if not self.kind.data and not text and not (self.description.data or "").strip():
            return
        if not self.kind.data:
            raise FieldError("Choose the kind of output.")
        problem = license_problem(text)
        if problem:
            raise FieldError(problem)


class ProposalForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=300)])
    abstract = TextAreaField("Abstract", validators=[Optional(), Length(max=5000)])
    field = SelectField(
        "Field of research",
        choices=[SelectChoice("", "Choose …")] + [SelectChoice(f, f) for f in FIELDS],
        validators=[Optional()],
    )
    plan = TextAreaField("Research plan", validators=[Optional(), Length(max=50000)])
    requested_datasets = TextAreaField(
        "Other data you need (not in the lab's catalog)",
        validators=[Optional(), Length(max=5000)],
        description="Free text: the data and why. Datasets of the lab's catalog are chosen from "
        "the proposal's page (“Choose datasets”).",
    )
    start_date = DateField("Start date", validators=[Optional()])
    duration_months = IntegerField(
        "Duration (months)", validators=[Optional(), NumberRange(min=1, max=60)]
    )
    requests = FieldList(FormField(RequestRow))
    outputs = FieldList(FormField(OutputRow))

    def __init__(self, *args: Any, proposal: Proposal, **kw: Any) -> None:
        """One request row per resource the proposal's call offers; the planned outputs and
        spare rows."""
        super().__init__(*args, **kw)
        self.offered: dict[int, CallResource] = {cr.id: cr for cr in proposal.call.resources}
        if self.is_submitted():
            return
        self.title.data, self.abstract.data, self.field.data = (
            proposal.title,
            proposal.abstract,
            proposal.field,
        )
        self.plan.data, self.requested_datasets.data = proposal.plan, proposal.requested_datasets
        self.start_date.data, self.duration_months.data = (
            proposal.start_date,
            proposal.duration_months,
        )
        existing = {r.call_resource_id: r for r in proposal.requests}
        self.requests.entries = []
        for cr in proposal.call.resources:
            r = existing.get(cr.id)
            self.requests.append_entry(
                {
                    "call_resource_id": str(cr.id),
                    "hours": str(r.hours) if r else "",
                    "justification": r.justification if r else "",
                }
            )
        self.outputs.entries = []
        for o in proposal.outputs:
            self.outputs.append_entry(
                {"kind": o.kind.value, "license": o.license, "description": o.description}
            )
        for _ in range(SPARE_ROWS):
            self.outputs.append_entry({})

    def offer_of(self, row: Any) -> CallResource | None:
        try:
            return self.offered.get(int(row.form.call_resource_id.data or 0))
        except ValueError:
            return None

    def validate_requests(self, field: Field) -> None:
        ok = True
        for row in self.requests:
            cr = self.offer_of(row)
            if cr is None:
                raise FieldError("Ask only for resources this call offers.")
            try:
                hours = _whole_hours(row.form.hours.data)
            except FieldError as e:
                row.form.hours.errors = [*row.form.hours.errors, str(e)]
                ok = False
                continue
            if hours is None:
                continue
            if hours <= 0:
                row.form.hours.errors = [
                    *row.form.hours.errors,
                    "GPU-hours must be a positive number (leave empty to ask for none).",
                ]
                ok = False
            elif hours > cr.max_request_hours:
                row.form.hours.errors = [
                    *row.form.hours.errors,
                    f"The call allows at most {cr.max_request_hours:,} GPU-hours on "
                    f"{cr.resource.name} per proposal.",
                ]
                ok = False
        if not ok:
            raise FieldError("Check the GPU-hours below.")

    def details(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``save_draft`` (requests and outputs as tuples:
        the view makes them ``Request`` and ``Output``)."""
        requests = []
        for row in self.requests:
            hours = _whole_hours(row.form.hours.data)
            if hours:
                requests.append(
                    (int(row.form.call_resource_id.data), hours, row.form.justification.data or "")
                )
        outputs = [
            (
                OutputKind(row.form.kind.data),
                (row.form.license.data or "").strip(),
                row.form.description.data or "",
            )
            for row in self.outputs
            if row.form.kind.data
        ]
        return {
            "title": self.title.data or "",
            "abstract": self.abstract.data or "",
            "field": self.field.data or "",
            "plan": self.plan.data or "",
            "requested_datasets": self.requested_datasets.data or "",
            "start_date": self.start_date.data,
            "duration_months": self.duration_months.data,
            "requests": requests,
            "outputs": outputs,
        }


class WithdrawForm(FlaskForm):
    reason = TextAreaField("Reason (optional)", validators=[Optional(), Length(max=1000)])


class ProposalFilterForm(FlaskForm):
    """The program officer's extra filters over a call's proposals (GET; nothing changes)."""

    class Meta:
        csrf = False

    institution = SelectField("Institution", validators=[Optional()])
    field = SelectField("Field", validators=[Optional()])
    resource = SelectField("Resource", validators=[Optional()])

    def __init__(
        self,
        *args: Any,
        institutions: Sequence[tuple[int, str]],
        resources: Sequence[CallResource],
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.institution.choices = [SelectChoice("", "Any institution")] + [
            SelectChoice(str(i), name) for i, name in institutions
        ]
        self.field.choices = [SelectChoice("", "Any field")] + [SelectChoice(f, f) for f in FIELDS]
        self.resource.choices = [SelectChoice("", "Any resource")] + [
            SelectChoice(str(cr.id), cr.resource.name) for cr in resources
        ]
