"""Forms for agreement templates and their drafts, issuing an agreement, signing one, the
agreements list's kind filter and the public check of a signed agreement's SHA-256."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from portal.agreements.models import AgreementKind, AgreementTemplate

#: The longest agreement text accepted (a long contract is some tens of thousands of characters).
MAX_BODY = 200_000

BODY_HELP = (
    "Markdown: # headings, **bold**, lists. HTML is shown as text. Placeholders in double braces, "
    "e.g. {{ institution }}, are filled in when an agreement is issued (the list is beside the form)."
)


def _kind_choices(kinds: Sequence[AgreementKind]) -> list[SelectChoice]:
    return [SelectChoice(k.value, k.label) for k in kinds]


# --- templates and drafts ----------------------------------------------------------------------


class TemplateDetailsForm(FlaskForm):
    """What a template is called and whether it is issued by itself."""

    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    description = TextAreaField(
        "Description",
        validators=[Optional(), Length(max=4000)],
        description="For program staff: what the agreement is for and when it is used.",
    )
    auto_issue = BooleanField(
        "Issue automatically",
        description=(
            "Partnership: when an institution's application is approved; project contribution: when a "
            "project is approved. Only one template of a kind is issued automatically; choosing "
            "this one unsets the other."
        ),
    )

    def details(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``update_template``."""
        return {
            "title": self.title.data or "",
            "description": self.description.data or "",
            "auto_issue": bool(self.auto_issue.data),
        }


class TemplateForm(TemplateDetailsForm):
    """A new template: its kind, details and the text of its first (draft) version."""

    kind = SelectField(
        "Kind",
        choices=_kind_choices(list(AgreementKind)),
        validators=[DataRequired()],
    )
    body = TextAreaField(
        "Text of the first version",
        validators=[DataRequired(), Length(max=MAX_BODY)],
        description=BODY_HELP,
        render_kw={"rows": 16},
    )

    def details(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``create_template``."""
        return {
            **super().details(),
            "kind": AgreementKind(self.kind.data),
            "body": self.body.data or "",
        }


class DraftForm(FlaskForm):
    """The draft version of a template: its text, what changed, and whether agreements signed on
    earlier versions must be signed again."""

    body = TextAreaField(
        "Text",
        validators=[DataRequired(), Length(max=MAX_BODY)],
        description=BODY_HELP,
        render_kw={"rows": 18},
    )
    change_note = TextAreaField(
        "What changed",
        validators=[Optional(), Length(max=1000)],
        description="Shown to the people asked to sign the new version.",
    )
    reconsent_by = DateField(
        "Signed again by",
        validators=[Optional()],
        description=(
            "Leave empty if agreements signed on earlier versions stay valid. With a date, "
            "publishing re-issues each of them on this version: they count until that date."
        ),
    )

    def details(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``save_draft``."""
        return {
            "body": self.body.data or "",
            "change_note": self.change_note.data or "",
            "reconsent_by": self.reconsent_by.data,
        }


# --- issuing -----------------------------------------------------------------------------------


class KindForm(FlaskForm):
    """The first step of issuing: which kind of agreement (GET; nothing changes)."""

    class Meta:
        csrf = False

    kind = SelectField("Kind of agreement", validators=[DataRequired()])

    def __init__(self, *args: Any, kinds: Sequence[AgreementKind], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.kind.choices = [SelectChoice("", "Choose …"), *_kind_choices(kinds)]

    def chosen(self) -> AgreementKind | None:
        """The valid kind chosen, if any."""
        if not self.kind.data or not self.validate():
            return None
        return AgreementKind(self.kind.data)


class IssueForm(FlaskForm):
    """The template (one with a published version) and the subject to issue it for."""

    template_id = SelectField("Template", coerce=int, validators=[DataRequired()])
    subject_id = SelectField("For", coerce=int, validators=[DataRequired()])

    def __init__(
        self,
        *args: Any,
        templates: Sequence[AgreementTemplate],
        subjects: Sequence[tuple[int, str]],
        subject_label: str,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.template_id.choices = [
            SelectChoice(t.id, f"{t.title} (version {t.current.number})" if t.current else t.title)
            for t in templates
        ]
        self.subject_id.choices = [SelectChoice(i, label) for i, label in subjects]
        self.subject_id.label.text = subject_label


# --- signing -----------------------------------------------------------------------------------


class SignForm(FlaskForm):
    """The explicit act of signing: the signer's full name typed, a confirmation ticked, and the
    SHA-256 of the text the page showed (the service refuses any other)."""

    typed_name = StringField(
        "Your full name",
        validators=[DataRequired(), Length(max=200)],
        render_kw={"autocomplete": "name"},
    )
    confirm = BooleanField(
        "I have read this agreement and sign it",
        validators=[DataRequired(message="Tick the box to confirm that you sign.")],
    )
    sha256 = HiddenField(validators=[DataRequired(), Length(max=200)])


# --- lists and the public check ----------------------------------------------------------------


class KindFilterForm(FlaskForm):
    """The agreements list's kind filter, beside its search and state filter (GET)."""

    class Meta:
        csrf = False

    kind = SelectField(
        "Kind",
        choices=[SelectChoice("", "Any kind"), *_kind_choices(list(AgreementKind))],
        validators=[Optional()],
    )

    def chosen(self) -> AgreementKind | None:
        return AgreementKind(self.kind.data) if self.kind.data and self.validate() else None


class CheckForm(FlaskForm):
    """The public check of a signed agreement: the SHA-256 printed on its PDF (GET)."""

    class Meta:
        csrf = False

    sha256 = StringField(
        "SHA-256 of the agreement's text",
        validators=[DataRequired(), Length(max=200)],
        description="64 hexadecimal characters, as printed on the signed PDF.",
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
