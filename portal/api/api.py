"""The operator API, ``/api/v1/``: JSON for the clusters' schedulers and the storage systems that
serve the datasets, authenticated by API tokens
(``Authorization: Bearer …``; cookies are never accepted here, so there is no CSRF to guard
against), rate-limited per token, its errors RFC 9457 problems, its OpenAPI 3 document generated
from this module by spectree (the pydantic models below and the views' docstrings)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, NoReturn

from flask import Blueprint, abort, current_app, g, render_template, request
from flask import Response as FlaskResponse
from flask.typing import ResponseReturnValue
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel
from spectree import Response, SecurityScheme, SpecTree
from spectree.models import SecureType, SecuritySchemeData

from portal.allocations.models import Allocation, AllocationState
from portal.allocations.usage import MAX_ACCOUNT, MAX_CLUSTER, MAX_JOB_ID, MAX_STATE, Job
from portal.api import services
from portal.api.services import AuthenticationError, DatasetGrants, Operator
from portal.core import audit
from portal.core.database import own_transaction
from portal.core.web import MAX_ID, problem
from portal.datasets.models import AccessTier, DatasetState, Grant
from portal.extensions import db, limiter, login_manager

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: The most jobs one push may carry (more: 422; send them in several requests).
MAX_JOBS = 5000
#: The routes that need no token: the API's own description.
PUBLIC_ENDPOINTS = frozenset({"api.openapi", "api.docs"})


# --- the models the OpenAPI document is generated from ------------------------------------------


class Problem(BaseModel):
    """An RFC 9457 problem: every error answer of the API."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        None, description="What was wrong with the request, field by field (422)."
    )


class AllocationsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resource: int | None = Field(
        None, ge=1, le=MAX_ID, description="One resource of the token (default: all of them)."
    )
    state: AllocationState | None = Field(None, description="Only allocations in this state.")
    after: int = Field(0, ge=0, le=MAX_ID, description="The page after this allocation id.")
    limit: int = Field(services.DEFAULT_LIMIT, ge=1, le=services.MAX_LIMIT)


class AllocationOut(BaseModel):
    """What a scheduler enforces: the account its jobs run under, and the hours left."""

    id: int
    project_id: int
    project_title: str
    cluster: str
    account: str
    resource_id: int
    state: AllocationState
    starts_on: dt.date
    ends_on: dt.date
    hours: int = Field(description="GPU-hours allocated.")
    used_hours: float
    left_hours: float

    @classmethod
    def of(cls, a: Allocation) -> AllocationOut:
        return cls(
            id=a.id,
            project_id=a.proposal_id,
            project_title=a.proposal.title,
            cluster=a.cluster,
            account=a.account,
            resource_id=a.resource_id,
            state=a.state,
            starts_on=a.starts_on,
            ends_on=a.ends_on,
            hours=a.hours,
            used_hours=round(a.used_hours, 4),
            left_hours=round(a.left_hours, 4),
        )


class AllocationPage(BaseModel):
    items: list[AllocationOut]
    next_after: int | None = Field(
        description="Pass as ``after`` for the next page; null on the last page."
    )


class JobIn(BaseModel):
    """One scheduler job (Slurm's parent job), as ``sacct`` reports it."""

    model_config = ConfigDict(extra="forbid")

    cluster: str = Field(min_length=1, max_length=MAX_CLUSTER)
    job_id: str = Field(min_length=1, max_length=MAX_JOB_ID)
    account: str = Field(min_length=1, max_length=MAX_ACCOUNT)
    gpus: int = Field(ge=0, le=100_000)
    elapsed_seconds: int = Field(ge=0, le=10 * 366 * 86400)
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    state: str = Field("", max_length=MAX_STATE)


class UsagePush(RootModel[list[JobIn]]):
    """The jobs to charge, at most ``MAX_JOBS`` per request."""

    root: Annotated[list[JobIn], Field(min_length=1, max_length=MAX_JOBS)]


class Refused(BaseModel):
    index: int = Field(description="The job's place in the request, from 0.")
    cluster: str
    job_id: str
    account: str
    reason: str


class PairCount(BaseModel):
    cluster: str
    account: str
    jobs: int


class UsageAnswer(BaseModel):
    """The import's report of the jobs accepted, and the jobs refused (never charged)."""

    jobs: int
    refused: list[Refused]
    repeated: int
    no_gpus: int
    new: int
    updated: int
    unchanged: int
    gpu_seconds: int = Field(description="Charged, net (a job re-reported shorter gives back).")
    gpu_hours: float
    not_active: list[PairCount]
    exhausted: list[PairCount]


class GrantsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: int = Field(0, ge=0, le=MAX_ID, description="The page after this grant id.")
    limit: int = Field(
        services.DEFAULT_LIMIT,
        ge=1,
        le=services.MAX_LIMIT,
        description="The most grants a page holds.",
    )


class DatasetOut(BaseModel):
    id: int
    slug: str = Field(description="The dataset's short name, as the storage knows it.")
    name: str
    tier: AccessTier = Field(
        description="open: anyone may use it; registered: the holders of accepted terms; "
        "controlled: the holders of an approved request with a signed data-use agreement."
    )
    state: DatasetState = Field(
        description="A retired dataset takes no new requests; its holders keep their access "
        "until it ends."
    )


class IdentityOut(BaseModel):
    """One way the person logs in: the subject an identity provider (issuer) vouches for."""

    issuer: str
    subject: str
    upstream_idp: str | None = Field(
        description="Behind a federation proxy (one issuer, many campuses): the campus "
        "identity provider's entity id."
    )


class InstitutionOut(BaseModel):
    id: int
    name: str
    ror_id: str | None = Field(description="Its Research Organization Registry id.")


class GrantOut(BaseModel):
    """One person who may use the dataset today, and until when."""

    id: int = Field(description="The grant's id.")
    user_id: int
    display_name: str
    email: str | None = Field(
        description="Their contact address: for contact only, never to recognise a login."
    )
    identities: list[IdentityOut] = Field(
        description="Their logins: map the storage's users by (issuer, subject)."
    )
    institution: InstitutionOut = Field(description="The institution the access is through.")
    starts_on: dt.date
    ends_on: dt.date = Field(description="The last day of access (inclusive).")

    @classmethod
    def of(cls, grant: Grant) -> GrantOut:
        u, i = grant.user, grant.institution
        return cls(
            id=grant.id,
            user_id=u.id,
            display_name=u.display_name,
            email=u.email,
            identities=[
                IdentityOut(issuer=x.issuer, subject=x.subject, upstream_idp=x.upstream_idp)
                for x in u.identities
            ],
            institution=InstitutionOut(id=i.id, name=i.name, ror_id=i.ror_id),
            starts_on=grant.starts_on,
            ends_on=grant.ends_on,
        )


class GrantPage(BaseModel):
    """Who may use a dataset on ``as_of`` (UTC): its current grants, one page of them."""

    dataset: DatasetOut
    as_of: dt.date = Field(description="The day (UTC) the list holds for.")
    open: bool = Field(
        description="True for an open dataset: everyone may use it, and ``items`` is empty."
    )
    items: list[GrantOut]
    next_after: int | None = Field(
        description="Pass as ``after`` for the next page; null on the last page."
    )

    @classmethod
    def of(cls, found: DatasetGrants) -> GrantPage:
        d = found.dataset
        items = [GrantOut.of(g) for g in found.grants]
        return cls(
            dataset=DatasetOut(id=d.id, slug=d.slug, name=d.name, tier=d.tier, state=d.state),
            as_of=found.as_of,
            open=found.open,
            items=items,
            next_after=items[-1].id if found.more and items else None,
        )


def _invalid(req: Any, resp: Any, error: Exception | None, instance: Any, adapter: Any) -> None:
    """A request that does not match its schema: a 422 problem naming each field's fault."""
    if error is None:
        return
    faults: list[dict[str, Any]] = getattr(error, "errors", lambda **_: [])(
        include_url=False, include_context=False, include_input=False
    )
    abort(
        problem(
            422,
            "The request does not match the API's schema.",
            errors=[
                {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
                for e in faults
            ],
        )
    )


spec = SpecTree(
    "flask",
    mode="strict",
    title="ATOM Partner Portal operator API",
    version="1",
    description=(
        "For resource operators' schedulers: the allocations to enforce, and the jobs that ran; "
        "for the storage systems serving the datasets: who may use each dataset now. "
        "Authenticate with an API token from the portal's administrators: "
        "`Authorization: Bearer <token>`. A token has one scope: a resource operator's token "
        "reads and charges the allocations of the resources it names; a storage operator's "
        "token reads the grants of the datasets it names. A route of the other scope, or an "
        "object the token does not name, answers 403. Errors are RFC 9457 problems."
    ),
    security_schemes=[
        SecurityScheme(
            name="token",
            data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer"),
        ),
    ],
    security={"token": []},
    before=_invalid,
    validation_error_model=Problem,
    annotations=False,
)

ERRORS = {f"HTTP_{code}": Problem for code in (401, 403, 429)}


# --- authentication and rate limit --------------------------------------------------------------


def _rate_limit() -> str:
    return str(current_app.config["API_RATE_LIMIT"])


def _rate_key() -> str:
    """Each token its own budget of requests."""
    operator: Operator | None = g.get("api_operator")
    return f"token:{operator.token_id}" if operator else f"ip:{request.remote_addr}"


def _unauthorized(detail: str) -> NoReturn:
    abort(401, description=detail)


@bp.before_request
def _authenticate() -> None:
    """Every route but the API's description needs a valid bearer token. The browser's session is
    ignored here: the request never acts as the cookie's user."""
    g._login_user = login_manager.anonymous_user()
    audit.set_origin(audit.Origin(ip=request.remote_addr, channel="api"))
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        _unauthorized("Send an API token: Authorization: Bearer <token>.")
    try:
        operator = services.authenticate(db.session, presented.strip())
    except AuthenticationError as e:
        _unauthorized(str(e))
    with own_transaction(db.session):
        services.touch(db.session, operator)
    g.api_operator = operator
    if request.method == "POST" and request.get_json(silent=True) is None:
        abort(400, description="The body must be JSON (Content-Type: application/json).")


@bp.after_request
def _no_store(response: FlaskResponse) -> FlaskResponse:
    """Answers hold allocations, usage and who may use the datasets: no cache keeps them."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _operator() -> Operator:
    operator: Operator = g.api_operator
    return operator


# --- the routes ---------------------------------------------------------------------------------


@bp.get("/allocations")
@limiter.limit(_rate_limit, key_func=_rate_key)
@spec.validate(
    query=AllocationsQuery,
    resp=Response(HTTP_200=AllocationPage, **ERRORS),
    tags=["allocations"],
)
def allocations() -> ResponseReturnValue:
    """The allocations on the token's resources.

    What the scheduler should enforce: each allocation's account on its cluster, its period and
    the GPU-hours left. ``state=active`` for the ones to let run. Pages of ``limit`` in id order:
    pass ``next_after`` as ``after`` for the next. A resource the token does not cover: 403.
    """
    query: AllocationsQuery = request.context.query  # type: ignore[attr-defined]
    rows, more = services.operator_allocations(
        db.session,
        _operator(),
        resource_id=query.resource,
        state=query.state,
        after=query.after,
        limit=query.limit,
    )
    items = [AllocationOut.of(a) for a in rows]
    return AllocationPage(items=items, next_after=items[-1].id if more and items else None)  # type: ignore[return-value]


@bp.post("/usage")
@limiter.limit(_rate_limit, key_func=_rate_key)
@spec.validate(
    json=UsagePush,
    resp=Response(HTTP_200=UsageAnswer, HTTP_400=Problem, **ERRORS),
    tags=["usage"],
)
def usage() -> ResponseReturnValue:
    """Charge the jobs that ran.

    The same records as the portal's ``sacct`` import, idempotent by (cluster, job id): a job
    pushed twice charges once; re-reported with a longer run, only the difference. Jobs whose
    cluster and account are not an allocation on the token's resources are refused one by one
    (listed in ``refused``) and never charged.
    """
    pushed: UsagePush = request.context.json  # type: ignore[attr-defined]
    jobs = [Job(**j.model_dump()) for j in pushed.root]
    operator = _operator()
    done = services.push_usage(db.session, operator, jobs)
    r = done.report
    answer = UsageAnswer(
        jobs=r.jobs,
        refused=[
            Refused(index=i, cluster=j.cluster, job_id=j.job_id, account=j.account, reason=why)
            for i, j, why in done.refused
        ],
        repeated=r.repeated,
        no_gpus=r.no_gpus,
        new=r.new,
        updated=r.updated,
        unchanged=r.unchanged,
        gpu_seconds=r.gpu_seconds,
        gpu_hours=round(r.gpu_hours, 4),
        not_active=[
            PairCount(cluster=c, account=a, jobs=n) for (c, a), (_, n) in r.not_active.items()
        ],
        exhausted=[PairCount(cluster=c, account=a, jobs=0) for c, a in r.exhausted],
    )
    db.session.commit()
    return answer  # type: ignore[return-value]


@bp.get("/datasets/<int:dataset_id>/grants")
@limiter.limit(_rate_limit, key_func=_rate_key)
@spec.validate(
    query=GrantsQuery,
    resp=Response(HTTP_200=GrantPage, HTTP_404=Problem, **ERRORS),
    tags=["datasets"],
    path_parameter_descriptions={"dataset_id": "The dataset's id (one the token names)."},
)
def dataset_grants(dataset_id: int) -> ResponseReturnValue:
    """Who may use a dataset now (a storage operator's token).

    What the storage serving the dataset enforces: the people whose access holds today — active,
    within its period, their institution a partner in good standing and, for a controlled
    dataset, their data-use agreement signed and in force. Anyone not listed (access pending,
    expired, revoked, ended, suspended) must be refused. Each item names the person's logins
    (issuer and subject: map users by these, never by e-mail), their institution, and the period.
    An open dataset lists nobody and says ``open: true``: everyone may use it. Pages of ``limit``
    in grant id order: pass ``next_after`` as ``after`` for the next. A dataset the token does
    not name: 403; no such dataset: 404.
    """
    query: GrantsQuery = request.context.query  # type: ignore[attr-defined]
    found = services.dataset_grants(
        db.session, _operator(), dataset_id, after=query.after, limit=query.limit
    )
    return GrantPage.of(found)  # type: ignore[return-value]


@bp.get("/openapi.json")
@spec.validate(resp=Response("HTTP_200"), security={}, tags=["documentation"])
def openapi() -> ResponseReturnValue:
    """This API's OpenAPI 3 document."""
    document: dict[str, Any] = spec.spec
    return document


@bp.get("/docs")
@spec.validate(resp=Response("HTTP_200"), security={}, tags=["documentation"])
def docs() -> ResponseReturnValue:
    """This API's operations, as a page."""
    document = spec.spec
    operations = [
        (path, method.upper(), op)
        for path, methods in sorted(document["paths"].items())
        for method, op in sorted(methods.items())
    ]
    return render_template("api/docs.html", document=document, operations=operations)
