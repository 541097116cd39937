"""Forms of the catalog pages: a catalog entry (with its size read from "12 GB" or a number of
bytes), the catalog's tier filter and sort, a reason for a step, a steward added by e-mail, and
the datasets a proposal plans to use. (Accepting a registered dataset's terms, which the dataset
page offers, is ``access_forms.AcceptForm``.)"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
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

from portal.agreements.models import AgreementTemplate
from portal.core.workflow import MAX_REASON
from portal.datasets.models import AccessTier, Dataset, ProposalDataset
from portal.proposals.checklist import license_problem

# --- sizes ---------------------------------------------------------------------------------------

#: Bytes per unit (decimal units as storage vendors count them; binary ones by their IEC names).
UNITS: dict[str, int] = {
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}
#: The largest size accepted (an exabyte: far beyond any dataset, well within a BIGINT).
MAX_SIZE = 10**18
#: The units a size is written back in, largest first.
SHOWN_UNITS = (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))
#: A number (thousands may be separated by commas: 1,500,000) and an optional unit.
_SIZE = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*([a-z]*)", re.IGNORECASE)

SIZE_HELP = 'e.g. "12 GB", "1.5 TB", "800 MiB", or a number of bytes. Leave empty if unknown.'


def parse_size(raw: str | None) -> int | None:
    """``raw`` (``12 GB``, ``1.5 TB``, ``800 MiB``, ``123456789``) as a number of bytes; None when
    blank. A FieldError says what is wrong otherwise."""
    text = (raw or "").strip()
    if not text:
        return None
    match = _SIZE.fullmatch(text)
    if match is None:
        raise FieldError(
            "Write the size as a number and a unit (12 GB, 1.5 TB, 800 MiB) or a number of bytes."
        )
    whole, fraction, unit = match.groups()
    multiplier = UNITS.get(unit.lower() if unit else "b")
    if multiplier is None:
        raise FieldError(
            f"Unknown unit {unit!r}: use B, kB, MB, GB, TB, PB (or KiB, MiB, GiB, TiB, PiB)."
        )
    try:
        value = Decimal(whole.replace(",", "") + (fraction or "")) * multiplier
    except InvalidOperation:  # pragma: no cover - the pattern admits only digits
        raise FieldError("Write the size as a number and a unit, e.g. 12 GB.") from None
    if value != value.to_integral_value():
        raise FieldError(
            "That is not a whole number of bytes: use a larger unit or fewer decimals."
        )
    if value > MAX_SIZE:
        raise FieldError("That is larger than any dataset the catalog holds (1 EB at most).")
    return int(value)


def exact_size(size: int | None) -> str:
    """``size`` in the largest unit that writes it exactly with at most three decimals (``1.5
    TB``), else in bytes: what the form shows, so saving it again changes nothing."""
    if size is None:
        return ""
    for name, unit in SHOWN_UNITS:
        if size >= unit:
            value = Decimal(size) / unit
            if value == round(value, 3):
                return f"{value.normalize():f} {name}"
    return str(size)


def size_label(size: int | None) -> str:
    """``size`` for people (``12 GB``, ``1.53 TB``, ``900 bytes``); a dash when unknown."""
    if size is None:
        return "—"
    for name, unit in SHOWN_UNITS:
        if size >= unit:
            value = Decimal(size) / unit
            shown = round(value, 2 if value < 10 else 1 if value < 100 else 0)
            return f"{shown.normalize():f} {name}"
    return f"{size} byte" + ("" if size == 1 else "s")


# --- a catalog entry ------------------------------------------------------------------------------


def tier_choices() -> list[SelectChoice]:
    return [SelectChoice(t.value, t.label) for t in AccessTier]


class DatasetForm(FlaskForm):
    """A catalog entry (``services.ENTRY_FIELDS``), new or edited."""

    slug = StringField(
        "Short name",
        validators=[DataRequired(), Length(max=80)],
        description="In its address and in the operators' storage: lowercase letters, digits and "
        "single hyphens, e.g. web-corpus-2026.",
    )
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    summary = StringField(
        "Summary", validators=[Optional(), Length(max=300)], description="One line for the catalog."
    )
    description = TextAreaField(
        "Description",
        validators=[Optional(), Length(max=50_000)],
        description="Markdown: **bold**, lists, links. HTML is shown as text.",
        render_kw={"rows": 10},
    )
    version = StringField("Version", validators=[Optional(), Length(max=40)])
    size = StringField("Size", validators=[Optional(), Length(max=40)], description=SIZE_HELP)
    licence = StringField(
        "Licence",
        validators=[DataRequired(), Length(max=200)],
        description="An SPDX licence expression, e.g. CC-BY-4.0 or ODC-By-1.0.",
    )
    tier = SelectField("Access tier", choices=tier_choices(), validators=[DataRequired()])
    terms = TextAreaField(
        "Terms of use",
        validators=[Optional(), Length(max=20_000)],
        description="What a researcher accepts (registered tier), or is told besides the "
        "data-use agreement (controlled tier).",
        render_kw={"rows": 6},
    )
    dua_template_id = SelectField(
        "Data-use agreement",
        validators=[Optional()],
        description="The agreement template signed for access. Required for a controlled dataset.",
    )
    institution_signs = BooleanField(
        "The researcher's institution co-signs the data-use agreement (its signing official)"
    )
    max_months = IntegerField(
        "Longest access, in months",
        default=12,
        validators=[DataRequired(), NumberRange(min=1, max=60)],
        description="What one approval or acceptance of the terms gives, at most.",
    )
    location = StringField(
        "Where the data is",
        validators=[Optional(), Length(max=500)],
        description="A bucket or a path; shown only to people with access, its stewards and "
        "program staff.",
    )

    def __init__(
        self,
        *args: Any,
        templates: Sequence[AgreementTemplate],
        dataset: Dataset | None = None,
        **kw: Any,
    ) -> None:
        """``templates``: the data-use agreement templates to choose from; ``dataset``: the entry
        edited (its values fill the form)."""
        super().__init__(*args, **kw)
        self.dua_template_id.choices = [SelectChoice("", "None")] + [
            SelectChoice(
                str(t.id),
                t.title + ("" if t.current is not None else " (no published version yet)"),
            )
            for t in templates
        ]
        self.parsed_size: int | None = None
        if self.is_submitted() or dataset is None:
            return
        for name in (
            "slug",
            "name",
            "summary",
            "description",
            "version",
            "licence",
            "terms",
            "institution_signs",
            "max_months",
            "location",
        ):
            self[name].data = getattr(dataset, name)
        self.tier.data = dataset.tier.value
        self.size.data = exact_size(dataset.size_bytes)
        self.dua_template_id.data = str(dataset.dua_template_id or "")

    def validate_size(self, field: Field) -> None:
        self.parsed_size = parse_size(field.data)

    def validate_licence(self, field: Field) -> None:
        problem = license_problem((field.data or "").strip())
        if problem:
            raise FieldError(problem)

    def validate_dua_template_id(self, field: Field) -> None:
        if self.tier.data == AccessTier.CONTROLLED.value and not field.data:
            raise FieldError("A controlled dataset needs a data-use agreement: choose one.")

    def values(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``create_dataset`` / ``update_dataset``."""
        return {
            "slug": (self.slug.data or "").strip(),
            "name": self.name.data or "",
            "summary": self.summary.data or "",
            "description": self.description.data or "",
            "version": self.version.data or "",
            "size_bytes": self.parsed_size,
            "licence": (self.licence.data or "").strip(),
            "tier": AccessTier(self.tier.data),
            "terms": self.terms.data or "",
            "dua_template_id": int(self.dua_template_id.data)
            if self.dua_template_id.data
            else None,
            "institution_signs": bool(self.institution_signs.data),
            "max_months": int(self.max_months.data or 12),
            "location": self.location.data or "",
        }


# --- the catalog's filters -------------------------------------------------------------------------


class CatalogFilterForm(FlaskForm):
    """The catalog's tier filter and sort order (GET: changes nothing), beside the search box and
    state filter every list has."""

    class Meta:
        csrf = False

    tier = SelectField("Access tier", validators=[Optional()])
    sort = SelectField("Sort", validators=[Optional()])

    def __init__(
        self, formdata: Any = None, *, sorts: Sequence[tuple[str, str]] = (), **kw: Any
    ) -> None:
        super().__init__(formdata, **kw)
        self.tier.choices = [SelectChoice("", "Any tier"), *tier_choices()]
        self.sort.choices = [SelectChoice(key, label) for key, label in sorts]

    def chosen_tier(self) -> AccessTier | None:
        """The tier chosen (None: any, or a value that is not a tier)."""
        if not self.tier.data or not self.tier.validate(self):
            return None
        return AccessTier(self.tier.data)


# --- buttons ---------------------------------------------------------------------------------------


class ReasonForm(FlaskForm):
    """A step on a dataset or a pre-approval, with the reason (or note) it may take; the step
    itself is in the address."""

    reason = TextAreaField("Reason", validators=[Optional(), Length(max=MAX_REASON)])


class StewardForm(FlaskForm):
    """Program staff add a steward: someone holding the data steward role, by e-mail address."""

    email = StringField(
        "E-mail address",
        validators=[DataRequired(), Length(max=320)],
        description="Of a person holding the data steward role (an administrator grants it).",
    )


# --- the datasets a proposal plans to use -------------------------------------------------------------


class PickRow(Form):
    """One dataset of the catalog: chosen for the project or not, and what for."""

    dataset_id = HiddenField()
    chosen = BooleanField("Use it in this project")
    purpose = TextAreaField(
        "What the project will do with it",
        # No Optional(): it would stop the chain before the check that a chosen row has one.
        validators=[Length(max=2000)],
        render_kw={"rows": 2},
    )

    def validate_purpose(self, field: Field) -> None:
        if self.chosen.data and len((field.data or "").strip()) < 10:
            raise FieldError(
                "Say what the project will do with it (a sentence): its stewards read it."
            )


class PickForm(FlaskForm):
    """The catalog datasets a proposal plans to use, each with its purpose."""

    rows = FieldList(FormField(PickRow))

    def __init__(
        self,
        *args: Any,
        datasets: Iterable[Dataset],
        links: Mapping[int, ProposalDataset],
        **kw: Any,
    ) -> None:
        """One row per dataset of ``datasets`` (in order), filled from the proposal's ``links``."""
        super().__init__(*args, **kw)
        self.datasets = {d.id: d for d in datasets}
        if self.is_submitted():
            return
        self.rows.entries = []
        for dataset_id in self.datasets:
            link = links.get(dataset_id)
            self.rows.append_entry(
                {
                    "dataset_id": str(dataset_id),
                    "chosen": link is not None,
                    "purpose": link.purpose if link is not None else "",
                }
            )

    def validate_rows(self, field: Field) -> None:
        ids = [self.row_dataset_id(row) for row in self.rows]
        if any(i is None for i in ids) or len(set(ids)) != len(ids):
            raise FieldError("Choose datasets from the list shown.")

    def row_dataset_id(self, row: Any) -> int | None:
        """The dataset of a row (None when it is not one of the datasets offered)."""
        raw = str(row.form.dataset_id.data or "")
        if not raw.isdigit() or int(raw) not in self.datasets:
            return None
        return int(raw)

    def row_dataset(self, row: Any) -> Dataset | None:
        ident = self.row_dataset_id(row)
        return self.datasets.get(ident) if ident is not None else None

    def picks(self) -> dict[int, str]:
        """The chosen datasets and their purposes (``services.set_proposal_datasets``)."""
        out: dict[int, str] = {}
        for row in self.rows:
            ident = self.row_dataset_id(row)
            if ident is not None and row.form.chosen.data:
                out[ident] = (row.form.purpose.data or "").strip()
        return out
