"""Catalog pages: the catalog (public for open and registered datasets; search, tier, state for
its curators, where each visitor stands with each dataset; CSV for program staff), one dataset with
what it takes to use it and the visitor's next step, adding and editing entries, publishing,
retiring and restoring them, their stewards; the datasets a proposal plans to use (and the section
of the proposal page that lists them), and a steward's pre-approvals to give. Also the
navigation and the dashboard cards.

The pages about asking for access and holding it (requests, decisions, grants) are in
``access_views.py``, on the same blueprint."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from flask import Blueprint, Flask, abort, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import Select, String, case, cast, func, literal, or_, select, union_all
from sqlalchemy.orm import contains_eager, joinedload, selectinload

from portal.agreements.models import AgreementKind, AgreementTemplate
from portal.auth.models import Role, User
from portal.auth.permissions import as_user
from portal.core import hooks
from portal.core.errors import ValidationError
from portal.core.forms import ConfirmForm
from portal.core.listing import ListSpec, csv_response, filtered, list_page, matches
from portal.core.models import Tone, utcnow
from portal.core.permissions import check
from portal.core.roles import is_logged_in
from portal.core.web import form_page, load, login_required, post_action
from portal.datasets import permissions, services
from portal.datasets.access_forms import AcceptForm
from portal.datasets.forms import (
    CatalogFilterForm,
    DatasetForm,
    PickForm,
    ReasonForm,
    StewardForm,
    size_label,
)
from portal.datasets.models import (
    LIVE_GRANTS,
    OPEN_REQUESTS,
    AccessRequest,
    AccessTier,
    ConsentState,
    Dataset,
    DatasetState,
    DatasetSteward,
    Grant,
    GrantState,
    ProposalDataset,
    RequestState,
)
from portal.datasets.permissions import (
    can_consent,
    can_edit_dataset,
    can_manage_datasets,
    can_pick_datasets,
    can_see_location,
    can_view_dataset,
    consentable_links,
    decidable_requests,
    visible_datasets,
)
from portal.datasets.workflow import CONSENT_WORKFLOW, DATASET_WORKFLOW
from portal.extensions import db
from portal.institutions.models import Institution
from portal.proposals.models import Proposal, TeamMember
from portal.proposals.permissions import can_view_proposal, partner_institutions_of

bp = Blueprint("datasets", __name__, url_prefix="/datasets")


#: What each tier takes, as the catalog and the dataset page say it.
WHAT_IT_TAKES = {
    AccessTier.OPEN: "Open: download freely",
    AccessTier.REGISTERED: "Registered: accept the terms",
    AccessTier.CONTROLLED: "Controlled: a steward approves; sign a data-use agreement",
}


@bp.app_template_filter("tier_takes")
def tier_takes(tier: AccessTier) -> str:
    """``AccessTier.REGISTERED|tier_takes`` → "Registered: accept the terms"."""
    return WHAT_IT_TAKES[tier]


@bp.app_template_filter("data_size")
def data_size(size: int | None) -> str:
    """A dataset's size for people (``12 GB``, ``1.53 TB``; a dash when unknown)."""
    return size_label(size)


# --- where the visitor stands ------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A person's live access to one dataset, and their open request for it (either may be
    missing)."""

    grant_id: int | None = None
    grant_state: GrantState | None = None
    ends_on: dt.date | None = None
    request_id: int | None = None
    request_state: RequestState | None = None


NOTHING_HELD = Held()


@dataclass(frozen=True)
class Standing:
    """Where the visitor stands with a dataset: a badge (``label``, ``tone``, as ``state_badge``
    draws states) and where to go next."""

    label: str
    tone: str
    url: str | None = None


def held_by(user: Any, dataset_ids: Iterable[int]) -> dict[int, Held]:
    """``user``'s live grants and open requests of ``dataset_ids``, by dataset: one query for any
    number of datasets (each person has at most one of each per dataset)."""
    u = as_user(user)
    ids = list(dataset_ids)
    if u is None or not ids:
        return {}
    grants = select(
        Grant.dataset_id,
        literal("grant").label("kind"),
        cast(Grant.state, String).label("state"),
        Grant.id,
        Grant.ends_on,
    ).where(Grant.user_id == u.id, Grant.dataset_id.in_(ids), Grant.state.in_(LIVE_GRANTS))
    asked = select(
        AccessRequest.dataset_id,
        literal("request").label("kind"),
        cast(AccessRequest.state, String).label("state"),
        AccessRequest.id,
        AccessRequest.ends_on,
    ).where(
        AccessRequest.user_id == u.id,
        AccessRequest.dataset_id.in_(ids),
        AccessRequest.state.in_(OPEN_REQUESTS),
    )
    out: dict[int, Held] = {}
    rows: Sequence[Any] = db.session.execute(union_all(grants, asked)).all()
    for dataset_id, kind, state, ident, ends_on in rows:
        held = out.get(dataset_id, NOTHING_HELD)
        if kind == "grant":
            held = replace(
                held, grant_id=ident, grant_state=GrantState(state), ends_on=_date(ends_on)
            )
        else:
            held = replace(held, request_id=ident, request_state=RequestState(state))
        out[dataset_id] = held
    return out


def _date(value: Any) -> dt.date | None:
    """A date from a UNION's column (SQLite hands back the text it stores)."""
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def standing(dataset: Dataset, held: Held, *, partner: bool, today: dt.date) -> Standing | None:
    """What the catalog says about ``dataset`` for a logged-in visitor: their access (until when),
    their open request, or their next step; None when there is nothing for them to do."""
    if held.grant_id is not None and held.grant_state is not None:
        url = url_for(".grant_detail", grant_id=held.grant_id)
        if held.grant_state == GrantState.ACTIVE and held.ends_on is not None:
            if held.ends_on >= today:
                return Standing(f"Access until {held.ends_on:%d %b %Y}", Tone.SUCCESS, url)
            return Standing(f"Access ended {held.ends_on:%d %b %Y}", Tone.NEUTRAL, url)
        return Standing(held.grant_state.label, held.grant_state.tone, url)
    if held.request_id is not None and held.request_state is not None:
        url = url_for(".request_detail", request_id=held.request_id)
        return Standing(held.request_state.label, held.request_state.tone, url)
    if dataset.tier == AccessTier.OPEN:
        return Standing("Free to use", Tone.SUCCESS, None)
    if dataset.state != DatasetState.PUBLISHED or not partner:
        return None
    detail = url_for(".detail", slug=dataset.slug)
    if dataset.tier == AccessTier.REGISTERED:
        return Standing("Accept the terms to use it", Tone.INFO, detail + "#access")
    return Standing("Ask for access", Tone.INFO, url_for(".request_form", slug=dataset.slug))


# --- the catalog ---------------------------------------------------------------------------------

#: Datasets in the catalog before retired ones and drafts.
LISTED_FIRST = case((Dataset.state == DatasetState.PUBLISHED, 0), else_=1)

#: Sort key → (label, ORDER BY).
SORTS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "name": ("Name", (LISTED_FIRST, Dataset.name, Dataset.id)),
    "newest": ("Newest", (LISTED_FIRST, Dataset.created_at.desc(), Dataset.id.desc())),
    "largest": ("Largest", (LISTED_FIRST, Dataset.size_bytes.desc().nulls_last(), Dataset.id)),
}

CATALOG = ListSpec(
    search=(Dataset.name, Dataset.summary, Dataset.description),
    sorts={key: order for key, (_, order) in SORTS.items()},
    placeholder="Name, summary or description",
)
#: Program staff and stewards also filter by state (drafts, retired).
CURATED_CATALOG = replace(CATALOG, state_column=Dataset.state, states=DatasetState)

CSV_HEADER = [
    "id",
    "slug",
    "name",
    "tier",
    "state",
    "licence",
    "version",
    "size_bytes",
    "max_months",
    "institution_signs",
    "stewards",
    "created_at",
]


def _csv_row(d: Dataset) -> list[object]:
    return [
        d.id,
        d.slug,
        d.name,
        d.tier.value,
        d.state.value,
        d.licence,
        d.version,
        d.size_bytes,
        d.max_months,
        "yes" if d.institution_signs else "no",
        "; ".join(s.user.display_name for s in d.stewards),
        d.created_at.isoformat(),
    ]


@bp.get("/")
def index() -> ResponseReturnValue:
    """The catalog: open and registered datasets to anyone, controlled ones to those logged in,
    drafts to program staff and their stewards; search, tier (and state, for its curators), sort,
    paging; where the visitor stands with each dataset; CSV for program staff."""
    curator = permissions.curates_catalog(current_user)
    spec = CURATED_CATALOG if curator else CATALOG
    filters = CatalogFilterForm(
        request.args, sorts=[(key, label) for key, (label, _) in SORTS.items()]
    )
    stmt = visible_datasets(current_user)
    tier = filters.chosen_tier()
    if tier is not None:
        stmt = stmt.where(Dataset.tier == tier)
    if request.args.get("format") == "csv":
        if not is_logged_in(current_user):
            abort(401)
        check(can_manage_datasets, current_user)
        rows = db.session.scalars(
            filtered(
                stmt.options(selectinload(Dataset.stewards).selectinload(DatasetSteward.user)),
                spec,
            )
        ).all()
        return csv_response("datasets.csv", CSV_HEADER, rows, _csv_row)
    listing = list_page(stmt, spec)
    logged_in = is_logged_in(current_user)
    standings: dict[int, Standing | None] = {}
    if logged_in:
        held = held_by(current_user, (d.id for d in listing.page.items))
        partner = bool(partner_institutions_of(current_user))
        today = utcnow().date()
        standings = {
            d.id: standing(d, held.get(d.id, NOTHING_HELD), partner=partner, today=today)
            for d in listing.page.items
        }
    return render_template(
        "datasets/catalog/index.html",
        page=listing.page,
        form=listing.form,
        filters=filters,
        logged_in=logged_in,
        standings=standings,
        staff=can_manage_datasets(current_user),
        curator=curator,
    )


# --- one dataset -----------------------------------------------------------------------------------


def _visible(slug: str, *options: Any) -> Dataset:
    """The dataset ``slug`` to those who may see it: 404 to others logged in (a draft), the login
    page to anonymous visitors (a controlled dataset, or a draft)."""
    dataset = db.session.scalar(select(Dataset).where(Dataset.slug == slug).options(*options))
    if dataset is None:
        abort(404)
    if not can_view_dataset(current_user, dataset):
        abort(404 if is_logged_in(current_user) else 401)
    return dataset


#: Loader options for a dataset shown with its stewards and its data-use agreement template.
DETAIL = (
    selectinload(Dataset.stewards).selectinload(DatasetSteward.user),
    joinedload(Dataset.dua_template).selectinload(AgreementTemplate.versions),
)


def _open_counts(dataset: Dataset) -> dict[str, int]:
    """For its stewards and program staff: the dataset's requests waiting on a steward and its
    live grants."""
    waiting, live = db.session.execute(
        select(
            select(func.count())
            .select_from(AccessRequest)
            .where(
                AccessRequest.dataset_id == dataset.id,
                AccessRequest.state == RequestState.SUBMITTED,
            )
            .scalar_subquery(),
            select(func.count())
            .select_from(Grant)
            .where(Grant.dataset_id == dataset.id, Grant.state.in_(LIVE_GRANTS))
            .scalar_subquery(),
        )
    ).one()
    return {"waiting": waiting or 0, "live": live or 0}


@bp.get("/<slug>")
def detail(slug: str) -> ResponseReturnValue:
    """A dataset: its description, version, size, licence, tier and what it takes, stewards and
    terms; where the data is (to those with access); the visitor's access or request and their
    next step; for its stewards and program staff, editing, publishing, retiring and restoring,
    its requests and grants; for program staff, its stewards."""
    dataset = _visible(slug, *DETAIL)
    held = held_by(current_user, [dataset.id]).get(dataset.id, NOTHING_HELD)
    today = utcnow().date()
    editor = can_edit_dataset(current_user, dataset)
    return render_template(
        "datasets/catalog/detail.html",
        dataset=dataset,
        held=held,
        today=today,
        logged_in=is_logged_in(current_user),
        partner=bool(partner_institutions_of(current_user)),
        longest_end=services.longest_end(dataset),
        sees_location=can_see_location(current_user, dataset),
        editor=editor,
        manager=can_manage_datasets(current_user),
        actions=DATASET_WORKFLOW.available(current_user, dataset),
        counts=_open_counts(dataset) if editor else None,
        accept_form=AcceptForm(),
        steward_form=StewardForm(),
    )


# --- adding and editing ----------------------------------------------------------------------------


def _dua_templates() -> Sequence[AgreementTemplate]:
    """The data-use agreement templates a dataset may use."""
    return db.session.scalars(
        select(AgreementTemplate)
        .where(AgreementTemplate.kind == AgreementKind.DATA_USE)
        .options(selectinload(AgreementTemplate.versions))
        .order_by(AgreementTemplate.title, AgreementTemplate.id)
    ).all()


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new() -> ResponseReturnValue:
    """Program staff add a dataset to the catalog, as a draft."""
    check(can_manage_datasets, current_user)
    form = DatasetForm(templates=_dua_templates())
    return form_page(
        form,
        lambda: services.create_dataset(db.session, actor=current_user, **form.values()),
        template="datasets/catalog/form.html",
        done=lambda d: (
            f"“{d.name}” was added as a draft: add its stewards, then publish it.",
            url_for(".detail", slug=d.slug),
        ),
        dataset=None,
    )


@bp.route("/<slug>/edit", methods=["GET", "POST"])
@login_required
def edit(slug: str) -> ResponseReturnValue:
    """Its stewards and program staff change a catalog entry."""
    dataset = _visible(slug)
    check(can_edit_dataset, current_user, dataset)
    form = DatasetForm(templates=_dua_templates(), dataset=dataset)
    return form_page(
        form,
        lambda: services.update_dataset(db.session, dataset, actor=current_user, **form.values()),
        template="datasets/catalog/form.html",
        done=lambda d: (f"“{d.name}” was saved.", url_for(".detail", slug=d.slug)),
        dataset=dataset,
    )


#: The catalog steps, as the services take them.
STEPS: dict[str, Callable[[Dataset, str], Dataset]] = {
    "publish": lambda d, reason: services.publish(db.session, d, actor=current_user),
    "retire": lambda d, reason: services.retire(db.session, d, actor=current_user, reason=reason),
    "restore": lambda d, reason: services.restore(db.session, d, actor=current_user),
}


@bp.post("/<slug>/<action>")
@login_required
def transition(slug: str, action: str) -> ResponseReturnValue:
    """Publish a draft, retire a dataset (with the reason), or put it back in the catalog."""
    step = STEPS.get(action)
    if step is None or action not in DATASET_WORKFLOW.transitions:
        abort(404)
    dataset = _visible(slug, *DETAIL)
    form = ReasonForm()
    return post_action(
        form,
        lambda: step(dataset, form.reason.data or ""),
        back=url_for(".detail", slug=dataset.slug),
        done=lambda d: f"“{d.name}” is now {d.state.label.lower()}.",
    )


# --- stewards --------------------------------------------------------------------------------------


def _steward_by_email(email: str) -> User:
    """The person with the address ``email`` (case aside) who may steward a dataset: the one
    holding the data steward role when several people share it."""
    address = email.strip().lower()
    people = db.session.scalars(
        select(User)
        .where(func.lower(User.email) == address, User.is_disabled.is_(False))
        .options(selectinload(User.role_grants))
        .order_by(User.id)
    ).all()
    if not people:
        raise ValidationError(
            f"Nobody with the address {email.strip()!r} uses the portal: they log in once first."
        )
    stewards = [u for u in people if u.has_role(Role.DATA_STEWARD)]
    if len(stewards) > 1:
        raise ValidationError(
            f"Several data stewards use the address {email.strip()!r}: ask an administrator."
        )
    return stewards[0] if stewards else people[0]


@bp.post("/<slug>/stewards")
@login_required
def add_steward(slug: str) -> ResponseReturnValue:
    """Program staff make someone holding the data steward role a steward of the dataset."""
    dataset = _visible(slug, *DETAIL)
    check(can_manage_datasets, current_user)
    form = StewardForm()
    return post_action(
        form,
        lambda: services.add_steward(
            db.session, dataset, actor=current_user, user=_steward_by_email(form.email.data or "")
        ),
        back=url_for(".detail", slug=dataset.slug) + "#stewards",
        done=lambda s: f"{s.user.display_name} now stewards “{dataset.name}”.",
    )


@bp.post("/<slug>/stewards/<int:steward_id>/remove")
@login_required
def remove_steward(slug: str, steward_id: int) -> ResponseReturnValue:
    """Program staff remove a steward (a controlled dataset in the catalog keeps one)."""
    dataset = _visible(slug, *DETAIL)
    check(can_manage_datasets, current_user)
    return post_action(
        ConfirmForm(),
        lambda: services.remove_steward(
            db.session, dataset, actor=current_user, steward_id=steward_id
        ),
        back=url_for(".detail", slug=dataset.slug) + "#stewards",
        done=lambda s: f"{s.user.display_name} no longer stewards “{dataset.name}”.",
    )


# --- the datasets a proposal plans to use ----------------------------------------------------------


def _links(proposal_id: int) -> Sequence[ProposalDataset]:
    """The catalog datasets of a proposal, each with its dataset and who decided it."""
    return db.session.scalars(
        select(ProposalDataset)
        .where(ProposalDataset.proposal_id == proposal_id)
        .options(joinedload(ProposalDataset.dataset), joinedload(ProposalDataset.decided_by))
        .order_by(ProposalDataset.id)
    ).all()


@bp.route("/proposals/<int:proposal_id>", methods=["GET", "POST"])
@login_required
def pick(proposal_id: int) -> ResponseReturnValue:
    """The proposal's PI and co-investigators choose the catalog datasets it will use, each with
    what for (its stewards pre-approve a controlled one once the proposal is submitted)."""
    proposal = load(Proposal, proposal_id, can_view_proposal, selectinload(Proposal.team))
    check(can_pick_datasets, current_user, proposal)
    links = {link.dataset_id: link for link in _links(proposal.id)}
    datasets = db.session.scalars(
        visible_datasets(current_user)
        .where(or_(Dataset.state == DatasetState.PUBLISHED, Dataset.id.in_(list(links))))
        .order_by(Dataset.name, Dataset.id)
    ).all()
    form = PickForm(datasets=datasets, links=links)
    return form_page(
        form,
        lambda: services.set_proposal_datasets(
            db.session, proposal, actor=current_user, picks=form.picks()
        ),
        template="datasets/catalog/pick.html",
        done=lambda chosen: (
            f"The project now plans to use {len(chosen)} dataset"
            + ("" if len(chosen) == 1 else "s")
            + " of the catalog.",
            url_for("proposals.detail", proposal_id=proposal.id) + "#datasets",
        ),
        proposal=proposal,
        links=links,
    )


def proposal_section(proposal: Proposal, user: Any) -> dict[str, Any] | None:
    """The proposal page's catalog datasets, with their tier and pre-approval (and the steward's
    note), and a "Choose datasets" link for its editors; None when there is nothing to show."""
    if not can_view_proposal(user, proposal):
        return None
    links = _links(proposal.id)
    may_pick = can_pick_datasets(user, proposal)
    if not links and not may_pick:
        return None
    return {"proposal": proposal, "links": links, "may_pick": may_pick}


# --- pre-approvals -------------------------------------------------------------------------------

#: The states of the pre-approvals page's tabs (a dataset that needs none is never asked).
CONSENT_TABS = (ConsentState.ASKED, ConsentState.CONSENTED, ConsentState.REFUSED)

CONSENTS = ListSpec(
    search=lambda text: matches(text, Proposal.title, Dataset.name, Institution.name),
    sorts={
        "oldest": (ProposalDataset.asked_at, ProposalDataset.id),
        "newest": (ProposalDataset.asked_at.desc(), ProposalDataset.id.desc()),
    },
    placeholder="Project, dataset or institution",
)


def _consent_queue(user: Any) -> Select[ProposalDataset]:
    """The pre-approvals ``user`` may give or has given, each with its project (team and
    institution) and dataset in the same queries."""
    return (
        consentable_links(user)
        .where(ProposalDataset.asked_at.is_not(None))
        .join(Proposal, Proposal.id == ProposalDataset.proposal_id)
        .join(Institution, Institution.id == Proposal.institution_id)
        .join(Dataset, Dataset.id == ProposalDataset.dataset_id)
        .options(
            contains_eager(ProposalDataset.proposal).contains_eager(Proposal.institution),
            contains_eager(ProposalDataset.proposal)
            .selectinload(Proposal.team)
            .selectinload(TeamMember.user),
            contains_eager(ProposalDataset.dataset),
            joinedload(ProposalDataset.decided_by),
        )
    )


@bp.get("/pre-approvals")
@login_required
def consents() -> ResponseReturnValue:
    """A steward's pre-approvals: the submitted proposals that plan to use a controlled dataset
    they steward (never one they are on), waiting first; each with its project and purpose and the
    buttons to pre-approve or not."""
    chosen = request.args.get("state", ConsentState.ASKED.value)
    state = next((s for s in CONSENT_TABS if s.value == chosen), ConsentState.ASKED)
    listing = list_page(
        _consent_queue(current_user).where(ProposalDataset.state == state), CONSENTS
    )
    return render_template(
        "datasets/catalog/consents.html",
        page=listing.page,
        form=listing.form,
        state=state,
        tabs=CONSENT_TABS,
        sort=listing.sort,
        sorts=list(CONSENTS.sorts),
        refuse=CONSENT_WORKFLOW.transitions["refuse"],
    )


@bp.post("/pre-approvals/<int:link_id>/<action>")
@login_required
def consent_action(link_id: int, action: str) -> ResponseReturnValue:
    """A steward of the dataset pre-approves it for the project (with an optional note), or does
    not (with the reason)."""
    if action not in CONSENT_WORKFLOW.transitions:
        abort(404)
    link = load(
        ProposalDataset,
        link_id,
        None,
        joinedload(ProposalDataset.dataset),
        joinedload(ProposalDataset.proposal),
    )
    check(can_consent, current_user, link)
    form = ReasonForm()

    def decide() -> ProposalDataset:
        if action == "consent":
            return services.consent(db.session, link, actor=current_user, note=form.reason.data)
        return services.refuse(db.session, link, actor=current_user, reason=form.reason.data or "")

    return post_action(
        form,
        decide,
        back=url_for(".consents"),
        done=lambda done: (
            f"“{done.dataset.name}” is {done.state.label.lower()} for “{done.proposal.title}”."
        ),
    )


# --- navigation, dashboard, the proposal page's section --------------------------------------------


def _steward_panel(user: Any) -> dict[str, Any] | None:
    """A steward's dashboard card: requests for their datasets waiting on them, and proposals
    asking them to pre-approve one."""
    if not permissions.is_data_steward(user):
        return None
    requests = db.session.scalars(
        decidable_requests(user)
        .where(AccessRequest.state == RequestState.SUBMITTED)
        .options(joinedload(AccessRequest.dataset), joinedload(AccessRequest.user))
        .order_by(AccessRequest.created_at, AccessRequest.id)
        .limit(10)
    ).all()
    links = db.session.scalars(
        consentable_links(user)
        .where(ProposalDataset.state == ConsentState.ASKED, ProposalDataset.asked_at.is_not(None))
        .options(joinedload(ProposalDataset.dataset), joinedload(ProposalDataset.proposal))
        .order_by(ProposalDataset.asked_at, ProposalDataset.id)
        .limit(10)
    ).all()
    if not requests and not links:
        return None
    return {"requests": requests, "links": links}


def _access_panel(user: Any) -> dict[str, Any] | None:
    """A researcher's dashboard card: their live access to datasets (until when) and their
    requests still open."""
    u = as_user(user)
    if u is None or not u.affiliations:
        return None  # access is asked for as a member of an institution: never without one
    grants = db.session.scalars(
        select(Grant)
        .where(Grant.user_id == u.id, Grant.state.in_(LIVE_GRANTS))
        .options(joinedload(Grant.dataset))
        .order_by(Grant.ends_on, Grant.id)
        .limit(10)
    ).all()
    requests = db.session.scalars(
        select(AccessRequest)
        .where(AccessRequest.user_id == u.id, AccessRequest.state.in_(OPEN_REQUESTS))
        .options(joinedload(AccessRequest.dataset))
        .order_by(AccessRequest.created_at, AccessRequest.id)
        .limit(10)
    ).all()
    if not grants and not requests:
        return None
    return {"grants": grants, "requests": requests, "today": utcnow().date()}


def register_ui(app: Flask) -> None:
    """Navigation, dashboard cards, the proposal page's datasets section."""
    from portal.core import navigation
    from portal.core.navigation import NavItem, Panel

    # One drop-down, as allocations and agreements do. (The navigation shows nothing to anonymous
    # visitors: the public catalog is reached by its address, and from the dataset mails.)
    for item in (
        NavItem("datasets.index", "Catalog", is_logged_in, order=58, group="Datasets"),
        NavItem("datasets.requests", "Access requests", is_logged_in, order=59, group="Datasets"),
        NavItem("datasets.grants", "Dataset access", is_logged_in, order=59, group="Datasets"),
        NavItem(
            "datasets.consents",
            "Pre-approvals",
            permissions.is_data_steward,
            order=59,
            group="Datasets",
        ),
    ):
        navigation.register(item)
    navigation.register_panel(
        Panel("dataset_decisions", "datasets/catalog/_steward_panel.html", _steward_panel, 17)
    )
    navigation.register_panel(
        Panel("my_datasets", "datasets/catalog/_access_panel.html", _access_panel, 27)
    )
    hooks.register_section(
        Proposal,
        hooks.Section("datasets", "datasets/catalog/_proposal_section.html", proposal_section),
    )
