"""Who may see and change institutions and affiliations.

Each ``can_*`` rule states who in its docstring; ``visible_*`` and ``decidable_affiliations`` are the
same rules as list filters, and ``deciders_of_affiliation`` picks whom a request is mailed to.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, exists, false, literal, or_, select
from sqlalchemy.orm import object_session
from sqlalchemy.sql.elements import ColumnElement

from portal.auth.models import Role, RoleGrant, User
from portal.auth.permissions import as_user, is_staff
from portal.core.permissions import rule
from portal.institutions.models import (
    Affiliation,
    AffiliationSource,
    AffiliationState,
    Application,
    Institution,
    InstitutionDomain,
    InstitutionState,
)


def visible_institutions(user: Any) -> Select[Institution]:
    """``can_view_institution`` as a list filter."""
    q = select(Institution)
    u = as_user(user)
    if u is None:
        return q.where(false())
    if is_staff(u):
        return q
    own_roles = select(RoleGrant.institution_id).where(
        RoleGrant.user_id == u.id, RoleGrant.institution_id.is_not(None)
    )
    own_affiliations = select(Affiliation.institution_id).where(
        Affiliation.user_id == u.id, Affiliation.state == AffiliationState.ACTIVE
    )
    own_applications = select(Application.institution_id).where(Application.applicant_id == u.id)
    return q.where(
        or_(
            Institution.state == InstitutionState.PARTNER,
            Institution.id.in_(own_roles),
            Institution.id.in_(own_affiliations),
            Institution.id.in_(own_applications),
        )
    )


@rule("You cannot see this institution.")
def can_view_institution(user: Any, institution: Institution) -> bool:
    """Partners to everyone logged in; every institution to staff; others to the people who hold
    a role there or are active members (asking to join one grants no view of it), and an
    application to the person who made it."""
    u = as_user(user)
    if u is None:
        return False
    if is_staff(u) or institution.state == InstitutionState.PARTNER:
        return True
    if institution.application is not None and institution.application.applicant_id == u.id:
        return True
    return institution.id in {g.institution_id for g in u.role_grants} or any(
        a.institution_id == institution.id and a.state == AffiliationState.ACTIVE
        for a in u.affiliations
    )


@rule("Only program staff can register institutions.")
def can_register_institution(user: Any) -> bool:
    """Program staff."""
    return is_staff(user)


@rule("You cannot edit this institution.")
def can_edit_institution(user: Any, institution: Institution) -> bool:
    """Program staff, and the institution's own signing officials."""
    u = as_user(user)
    return is_staff(u) or (u is not None and u.has_role(Role.SIGNING_OFFICIAL, institution))


#: Once past ``applied``, an institution's name, ROR id and country have been vetted by staff.
VETTED_STATES = frozenset(
    {
        InstitutionState.UNDER_REVIEW,
        InstitutionState.APPROVED,
        InstitutionState.PARTNER,
        InstitutionState.SUSPENDED,
        InstitutionState.DECLINED,
        InstitutionState.WITHDRAWN,
    }
)


@rule(
    "The name, ROR id and country of an institution under review or a partner are vetted: "
    "only program staff change them. Ask program staff."
)
def can_edit_vetted_details(user: Any, institution: Institution) -> bool:
    """Program staff; the institution's signing officials only while it has merely applied."""
    return is_staff(user) or (
        institution.state not in VETTED_STATES and can_edit_institution(user, institution)
    )


@rule("You cannot change this institution's e-mail domains.")
def can_manage_domains(user: Any, institution: Institution) -> bool:
    """Whoever may edit the institution adds and removes its e-mail domains (new ones are pending
    until proven)."""
    return can_edit_institution(user, institution)


@rule("You cannot check this domain.")
def can_check_domain_dns(user: Any, domain: InstitutionDomain) -> bool:
    """Whoever may manage the institution's domains asks for the DNS proof to be checked."""
    return can_manage_domains(user, domain.institution)


@rule("Only program staff verify a domain without its DNS record.")
def can_verify_domain(user: Any, domain: InstitutionDomain) -> bool:
    """Program staff vouch for a domain themselves (where DNS cannot be changed or reached)."""
    return is_staff(user)


@rule("You cannot see this institution's history.")
def can_view_institution_history(user: Any, institution: Institution) -> bool:
    """Whoever may edit the institution."""
    return can_edit_institution(user, institution)


@rule("Only program staff review applications and approve partners.")
def can_review_institution(user: Any, institution: Institution) -> bool:
    """Program staff start the review of an application and approve partners."""
    return is_staff(user)


@rule("Only the person who applied can change and send this application.")
def can_resubmit_application(user: Any, institution: Institution) -> bool:
    """The person who applied for the institution (and its signing officials, once they accepted)
    edit the application and send it again after the program asked for changes."""
    u = as_user(user)
    if u is None:
        return False
    application = institution.application
    return (application is not None and application.applicant_id == u.id) or u.has_role(
        Role.SIGNING_OFFICIAL, institution
    )


@rule("Only program staff decide applications.")
def can_decide_application(user: Any, institution: Institution) -> bool:
    """Program staff ask for changes, start the review, approve and decline."""
    return is_staff(user)


@rule("An institution becomes a partner when its partnership agreement is fully signed.")
def can_complete_partnership(user: Any, institution: Institution) -> bool:
    """Nobody by hand: the last signature of the partnership agreement takes this step, and its
    signer (program staff countersigning, or the institution's signing official) is the actor."""
    u = as_user(user)
    return is_staff(u) or (u is not None and u.has_role(Role.SIGNING_OFFICIAL, institution))


def applications_of(user: Any) -> Select[Institution]:
    """The institutions ``user`` applied for (``can_resubmit_application``'s applicant half)."""
    u = as_user(user)
    if u is None:
        return select(Institution).where(false())
    return (
        select(Institution)
        .join(Application, Application.institution_id == Institution.id)
        .where(Application.applicant_id == u.id)
    )


def application_deciders() -> Select[User]:
    """Whom a new or resubmitted application is mailed to: ``can_decide_application``'s people."""
    return (
        select(User)
        .where(
            User.is_disabled.is_(False),
            User.id.in_(select(RoleGrant.user_id).where(RoleGrant.role == Role.PROGRAM_OFFICER)),
        )
        .order_by(User.id)
    )


def signing_officials_of(institution: Institution) -> Select[User]:
    """The institution's enabled signing officials (mail about the institution goes to them)."""
    return select(User).where(User.id.in_(_officials_at(institution.id, None))).order_by(User.id)


@rule("Only program staff suspend and reinstate partners.")
def can_suspend_institution(user: Any, institution: Institution) -> bool:
    """Program staff suspend a partner and reinstate it."""
    return is_staff(user)


#: An application its applicant may still take back (until the institution is a partner).
WITHDRAWABLE_BY_APPLICANT = frozenset(
    {
        InstitutionState.APPLIED,
        InstitutionState.CHANGES_REQUESTED,
        InstitutionState.UNDER_REVIEW,
        InstitutionState.APPROVED,
    }
)


@rule("Only program staff or the institution's signing official can withdraw it.")
def can_withdraw_institution(user: Any, institution: Institution) -> bool:
    """Program staff, and the institution's own signing officials (it leaves the program); the
    person who applied takes their application back until the institution is a partner."""
    u = as_user(user)
    if u is None:
        return False
    if is_staff(u) or u.has_role(Role.SIGNING_OFFICIAL, institution):
        return True
    application = institution.application
    return (
        institution.state in WITHDRAWABLE_BY_APPLICANT
        and application is not None
        and application.applicant_id == u.id
    )


#: Institutions people may ask to join: partners only (an applicant is not vetted yet).
REQUESTABLE_STATES = frozenset({InstitutionState.PARTNER})


@rule("Only partner institutions take requests to join.")
def can_request_affiliation(user: Any, institution: Institution) -> bool:
    """Anyone logged in may ask to join a partner institution."""
    return as_user(user) is not None and institution.state in REQUESTABLE_STATES


def _officials_at(institution_id: Any, besides: Any) -> Select[int]:
    """Active signing officials of an institution, other than ``besides`` (the requester)."""
    return (
        select(RoleGrant.user_id)
        .join(User, User.id == RoleGrant.user_id)
        .where(
            RoleGrant.role == Role.SIGNING_OFFICIAL,
            RoleGrant.institution_id == institution_id,
            RoleGrant.user_id != besides,
            User.is_disabled.is_(False),
        )
    )


def _decider(user_id: Any, affiliation_institution: Any, requester: Any) -> ColumnElement[bool]:
    """SQL for ``can_decide_affiliation``: the institution's officials; program officers when it
    has none."""
    officers = select(RoleGrant.user_id).where(RoleGrant.role == Role.PROGRAM_OFFICER)
    return and_(
        user_id != requester,
        or_(
            user_id.in_(_officials_at(affiliation_institution, requester)),
            and_(
                user_id.in_(officers),
                ~exists(_officials_at(affiliation_institution, requester)),
            ),
        ),
    )


@rule("Only the institution's signing official decides on requests to join it.")
def can_decide_affiliation(user: Any, affiliation: Affiliation) -> bool:
    """The institution's signing officials decide requests to join it (never their own); where it
    has no signing official, program officers do."""
    u = as_user(user)
    if u is None or affiliation.user_id == u.id:
        return False
    if affiliation.institution_id in u.institution_ids_for(Role.SIGNING_OFFICIAL):
        return True
    session = object_session(affiliation)
    return (
        u.has_role(Role.PROGRAM_OFFICER)
        and session is not None
        and not session.scalar(
            select(exists(_officials_at(affiliation.institution_id, affiliation.user_id)))
        )
    )


def decidable_affiliations(user: Any) -> Select[Affiliation]:
    """``can_decide_affiliation`` as a list filter."""
    q = select(Affiliation)
    u = as_user(user)
    if u is None:
        return q.where(false())
    return q.where(_decider(literal(u.id), Affiliation.institution_id, Affiliation.user_id))


def deciders_of_affiliation(affiliation: Affiliation) -> Select[User]:
    """The people ``can_decide_affiliation`` lets decide ``affiliation``: whom its mail asks."""
    return (
        select(User)
        .where(
            User.is_disabled.is_(False),
            _decider(User.id, affiliation.institution_id, affiliation.user_id),
        )
        .order_by(User.id)
    )


@rule("This is not your request.")
def can_withdraw_affiliation_request(user: Any, affiliation: Affiliation) -> bool:
    """The person who asked to join takes their own request back."""
    u = as_user(user)
    return u is not None and affiliation.user_id == u.id


@rule("Only the person themselves is vouched for by their identity provider.")
def can_confirm_affiliation_by_idp(user: Any, affiliation: Affiliation) -> bool:
    """The person's own login: their identity provider's verified claims (checked in
    ``portal.auth.claims``) settle their own open request."""
    u = as_user(user)
    return u is not None and affiliation.user_id == u.id


@rule("Only the person's own login ends an affiliation their identity provider vouched for.")
def can_end_affiliation_by_idp(user: Any, affiliation: Affiliation) -> bool:
    """The person's own login, when their identity provider's claims (re-evaluated at each login in
    ``portal.auth``) no longer support an affiliation that came from such claims; affiliations an
    official approved or staff recorded are never ended this way."""
    u = as_user(user)
    return (
        u is not None
        and affiliation.user_id == u.id
        and affiliation.source == AffiliationSource.IDP_CLAIM
    )


# --- Applying to become a partner, the onboarding queue, invitations to be signing official ------
# (``portal.institutions.onboarding``, ``portal.institutions.apply_views``)

#: An application its applicant (or the institution's signing officials) may still change.
EDITABLE_APPLICATION_STATES = frozenset(
    {InstitutionState.APPLIED, InstitutionState.CHANGES_REQUESTED}
)


@rule("Log in with an enabled account to apply for your institution.")
def can_apply(user: Any) -> bool:
    """Anyone logged in applies for their university to become a partner (program staff vet the
    institution, its domains and its proposed signing officials before approving it)."""
    u = as_user(user)
    return u is not None and not u.is_disabled


@rule("You cannot see this application.")
def can_view_application(user: Any, institution: Institution) -> bool:
    """Program staff see every institution's application page; others only an application they
    made, or one of an institution where they are signing official."""
    u = as_user(user)
    if u is None:
        return False
    if is_staff(u):
        return True
    application = institution.application
    return application is not None and (
        application.applicant_id == u.id or u.has_role(Role.SIGNING_OFFICIAL, institution)
    )


def visible_applications(user: Any) -> Select[Institution]:
    """``can_view_application`` as a list filter (the onboarding queue)."""
    q = select(Institution)
    u = as_user(user)
    if u is None:
        return q.where(false())
    if is_staff(u):
        return q
    officials = select(RoleGrant.institution_id).where(
        RoleGrant.user_id == u.id, RoleGrant.role == Role.SIGNING_OFFICIAL
    )
    return q.where(
        Institution.id.in_(
            select(Application.institution_id).where(
                or_(Application.applicant_id == u.id, Application.institution_id.in_(officials))
            )
        )
    )


@rule(
    "Only the person who applied, or a signing official of the institution, changes this "
    "application, and only while it waits for review or changes are asked for."
)
def can_edit_application(user: Any, institution: Institution) -> bool:
    """``can_resubmit_application``'s people, while the application is applied or sent back for
    changes (once under review, its details are vetted by program staff)."""
    return (
        institution.state in EDITABLE_APPLICATION_STATES
        and institution.application is not None
        and can_resubmit_application(user, institution)
    )


@rule("Only program staff download the onboarding queue.")
def can_export_applications(user: Any) -> bool:
    """Program staff download the onboarding queue as CSV."""
    return is_staff(user)


@rule("Log in with an enabled account to answer this invitation.")
def can_answer_invitation(user: Any, invitation: Any) -> bool:
    """Whoever opens the link, logged in: the one-time token mailed to the invited address is the
    proof (a login under another address is allowed and recorded, see ``onboarding``)."""
    u = as_user(user)
    return u is not None and not u.is_disabled


@rule("Only program staff or the applicant can cancel this invitation.")
def can_cancel_invitation(user: Any, invitation: Any) -> bool:
    """Program staff, and whoever may change the application (the applicant, the institution's
    signing officials) or withdraw the institution (which cancels what is still open)."""
    return (
        is_staff(user)
        or can_resubmit_application(user, invitation.institution)
        or can_withdraw_institution(user, invitation.institution)
    )
