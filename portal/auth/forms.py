"""Forms for starting a login, managing identities, identity providers and users."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from portal.auth.models import ProviderKind, TokenAuthMethod, UserinfoMode


class FindInstitutionForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search form changes nothing

    q = StringField(
        "Find your institution",
        validators=[Optional(), Length(max=100)],
        description="Its name, or your e-mail address or domain.",
    )


class StartLoginForm(FlaskForm):
    """Starting a login (or linking an identity) stores login state: a POST with a CSRF token."""

    next = HiddenField(validators=[Optional(), Length(max=500)])
    institution_id = IntegerField(validators=[Optional()])


class DisableUserForm(FlaskForm):
    reason = TextAreaField("Reason", validators=[Optional(), Length(max=500)])


class NameForm(FlaskForm):
    name = StringField(
        "Your name",
        validators=[Optional(), Length(max=200)],
        description="As the portal shows it to others. Leave empty to take your identity "
        "provider's again at your next login.",
    )


class ProviderForm(FlaskForm):
    slug = StringField(
        "Short name",
        validators=[DataRequired(), Length(max=40)],
        description="Lower-case letters, digits, dashes. The redirect URI is /auth/callback/<short name>.",
    )
    name = StringField("Name shown on the login page", validators=[DataRequired(), Length(max=200)])
    kind = SelectField(
        "Kind",
        choices=[SelectChoice(k.value, k.label) for k in ProviderKind],
        validators=[DataRequired()],
    )
    issuer = StringField(
        "Issuer",
        validators=[DataRequired(), Length(max=500)],
        description="Exactly as the provider's discovery document and ID tokens state it.",
    )
    discovery_url = StringField(
        "Discovery URL",
        validators=[Optional(), Length(max=500)],
        description="Leave empty for <issuer>/.well-known/openid-configuration.",
    )
    client_id = StringField("Client id", validators=[DataRequired(), Length(max=255)])
    scopes = StringField(
        "Scopes", validators=[DataRequired(), Length(max=300)], default="openid email profile"
    )
    algorithms = StringField(
        "ID-token algorithms",
        validators=[DataRequired(), Length(max=100)],
        default="RS256",
        description="Space-separated; only these are accepted from this provider.",
    )
    enabled = BooleanField("Enabled (shown on the login page)", default=True)
    userinfo_mode = SelectField(
        "Ask UserInfo for the person's claims",
        choices=[SelectChoice(m.value, m.label) for m in UserinfoMode],
        default=UserinfoMode.ALWAYS.value,
        description="Certified providers, Okta and many campus set-ups put e-mail, name and "
        "affiliation in UserInfo only.",
    )
    token_auth_method = SelectField(
        "Client authentication at the token endpoint",
        choices=[SelectChoice(m.value, m.label) for m in TokenAuthMethod],
        default=TokenAuthMethod.CLIENT_SECRET_BASIC.value,
        description="For private_key_jwt, register the portal's key set URL /.well-known/jwks.json "
        "with the provider instead of a secret.",
    )
    logout_at_provider = BooleanField(
        "Log out at the provider too (where it offers RP-initiated logout)", default=False
    )
    served_text = TextAreaField(
        "Institutions served",
        validators=[Optional(), Length(max=20000)],
        description="One per line: the institution's ROR id, then (for a federation proxy) the "
        "campus entity id sent in the idp claim.",
    )

    def served_lines(self) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for line in (self.served_text.data or "").splitlines():
            parts = line.split()
            if parts:
                out.append((parts[0], parts[1] if len(parts) > 1 else None))
        return out
