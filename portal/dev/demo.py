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
from portal.core.models import AnySession, utcnow
from portal.datasets import services as datasets
from portal.datasets.models import AccessRequest, AccessTier, Dataset, Grant
from portal.dev.demo_agreements import load_agreements, load_templates, sign_partnership
from portal.dev.demo_allocations import load_allocations, load_follow_ups
from portal.dev.demo_datasets import load_datasets
from portal.dev.demo_proposals import load_proposals
from portal.dev.demo_reviews import load_reviews
from portal.extensions import db
from portal.institutions import domains as domain_proof
from portal.institutions import services as institutions
from portal.institutions.models import Affiliation, AffiliationSource, AffiliationState, Institution
from portal.proposals.models import Proposal, Resource

demo_cli = AppGroup("demo", help="Demo data for trying the portal.")


@dataclass(frozen=True)
class DemoInstitution:
    key: str
    name: str
    short: str
    ror: str
    country: str
    domains: tuple[str, ...]
    website: str
    #: The lifecycle actions taken after registration.
    path: tuple[str, ...]
    #: E-mail domains claimed but not yet proven (``domains`` are verified by staff).
    pending_domains: tuple[str, ...] = ()
    #: The lifecycle actions taken once its projects have run (``demo_allocations``).
    later: tuple[str, ...] = ()


INSTITUTIONS = [
    DemoInstitution(
        "north",
        "Northlake University",
        "NLU",
        "https://ror.org/00nvk0a10",
        "US",
        ("northlake.edu",),
        "https://www.northlake.edu",
        ("start_review", "approve"),
        pending_domains=("northlake-health.org",),
    ),
    DemoInstitution(
        "tum",
        "Technische Universität Rheinfeld",
        "TUR",
        "https://ror.org/02tqr0b67",
        "DE",
        ("tu-rheinfeld.de",),
        "https://www.tu-rheinfeld.de",
        ("start_review", "approve"),
    ),
    DemoInstitution(
        "kyo",
        "Kyoto Institute of Open Science",
        "KIOS",
        "https://ror.org/03kq5c315",
        "JP",
        ("kios.ac.jp",),
        "https://www.kios.ac.jp",
        ("start_review", "approve"),
    ),
    DemoInstitution(
        "sav",
        "Savanna Technical College",
        "STC",
        "https://ror.org/04sc7d460",
        "KE",
        ("savanna-tech.ac.ke",),
        "https://savanna-tech.ac.ke",
        ("start_review",),
    ),
    DemoInstitution(
        "lag",
        "Lagos Polytechnic of Data",
        "LPD",
        "https://ror.org/05pd9e542",
        "NG",
        ("lpd.edu.ng",),
        "https://lpd.edu.ng",
        (),
    ),
    # A real ROR record (shared/data/ror), so the suspended partner has a genuine ROR id. It was
    # a partner long enough for a project of its own to run, whose allocation its suspension stops.
    DemoInstitution(
        "uw",
        "University Centre of the Westfjords",
        "UW",
        "https://ror.org/00z2vfv58",
        "IS",
        ("uw.is",),
        "https://www.uw.is",
        ("start_review", "approve"),
        later=("suspend",),
    ),
    # An application withdrawn before review: no ROR id was ever given.
    DemoInstitution(
        "ala",
        "Altiplano Institute of Data Science (demo)",
        "AIDS",
        "",
        "BO",
        (),
        "",
        ("withdraw",),
    ),
]

#: The reason given for each lifecycle action that needs one.
REASONS = {
    "suspend": "Its signing official has left and no successor has been named; suspended until "
    "the university names one.",
    "withdraw": "The institute decided to join through its national consortium instead.",
}


@dataclass(frozen=True)
class DemoPerson:
    #: Subject at the demo identity provider; also the login name shown in the README.
    sub: str
    name: str
    email: str
    roles: tuple[tuple[Role, str | None], ...]
    title: str | None = None


PEOPLE = [
    DemoPerson("admin", "Alex Admin", "admin@atom-lab.org", ((Role.ADMIN, None),)),
    DemoPerson("officer", "Priya Officer", "priya@atom-lab.org", ((Role.PROGRAM_OFFICER, None),)),
    DemoPerson(
        "reviewer",
        "Rafael Reviewer",
        "rafael@tu-rheinfeld.de",
        ((Role.REVIEWER, None), (Role.RESEARCHER, "tum")),
        "faculty",
    ),
    DemoPerson("reviewer2", "Ines Reviewer", "ines@atom-lab.org", ((Role.REVIEWER, None),)),
    DemoPerson("steward", "Dana Steward", "dana@atom-lab.org", ((Role.DATA_STEWARD, None),)),
    # A second steward, of other datasets: neither decides on the other's (``demo_datasets``).
    DemoPerson("steward2", "Lena Steward", "lena@atom-lab.org", ((Role.DATA_STEWARD, None),)),
    DemoPerson(
        "professor", "Ada Lovelace", "ada@northlake.edu", ((Role.RESEARCHER, "north"),), "faculty"
    ),
    DemoPerson(
        "student", "Sam Student", "sam@northlake.edu", ((Role.RESEARCHER, "north"),), "student"
    ),
    DemoPerson(
        "official",
        "Olivia Official",
        "olivia@northlake.edu",
        ((Role.SIGNING_OFFICIAL, "north"),),
        "staff",
    ),
    DemoPerson(
        "kyoto-prof", "Kenji Tanaka", "tanaka@kios.ac.jp", ((Role.RESEARCHER, "kyo"),), "faculty"
    ),
    DemoPerson(
        "kyoto-official", "Yuki Sato", "sato@kios.ac.jp", ((Role.SIGNING_OFFICIAL, "kyo"),), "staff"
    ),
    DemoPerson(
        "tum-official",
        "Jonas Becker",
        "jonas.becker@tu-rheinfeld.de",
        ((Role.SIGNING_OFFICIAL, "tum"),),
        "staff",
    ),
    # The institution under review: its partnership agreement waits for her signature.
    DemoPerson(
        "savanna-official",
        "Wanjiru Kamau",
        "w.kamau@savanna-tech.ac.ke",
        ((Role.SIGNING_OFFICIAL, "sav"),),
        "staff",
    ),
]

#: People in the demo data who are no demo login (the demo identity provider does not list them):
#: the Westfjords' researcher, whose project its suspension stopped.
OTHER_PEOPLE = [
    DemoPerson(
        "westfjords-prof",
        "Katla Jonsdottir",
        "katla@uw.is",
        ((Role.RESEARCHER, "uw"),),
        "faculty",
    ),
]

#: People who signed for a partner and have since left: their accounts are disabled (with the
#: reason), so they are no demo login. Their institution is suspended after they leave.
FORMER_PEOPLE = [
    (
        DemoPerson(
            "uw-official",
            "Einar Sigurdsson",
            "einar@uw.is",
            ((Role.SIGNING_OFFICIAL, "uw"),),
            "staff",
        ),
        "Left the University Centre of the Westfjords; the university has not named a successor.",
    ),
]

#: People who asked to join an institution and still wait for its signing official.
PENDING_REQUESTS = [
    DemoPerson("newcomer", "Nia Newcomer", "nia@gmail.example", (), "postdoc"),
]

#: Earlier requests to join Northlake and how they ended (the official's lists show every state).
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


def load(session: AnySession) -> dict[str, int]:
    """Create the demo institutions, people, calls, proposals, reviews, agreements, allocations and
    their usage, datasets and access to them; returns counts. The database must be empty.

    The order is the program's: institutions register; people and the agreement templates exist;
    then each institution moves along its path — its review issues the partnership agreement, which
    its signing official and the program officer sign before it is approved; then the calls and
    proposals, whose approval issues each project's contribution agreement and allocates its
    GPU-hours, which become usable once that agreement is signed; the clusters' usage; the
    datasets catalog, access asked for, decided and signed for; last, what happened since: a
    signing official left, their institution was suspended, the sweeps ran."""
    bootstrap = User(display_name="Portal setup", email=None)
    session.add(bootstrap)
    session.flush()
    session.add(RoleGrant(user=bootstrap, role=Role.ADMIN))
    session.flush()
    audit.record(session, "demo.load", actor=bootstrap)

    insts: dict[str, Institution] = {}
    for d in INSTITUTIONS:
        inst = institutions.register_institution(
            session,
            actor=bootstrap,
            name=d.name,
            country=d.country,
            ror_id=d.ror or None,
            short_name=d.short,
            website=d.website or None,
            domains=d.domains + d.pending_domains,
        )
        for claim in inst.all_domains:
            if claim.domain in d.domains:
                domain_proof.verify_domain_by_staff(session, claim, actor=bootstrap)
        insts[d.key] = inst

    issuer = demo_issuer()
    _demo_provider(session, bootstrap, issuer, [insts[k] for k in ("north", "tum", "kyo")])
    people: dict[str, User] = {}
    for p in PEOPLE + OTHER_PEOPLE + [former for former, _ in FORMER_PEOPLE]:
        people[p.sub] = _person(session, p, issuer)
        _grant_roles(session, people[p.sub], p, insts, bootstrap)

    load_templates(session, people["officer"])
    for d in INSTITUTIONS:
        for action in d.path:
            if action in ("approve", "reinstate"):
                sign_partnership(session, insts[d.key])
            institutions.transition(
                session, insts[d.key], action, actor=bootstrap, reason=REASONS.get(action)
            )

    for p in PENDING_REQUESTS:
        user = _person(session, p, issuer)
        session.add(
            Affiliation(
                user=user,
                institution=insts["north"],
                title=p.title,
                state=AffiliationState.REQUESTED,
                source=AffiliationSource.OFFICIAL_APPROVAL,
            )
        )
    for person, action, reason in SETTLED_REQUESTS:
        user = _person(session, person, issuer)
        request = institutions.request_affiliation(
            session, insts["north"], actor=user, title=person.title
        )
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
    # Then the Westfjords' signing official left, and the university was suspended (which stopped
    # its project's allocation and its researcher's access to a dataset); the scheduled sweeps
    # expired the allocation and the dataset access whose periods are over and sent the notices
    # that were due.
    for former, why in FORMER_PEOPLE:
        set_user_disabled(session, people[former.sub], actor=bootstrap, disabled=True, reason=why)
    for d in INSTITUTIONS:
        for action in d.later:
            institutions.transition(
                session, insts[d.key], action, actor=bootstrap, reason=REASONS.get(action)
            )
    sweep(session)
    datasets.sweep(session)
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
            f"{counts['access requests']} access requests and {counts['grants']} grants of access."
        )
