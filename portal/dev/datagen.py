"""A realistic-scale data generator for benchmarks: ``flask --app portal demo generate --scale N``.

Scale 1 is the reference size of a live program (:class:`Scale`); fractions make quick runs. Rows
are written with bulk INSERTs (not one service call each) so that the reference scale takes
minutes, not hours; the values still satisfy every constraint, and every rule the services keep:
each partner (and suspended partner) has a partnership agreement in force, signed by its signing
official and countersigned by a program officer. The same seed gives the same data.

This module makes the institutions and people and then hands a :class:`Context` to each domain's
generator, in order (``STEPS``): proposals, calls and reviews (``gen_proposals``), allocations,
follow-up requests and usage (``gen_allocations``), datasets, grants and the other agreements
(``gen_datasets``); last the audit events and outbox rows. Five *personas* (``PERSONAS``) are given a
heavy load — the busiest PI, reviewer, signing official, steward and a program officer — so that a
benchmark logged in as them sees full pages.

Institutions are real organisations: records of the ROR subset the portal ships (universities
first), with their names, countries, websites and domains — never invented ROR ids or domains.
Those already in the database (the demo's) are skipped; beyond the subset's records with domains,
institutions have no ROR id and a domain under the reserved ``.example`` top-level domain.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import Any

import click
from flask import current_app
from sqlalchemy import func, insert, select, text

from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    PartyRole,
    Signature,
    SignatureState,
    SubjectType,
    TemplateVersion,
    VersionState,
)
from portal.agreements.text import fill, institution_fields, sha256
from portal.auth.models import Identity, Role, RoleGrant, User
from portal.core.audit import AuditEvent
from portal.core.database import write_intent
from portal.core.models import AnySession, Base, utcnow
from portal.extensions import db
from portal.institutions.models import (
    Affiliation,
    AffiliationSource,
    AffiliationState,
    DomainProof,
    DomainState,
    Institution,
    InstitutionDomain,
    InstitutionState,
)
from portal.institutions.ror import DATA_FILE

BATCH = 5000
#: Identity subjects (issuer ``PERSONA_ISSUER``) of the people a benchmark logs in as.
PERSONAS = {
    "officer": "bench-officer",
    "pi": "bench-pi",
    "reviewer": "bench-reviewer",
    "official": "bench-official",
    "steward": "bench-steward",
}
PERSONA_ISSUER = "https://idp-personas.datagen.example"
YEARS = 3  # generated dates fall within the last three years


@dataclass(frozen=True)
class Scale:
    """How many rows of each kind; the defaults are the reference scale (``--scale 1``)."""

    institutions: int = 300
    users: int = 20_000
    calls: int = 40
    proposals: int = 5_000
    reviews: int = 15_000
    allocations: int = 20_000
    usage_records: int = 2_000_000
    datasets: int = 500
    grants: int = 30_000
    agreements: int = 10_000
    audit_events: int = 50_000
    outbox: int = 20_000

    @classmethod
    def of(cls, factor: float) -> Scale:
        """``factor`` times the reference scale, at least one of each kind."""
        full = cls()
        return cls(**{f.name: max(1, round(getattr(full, f.name) * factor)) for f in fields(cls)})

    @property
    def rows(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


@dataclass
class Context:
    """What the domain generators share: the session, the seeded random source, the scale, and
    the institutions and people made first. Domain generators add their counts to ``counts``."""

    session: AnySession
    rng: random.Random
    scale: Scale
    now: dt.datetime
    progress: Callable[[int], None] = lambda n: None
    #: generated institutions as inserted (dicts with id, name, state, country, ror_id, …)
    institutions: list[dict[str, Any]] = field(default_factory=list)
    #: institution id -> ids of its researchers with an active affiliation
    members: dict[int, list[int]] = field(default_factory=dict)
    #: institution id -> its signing official's user id
    officials: dict[int, int] = field(default_factory=dict)
    #: the ids of every generated person
    people: range = range(0)
    #: the program officer who acts for the lab (countersigns, decides, awards)
    officer: int = 0
    #: people with the reviewer role
    reviewers: list[int] = field(default_factory=list)
    #: persona name (a key of PERSONAS) -> user id
    personas: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def bulk(self, model: Any, rows: Iterable[dict[str, Any]]) -> int:
        """INSERT ``rows`` (any iterable; consumed in batches, so a generator keeps memory flat)
        and advance the progress bar. Returns how many rows were inserted."""
        made = 0
        for batch in batched(rows, BATCH):
            self.session.execute(insert(model), list(batch))
            made += len(batch)
            self.progress(len(batch))
        return made

    def next_id(self, model: Any) -> int:
        """The first free primary key of ``model``'s table (rows are inserted with explicit ids
        so that later rows can refer to them; sequences are moved on at the end)."""
        return (self.session.scalar(select(func.max(model.id))) or 0) + 1

    def when(self, start: dt.datetime | None = None, end: dt.datetime | None = None) -> dt.datetime:
        """A moment between ``start`` (default: three years ago) and ``end`` (default: now)."""
        start = start or self.now - dt.timedelta(days=365 * YEARS)
        end = end or self.now
        span = max(0.0, (end - start).total_seconds())
        return start + dt.timedelta(seconds=self.rng.uniform(0, span))


class AlreadyGeneratedError(RuntimeError):
    """The database already holds a generated program."""


def batched(rows: Iterable[Any], size: int) -> Iterator[tuple[Any, ...]]:
    iterator = iter(rows)
    while batch := tuple(islice(iterator, size)):
        yield batch


@dataclass(frozen=True)
class _Org:
    name: str
    ror_id: str | None
    country: str
    website: str | None
    domain: str


def _organisations(session: AnySession, count: int, rng: random.Random) -> list[_Org]:
    """``count`` organisations for new institutions: records of the ROR subset with a domain,
    universities first (each group in an order drawn from ``rng``), leaving out ROR ids and
    domains already in the database and domains two records share; then made-up ``.example``
    ones without a ROR id."""
    taken_ids = set(
        session.scalars(select(Institution.ror_id).where(Institution.ror_id.is_not(None)))
    )
    taken_domains = set(session.scalars(select(InstitutionDomain.domain)))
    records = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    uses = Counter(d.lower() for r in records for d in r.get("domains") or ())
    universities: list[_Org] = []
    others: list[_Org] = []
    for r in records:
        domains = [d.lower() for d in r.get("domains") or () if uses[d.lower()] == 1]
        if not domains or r["id"] in taken_ids or domains[0] in taken_domains:
            continue
        org = _Org(r["name"], r["id"], r["country_code"], r.get("website"), domains[0])
        (universities if "education" in (r.get("types") or ()) else others).append(org)
    rng.shuffle(universities)
    rng.shuffle(others)
    chosen = (universities + others)[:count]
    for n in range(len(chosen), count):
        chosen.append(
            _Org(f"Generated institution {n + 1}", None, "US", None, f"inst{n + 1}.example")
        )
    return chosen


def _steps() -> list[Callable[[Context], None]]:
    """The domain generators, in the order their rows refer to each other."""
    from portal.dev import gen_allocations, gen_datasets, gen_proposals

    return [gen_proposals.generate, gen_allocations.generate, gen_datasets.generate]


def generate(
    session: AnySession,
    scale: Scale,
    seed: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Add ``scale`` worth of every kind of row (on top of whatever is there, such as the demo);
    returns the counts. Once per database: a second run is refused (``AlreadyGeneratedError``), as
    its personas would be the first run's people.

    ``progress`` is called with the number of rows each batch inserted."""
    if session.scalar(select(Identity.id).where(Identity.issuer == PERSONA_ISSUER).limit(1)):
        raise AlreadyGeneratedError(
            "This database already holds generated data; generate into a new database."
        )
    ctx = Context(
        session=session,
        rng=random.Random(seed),  # noqa: S311 - reproducible sample data, not secrets
        scale=scale,
        now=utcnow(),
        progress=progress or (lambda n: None),
    )
    _people(ctx)
    for step in _steps():
        step(ctx)
    _audit_events(ctx)
    session.flush()
    _move_sequences_on(session)
    return ctx.counts


def _people(ctx: Context) -> None:
    """Institutions with a verified domain each, their people (one signing official each, the
    rest researchers, some waiting for their affiliation to be confirmed), reviewers, the
    personas, and a partnership agreement for every partner."""
    session, rng, scale, now = ctx.session, ctx.rng, ctx.scale, ctx.now
    first_inst = ctx.next_id(Institution)
    first_user = ctx.next_id(User)
    states = [InstitutionState.PARTNER] * 8 + [InstitutionState.APPLIED, InstitutionState.SUSPENDED]
    insts: list[dict[str, Any]] = []
    domains: dict[int, str] = {}
    for k, org in enumerate(_organisations(session, scale.institutions, rng)):
        n = first_inst + k
        state = InstitutionState.PARTNER if k == 0 else rng.choice(states)
        if k >= scale.users or org.ror_id is None:
            # Without a signing official (one per institution, below) nobody signed for it; a
            # partner has a ROR id.
            state = InstitutionState.APPLIED
        joined = state in (InstitutionState.PARTNER, InstitutionState.SUSPENDED)
        created = ctx.when(end=now - dt.timedelta(days=60))
        insts.append(
            {
                "id": n,
                "name": org.name,
                "ror_id": org.ror_id,
                "country": org.country,
                "website": org.website,
                "state": state,
                "state_changed_at": created,
                "partner_since": ctx.when(created, now - dt.timedelta(days=30)).date()
                if joined
                else None,
                "created_at": created,
                "updated_at": created,
            }
        )
        domains[n] = org.domain
    ctx.institutions = insts
    ctx.bulk(Institution, insts)
    ctx.bulk(
        InstitutionDomain,
        (
            {
                "institution_id": i["id"],
                "domain": domains[i["id"]],
                "state": DomainState.VERIFIED,
                "method": DomainProof.STAFF,
                "verified_at": i["created_at"],
            }
            for i in insts
        ),
    )

    # The personas: the first institution's signing official, and four more people — the busiest
    # PI (a researcher there), a reviewer (a researcher at another institution), and two lab
    # staff without an institution (a program officer and a data steward).
    users: list[dict[str, Any]] = []
    identities, grants, affiliations = [], [], []

    def person(uid: int, inst: int | None, persona: str | None) -> None:
        # Addresses under the reserved .example top-level domain: never a real person's mailbox,
        # whatever a mail worker on this database is pointed at.
        domain = f"{domains[inst]}.example" if inst is not None else "lab.datagen.example"
        joined = ctx.when()
        users.append(
            {
                "id": uid,
                "display_name": f"Person {uid}",
                "email": f"p{uid}@{domain}",
                "email_verified": True,
                "is_disabled": False,
                "created_at": joined,
                "updated_at": joined,
            }
        )
        identities.append(
            {
                "user_id": uid,
                # Not the institution's real identity provider: a made-up one per institution.
                "issuer": PERSONA_ISSUER if persona else f"https://idp-{inst}.datagen.example",
                "subject": PERSONAS[persona] if persona else f"s{uid}",
                "email": f"p{uid}@{domain}",
                "email_verified": True,
                "claims": {},
                "created_at": joined,
                "updated_at": joined,
            }
        )
        if persona:
            ctx.personas[persona] = uid

    def grant(uid: int, role: Role, inst: int | None = None) -> None:
        grants.append(
            {
                "user_id": uid,
                "role": role,
                "institution_id": inst,
                "created_at": now,
                "updated_at": now,
            }
        )

    def member(uid: int, inst: int, state: AffiliationState = AffiliationState.ACTIVE) -> None:
        """An affiliation of ``uid`` with ``inst`` (an active one makes them one of its members)."""
        if state == AffiliationState.ACTIVE:
            ctx.members.setdefault(inst, []).append(uid)
        joined = users[-1]["created_at"]
        affiliations.append(
            {
                "user_id": uid,
                "institution_id": inst,
                "state": state,
                "source": AffiliationSource.IDP_CLAIM,
                "title": "faculty",
                "requested_at": joined,
                "decided_at": None if state == AffiliationState.REQUESTED else joined,
                "created_at": joined,
                "updated_at": joined,
            }
        )

    for k in range(scale.users):
        uid = first_user + k
        inst = insts[k % len(insts)]["id"]
        person(uid, inst, "official" if k == 0 else None)
        official = k < len(insts)
        grant(uid, Role.SIGNING_OFFICIAL if official else Role.RESEARCHER, inst)
        if official:
            ctx.officials[inst] = uid
        if k % 50 == 0 and not official:
            grant(uid, Role.REVIEWER)
            ctx.reviewers.append(uid)
        requested = k % 40 == 0 and not official
        member(uid, inst, AffiliationState.REQUESTED if requested else AffiliationState.ACTIVE)
        if official:
            ctx.members[inst].remove(uid)  # a signing official, not one of its researchers
    pi, reviewer, officer, steward = range(first_user + scale.users, first_user + scale.users + 4)
    for uid, inst, persona in ((pi, insts[0]["id"], "pi"), (reviewer, insts[-1]["id"], "reviewer")):
        person(uid, inst, persona)
        grant(uid, Role.RESEARCHER, inst)
        member(uid, inst)
    grant(reviewer, Role.REVIEWER)
    ctx.reviewers.append(reviewer)
    person(officer, None, "officer")
    grant(officer, Role.PROGRAM_OFFICER)
    person(steward, None, "steward")
    grant(steward, Role.DATA_STEWARD)
    ctx.officer = officer
    ctx.people = range(first_user, steward + 1)
    ctx.bulk(User, users)
    ctx.bulk(Identity, identities)
    ctx.bulk(RoleGrant, grants)
    ctx.bulk(Affiliation, affiliations)
    ctx.counts["institutions"] = len(insts)
    ctx.counts["users"] = len(users)
    ctx.counts["partnership agreements"] = _partnerships(session, insts, ctx.officials, officer)


def _audit_events(ctx: Context) -> None:
    """Audit events spread over the last three years, by the generated people, about the
    generated institutions (the domain generators record their own decisions)."""
    people, insts = ctx.people, ctx.institutions
    ctx.counts["audit events"] = ctx.bulk(
        AuditEvent,
        (
            {
                "occurred_at": ctx.when(),
                "actor_id": people[k % len(people)],
                "action": "institution.viewed",
                "object_type": "institutions",
                "object_id": insts[k % len(insts)]["id"],
                "channel": "web",
                "details": {"generated": True},
            }
            for k in range(ctx.scale.audit_events)
        ),
    )


def _move_sequences_on(session: AnySession) -> None:
    """Rows were inserted with explicit ids: on PostgreSQL, move each id sequence past them."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for table in Base.metadata.sorted_tables:
        id_column = table.c.get("id")
        if id_column is None or not id_column.autoincrement:
            continue
        session.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608
                f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
            )
        )


def _partnership_version(session: AnySession) -> TemplateVersion:
    """The version partnerships are signed on: the current one of the automatic partnership
    template (the demo's), else of any partnership template, else a template made here."""
    from portal.dev.demo_agreements import PARTNERSHIP_V1

    templates = session.scalars(
        select(AgreementTemplate)
        .where(AgreementTemplate.kind == AgreementKind.PARTNERSHIP)
        .order_by(AgreementTemplate.auto_issue.desc(), AgreementTemplate.id)
    ).all()
    for template in templates:
        if template.current is not None:
            return template.current
    version = TemplateVersion(
        number=1,
        body=PARTNERSHIP_V1,
        state=VersionState.PUBLISHED,
        published_at=utcnow(),
        text_sha256=sha256(PARTNERSHIP_V1),
    )
    session.add(
        AgreementTemplate(
            kind=AgreementKind.PARTNERSHIP,
            title="Partnership agreement",
            description="Signed by every partner institution before it is approved as a partner.",
            auto_issue=not any(t.auto_issue for t in templates),
            versions=[version],
        )
    )
    session.flush()
    return version


def _partnerships(
    session: AnySession, insts: list[dict[str, Any]], officials: dict[int, int], officer: int
) -> int:
    """A fully signed partnership agreement for each partner and suspended institution."""
    version = _partnership_version(session)
    template = version.template
    lab = str(current_app.config["LAB_NAME"])
    now = utcnow()
    names = dict(
        session.execute(select(User.id, User.display_name).where(User.id.in_([
            officer, *officials.values()
        ]))).all()
    )  # fmt: skip
    made = 0
    for i in insts:
        if i["state"] not in (InstitutionState.PARTNER, InstitutionState.SUSPENDED):
            continue
        fields = institution_fields(
            Institution(name=i["name"], country=i["country"], ror_id=i["ror_id"]),
            lab=lab,
            today=now.date(),
        )
        text = fill(version.body, fields)
        digest = sha256(text)
        signers = [
            (PartyRole.SIGNING_OFFICIAL, i["name"], officials[i["id"]]),
            (PartyRole.PROGRAM, lab, officer),
        ]
        session.add(
            Agreement(
                version_id=version.id,
                kind=AgreementKind.PARTNERSHIP,
                title=f"{template.title} — {i['name']}"[:300],
                subject_type=SubjectType.INSTITUTION,
                subject_id=i["id"],
                institution_id=i["id"],
                text=text,
                text_sha256=digest,
                state=AgreementState.ACTIVE,
                state_changed_at=now,
                completed_at=now,
                signatures=[
                    Signature(
                        position=position,
                        role=role,
                        on_behalf_of=behalf,
                        state=SignatureState.SIGNED,
                        signed_by_id=signer,
                        signed_at=now,
                        typed_name=names[signer],
                        ip="192.0.2.20",
                        user_agent="datagen",
                        text_sha256=digest,
                    )
                    for position, (role, behalf, signer) in enumerate(signers, start=1)
                ],
            )
        )
        made += 1
    session.flush()
    return made


@click.command("generate")
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="1 is the reference size (300 institutions, 20,000 people, 5,000 proposals, "
    "2,000,000 usage records, …); 0.01 a quick run.",
)
@click.option("--seed", default=1, show_default=True, help="The same seed gives the same data.")
def generate_command(scale: float, seed: int) -> None:
    """Add benchmark-scale data (on top of whatever is there)."""
    size = Scale.of(scale)
    with write_intent(), click.progressbar(length=size.rows, label="Generating") as bar:
        try:
            counts = generate(db.session, size, seed, progress=bar.update)
        except AlreadyGeneratedError as e:
            raise click.ClickException(str(e)) from None
        db.session.commit()
    click.echo("Generated " + ", ".join(f"{v:,} {k}" for k, v in counts.items()) + ".")
