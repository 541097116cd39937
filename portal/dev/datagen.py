"""A realistic-scale data generator for benchmarks: ``flask --app portal demo generate``.

Rows are written with bulk INSERTs (not one service call each) so that the scale in DESIGN.md takes
seconds, not hours; the values still satisfy every constraint, and every rule the services keep:
each partner (and suspended partner) has a partnership agreement in force, signed by its signing
official and countersigned by a program officer. Later domains add their own tables here.

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
from dataclasses import dataclass
from typing import Any

import click
from flask import current_app
from sqlalchemy import insert, select

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
from portal.core.models import AnySession, utcnow
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


@dataclass(frozen=True)
class Scale:
    institutions: int = 300
    users: int = 20_000
    audit_events: int = 50_000


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


def _bulk(session: AnySession, model: Any, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), BATCH):
        session.execute(insert(model), rows[i : i + BATCH])


def generate(session: AnySession, scale: Scale, seed: int = 1) -> dict[str, int]:
    """Add ``scale`` worth of institutions, people, roles, affiliations and audit events."""
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not secrets
    now = utcnow()
    first_inst = (session.scalar(select(Institution.id).order_by(Institution.id.desc())) or 0) + 1
    first_user = (session.scalar(select(User.id).order_by(User.id.desc())) or 0) + 1
    states = [InstitutionState.PARTNER] * 8 + [InstitutionState.APPLIED, InstitutionState.SUSPENDED]
    insts: list[dict[str, Any]] = []
    domains: dict[int, str] = {}
    for k, org in enumerate(_organisations(session, scale.institutions, rng)):
        n = first_inst + k
        state = rng.choice(states)
        if k >= scale.users or org.ror_id is None:
            # Without a signing official (one per institution, below) nobody signed for it; a
            # partner has a ROR id.
            state = InstitutionState.APPLIED
        joined = state in (InstitutionState.PARTNER, InstitutionState.SUSPENDED)
        insts.append(
            {
                "id": n,
                "name": org.name,
                "ror_id": org.ror_id,
                "country": org.country,
                "website": org.website,
                "state": state,
                "state_changed_at": now,
                "partner_since": now.date() - dt.timedelta(days=rng.randint(30, 1500))
                if joined
                else None,
                "created_at": now,
                "updated_at": now,
            }
        )
        domains[n] = org.domain
    _bulk(session, Institution, insts)
    _bulk(
        session,
        InstitutionDomain,
        [
            {
                "institution_id": i["id"],
                "domain": domains[i["id"]],
                "state": DomainState.VERIFIED,
                "method": DomainProof.STAFF,
                "verified_at": now,
            }
            for i in insts
        ],
    )

    users: list[dict[str, Any]] = []
    identities, grants, affiliations = [], [], []
    for k in range(scale.users):
        uid = first_user + k
        inst = insts[k % len(insts)]["id"]
        users.append(
            {
                "id": uid,
                "display_name": f"Person {uid}",
                "email": f"p{uid}@{domains[inst]}",
                "email_verified": True,
                "is_disabled": False,
                "created_at": now,
                "updated_at": now,
            }
        )
        identities.append(
            {
                "user_id": uid,
                # Not the institution's real identity provider: a made-up one per institution.
                "issuer": f"https://idp-{inst}.datagen.example",
                "subject": f"s{uid}",
                "email": f"p{uid}@{domains[inst]}",
                "email_verified": True,
                "claims": {},
                "created_at": now,
                "updated_at": now,
            }
        )
        role = Role.SIGNING_OFFICIAL if k < len(insts) else Role.RESEARCHER
        grants.append(
            {
                "user_id": uid,
                "role": role,
                "institution_id": inst,
                "created_at": now,
                "updated_at": now,
            }
        )
        if k % 50 == 0:
            grants.append(
                {
                    "user_id": uid,
                    "role": Role.REVIEWER,
                    "institution_id": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        requested = k % 40 == 0 and role == Role.RESEARCHER
        affiliations.append(
            {
                "user_id": uid,
                "institution_id": inst,
                "state": AffiliationState.REQUESTED if requested else AffiliationState.ACTIVE,
                "source": AffiliationSource.IDP_CLAIM,
                "title": "faculty",
                "requested_at": now,
                "decided_at": None if requested else now,
                "created_at": now,
                "updated_at": now,
            }
        )
    countersigner = _program_officer(session)
    if countersigner is None and users:
        # Nobody countersigns for the lab yet: the first generated researcher becomes its officer.
        countersigner = users[min(len(insts), len(users) - 1)]["id"]
        grants.append(
            {
                "user_id": countersigner,
                "role": Role.PROGRAM_OFFICER,
                "institution_id": None,
                "created_at": now,
                "updated_at": now,
            }
        )
    _bulk(session, User, users)
    _bulk(session, Identity, identities)
    _bulk(session, RoleGrant, grants)
    _bulk(session, Affiliation, affiliations)
    agreements = 0
    if countersigner is not None:
        officials = {i["id"]: first_user + k for k, i in enumerate(insts) if k < len(users)}
        agreements = _partnerships(session, insts, officials, countersigner)
    _bulk(
        session,
        AuditEvent,
        [
            {
                "occurred_at": now,
                "actor_id": first_user + (k % scale.users),
                "action": "generated.event",
                "object_type": "institutions",
                "object_id": insts[k % len(insts)]["id"],
                "channel": "cli",
                "details": {"n": k},
            }
            for k in range(scale.audit_events)
        ],
    )
    session.flush()
    return {
        "institutions": len(insts),
        "users": len(users),
        "agreements": agreements,
        "audit_events": scale.audit_events,
    }


def _program_officer(session: AnySession) -> int | None:
    return session.scalar(
        select(User.id)
        .join(RoleGrant, RoleGrant.user_id == User.id)
        .where(RoleGrant.role == Role.PROGRAM_OFFICER, User.is_disabled.is_(False))
        .order_by(User.id)
        .limit(1)
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
@click.option("--institutions", default=Scale.institutions, show_default=True)
@click.option("--users", default=Scale.users, show_default=True)
@click.option("--audit-events", default=Scale.audit_events, show_default=True)
@click.option("--seed", default=1, show_default=True)
def generate_command(institutions: int, users: int, audit_events: int, seed: int) -> None:
    """Add benchmark-scale data (on top of whatever is there)."""
    with write_intent():
        counts = generate(db.session, Scale(institutions, users, audit_events), seed)
        db.session.commit()
    click.echo("Generated " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".")
