"""Demo data: ``flask --app portal demo load`` fills an empty database with a small, real-looking lab.

Every record goes through the same services the web pages use, so demo data obeys every rule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import func, select

from portal.agreements.models import Agreement
from portal.allocations.models import Allocation
from portal.allocations.services import sweep
from portal.api.models import TokenScope
from portal.api.services import create_token
from portal.auth.models import Identity, Role, RoleGrant, User
from portal.auth.services import set_user_disabled
from portal.core import audit
from portal.core.database import write_intent
from portal.core.dates import add_months
from portal.core.models import AnySession, utcnow
from portal.datasets import services as datasets
from portal.datasets.models import AccessRequest, AccessTier, Dataset, Grant
from portal.dev.demo_agreements import load_agreements, load_templates, sign_partnership
from portal.dev.demo_allocations import load_allocations, load_follow_ups
from portal.dev.demo_applications import load_applications, ror_record
from portal.dev.demo_datasets import load_datasets
from portal.dev.demo_outputs import load_outputs
from portal.dev.demo_proposals import load_proposals
from portal.dev.demo_reviews import load_reviews
from portal.extensions import db
from portal.institutions import domains as domain_proof
from portal.institutions import services as institutions
from portal.institutions.models import Affiliation, AffiliationSource, AffiliationState, Institution
from portal.outputs import services as outputs
from portal.outputs.models import FinalReport, ReleasedOutput
from portal.proposals.models import Proposal, Resource
from portal.public.services import set_public_name

demo_cli = AppGroup("demo", help="Demo data for trying the portal.")


@dataclass(frozen=True)
class DemoInstitution:
    """A university registered by program staff (before applications came in through the portal).

    Its name, country, website and e-mail domains are its record in the shipped ROR subset
    (``portal/institutions/data/ror-subset.json``): real organisations, never invented ones."""

    key: str
    ror: str
    short: str
    #: The lifecycle actions taken after registration (``approve`` issues the partnership
    #: agreement, which its signing official and the program officer then sign: a partner).
    path: tuple[str, ...]
    #: Those of its ROR domains not proven yet (the others are verified by staff).
    pending_domains: tuple[str, ...] = ()
    #: The lifecycle actions taken once its projects have run (``demo_allocations``).
    later: tuple[str, ...] = ()
    #: How long ago it became a partner (the directory's "partner since"; the demo is loaded in
    #: one go, so the history is dated afterwards: ``_date_history``).
    partner_months: int = 12


#: The partners, registered by program staff; the other demo institutions applied through the
#: portal (``demo_applications``).
INSTITUTIONS = [
    DemoInstitution(
        "charlotte",
        "https://ror.org/04dawnj30",
        "UNC Charlotte",
        ("start_review", "approve"),
        pending_domains=("uncc.edu",),
        partner_months=34,
    ),
    DemoInstitution(
        "tum", "https://ror.org/02kkvpp62", "TUM", ("start_review", "approve"), partner_months=27
    ),
    DemoInstitution(
        "keio", "https://ror.org/02kn6nx58", "Keio", ("start_review", "approve"), partner_months=15
    ),
    # A partner long enough for a project of its own to run, whose allocation its suspension stops.
    DemoInstitution(
        "westfjords",
        "https://ror.org/00z2vfv58",
        "UW",
        ("start_review", "approve"),
        later=("suspend",),
        partner_months=20,
    ),
]

#: The reason given for each lifecycle action that needs one.
REASONS = {
    "suspend": "Its signing official has left and no successor has been named; suspended until "
    "the university names one.",
}


@dataclass(frozen=True)
class DemoPerson:
    #: Subject at the demo identity provider; also the login name shown in the README.
    sub: str
    name: str
    email: str
    roles: tuple[tuple[Role, str | None], ...]
    title: str | None = None
    #: Agrees to be named on the program's public pages (as a project's PI).
    public_name: bool = False
    #: What ``make run`` says about a login whose roles do not come from here.
    about: str = ""


PEOPLE = [
    DemoPerson("admin", "Alex Admin", "admin@atom-lab.org", ((Role.ADMIN, None),)),
    DemoPerson("officer", "Priya Officer", "priya@atom-lab.org", ((Role.PROGRAM_OFFICER, None),)),
    # A PI who does not want to be named publicly: the public pages show his project without him.
    DemoPerson(
        "reviewer",
        "Rafael Reviewer",
        "rafael@tum.de",
        ((Role.REVIEWER, None), (Role.RESEARCHER, "tum")),
        "faculty",
    ),
    DemoPerson("reviewer2", "Ines Reviewer", "ines@atom-lab.org", ((Role.REVIEWER, None),)),
    DemoPerson("steward", "Dana Steward", "dana@atom-lab.org", ((Role.DATA_STEWARD, None),)),
    # A second steward, of other datasets: neither decides on the other's (``demo_datasets``).
    DemoPerson("steward2", "Lena Steward", "lena@atom-lab.org", ((Role.DATA_STEWARD, None),)),
    DemoPerson(
        "professor",
        "Ada Lovelace",
        "ada@charlotte.edu",
        ((Role.RESEARCHER, "charlotte"),),
        "faculty",
        public_name=True,
    ),
    DemoPerson(
        "student",
        "Sam Student",
        "sam@charlotte.edu",
        ((Role.RESEARCHER, "charlotte"),),
        "student",
    ),
    # Her console has something in every section: requests to join, members, proposals to
    # endorse, agreements to sign, projects with hours and dataset grants, a domain to prove.
    DemoPerson(
        "official",
        "Olivia Official",
        "olivia@charlotte.edu",
        ((Role.SIGNING_OFFICIAL, "charlotte"),),
        "staff",
    ),
    DemoPerson(
        "keio-prof",
        "Kenji Tanaka",
        "tanaka@keio.ac.jp",
        ((Role.RESEARCHER, "keio"),),
        "faculty",
        public_name=True,
    ),
    DemoPerson(
        "keio-official", "Yuki Sato", "sato@keio.ac.jp", ((Role.SIGNING_OFFICIAL, "keio"),), "staff"
    ),
    DemoPerson(
        "tum-official",
        "Jonas Becker",
        "jonas.becker@tum.de",
        ((Role.SIGNING_OFFICIAL, "tum"),),
        "staff",
    ),
    # She applied for Laikipia University and accepted to be its signing official (so she holds
    # the role from her invitation, not from here): approved, its partnership agreement signed by
    # her waits for the program's countersignature (``demo_applications``).
    DemoPerson(
        "laikipia-official",
        "Wanjiru Kamau",
        "w.kamau@laikipia.ac.ke",
        (),
        "staff",
        about="Signing official of Laikipia University (approved; its agreement waits on us)",
    ),
    # The application just received: Chinedu applied for his university (``demo_applications``).
    DemoPerson(
        "applicant",
        "Chinedu Okafor",
        "c.okafor@nutm.edu.ng",
        (),
        "faculty",
        about="Applied for Nigerian University of Technology and Management",
    ),
    # The program asked for changes to her application: she edits it and sends it again.
    DemoPerson(
        "wits-applicant",
        "Thandiwe Nkosi",
        "t.nkosi@wits.ac.za",
        (),
        "faculty",
        about="Applied for University of the Witwatersrand (changes requested)",
    ),
]

#: People in the demo data who are no demo login (the demo identity provider does not list them):
#: the Westfjords' researcher, whose project its suspension stopped, and the people who applied for
#: the other universities or were named their signing officials (``demo_applications``).
OTHER_PEOPLE = [
    DemoPerson(
        "westfjords-prof",
        "Katla Jonsdottir",
        "katla@uw.is",
        ((Role.RESEARCHER, "westfjords"),),
        "faculty",
        public_name=True,
    ),
    DemoPerson("delft-applicant", "Pieter Jansen", "p.jansen@tudelft.nl", (), "faculty"),
    DemoPerson("delft-official", "Marloes de Vries", "m.devries@tudelft.nl", (), "staff"),
    DemoPerson("wits-dean", "Lerato Mokoena", "l.mokoena@wits.ac.za", (), "staff"),
    DemoPerson("ufc-applicant", "Rafaela Sousa", "rafaela.sousa@ufc.br", (), "faculty"),
    DemoPerson("ucb-applicant", "Mateo Quispe", "m.quispe@ucb.edu.bo", (), "faculty"),
]

#: People who signed for a partner and have since left: their accounts are disabled (with the
#: reason), so they are no demo login. Their institution is suspended after they leave.
FORMER_PEOPLE = [
    (
        DemoPerson(
            "uw-official",
            "Einar Sigurdsson",
            "einar@uw.is",
            ((Role.SIGNING_OFFICIAL, "westfjords"),),
            "staff",
        ),
        "Left the University Centre of the Westfjords; the university has not named a successor.",
    ),
]

#: People who asked to join an institution and still wait for its signing official.
PENDING_REQUESTS = [
    DemoPerson("newcomer", "Nia Newcomer", "nia@gmail.example", (), "postdoc"),
]

#: Earlier requests to join UNC Charlotte and how they ended (the official's lists show every
#: state).
SETTLED_REQUESTS = [
    (
        DemoPerson("visitor", "Victor Visitor", "victor@mail.example", (), "visiting student"),
        "reject",
        "We have no record of a visiting appointment; ask your host to confirm it.",
    ),
    (
        DemoPerson("changed-mind", "Mira Changed", "mira@mail.example", (), "postdoc"),
        "withdraw",
        "",
    ),
]

#: The institution the pending and settled requests asked to join.
REQUESTED_INSTITUTION = "charlotte"


def demo_issuer() -> str:
    from portal.dev.server import demo_issuer_of

    return demo_issuer_of(current_app)


def _person(session: AnySession, p: DemoPerson, issuer: str) -> User:
    user = User(display_name=p.name, email=p.email, email_verified=True)
    user.identities.append(
        Identity(issuer=issuer, subject=p.sub, email=p.email, email_verified=True, claims={})
    )
    session.add(user)
    session.flush()
    if p.public_name:
        # As on their account page: they agreed to be named on the public pages.
        set_public_name(session, user, actor=user, consent=True)
    return user


def _demo_provider(
    session: AnySession, admin: User, issuer: str, served: list[Institution]
) -> None:
    """Register the local demo identity provider (``portal.dev.idp``) in the registry."""
    from portal.auth.models import ProviderKind
    from portal.auth.services import save_provider

    save_provider(
        session,
        None,
        actor=admin,
        slug="demo",
        name="Demo identity provider (local)",
        kind=ProviderKind.INSTITUTION,
        issuer=issuer,
        client_id="atom-portal-demo",
        allowed_algorithms=current_app.config["OIDC_ALLOWED_ALGORITHMS"],
        served=[(inst, None) for inst in served],
    )


def _grant_roles(
    session: AnySession, user: User, p: DemoPerson, insts: dict[str, Institution], by: User
) -> None:
    """``p``'s roles, each with an active affiliation where it is held at an institution."""
    for role, key in p.roles:
        session.add(
            RoleGrant(
                user=user,
                role=role,
                institution=insts[key] if key else None,
                granted_by_id=by.id,
            )
        )
        if key and not any(a.institution_id == insts[key].id for a in user.affiliations):
            session.add(
                Affiliation(
                    user=user,
                    institution=insts[key],
                    title=p.title,
                    state=AffiliationState.ACTIVE,
                    source=AffiliationSource.STAFF,
                    decided_at=utcnow(),
                    decided_by_id=by.id,
                )
            )
    session.flush()
    audit.record(session, "user.create", actor=by, obj=user, source="demo")


def _date_history(session: AnySession, insts: dict[str, Institution]) -> None:
    """The demo is made in one go, today; its history is dated as it would have happened: the
    first partners joined over the past three years, and each project was approved a few weeks
    before it started (the public overview's GPU-hours per month)."""
    today = utcnow().date()
    for d in INSTITUTIONS:
        insts[d.key].partner_since = add_months(today, -d.partner_months)
    for proposal in session.scalars(select(Proposal).where(Proposal.decided_at.is_not(None))):
        if proposal.start_date is not None and proposal.start_date <= today:
            decided = proposal.start_date - dt.timedelta(days=21)
            proposal.decided_at = dt.datetime.combine(decided, dt.time(10), tzinfo=dt.UTC)
    session.flush()


def load(session: AnySession) -> dict[str, int]:
    """Create the demo institutions and applications, people, calls, proposals, reviews,
    agreements, allocations and their usage, datasets and access to them, released outputs and
    final reports; returns counts. The database must be empty.

    The order is the program's: the first partners are registered by program staff; people and
    the agreement templates exist; each partner is reviewed and approved — approval issues the
    partnership agreement, and its signing official's signature and the program officer's
    countersignature make it a partner; other universities apply through the portal, each
    application in another state (``demo_applications``); people ask to join; then the calls and
    proposals, whose approval issues each project's contribution agreement and allocates its
    GPU-hours, which become usable once that agreement is signed; the clusters' usage; the
    datasets catalog, access asked for, decided and signed for; what the projects released and
    their final reports; last, what happened since: a signing official left, their institution
    was suspended, the sweeps ran."""
    bootstrap = User(display_name="Portal setup", email=None)
    session.add(bootstrap)
    session.flush()
    session.add(RoleGrant(user=bootstrap, role=Role.ADMIN))
    session.flush()
    audit.record(session, "demo.load", actor=bootstrap)

    insts: dict[str, Institution] = {}
    for d in INSTITUTIONS:
        record = ror_record(d.ror)
        inst = institutions.register_institution(
            session,
            actor=bootstrap,
            name=record.name,
            country=record.country_code,
            ror_id=d.ror,
            short_name=d.short,
            website=record.website,
            domains=record.domains,
        )
        for claim in inst.all_domains:
            if claim.domain not in d.pending_domains:
                domain_proof.verify_domain_by_staff(session, claim, actor=bootstrap)
        insts[d.key] = inst

    issuer = demo_issuer()
    _demo_provider(session, bootstrap, issuer, [insts[k] for k in ("charlotte", "tum", "keio")])
    people: dict[str, User] = {}
    for p in PEOPLE + OTHER_PEOPLE + [former for former, _ in FORMER_PEOPLE]:
        people[p.sub] = _person(session, p, issuer)
        _grant_roles(session, people[p.sub], p, insts, bootstrap)

    load_templates(session, people["officer"])
    for d in INSTITUTIONS:
        for action in d.path:
            institutions.transition(
                session, insts[d.key], action, actor=people["officer"], reason=REASONS.get(action)
            )
            if action == "approve":
                # Approval issued the partnership agreement: its signing official signs, the
                # program officer countersigns, and with that last signature it is a partner.
                sign_partnership(session, insts[d.key])
    insts.update(load_applications(session, people))

    joining = insts[REQUESTED_INSTITUTION]
    for p in PENDING_REQUESTS:
        user = _person(session, p, issuer)
        session.add(
            Affiliation(
                user=user,
                institution=joining,
                title=p.title,
                state=AffiliationState.REQUESTED,
                source=AffiliationSource.OFFICIAL_APPROVAL,
            )
        )
    for person, action, reason in SETTLED_REQUESTS:
        user = _person(session, person, issuer)
        request = institutions.request_affiliation(session, joining, actor=user, title=person.title)
        if action == "withdraw":
            institutions.withdraw_affiliation_request(session, request, actor=user)
        else:
            institutions.decide_affiliation(
                session, request, action, actor=people["official"], reason=reason
            )
    load_proposals(session, bootstrap, people)
    load_reviews(session, bootstrap, people)
    load_agreements(session, people)
    load_allocations(session, bootstrap, people)
    load_datasets(session, people["officer"], people)
    load_outputs(session, people["officer"])
    # Then the Westfjords' signing official left, and the university was suspended (which stopped
    # its project's allocation and its researcher's access to a dataset); the scheduled sweeps
    # expired the allocation and the dataset access whose periods are over and sent the notices
    # that were due.
    for former, why in FORMER_PEOPLE:
        set_user_disabled(session, people[former.sub], actor=bootstrap, disabled=True, reason=why)
    for d in INSTITUTIONS:
        for action in d.later:
            institutions.transition(
                session, insts[d.key], action, actor=people["officer"], reason=REASONS.get(action)
            )
    _date_history(session, insts)
    sweep(session)
    datasets.sweep(session)
    outputs.sweep(session)
    load_follow_ups(session, bootstrap, people)
    # The atlas cluster's scheduler pulls its allocations and pushes usage with a token (its
    # secret was shown once, at creation, and is not kept: make your own on the Admin page).
    atlas = session.scalars(select(Resource).where(Resource.cluster == "atlas")).all()
    create_token(
        session,
        name="atlas Slurm (demo)",
        resources=atlas,
        expires_on=utcnow().date() + dt.timedelta(days=90),
        actor=bootstrap,
    )
    # The lab's object store asks who may read its controlled and registered datasets.
    create_token(
        session,
        name="Dataset object store (demo)",
        scope=TokenScope.DATASET_OPERATOR,
        datasets=session.scalars(
            select(Dataset).where(Dataset.tier != AccessTier.OPEN).order_by(Dataset.id)
        ).all(),
        expires_on=utcnow().date() + dt.timedelta(days=90),
        actor=bootstrap,
    )
    bootstrap.is_disabled = True  # the setup account never logs in
    session.flush()
    return {
        "institutions": len(insts),
        "users": session.scalar(select(func.count()).select_from(User)) or 0,
        "proposals": session.scalar(select(func.count()).select_from(Proposal)) or 0,
        "agreements": session.scalar(select(func.count()).select_from(Agreement)) or 0,
        "allocations": session.scalar(select(func.count()).select_from(Allocation)) or 0,
        "datasets": session.scalar(select(func.count()).select_from(Dataset)) or 0,
        "access requests": session.scalar(select(func.count()).select_from(AccessRequest)) or 0,
        "grants": session.scalar(select(func.count()).select_from(Grant)) or 0,
        "outputs": session.scalar(select(func.count()).select_from(ReleasedOutput)) or 0,
        "final reports": session.scalar(select(func.count()).select_from(FinalReport)) or 0,
    }


def load_if_empty() -> dict[str, int] | None:
    """Load the demo data and commit, unless the database already has institutions."""
    with audit.origin(audit.Origin(channel="cli")), write_intent():
        if db.session.scalar(select(func.count()).select_from(Institution)):
            return None
        counts = load(db.session)
        db.session.commit()
    return counts


@demo_cli.command("load")
def load_command() -> None:
    """Load demo data into an empty database (does nothing if institutions already exist)."""
    counts = load_if_empty()
    if counts is None:
        click.echo("Demo data is already loaded (the database has institutions); nothing to do.")
    else:
        click.echo(
            f"Loaded {counts['institutions']} institutions, {counts['users']} users, "
            f"{counts['proposals']} proposals, {counts['agreements']} agreements, "
            f"{counts['allocations']} allocations, {counts['datasets']} datasets, "
            f"{counts['access requests']} access requests, {counts['grants']} grants of access, "
            f"{counts['outputs']} released outputs and {counts['final reports']} final reports."
        )
