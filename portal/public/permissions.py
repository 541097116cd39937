"""What the program shows the world, to anyone (anonymous visitors included).

The public pages show partner institutions (state ``partner``: not applicants, approved-and-waiting,
suspended, declined or withdrawn ones) and their awarded projects (proposals in state ``active`` at
a partner: never drafts, submitted, in review, declined or withdrawn ones). A project's principal
investigator is named only when they agreed to it (``User.public_name``); no other person is
named. Each list filter below is the same rule as its ``can_*`` predicate, so a public list never
shows what the public detail page would refuse (a 404: the public cannot tell "not public" from
"does not exist").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, select
from sqlalchemy.orm import aliased

from portal.auth.models import User
from portal.auth.permissions import as_user
from portal.core.models import utcnow
from portal.core.permissions import rule
from portal.institutions.models import Institution, InstitutionState
from portal.proposals.models import Call, CallState, Proposal, ProposalState


def is_public_institution() -> ColumnElement[bool]:
    """The condition on ``Institution``: a partner."""
    return Institution.state == InstitutionState.PARTNER


def is_public_project() -> ColumnElement[bool]:
    """The condition on ``Proposal``: awarded (active), at an institution that is a partner."""
    # An alias: a query that also joins the institution (to search its name) must not correlate
    # this subquery with its own join.
    partner = aliased(Institution)
    return and_(
        Proposal.state == ProposalState.ACTIVE,
        exists().where(
            partner.id == Proposal.institution_id, partner.state == InstitutionState.PARTNER
        ),
    )


def public_institutions() -> Select[Institution]:
    """``can_see_public_institution`` as a query."""
    return select(Institution).where(is_public_institution())


def public_projects() -> Select[Proposal]:
    """``can_see_public_project`` as a query."""
    return select(Proposal).where(is_public_project())


def public_calls() -> Select[Call]:
    """``can_see_public_call`` as a query (``now``: the request's time)."""
    now = utcnow()
    return select(Call).where(
        Call.state == CallState.OPEN, (Call.closes_at.is_(None)) | (Call.closes_at > now)
    )


@rule("This institution is not one of the program's partners.")
def can_see_public_institution(user: Any, institution: Institution) -> bool:
    """Everyone sees the partners; nobody sees any other institution on the public pages."""
    return institution.state == InstitutionState.PARTNER


@rule("This is not an awarded project of a partner institution.")
def can_see_public_project(user: Any, proposal: Proposal) -> bool:
    """Everyone sees the awarded (active) projects of partners; nobody sees any other proposal
    on the public pages."""
    return proposal.state == ProposalState.ACTIVE and can_see_public_institution(
        user, proposal.institution
    )


@rule("This call is not open.")
def can_see_public_call(user: Any, call: Call) -> bool:
    """Everyone sees the open calls whose deadline (if any) has not passed."""
    return call.state == CallState.OPEN and (call.closes_at is None or call.closes_at > utcnow())


def named_publicly(person: User | None) -> bool:
    """Whether the public pages may name ``person`` (a project's PI): only with their consent."""
    return person is not None and person.public_name


@rule("You can only change your own consent.")
def can_set_public_name(user: Any, person: User) -> bool:
    """People decide themselves whether the public pages name them."""
    u = as_user(user)
    return u is not None and u.id == person.id
