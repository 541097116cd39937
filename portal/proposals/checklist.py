"""What a proposal must have before it is submitted (the checklist the team sees while drafting),
and the frozen snapshot of what was submitted."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from license_expression import ExpressionError, Licensing, get_spdx_licensing

from portal.proposals.models import FIELDS, AttachmentKind, Proposal, TeamRole

#: Shortest abstract and plan that count as written.
MIN_ABSTRACT = 200
MIN_PLAN = 500


@lru_cache(maxsize=1)
def _spdx() -> Licensing:
    return get_spdx_licensing()


def license_problem(expression: str) -> str | None:
    """Why ``expression`` is not an SPDX licence expression of known licences, or None."""
    try:
        parsed = _spdx().parse(expression, validate=True, strict=True)
    except ExpressionError as e:
        return f"{expression!r} is not an SPDX licence expression ({e})."
    if parsed is None:
        return "Give a licence, e.g. Apache-2.0 or CC-BY-4.0."
    unknown = _spdx().unknown_license_keys(parsed)
    if unknown:
        return f"Unknown SPDX licence: {', '.join(unknown)}."
    return None


def missing_items(proposal: Proposal) -> list[str]:
    """What still keeps ``proposal`` from being submitted, in the order of the form."""
    out = []
    if len(proposal.title.strip()) < 10:
        out.append("a title of at least 10 characters")
    if len(proposal.abstract.strip()) < MIN_ABSTRACT:
        out.append(f"an abstract of at least {MIN_ABSTRACT} characters")
    if proposal.field not in FIELDS:
        out.append("the field of research")
    if len(proposal.plan.strip()) < MIN_PLAN:
        out.append(f"a research plan of at least {MIN_PLAN} characters")
    if proposal.start_date is None or not proposal.duration_months:
        out.append("a start date and a duration")
    if not proposal.requests:
        out.append("GPU-hours on at least one resource the call offers")
    for r in proposal.requests:
        cr = r.call_resource
        if cr.call_id != proposal.call_id:
            out.append("a request for a resource the call does not offer")
        elif r.hours > cr.max_request_hours:
            out.append(f"at most {cr.max_request_hours:,} GPU-hours on {cr.resource.name}")
        if len(r.justification.strip()) < 50:
            out.append("a justification (50 characters or more) for each GPU-hour request")
    if not proposal.outputs:
        out.append("at least one planned open output")
    if any(license_problem(o.license) for o in proposal.outputs):
        out.append("a valid SPDX licence for each planned output")
    if not any(a.kind == AttachmentKind.DESCRIPTION for a in proposal.attachments):
        out.append("the project description as a PDF attachment")
    if sum(1 for m in proposal.team if m.role == TeamRole.PI) != 1:
        out.append("one principal investigator")
    return list(dict.fromkeys(out))


def snapshot(proposal: Proposal) -> dict[str, Any]:
    """Everything reviewers see of the proposal, as JSON."""
    return {
        "title": proposal.title,
        "abstract": proposal.abstract,
        "field": proposal.field,
        "plan": proposal.plan,
        "requested_datasets": proposal.requested_datasets,
        "start_date": proposal.start_date.isoformat() if proposal.start_date else None,
        "duration_months": proposal.duration_months,
        "requests": [
            {
                "resource": r.call_resource.resource.name,
                "call_resource_id": r.call_resource_id,
                "hours": r.hours,
                "justification": r.justification,
            }
            for r in proposal.requests
        ],
        "outputs": [
            {"kind": o.kind.value, "license": o.license, "description": o.description}
            for o in proposal.outputs
        ],
        "team": [
            {"user_id": m.user_id, "name": m.user.display_name, "role": m.role.value}
            for m in proposal.team
        ],
        "attachments": [
            {"id": a.id, "kind": a.kind.value, "name": a.original_name, "sha256": a.sha256}
            for a in proposal.attachments
        ],
    }


#: The text fields compared between versions.
TEXT_FIELDS = ("title", "abstract", "field", "plan", "requested_datasets")
