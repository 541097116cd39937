"""An agreement's text: a version's Markdown with ``{{ field }}`` placeholders, filled in from the
subject (names, dates, hours) in a sandbox, and the SHA-256 that binds a signature to it.

The placeholders each kind offers are listed in ``FIELDS``; a version naming anything else is
refused when it is saved, so issuing never fails on a typo.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from portal.agreements.models import AgreementKind
from portal.core.errors import ValidationError
from portal.institutions.models import Institution
from portal.proposals.models import Proposal, TeamRole

#: The placeholders of each kind, with what they hold (shown beside the template editor).
COMMON = {
    "lab": "the lab's name",
    "today": "the date of issue, e.g. 29 November 2026",
}
FIELDS: dict[AgreementKind, dict[str, str]] = {
    AgreementKind.PARTNERSHIP: {
        **COMMON,
        "institution": "the institution's name",
        "country": "the institution's country code",
        "ror_id": "the institution's ROR id",
    },
    AgreementKind.CONTRIBUTION: {
        **COMMON,
        "project": "the project's title",
        "pi": "the principal investigator's name",
        "institution": "the institution's name",
        "call": "the call the project was awarded in",
        "hours": "the GPU-hours awarded, per resource",
        "total_hours": "the GPU-hours awarded in all",
        "start_date": "the project's start date",
        "duration_months": "the project's duration in months",
        "outputs": "the open outputs the project committed to release, with their licences",
    },
    AgreementKind.DATA_USE: {
        **COMMON,
        "dataset": "the dataset's name",
        "researcher": "the researcher's name",
        "institution": "the researcher's institution",
        "purpose": "the purpose the access was asked for",
        "expires_on": "when the access ends",
    },
}

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def sha256(text: str) -> str:
    """The hex SHA-256 of ``text`` as UTF-8: what a signature is bound to."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fill(body: str, fields: Mapping[str, Any]) -> str:
    """``body`` with its placeholders filled in from ``fields`` (plain text; Markdown is rendered
    and sanitised when shown). Raises ValidationError naming the first problem."""
    try:
        return _ENV.from_string(body).render(**fields)
    except TemplateError as e:
        raise ValidationError(f"The text cannot be filled in: {e.message or e}.") from None


def sample_fields(kind: AgreementKind) -> dict[str, str]:
    """Stand-ins for every placeholder of ``kind`` (checking and previewing a draft)."""
    return {name: f"[{name}]" for name in FIELDS[kind]}


def check_body(kind: AgreementKind, body: str) -> None:
    """Refuse a body whose placeholders the kind does not offer, or whose syntax is broken."""
    if not body.strip():
        raise ValidationError("Write the agreement's text.")
    try:
        _ENV.from_string(body).render(**sample_fields(kind))
    except TemplateError as e:
        known = ", ".join(sorted(FIELDS[kind]))
        raise ValidationError(
            f"The text cannot be filled in ({e.message or e}). Placeholders you can use: {known}."
        ) from None


def _date(day: dt.date | None) -> str:
    return day.strftime("%d %B %Y") if day else "(not set)"


def _common(lab: str, today: dt.date) -> dict[str, str]:
    return {"lab": lab, "today": _date(today)}


def institution_fields(institution: Institution, *, lab: str, today: dt.date) -> dict[str, str]:
    return {
        **_common(lab, today),
        "institution": institution.name,
        "country": institution.country,
        "ror_id": institution.ror_id or "(none)",
    }


def project_fields(proposal: Proposal, *, lab: str, today: dt.date) -> dict[str, str]:
    pi = next((m.user.display_name for m in proposal.team if m.role == TeamRole.PI), "(none)")
    awards = sorted(proposal.awards, key=lambda a: a.call_resource.resource.name)
    return {
        **_common(lab, today),
        "project": proposal.title,
        "pi": pi,
        "institution": proposal.institution.name,
        "call": proposal.call.title,
        "hours": "; ".join(
            f"{a.hours:,} GPU-hours on {a.call_resource.resource.name}" for a in awards
        )
        or "(none)",
        "total_hours": f"{sum(a.hours for a in awards):,}",
        "start_date": _date(proposal.start_date),
        "duration_months": str(proposal.duration_months or "(not set)"),
        "outputs": "; ".join(
            f"{o.kind.label}: {o.description or o.kind.label} ({o.license})"
            for o in proposal.outputs
        )
        or "(none)",
    }
