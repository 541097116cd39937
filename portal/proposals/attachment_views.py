"""Uploading, downloading and removing a proposal's PDF attachments.

The list and the upload form are ``templates/proposals/_attachments.html``, which the proposal page
includes. Whoever may not see the proposal gets a 404 for its attachments, as for the proposal.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from werkzeug.datastructures import FileStorage
from wtforms import SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired

from portal.core.forms import ConfirmForm
from portal.core.permissions import check
from portal.core.web import commit_or_flash, load, login_required, post_action
from portal.extensions import db
from portal.proposals import attachments
from portal.proposals.models import Attachment, AttachmentKind, Proposal
from portal.proposals.permissions import can_attach_to_proposal, can_view_proposal

bp = Blueprint("attachments", __name__)

#: A download is a file to save, never a page: if a browser showed it anyway, it could run nothing
#: and load nothing.


# The form lives here rather than in forms.py: only these views use it, and its choices and limits
# come from the proposal. flask_wtf has no type information (cf. the override for portal.*.forms).
class AttachmentForm(FlaskForm):  # type: ignore[misc]
    """Attach one PDF of a given kind to a proposal."""

    kind = SelectField(
        "Kind of document",
        choices=[SelectChoice(k.value, k.label) for k in AttachmentKind],
        validators=[InputRequired("Choose what kind of document this is.")],
    )
    file = FileField(
        "PDF file",
        validators=[FileRequired("Choose a PDF file to upload.")],
        render_kw={"accept": "application/pdf"},
    )

    @classmethod
    def for_proposal(cls, proposal: Proposal, **kwargs: object) -> AttachmentForm:
        form = cls(**kwargs)
        form.file.description = (
            f"A PDF of at most {proposal.call.page_limit} pages and "
            f"{attachments.format_size(max_bytes())}, without encryption or JavaScript."
        )
        return form


def max_bytes() -> int:
    return int(current_app.config["ATTACHMENT_MAX_BYTES"])


@bp.app_template_global()
def attachment_form(proposal: Proposal) -> AttachmentForm:
    """A fresh upload form for ``proposal`` (the proposal page renders it in the partial)."""
    return AttachmentForm.for_proposal(proposal, formdata=None)


@bp.app_template_filter("filesize")
def filesize(size: int) -> str:
    return attachments.format_size(size)


def _visible_proposal(proposal_id: int) -> Proposal:
    """The proposal, for those who may see it; a 404 for everyone else ("not yours")."""
    proposal = load(Proposal, proposal_id)
    if not can_view_proposal(current_user, proposal):
        abort(404)
    return proposal


def _attachment_of(proposal: Proposal, attachment_id: int) -> Attachment:
    attachment = load(Attachment, attachment_id)
    if attachment.proposal_id != proposal.id:
        abort(404)
    return attachment


def _proposal_page(proposal: Proposal) -> str:
    return url_for("proposals.detail", proposal_id=proposal.id)


@bp.post("/proposals/<int:proposal_id>/attachments")
@login_required
def upload(proposal_id: int) -> ResponseReturnValue:
    """Attach a PDF; every refused file is a message on the proposal page, and changes nothing."""
    proposal = _visible_proposal(proposal_id)
    check(can_attach_to_proposal, current_user, proposal)
    back = _proposal_page(proposal)
    form = AttachmentForm.for_proposal(proposal)
    if not form.validate_on_submit():
        for name, errors in form.errors.items():
            for error in errors:
                flash(f"{form[name].label.text}: {error}", "danger")
        return redirect(back, 303)
    upload: FileStorage = form.file.data
    limit = max_bytes()
    data = upload.stream.read(limit + 1)  # one byte more than allowed is enough to refuse
    ok, attachment = commit_or_flash(
        lambda: attachments.add_attachment(
            db.session,
            proposal,
            actor=current_user,
            kind=AttachmentKind(form.kind.data),
            filename=upload.filename or "",
            data=data,
            folder=attachments.attachment_folder(),
            max_bytes=limit,
        )
    )
    if ok and attachment is not None:
        flash(f"{attachment.original_name} is attached ({attachment.pages} pages).", "success")
    return redirect(back, 303)


@bp.get("/proposals/<int:proposal_id>/attachments/<int:attachment_id>")
@login_required
def download(proposal_id: int, attachment_id: int) -> ResponseReturnValue:
    """The PDF, as a download, to those who may see the proposal."""
    proposal = _visible_proposal(proposal_id)
    attachment = _attachment_of(proposal, attachment_id)
    return attachments.download_response(attachment)


@bp.post("/proposals/<int:proposal_id>/attachments/<int:attachment_id>/remove")
@login_required
def remove(proposal_id: int, attachment_id: int) -> ResponseReturnValue:
    proposal = _visible_proposal(proposal_id)
    attachment = _attachment_of(proposal, attachment_id)
    name = attachment.original_name
    return post_action(
        ConfirmForm(),
        lambda: attachments.remove_attachment(
            db.session, attachment, actor=current_user, folder=attachments.attachment_folder()
        ),
        back=_proposal_page(proposal),
        done=f"{name} is removed.",
    )
