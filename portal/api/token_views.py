"""The administrators' pages for API tokens: the list (with each token's role, what it covers and
its last use), a new token — a resource operator's or a storage operator's — (its secret shown
once, on the page that answers the form), and revocation."""

from __future__ import annotations

from flask import Blueprint, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select

from portal.api import services
from portal.api.forms import TokenForm
from portal.api.models import ApiToken
from portal.api.permissions import can_manage_tokens
from portal.core.forms import ConfirmForm
from portal.core.permissions import check
from portal.core.web import commit_or_flash, load, login_required, post_action
from portal.datasets.models import Dataset
from portal.extensions import db
from portal.proposals.models import Resource

bp = Blueprint("api_tokens", __name__, url_prefix="/admin/api-tokens")

#: The most tokens the list shows (there are a handful: one or two per cluster).
SHOWN = 500


@bp.get("/")
@login_required
def tokens() -> ResponseReturnValue:
    check(can_manage_tokens, current_user)
    rows = db.session.scalars(services.tokens().limit(SHOWN)).all()
    return render_template("api/tokens.html", tokens=rows, form=ConfirmForm())


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new_token() -> ResponseReturnValue:
    check(can_manage_tokens, current_user)
    resources = db.session.scalars(
        select(Resource).where(Resource.active.is_(True)).order_by(Resource.cluster, Resource.id)
    ).all()
    datasets = db.session.scalars(select(Dataset).order_by(Dataset.name, Dataset.id)).all()
    form = TokenForm(resources=resources, datasets=datasets)
    if form.validate_on_submit():
        chosen = [r for r in resources if r.id in set(form.resources.data or ())]
        chosen_datasets = [d for d in datasets if d.id in set(form.datasets.data or ())]
        ok, made = commit_or_flash(
            lambda: services.create_token(
                db.session,
                name=form.name.data or "",
                scope=form.chosen_scope,
                resources=chosen,
                datasets=chosen_datasets,
                expires_on=form.expires_on.data,
                actor=current_user,
            )
        )
        if ok and made is not None:
            token, secret = made
            # The secret is in this page only: never in a URL, a flash message or the session.
            return render_template("api/token_created.html", token=token, secret=secret)
    return render_template("api/token_form.html", form=form), (
        422 if request.method == "POST" else 200
    )


@bp.post("/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int) -> ResponseReturnValue:
    check(can_manage_tokens, current_user)
    token = load(ApiToken, token_id)
    return post_action(
        ConfirmForm(),
        lambda: services.revoke_token(db.session, token, actor=current_user),
        back=url_for(".tokens"),
        done=lambda t: f"The token {t.prefix}… is revoked.",
    )
