"""Agreement pages: the list of agreements and the "to sign" list, one agreement with its parties,
signing (with a fresh login) and declining, withdrawing, the signed PDF, verifying the text against
its hashes (and a public check of a PDF's hash), and for program staff the templates, their
versions, publishing and issuing."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.orm import contains_eager, defer, joinedload, selectinload

from portal.agreements import services, text
from portal.agreements.forms import (
    CheckForm,
    DraftForm,
    IssueForm,
    KindFilterForm,
    KindForm,
    SignForm,
    TemplateDetailsForm,
    TemplateForm,
)
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    Signature,
    SignatureState,
    SubjectType,
    TemplateVersion,
    VersionState,
)
from portal.agreements.permissions import (
    can_manage_agreements,
    can_sign,
    can_view_agreement,
    can_view_version,
    signable_signatures,
    visible_agreements,
)
from portal.agreements.workflow import AGREEMENT_WORKFLOW, SIGNATURE_WORKFLOW, VERSION_WORKFLOW
from portal.auth.sessions import login_age
from portal.core.errors import DomainError, NotFoundError
from portal.core.forms import ActionForm, ConfirmForm
from portal.core.listing import ListSpec, csv_response, filtered, list_page
from portal.core.models import utcnow
from portal.core.permissions import check
from portal.core.roles import is_logged_in
from portal.core.web import form_page, load, login_required, post_action
from portal.core.workflow import Step
from portal.extensions import db
from portal.institutions.models import Institution, InstitutionState
from portal.institutions.permissions import can_view_institution
from portal.proposals.models import Proposal, ProposalState
from portal.proposals.permissions import can_view_proposal

bp = Blueprint("agreements", __name__, url_prefix="/agreements")

#: The states in which an agreement was fully signed: it has a PDF and can be verified.
SIGNED_STATES = (AgreementState.ACTIVE, AgreementState.SUPERSEDED)

#: The kinds program staff issue from these pages, and the subjects each is issued for
#: (data-use agreements are issued by the datasets domain, for an access request).
ISSUABLE = (AgreementKind.PARTNERSHIP, AgreementKind.CONTRIBUTION)
#: Institutions a partnership agreement may be issued for: approved, or a partner (again).
PARTNERSHIP_SUBJECT_STATES = (
    InstitutionState.APPROVED,
    InstitutionState.PARTNER,
    InstitutionState.SUSPENDED,
)

#: Loader options for an agreement shown with its parties (no query per party).
AGREEMENT_DETAIL = (
    selectinload(Agreement.signatures).selectinload(Signature.signed_by),
    selectinload(Agreement.signatures).selectinload(Signature.user),
    selectinload(Agreement.version).selectinload(TemplateVersion.template),
    selectinload(Agreement.institution),
    selectinload(Agreement.proposal).selectinload(Proposal.team),
    selectinload(Agreement.replaces),
)

AGREEMENTS = ListSpec(
    search=(Agreement.title,),
    state_column=Agreement.state,
    states=AgreementState,
    sorts={
        "newest": (Agreement.created_at.desc(), Agreement.id.desc()),
        "oldest": (Agreement.created_at, Agreement.id),
        "title": (Agreement.title, Agreement.id),
    },
    placeholder="Title",
)

TO_SIGN = ListSpec(
    search=(Agreement.title,),
    sorts={"waiting": (Agreement.state_changed_at, Signature.id)},
    placeholder="Title",
)

TEMPLATES = ListSpec(
    search=(AgreementTemplate.title, AgreementTemplate.description),
    sorts={
        "kind": (AgreementTemplate.kind, AgreementTemplate.title, AgreementTemplate.id),
        "title": (AgreementTemplate.title, AgreementTemplate.id),
    },
    placeholder="Title or description",
)


_HEADING = re.compile(r"<(/?)h([1-6])>")


@bp.app_template_filter("demote_headings")
def demote_headings(html: Markup, by: int = 2) -> Markup:
    """Rendered Markdown (``|markdown``) with its headings ``by`` levels lower, so an agreement's
    own "# Title" sits under the page's headings instead of beside its one h1."""
    return Markup(  # noqa: S704 - only the tags the Markdown renderer wrote are renamed
        _HEADING.sub(lambda m: f"<{m[1]}h{min(int(m[2]) + by, 6)}>", str(html))
    )


def _visible(agreement_id: int) -> Agreement:
    """The agreement, to those who may see it (an audited 403 for the others)."""
    return load(Agreement, agreement_id, can_view_agreement, *AGREEMENT_DETAIL)


def _detail_url(agreement: Agreement) -> str:
    return url_for(".detail", agreement_id=agreement.id)


# --- lists -------------------------------------------------------------------------------------


def _waiting_on(agreement: Agreement) -> str:
    return ", ".join(s.party for s in agreement.next_signatures)


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    """The agreements the current user may see: search, state and kind, sort, paging; program
    staff download them as CSV."""
    kinds = KindFilterForm(request.args)
    # The list never shows an agreement's text (the largest column by far): not read for it.
    stmt = visible_agreements(current_user).options(
        defer(Agreement.text), selectinload(Agreement.signatures)
    )
    kind = kinds.chosen()
    if kind is not None:
        stmt = stmt.where(Agreement.kind == kind)
    if request.args.get("format") == "csv":
        check(can_manage_agreements, current_user)
        return csv_response(
            "agreements.csv",
            [
                "id",
                "title",
                "kind",
                "state",
                "subject_type",
                "subject_id",
                "issued_at",
                "completed_at",
                "waiting_on",
                "sha256",
            ],
            db.session.scalars(filtered(stmt, AGREEMENTS)).all(),
            lambda a: [
                a.id,
                a.title,
                a.kind.value,
                a.state.value,
                a.subject_type.value,
                a.subject_id,
                a.created_at.isoformat(),
                a.completed_at.isoformat() if a.completed_at else "",
                _waiting_on(a),
                a.text_sha256,
            ],
        )
    listing = list_page(stmt, AGREEMENTS)
    waiting_for_me = db.session.scalar(
        select(func.count()).select_from(signable_signatures(current_user).subquery())
    )
    return render_template(
        "agreements/index.html",
        page=listing.page,
        form=listing.form,
        kinds=kinds,
        sort=listing.sort,
        sorts=list(AGREEMENTS.sorts),
        now=utcnow(),
        staff=can_manage_agreements(current_user),
        waiting_for_me=waiting_for_me or 0,
    )


def _waiting_on_others(user: Any) -> Select[Agreement]:
    """Agreements still being signed that ``user`` signed or is named on, and that now wait on
    somebody else (none of their slots is ``user``'s to sign now)."""
    mine_now = signable_signatures(user).with_only_columns(Signature.agreement_id).correlate(None)
    party = exists().where(
        Signature.agreement_id == Agreement.id,
        or_(Signature.signed_by_id == user.id, Signature.user_id == user.id),
    )
    return (
        visible_agreements(user)
        .where(Agreement.state == AgreementState.AWAITING, party, Agreement.id.not_in(mine_now))
        # Joined, not a query of their own: the page sends as many statements whether or not
        # anything waits on others.
        .options(defer(Agreement.text), joinedload(Agreement.signatures))
        .order_by(Agreement.state_changed_at, Agreement.id)
    )


#: How many agreements waiting on others the "to sign" page lists.
WAITING_LIMIT = 50


@bp.get("/to-sign")
@login_required
def mine() -> ResponseReturnValue:
    """The signatures whose turn has come and that the current user may give, each with a Sign
    button; below, their agreements that now wait on somebody else."""
    listing = list_page(
        signable_signatures(current_user).options(
            selectinload(Signature.agreement).selectinload(Agreement.signatures)
        ),
        TO_SIGN,
    )
    others = (
        db.session.scalars(_waiting_on_others(current_user).limit(WAITING_LIMIT)).unique().all()
    )
    return render_template(
        "agreements/mine.html",
        page=listing.page,
        form=listing.form,
        others=others,
        limit=WAITING_LIMIT,
    )


# --- one agreement -----------------------------------------------------------------------------


def _subject(agreement: Agreement) -> tuple[str, str | None]:
    """What the agreement is about, and its page when the current user may see it."""
    inst, proposal = agreement.institution, agreement.proposal
    if agreement.subject_type == SubjectType.PROJECT and proposal is not None:
        url = url_for("proposals.detail", proposal_id=proposal.id)
        return proposal.title, url if can_view_proposal(current_user, proposal) else None
    if agreement.subject_type == SubjectType.INSTITUTION and inst is not None:
        url = url_for("institutions.detail", institution_id=inst.id)
        return inst.name, url if can_view_institution(current_user, inst) else None
    return f"{agreement.subject_type.label} {agreement.subject_id}", None


@bp.get("/<int:agreement_id>")
@login_required
def detail(agreement_id: int) -> ResponseReturnValue:
    """The agreement: its text and hash, what it is about, re-consent, its parties in order, and
    what the viewer may do (sign, decline, withdraw; the PDF and verification once signed)."""
    agreement = _visible(agreement_id)
    subject, subject_url = _subject(agreement)
    actions = AGREEMENT_WORKFLOW.available(current_user, agreement)
    successor = db.session.scalar(
        select(Agreement).where(Agreement.replaces_id == agreement.id).order_by(Agreement.id.desc())
    )
    replaced = agreement.replaces
    return render_template(
        "agreements/detail.html",
        agreement=agreement,
        subject=subject,
        subject_url=subject_url,
        sign_now=next((s for s in agreement.next_signatures if can_sign(current_user, s)), None),
        decline=[(n, t) for n, t in actions if n == "decline"],
        withdraw=[(n, t) for n, t in actions if n == "withdraw"],
        staff=can_manage_agreements(current_user),
        signed=agreement.state in SIGNED_STATES,
        replaced=replaced if replaced and can_view_agreement(current_user, replaced) else None,
        successor=successor
        if successor is not None and can_view_agreement(current_user, successor)
        else None,
    )


def _reauth_window() -> dt.timedelta:
    return dt.timedelta(minutes=float(current_app.config["SIGN_REAUTH_MINUTES"]))


def _login_too_old() -> bool:
    """Whether the current login is older than signing allows (or its age is unknown)."""
    age = login_age()
    return age is None or age > _reauth_window()


def _why_not_now(signature: Signature) -> str | None:
    """Why the pending ``signature`` cannot be given now (the workflow's own check: the agreement
    is no longer being signed, an earlier party has not signed, the institution is suspended)."""
    step: Step[Signature, SignatureState] = Step(
        signature,
        "sign",
        SIGNATURE_WORKFLOW.transitions["sign"],
        signature.state,
        current_user,
        None,
    )
    try:
        SIGNATURE_WORKFLOW.checks["sign"](step)
    except DomainError as e:
        return str(e)
    return None


def _signed_message(signature: Signature) -> str:
    agreement = signature.agreement
    if agreement.state == AgreementState.ACTIVE:
        return "You signed. Every party has signed: the agreement is in force."
    return f"You signed. The agreement now waits for: {_waiting_on(agreement)}."


@bp.route("/signatures/<int:signature_id>/sign", methods=["GET", "POST"])
@login_required
def sign(signature_id: int) -> ResponseReturnValue:
    """The full text, and the explicit act of signing it: the signer's typed full name, a ticked
    confirmation and the SHA-256 of the text shown. Only within ``SIGN_REAUTH_MINUTES`` of logging
    in: an older login logs in again first."""
    signature = load(
        Signature,
        signature_id,
        can_sign,
        selectinload(Signature.agreement).selectinload(Agreement.signatures),
        selectinload(Signature.signed_by),
    )
    agreement = signature.agreement
    reauth = _login_too_old()
    if request.method == "POST" and reauth:
        flash(
            f"To sign, your login must be less than {current_app.config['SIGN_REAUTH_MINUTES']} "
            "minutes old: log in again, then sign. Nothing was signed.",
            "danger",
        )
        return redirect(url_for(".sign", signature_id=signature.id)), 303
    form = SignForm()
    return form_page(
        form,
        lambda: services.sign(
            db.session,
            signature,
            actor=current_user,
            typed_name=form.typed_name.data or "",
            confirmed=bool(form.confirm.data),
            shown_sha256=form.sha256.data or "",
            ip=request.remote_addr,
            user_agent=request.user_agent.string,
        ),
        template="agreements/sign.html",
        done=lambda s: (_signed_message(s), _detail_url(s.agreement)),
        signature=signature,
        agreement=agreement,
        # The hash of the very text this page shows: a signature is bound to what was read.
        shown_sha256=text.sha256(agreement.text),
        reauth=reauth,
        reauth_url=url_for("auth.login", reauth=1, next=request.path),
        reauth_minutes=current_app.config["SIGN_REAUTH_MINUTES"],
        why_not=_why_not_now(signature) if signature.state == SignatureState.PENDING else None,
        may_decline=AGREEMENT_WORKFLOW.may(current_user, agreement, "decline"),
        decline=AGREEMENT_WORKFLOW.transitions["decline"],
    )


@bp.post("/<int:agreement_id>/decline")
@login_required
def decline(agreement_id: int) -> ResponseReturnValue:
    """A party whose turn it is declines to sign, with a reason."""
    agreement = _visible(agreement_id)
    form = ActionForm()
    return post_action(
        form,
        lambda: services.decline(
            db.session, agreement, actor=current_user, reason=form.reason.data or ""
        ),
        back=_detail_url(agreement),
        done="You declined to sign. The other parties and program staff are told, with your reason.",
    )


@bp.post("/<int:agreement_id>/withdraw")
@login_required
def withdraw(agreement_id: int) -> ResponseReturnValue:
    """Program staff withdraw an agreement still being signed, with a reason."""
    agreement = _visible(agreement_id)
    form = ActionForm()
    return post_action(
        form,
        lambda: services.withdraw(
            db.session, agreement, actor=current_user, reason=form.reason.data or ""
        ),
        back=_detail_url(agreement),
        done="The agreement is withdrawn: it takes no more signatures.",
    )


def _signed_only(agreement: Agreement) -> None:
    if agreement.state not in SIGNED_STATES:
        abort(
            409,
            description="Only a fully signed agreement has a signed PDF; this one is "
            f"{agreement.state.label.lower()}.",
        )


@bp.get("/<int:agreement_id>.pdf")
@login_required
def pdf(agreement_id: int) -> ResponseReturnValue:
    """The signed agreement as a PDF (text, parties, signatures and the SHA-256), as a download."""
    # fpdf2 is imported on the first PDF, not by every worker at start (memory per worker).
    from portal.agreements.pdf import agreement_pdf

    agreement = _visible(agreement_id)
    _signed_only(agreement)
    return Response(
        agreement_pdf(agreement),
        mimetype="application/pdf",
        headers={"Content-Disposition": f"attachment; filename=agreement-{agreement.id}.pdf"},
    )


@bp.get("/<int:agreement_id>/verify")
@login_required
def verify(agreement_id: int) -> ResponseReturnValue:
    """The text hashed again, against the hash recorded at issue and each signature's."""
    agreement = _visible(agreement_id)
    return render_template(
        "agreements/verify.html", agreement=agreement, result=services.verify(agreement)
    )


@bp.get("/verify", endpoint="check")
def check_hash() -> ResponseReturnValue:
    """Public: whether a fully signed agreement has the text whose SHA-256 is given (the one printed
    on its PDF). Says no more than its title, when it was fully signed and by how many parties."""
    form = CheckForm(request.args)
    asked = "sha256" in request.args
    found: Sequence[Agreement] | None = None
    if asked and form.validate():
        try:
            found = services.find_by_hash(db.session, form.sha256.data or "")
        except DomainError as e:
            form.sha256.errors = [*form.sha256.errors, str(e)]
    return render_template(
        "agreements/check.html", form=form, found=found, asked=asked
    ), 422 if asked and found is None else 200


# --- templates and versions (program staff) ----------------------------------------------------


@bp.get("/templates")
@login_required
def templates() -> ResponseReturnValue:
    """Every template with its published version, its draft and how many agreements it issued."""
    check(can_manage_agreements, current_user)
    listing = list_page(
        select(AgreementTemplate).options(selectinload(AgreementTemplate.versions)), TEMPLATES
    )
    ids = [t.id for t in listing.page.items]
    counts: dict[int, dict[AgreementState, int]] = {}
    for template_id, state, n in db.session.execute(
        select(TemplateVersion.template_id, Agreement.state, func.count())
        .join(Agreement, Agreement.version_id == TemplateVersion.id)
        .where(TemplateVersion.template_id.in_(ids))
        .group_by(TemplateVersion.template_id, Agreement.state)
    ).all():
        counts.setdefault(template_id, {})[state] = int(n)
    return render_template(
        "agreements/templates.html", page=listing.page, form=listing.form, counts=counts
    )


@bp.route("/templates/new", methods=["GET", "POST"])
@login_required
def template_new() -> ResponseReturnValue:
    """A new template: kind, title, description, whether it is issued by itself, and the text of
    its first version (a draft)."""
    check(can_manage_agreements, current_user)
    form = TemplateForm()
    return form_page(
        form,
        lambda: services.create_template(db.session, actor=current_user, **form.details()),
        template="agreements/template_new.html",
        done=lambda t: (
            f"“{t.title}” is created with a draft of version 1: publish it to issue agreements.",
            url_for(".template", template_id=t.id),
        ),
        fields=text.FIELDS,
    )


def _preview(template: AgreementTemplate, version: TemplateVersion | None) -> str | None:
    """``version``'s text filled in with stand-ins for its placeholders."""
    if version is None:
        return None
    try:
        return text.fill(version.body, text.sample_fields(template.kind))
    except DomainError:
        return None


def _reissued_count(version: TemplateVersion | None) -> int | None:
    """How many signed agreements publishing ``version`` (a draft) re-issues for re-consent."""
    if version is None or version.state != VersionState.DRAFT or version.reconsent_by is None:
        return None
    return len(services.affected_by(db.session, version))


@bp.route("/templates/<int:template_id>", methods=["GET", "POST"])
@login_required
def template(template_id: int) -> ResponseReturnValue:
    """A template: its details, its draft (text, what changed, re-consent date) with a preview,
    its versions, and the placeholders of its kind. A POST saves the details, or the draft when
    it comes from the draft form (``part=draft``)."""
    check(can_manage_agreements, current_user)
    tpl = load(AgreementTemplate, template_id, None, selectinload(AgreementTemplate.versions))
    draft = tpl.draft
    posted_draft = request.method == "POST" and request.form.get("part") == "draft"
    unposted: dict[str, Any] = {"formdata": None}
    details_form = TemplateDetailsForm(obj=tpl, **({} if not posted_draft else unposted))
    draft_form = DraftForm(obj=draft, **({} if posted_draft else unposted))
    if draft is None and not posted_draft:
        current = tpl.current
        draft_form.body.data = current.body if current is not None else ""
    context: dict[str, Any] = {
        "tpl": tpl,
        "draft": draft,
        "details_form": details_form,
        "draft_form": draft_form,
        "preview": _preview(tpl, draft),
        "reissued": _reissued_count(draft),
        "fields": text.FIELDS[tpl.kind],
    }
    if posted_draft:
        return form_page(
            draft_form,
            lambda: services.save_draft(
                db.session, tpl, actor=current_user, **draft_form.details()
            ),
            template="agreements/template.html",
            done=lambda v: (
                f"Draft of version {v.number} saved. Read it, then publish it.",
                url_for(".template", template_id=tpl.id),
            ),
            **context,
        )
    return form_page(
        details_form,
        lambda: services.update_template(
            db.session, tpl, actor=current_user, **details_form.details()
        ),
        template="agreements/template.html",
        done=lambda t: ("Saved.", url_for(".template", template_id=t.id)),
        **context,
    )


def _version(version_id: int) -> TemplateVersion:
    return load(
        TemplateVersion,
        version_id,
        can_view_version,
        selectinload(TemplateVersion.template).selectinload(AgreementTemplate.versions),
    )


@bp.get("/versions/<int:version_id>")
@login_required
def version(version_id: int) -> ResponseReturnValue:
    """One version's wording (published ones to everyone logged in, drafts to program staff);
    for a draft, program staff publish it here, told first how many signed agreements it
    re-issues for re-consent."""
    v = _version(version_id)
    return render_template(
        "agreements/version.html",
        version=v,
        tpl=v.template,
        staff=can_manage_agreements(current_user),
        may_publish=VERSION_WORKFLOW.may(current_user, v, "publish"),
        reissued=_reissued_count(v),
        preview=_preview(v.template, v) if v.state == VersionState.DRAFT else None,
        form=ConfirmForm(),
    )


@bp.post("/versions/<int:version_id>/publish")
@login_required
def publish(version_id: int) -> ResponseReturnValue:
    """Publish a draft (program staff); the versions page before says what it re-issues."""
    v = _version(version_id)
    reissued = _reissued_count(v) if can_manage_agreements(current_user) else None

    def done(published: TemplateVersion) -> str:
        out = f"Version {published.number} is published: new agreements are issued from it."
        if reissued:
            out += (
                f" {reissued} signed agreement{'s are' if reissued != 1 else ' is'} re-issued "
                "for re-consent; their signers are asked to sign again."
            )
        return out

    return post_action(
        ConfirmForm(),
        lambda: services.publish_version(db.session, v, actor=current_user),
        back=url_for(".version", version_id=v.id),
        done=done,
    )


# --- issuing (program staff) -------------------------------------------------------------------


def _issuable_templates(kind: AgreementKind) -> Sequence[AgreementTemplate]:
    """The templates of ``kind`` with a published version."""
    published = select(TemplateVersion.template_id).where(
        TemplateVersion.state == VersionState.PUBLISHED
    )
    return db.session.scalars(
        select(AgreementTemplate)
        .where(AgreementTemplate.kind == kind, AgreementTemplate.id.in_(published))
        .options(selectinload(AgreementTemplate.versions))
        .order_by(
            AgreementTemplate.auto_issue.desc(), AgreementTemplate.title, AgreementTemplate.id
        )
    ).all()


def _subjects(kind: AgreementKind) -> list[tuple[int, str]]:
    """(id, label) of what an agreement of ``kind`` may be issued for."""
    if kind == AgreementKind.PARTNERSHIP:
        return [
            (i.id, f"{i.name} ({i.state.label.lower()})")
            for i in db.session.scalars(
                select(Institution)
                .where(Institution.state.in_(PARTNERSHIP_SUBJECT_STATES))
                .order_by(Institution.name, Institution.id)
            )
        ]
    return [
        (p.id, f"{p.title} — {p.institution.name}")
        for p in db.session.scalars(
            select(Proposal)
            .where(Proposal.state == ProposalState.ACTIVE)
            .options(selectinload(Proposal.institution))
            .order_by(Proposal.title, Proposal.id)
        )
    ]


def _subject_of(kind: AgreementKind, subject_id: int) -> services.Subject:
    if kind == AgreementKind.PARTNERSHIP:
        inst = db.session.get(Institution, subject_id)
        if inst is None:
            raise NotFoundError("This institution no longer exists.")
        return services.institution_subject(inst)
    proposal = db.session.get(Proposal, subject_id)
    if proposal is None:
        raise NotFoundError("This project no longer exists.")
    return services.project_subject(proposal)


def _issue(form: IssueForm, kind: AgreementKind) -> Agreement:
    tpl = db.session.get(AgreementTemplate, form.template_id.data)
    if tpl is None or tpl.kind != kind:
        raise NotFoundError("This template no longer exists.")
    return services.issue(
        db.session, tpl, _subject_of(kind, int(form.subject_id.data)), actor=current_user
    )


@bp.route("/issue", methods=["GET", "POST"])
@login_required
def issue() -> ResponseReturnValue:
    """Issue an agreement: first its kind, then a template of that kind with a published version
    and what it is for (``?kind=…&subject_id=…`` preselect them, as the gate notices link)."""
    check(can_manage_agreements, current_user)
    chooser = KindForm(request.args, kinds=ISSUABLE)
    kind = chooser.chosen()
    if kind is None:
        if request.method == "POST":
            abort(400, description="Choose the kind of agreement first.")
        return render_template("agreements/issue.html", chooser=chooser, kind=None, form=None)
    templates_ = _issuable_templates(kind)
    form = IssueForm(
        templates=templates_,
        subjects=_subjects(kind),
        subject_label="Institution" if kind == AgreementKind.PARTNERSHIP else "Active project",
    )
    if not form.is_submitted():
        form.subject_id.data = request.args.get("subject_id", type=int)
    return form_page(
        form,
        lambda: _issue(form, kind),
        template="agreements/issue.html",
        done=lambda a: (
            f"“{a.title}” is issued; {_waiting_on(a)} is asked to sign.",
            _detail_url(a),
        ),
        chooser=chooser,
        kind=kind,
        templates=templates_,
    )


# --- navigation and dashboard ------------------------------------------------------------------


def register_ui(app: Flask) -> None:
    """Navigation entries and the "Agreements to sign" dashboard card."""
    from portal.core import navigation
    from portal.core.navigation import NavItem, Panel

    # One drop-down: the navigation bar has room for few more entries.
    for item in (
        NavItem("agreements.index", "Agreements", is_logged_in, order=60, group="Agreements"),
        NavItem(
            "agreements.mine", "Agreements to sign", is_logged_in, order=61, group="Agreements"
        ),
        NavItem(
            "agreements.templates",
            "Agreement templates",
            can_manage_agreements,
            order=62,
            group="Agreements",
        ),
    ):
        navigation.register(item)

    def to_sign(user: Any) -> dict[str, Any] | None:
        rows = db.session.scalars(
            signable_signatures(user)
            .options(contains_eager(Signature.agreement))
            .order_by(Agreement.state_changed_at, Signature.id)
            .limit(10)
        ).all()
        return {"signatures": rows} if rows else None

    navigation.register_panel(Panel("to_sign", "agreements/panels/to_sign.html", to_sign, 15))
