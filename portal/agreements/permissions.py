"""Who may write templates, issue and withdraw agreements, see them, and sign or decline.

Each ``can_*`` rule says who in its docstring; ``visible_agreements`` and ``signable_signatures``
are the same rules as list filters, ``signers_of`` the same rule as the recipients of the mail that
asks someone to sign — so nobody is asked to sign what they may not, and every list shows only
what its detail page would show.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import CompoundSelect, Select, and_, exists, false, or_, select, union
from sqlalchemy.orm import aliased, object_session
from sqlalchemy.sql.elements import ColumnElement

from portal.agreements.models import (
    Agreement,
    AgreementState,
    PartyRole,
    Signature,
    SignatureState,
    SubjectType,
    TemplateVersion,
    VersionState,
)
from portal.auth.models import Role, RoleGrant, User
from portal.auth.permissions import as_user, is_staff
from portal.core.models import AnySession
from portal.core.permissions import rule
from portal.proposals.models import TeamMember

#: Roles a slot without a named person is open to, and where the role must be held.
_ROLE_FOR_PARTY = {
    PartyRole.SIGNING_OFFICIAL: Role.SIGNING_OFFICIAL,
    PartyRole.PROGRAM: Role.PROGRAM_OFFICER,
    PartyRole.DATA_STEWARD: Role.DATA_STEWARD,
}


# --- templates ---------------------------------------------------------------------------------


@rule("Only program staff write agreement templates and issue agreements.")
def can_manage_agreements(user: Any) -> bool:
    """Program staff (program officers and administrators)."""
    return is_staff(user)


@rule("This version is a draft: only program staff read it.")
def can_view_version(user: Any, version: TemplateVersion) -> bool:
    """Published (and superseded) wording to everyone logged in — a partner reads what it will be
    asked to sign; drafts to program staff."""
    u = as_user(user)
    return u is not None and (version.state != VersionState.DRAFT or is_staff(u))


@rule("Only program staff publish agreement versions.")
def can_publish_version(user: Any, version: TemplateVersion) -> bool:
    """Program staff."""
    return is_staff(user)


# --- agreements --------------------------------------------------------------------------------


def _is_party(u: User, agreement: Agreement) -> bool:
    return any(u.id in (s.user_id, s.signed_by_id) for s in agreement.signatures)


@rule("You cannot see this agreement.")
def can_view_agreement(user: Any, agreement: Agreement) -> bool:
    """Program staff; its named parties and everyone who signed it; the signing officials of its
    institution; the team of its project."""
    u = as_user(user)
    if u is None:
        return False
    return (
        is_staff(u)
        or _is_party(u, agreement)
        or (
            agreement.institution_id is not None
            and agreement.institution_id in u.institution_ids_for(Role.SIGNING_OFFICIAL)
        )
        or (
            agreement.proposal is not None
            and any(m.user_id == u.id for m in agreement.proposal.team)
        )
    )


def visible_agreements(user: Any) -> Select[Agreement]:
    """``can_view_agreement`` as a list filter."""
    q = select(Agreement)
    u = as_user(user)
    if u is None:
        return q.where(false())
    if is_staff(u):
        return q
    return q.where(Agreement.id.in_(_visible_ids(u)))


def _visible_ids(u: User) -> CompoundSelect[Any]:
    """The ids of the agreements ``u`` sees without being staff: those they are a party to or
    signed, their projects' and their institutions' (as signing official). Each way is found
    by its own index and the ids joined; one condition OR-ing the ways would read every
    agreement."""
    party = select(Signature.agreement_id).where(
        or_(Signature.user_id == u.id, Signature.signed_by_id == u.id)
    )
    team = (
        select(Agreement.id)
        .join(TeamMember, TeamMember.proposal_id == Agreement.proposal_id)
        .where(TeamMember.user_id == u.id)
    )
    official = select(Agreement.id).where(
        Agreement.institution_id.in_(
            select(RoleGrant.institution_id).where(
                RoleGrant.user_id == u.id, RoleGrant.role == Role.SIGNING_OFFICIAL
            )
        )
    )
    return union(*(q.correlate(None) for q in (party, team, official)))


#: Whether the subject of an agreement has ended (the access a data-use agreement was for was
#: revoked, say), by subject type: registered by the domain that owns the subject. An ended
#: subject's agreement still being signed is withdrawn, and is not asked to re-consent.
SUBJECT_ENDED: dict[SubjectType, Callable[[AnySession, int], bool]] = {}


def subject_ended(agreement: Agreement) -> bool:
    ended = SUBJECT_ENDED.get(agreement.subject_type)
    session = object_session(agreement)
    return ended is not None and session is not None and ended(session, agreement.subject_id)


@rule("Only program staff issue and withdraw agreements.")
def can_withdraw_agreement(user: Any, agreement: Agreement) -> bool:
    """Program staff (to issue a corrected one, or when the subject is gone); and, by itself, the
    step that ends its subject (access revoked while its data-use agreement was being signed)."""
    return is_staff(user) or subject_ended(agreement)


def _may_sign(u: User, signature: Signature) -> bool:
    if signature.user_id is not None:
        return signature.user_id == u.id
    role = _ROLE_FOR_PARTY.get(signature.role)
    if role is None:
        return False
    if role == Role.SIGNING_OFFICIAL:
        return signature.agreement.institution_id in u.institution_ids_for(role)
    return u.has_role(role)


@rule("This signature is not yours to give.")
def can_sign(user: Any, signature: Signature) -> bool:
    """The named party (the PI, the researcher, the steward); for a party named by role: any
    signing official of the agreement's institution (signing for it), any program officer
    (countersigning for the lab), any data steward."""
    u = as_user(user)
    return u is not None and _may_sign(u, signature)


@rule("Only a party whose turn it is may decline this agreement.")
def can_decline_agreement(user: Any, agreement: Agreement) -> bool:
    """A party whose turn it is to sign (the agreement is declined in the same step as that
    party's signature, so the slot they just declined counts too)."""
    u = as_user(user)
    turn = agreement.next_signatures + [
        s for s in agreement.signatures if s.state == SignatureState.DECLINED
    ]
    return u is not None and any(_may_sign(u, s) for s in turn)


@rule("An agreement is complete only once every party has signed it.")
def can_complete_agreement(user: Any, agreement: Agreement) -> bool:
    """Nobody by hand: it follows the last signature (whose signer is the actor)."""
    u = as_user(user)
    return (
        u is not None
        and bool(agreement.signatures)
        and all(s.state == SignatureState.SIGNED for s in agreement.signatures)
        and any(s.signed_by_id == u.id for s in agreement.signatures)
    )


@rule("Only the agreement that replaces it, once signed, supersedes an agreement.")
def can_supersede_agreement(user: Any, agreement: Agreement) -> bool:
    """Nobody by hand: it follows the full signature of its re-consent successor."""
    return as_user(user) is not None and agreement.reconsent_by is not None


# --- the same rules as SQL: lists and recipients -----------------------------------------------


def _signer_sql(user_id: Any, s: Any, a: Any) -> ColumnElement[bool]:
    """SQL for ``can_sign``: ``user_id`` may fill slot ``s`` of agreement ``a``."""

    def holds(role: Role, *, at_institution: bool = False) -> Any:
        q = select(RoleGrant.id).where(RoleGrant.user_id == user_id, RoleGrant.role == role)
        if at_institution:
            q = q.where(RoleGrant.institution_id == a.institution_id)
        return exists(q)

    return or_(
        s.user_id == user_id,
        and_(
            s.user_id.is_(None),
            or_(
                and_(
                    s.role == PartyRole.SIGNING_OFFICIAL,
                    holds(Role.SIGNING_OFFICIAL, at_institution=True),
                ),
                and_(s.role == PartyRole.PROGRAM, holds(Role.PROGRAM_OFFICER)),
                and_(s.role == PartyRole.DATA_STEWARD, holds(Role.DATA_STEWARD)),
            ),
        ),
    )


def _its_turn(s: Any) -> ColumnElement[bool]:
    """No pending slot before ``s`` on its agreement."""
    earlier = aliased(Signature)
    return ~exists().where(
        earlier.agreement_id == s.agreement_id,
        earlier.position < s.position,
        earlier.state != SignatureState.SIGNED,
    )


def _fillable_ids(u: User) -> CompoundSelect[Any]:
    """The ids of the pending slots ``u`` may fill (``can_sign``): those naming them, and those
    open to a role they hold (a signing official's, at their institutions). The roles are known
    here, so only their ways are asked, each by its own index."""
    ways = [
        select(Signature.id).where(
            Signature.user_id == u.id, Signature.state == SignatureState.PENDING
        )
    ]
    for party, role in _ROLE_FOR_PARTY.items():
        if not u.has_role(role):
            continue
        open_slots = select(Signature.id).where(
            Signature.role == party,
            Signature.state == SignatureState.PENDING,
            Signature.user_id.is_(None),
        )
        if role == Role.SIGNING_OFFICIAL:
            open_slots = open_slots.where(
                Signature.agreement_id.in_(
                    select(Agreement.id).where(
                        Agreement.institution_id.in_(sorted(u.institution_ids_for(role)))
                    )
                )
            )
        ways.append(open_slots)
    return union(*(q.correlate(None) for q in ways))


def signable_signatures(user: Any) -> Select[Signature]:
    """The slots ``user`` may sign now (their turn has come): the "Agreements to sign" list."""
    u = as_user(user)
    if u is None:
        return select(Signature).where(false())
    return (
        select(Signature)
        .join(Agreement, Agreement.id == Signature.agreement_id)
        .where(
            Signature.id.in_(_fillable_ids(u)),
            Agreement.state == AgreementState.AWAITING,
            Signature.state == SignatureState.PENDING,
            _its_turn(Signature),
        )
    )


def signers_of(signature: Signature) -> Select[User]:
    """The people ``can_sign`` lets fill ``signature``: whom the "please sign" mail asks."""
    s = select(Signature).where(Signature.id == signature.id).subquery()
    a = select(Agreement).where(Agreement.id == signature.agreement_id).subquery()
    return (
        select(User)
        .where(User.is_disabled.is_(False), _signer_sql(User.id, s.c, a.c))
        .order_by(User.id)
    )
