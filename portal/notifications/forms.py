"""Forms: notification settings, the outbox search, and the retry button."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flask_wtf import FlaskForm
from wtforms import Field, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired

from portal.notifications.kinds import EmailKind
from portal.notifications.models import Delivery

DELIVERY_CHOICES = [SelectChoice(d.value, d.label) for d in Delivery]


def field_name(kind_key: str) -> str:
    """A form field name for a kind key (``institutions/x`` → ``kind__institutions__x``)."""
    return "kind__" + kind_key.replace("/", "__")


class PreferencesForm(FlaskForm):
    """One choice (immediately, daily digest, off) per optional kind; built for the kinds given."""

    @classmethod
    def for_kinds(
        cls, kinds: Iterable[EmailKind], current: Mapping[str, Delivery]
    ) -> PreferencesForm:
        kinds = list(kinds)

        class _Form(cls):  # type: ignore[valid-type,misc]
            pass

        for k in kinds:
            setattr(
                _Form,
                field_name(k.key),
                SelectField(
                    k.label,
                    choices=DELIVERY_CHOICES,
                    validators=[DataRequired()],
                    default=current.get(k.key, Delivery.IMMEDIATELY).value,
                    description=k.description,
                ),
            )
        form: PreferencesForm = _Form()
        form.kind_keys = [k.key for k in kinds]
        return form

    kind_keys: list[str]

    def kind_field(self, key: str) -> Field:
        return self[field_name(key)]

    def choices(self) -> dict[str, Delivery]:
        return {key: Delivery(self.kind_field(key).data) for key in self.kind_keys}
