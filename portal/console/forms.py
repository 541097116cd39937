"""The console's forms: deciding a request to join, and the identity-provider mapping (the entity
id itself is checked by ``portal.console.services.normalise_entity_id``)."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

ENTITY_ID_HELP = (
    "The campus identity provider's SAML entity id as the federation publishes it: an https URL "
    "(https://idp.example.edu/idp/shibboleth) or a URN (urn:mace:incommon:example.edu)."
)


class DecisionForm(FlaskForm):
    """Approve or reject one request to join the institution."""

    decision = SelectField(
        "Decision",
        choices=[SelectChoice("approve", "Approve"), SelectChoice("reject", "Reject")],
        validators=[DataRequired()],
    )
    note = TextAreaField("Note (required to reject)", validators=[Optional(), Length(max=1000)])


class EntityIdForm(FlaskForm):
    """Set the campus entity id of one federation login of the institution."""

    entity_id = StringField(
        "Campus entity id",
        validators=[DataRequired(), Length(max=500)],
        description=ENTITY_ID_HELP,
    )


class NewMappingForm(FlaskForm):
    """Map the institution to another enabled federation login."""

    provider_id = SelectField("Federation login", coerce=int, validators=[DataRequired()])
    entity_id = StringField(
        "Campus entity id",
        validators=[DataRequired(), Length(max=500)],
        description=ENTITY_ID_HELP,
    )

    def __init__(self, *args: Any, providers: list[tuple[int, str]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.provider_id.choices = [SelectChoice(i, name) for i, name in providers]
