"""The start page, the health check and the dashboard; the domains fill the last two with what
they register (``portal.core.navigation``)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from portal.core import navigation
from portal.core.web import login_required

bp = Blueprint("core", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for(".dashboard"))
    return render_template(
        "core/index.html", stats=navigation.stats(), next=request.args.get("next")
    )


@bp.get("/dashboard")
@login_required
def dashboard() -> ResponseReturnValue:
    return render_template("core/dashboard.html", panels=navigation.panels_for(current_user))
