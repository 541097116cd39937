"""Forms of the reviewer pool: a reviewer's profile and declared conflicts, and the program
officer's assignment and waiver forms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    DateField,
    HiddenField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from portal.institutions.models import Institution
from portal.reviews.models import EXPERTISE


class CheckboxesField(SelectMultipleField):
    """A multiple choice shown as a list of checkboxes."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class ProfileForm(FlaskForm):
    """A reviewer's expertise (from the controlled list and their own keywords) and load limit."""

    expertise = CheckboxesField(
        "Expertise", choices=[SelectChoice(w, w) for w in EXPERTISE], validators=[Optional()]
    )
    keywords = StringField(
        "Other keywords",
        validators=[Optional(), Length(max=500)],
        description="Your own, separated by commas (e.g. protein folding, tokenizers).",
    )
    load_limit = IntegerField(
        "Load limit",
        validators=[DataRequired("How many proposals per call?"), NumberRange(min=1, max=50)],
        description="The most proposals you review per call (1 to 50).",
    )

    @classmethod
    def for_profile(cls, expertise: Sequence[str], load_limit: int) -> ProfileForm:
        listed = [w for w in expertise if w in EXPERTISE]
        own = [w for w in expertise if w not in EXPERTISE]
        data = {"expertise": listed, "keywords": ", ".join(own), "load_limit": load_limit}
        return cls(formdata=None, data=data)

    def words(self) -> list[str]:
        """Every keyword chosen or typed."""
        own = [w.strip() for w in (self.keywords.data or "").split(",")]
        return [*(self.expertise.data or []), *(w for w in own if w)]


class DeclareConflictForm(FlaskForm):
    """A person (a portal user, by e-mail) or an institution the reviewer must not review."""

    email = StringField(
        "A person's e-mail address",
        validators=[Optional(), Email("Enter an e-mail address."), Length(max=320)],
        description="Someone with an account on the portal.",
    )
    institution_id = SelectField("Or an institution", validators=[Optional()])
    reason = StringField(
        "Why (optional)",
        validators=[Optional(), Length(max=500)],
        description="E.g. a co-author in the last three years, a former student.",
    )

    def __init__(self, *args: Any, institutions: Sequence[Institution] = (), **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.institution_id.choices = [SelectChoice("", "—")] + [
            SelectChoice(str(i.id), i.name) for i in institutions
        ]

    def validate(self, extra_validators: Any = None) -> bool:
        if not super().validate(extra_validators):
            return False
        if bool((self.email.data or "").strip()) == bool(self.institution_id.data):
            self.email.errors.append("Name either a person or an institution.")
            return False
        return True


class AssignForm(FlaskForm):
    """Ask one reviewer to review the proposal, by a date."""

    reviewer_id = HiddenField(validators=[DataRequired()])
    due_on = DateField(
        "Reviews due",
        validators=[Optional()],
        description="Leave empty for the call's review deadline (or three weeks).",
    )


class WaiveForm(FlaskForm):
    """Let a reviewer review the proposal despite a conflict, with a written reason."""

    reviewer_id = HiddenField(validators=[DataRequired()])
    reason = TextAreaField(
        "Why the conflict does not matter here",
        validators=[DataRequired("Write a reason."), Length(min=10, max=1000)],
    )
