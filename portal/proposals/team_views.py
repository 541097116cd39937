"""Pages for a proposal's team: inviting people by e-mail, withdrawing and re-sending invitations,
handing the PI role on, removing people, and the page an invitation's link opens.

The team's own forms live here, beside the only views that use them; the team panel of the
proposal page (``templates/proposals/_team.html``) gets them from ``team_forms(proposal)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from portal.core.forms import ConfirmForm
from portal.core.models import utcnow
from portal.core.permissions import check
from portal.core.web import commit_or_flash, load, login_required, require_valid
from portal.extensions import db
from portal.proposals import team
from portal.proposals.models import (
    Invitation,
    InvitationState,
    Proposal,
    TeamMember,
    TeamRole,
)
from portal.proposals.permissions import (
    can_accept_invitation,
    can_invite_to_proposal,
    can_transfer_pi,
    can_view_proposal,
)

bp = Blueprint("team", __name__)


# --- forms -------------------------------------------------------------------------------------


class InviteForm(FlaskForm):  # type: ignore[misc]
    """Invite an address to the team in a role (co-investigator or member)."""

    email = EmailField(
        "E-mail address",
        validators=[DataRequired("Give the address to invite."), Length(max=320)],
        description="The person accepts while logged in with an account whose verified address "
        "is this one.",
    )
    role = SelectField(
        "Role",
        choices=[SelectChoice(r.value, r.label) for r in team.INVITABLE_ROLES],
        default=TeamRole.MEMBER.value,
        description="Co-investigators edit the proposal; members only view it.",
    )


class ResendForm(FlaskForm):  # type: ignore[misc]
    """Withdraw an invitation and send a new one, to this address, in the same role."""

    email = EmailField(
        "New address", validators=[DataRequired("Give the address to send to."), Length(max=320)]
    )


class TransferForm(FlaskForm):  # type: ignore[misc]
    """Hand the PI role to one of the proposal's co-investigators."""

    to_user_id = SelectField("New principal investigator", coerce=int)

    def __init__(self, *args: Any, proposal: Proposal, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.to_user_id.choices = [
            SelectChoice(m.user_id, m.user.display_name)
            for m in proposal.team
            if m.role == TeamRole.CO_PI
        ]


@dataclass(frozen=True)
class TeamForms:
    """The empty forms of the team panel."""

    invite: InviteForm
    transfer: TransferForm
    confirm: ConfirmForm


def team_forms(proposal: Proposal) -> TeamForms:
    return TeamForms(InviteForm(), TransferForm(proposal=proposal), ConfirmForm())


def invitation_expired(invitation: Invitation) -> bool:
    return invitation.expires_at <= utcnow()


@bp.app_context_processor
def _team_helpers() -> dict[str, Any]:
    return {"team_forms": team_forms, "invitation_expired": invitation_expired}


# --- helpers -----------------------------------------------------------------------------------


def _team_page(proposal_id: int) -> str:
    """The proposal page, at its team panel: where every team action returns."""
    return url_for("proposals.detail", proposal_id=proposal_id, _anchor="team")


def _back(proposal_id: int) -> ResponseReturnValue:
    return redirect(_team_page(proposal_id), 303)


def _valid_or_flashed(form: FlaskForm) -> bool:
    """Whether the POSTed ``form`` is valid; its field errors are flashed when not. A missing or
    expired CSRF token is a 400, as everywhere."""
    if form.validate_on_submit():
        return True
    if "csrf_token" in form.errors:
        require_valid(form)
    for errors in form.errors.values():
        for error in errors:
            flash(str(error), "danger")
    return False


def _invitation(proposal: Proposal, invitation_id: int) -> Invitation:
    """The invitation ``invitation_id`` of ``proposal``; 404 when it is another proposal's."""
    invitation = load(Invitation, invitation_id)
    if invitation.proposal_id != proposal.id:
        abort(404)
    return invitation


def mask_email(address: str) -> str:
    """``ann.lee@uni.edu`` → ``a***@uni.edu``: enough to recognise one's own address."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


# --- the team panel's actions ------------------------------------------------------------------


@bp.post("/proposals/<int:proposal_id>/team/invite")
@login_required
def invite(proposal_id: int) -> ResponseReturnValue:
    proposal = load(Proposal, proposal_id, can_view_proposal)
    check(can_invite_to_proposal, current_user, proposal)
    form = InviteForm()
    if not _valid_or_flashed(form):
        return _back(proposal.id)
    ok, result = commit_or_flash(
        lambda: team.invite(
            db.session,
            proposal,
            actor=current_user,
            email=form.email.data or "",
            role=TeamRole(form.role.data),
        )
    )
    if ok and result is not None:
        invitation, _ = result
        flash(f"Invitation sent to {invitation.email}.", "success")
    return _back(proposal.id)


@bp.post("/proposals/<int:proposal_id>/team/invitations/<int:invitation_id>/revoke")
@login_required
def revoke(proposal_id: int, invitation_id: int) -> ResponseReturnValue:
    proposal = load(Proposal, proposal_id, can_view_proposal)
    invitation = _invitation(proposal, invitation_id)
    require_valid(ConfirmForm())
    ok, _ = commit_or_flash(lambda: team.revoke(db.session, invitation, actor=current_user))
    if ok:
        flash(
            f"The invitation to {invitation.email} is withdrawn; its link no longer works.",
            "success",
        )
    return _back(proposal.id)


@bp.post("/proposals/<int:proposal_id>/team/invitations/<int:invitation_id>/resend")
@login_required
def resend(proposal_id: int, invitation_id: int) -> ResponseReturnValue:
    proposal = load(Proposal, proposal_id, can_view_proposal)
    invitation = _invitation(proposal, invitation_id)
    form = ResendForm()
    if not _valid_or_flashed(form):
        return _back(proposal.id)
    ok, result = commit_or_flash(
        lambda: team.resend(db.session, invitation, actor=current_user, email=form.email.data or "")
    )
    if ok and result is not None:
        new, _ = result
        flash(
            f"The invitation to {invitation.email} is withdrawn and a new one sent to {new.email}.",
            "success",
        )
    return _back(proposal.id)


@bp.post("/proposals/<int:proposal_id>/team/transfer")
@login_required
def transfer(proposal_id: int) -> ResponseReturnValue:
    proposal = load(Proposal, proposal_id, can_view_proposal)
    check(can_transfer_pi, current_user, proposal)
    form = TransferForm(proposal=proposal)
    if not _valid_or_flashed(form):
        return _back(proposal.id)
    ok, result = commit_or_flash(
        lambda: team.transfer_pi(
            db.session, proposal, actor=current_user, to_user_id=form.to_user_id.data
        )
    )
    if ok and result is not None:
        flash(
            f"{result.user.display_name} is now the principal investigator; you are a "
            "co-investigator.",
            "success",
        )
    return _back(proposal.id)


@bp.post("/proposals/<int:proposal_id>/team/members/<int:member_id>/remove")
@login_required
def remove_member(proposal_id: int, member_id: int) -> ResponseReturnValue:
    proposal = load(Proposal, proposal_id, can_view_proposal)
    member = load(TeamMember, member_id)
    if member.proposal_id != proposal.id:
        abort(404)
    require_valid(ConfirmForm())
    name = member.user.display_name
    ok, _ = commit_or_flash(
        lambda: team.remove_member(db.session, proposal, actor=current_user, member_id=member.id)
    )
    if ok:
        flash(f"{name} is no longer on the team.", "success")
    return _back(proposal.id)


# --- the invitation's link ---------------------------------------------------------------------


def _unusable(invitation: Invitation) -> ResponseReturnValue | None:
    """The page for a link that no longer works (used, withdrawn, expired), or None."""
    mine = invitation.accepted_by_id == current_user.id
    if invitation.state == InvitationState.ACCEPTED:
        message = (
            "You have already accepted this invitation."
            if mine
            else "This invitation has already been used. Each link works once; ask the "
            "proposal's principal investigator for an invitation of your own."
        )
        return _page(invitation, message, 409, show_proposal=mine)
    if invitation.state == InvitationState.REVOKED:
        return _page(
            invitation,
            "This invitation was withdrawn. If you still expect to join, ask the proposal's "
            "principal investigator for a new one.",
            410,
        )
    if invitation_expired(invitation):
        return _page(
            invitation,
            "This invitation has expired. Ask the proposal's principal investigator to send "
            "you a new one.",
            410,
        )
    return None


def _page(
    invitation: Invitation, message: str | None, status: int, *, show_proposal: bool = False
) -> ResponseReturnValue:
    return render_template(
        "proposals/invitation.html",
        invitation=invitation,
        message=message,
        show_proposal=show_proposal,
        form=ConfirmForm(),
    ), status


def _not_for_you(invitation: Invitation) -> ResponseReturnValue | None:
    """None when the logged-in person may accept ``invitation``; a page when they are on the team
    already; for anyone else a 403 (audited) saying which address was invited and what to do."""
    if any(m.user_id == current_user.id for m in invitation.proposal.team):
        return _page(
            invitation, "You are already on this proposal's team.", 409, show_proposal=True
        )
    if can_accept_invitation(current_user, invitation):
        return None
    invited = mask_email(invitation.email)
    inviter = invitation.invited_by.display_name if invitation.invited_by else "the inviter"
    own = current_user.email
    if own and own.lower() == invitation.email.lower() and not current_user.email_verified:
        message = (
            f"This invitation was sent to {invited}, which is your address, but it is not "
            "verified yet. Verify it on your account page, then open the link again."
        )
    else:
        message = (
            f"This invitation was sent to {invited}, not to the address of the account you are "
            "logged in with. Log out and log in with the account whose verified address is "
            f"{invited}, or ask {inviter} to send the invitation to your own address."
        )
    abort(403, description=message)


def _open(token: str) -> Invitation:
    invitation = team.invitation_for_token(db.session, token)
    if invitation is None:
        abort(404, description="This invitation link is not valid. Check that it is complete.")
    return invitation


@bp.get("/invitations/<token>")
@login_required
def accept(token: str) -> ResponseReturnValue:
    """What the link in the mail opens: the invitation, and a button that accepts it (POST)."""
    invitation = _open(token)
    refused = _unusable(invitation) or _not_for_you(invitation)
    if refused is not None:
        return refused
    return _page(invitation, None, 200)


@bp.post("/invitations/<token>")
@login_required
def accept_post(token: str) -> ResponseReturnValue:
    """Accept: join the team in the invited role, then go to the proposal."""
    invitation = _open(token)
    require_valid(ConfirmForm())
    refused = _unusable(invitation) or _not_for_you(invitation)
    if refused is not None:
        return refused
    ok, _ = commit_or_flash(lambda: team.accept(db.session, invitation, actor=current_user))
    if not ok:
        return redirect(url_for(".accept", token=token), 303)
    flash(
        f"You joined the team of “{invitation.proposal.title}” as {invitation.role.label.lower()}.",
        "success",
    )
    return redirect(_team_page(invitation.proposal_id), 303)
