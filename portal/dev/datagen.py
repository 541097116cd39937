"""A realistic-scale data generator for benchmarks: ``flask --app portal demo generate``.

Rows are written with bulk INSERTs (not one service call each) so that the scale in DESIGN.md takes
seconds, not hours; the values still satisfy every constraint. Later domains add their own tables here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import click
from sqlalchemy import insert, select

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
from portal.institutions.services import ror_checksum

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
BATCH = 5000


@dataclass(frozen=True)
class Scale:
    institutions: int = 300
    users: int = 20_000
    audit_events: int = 50_000


def _ror(n: int) -> str:
    base = "0" + "".join(_CROCKFORD[(n >> (5 * i)) % 32] for i in range(6))[::-1]
    return f"https://ror.org/{base}{ror_checksum(base):02d}"


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
    insts = []
    for k in range(scale.institutions):
        n = first_inst + k
        state = rng.choice(states)
        insts.append(
            {
                "id": n,
                "name": f"University of Place {n}",
                "short_name": f"UP{n}",
                "ror_id": _ror(900_000 + n),
                "country": rng.choice(["US", "DE", "JP", "KE", "BR", "IN"]),
                "state": state,
                "state_changed_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
    _bulk(session, Institution, insts)
    _bulk(
        session,
        InstitutionDomain,
        [
            {
                "institution_id": i["id"],
                "domain": f"place{i['id']}.edu",
                "state": DomainState.VERIFIED,
                "method": DomainProof.STAFF,
                "verified_at": now,
            }
            for i in insts
        ],
    )

    users, identities, grants, affiliations = [], [], [], []
    for k in range(scale.users):
        uid = first_user + k
        inst = insts[k % len(insts)]["id"]
        users.append(
            {
                "id": uid,
                "display_name": f"Person {uid}",
                "email": f"p{uid}@place{inst}.edu",
                "email_verified": True,
                "is_disabled": False,
                "created_at": now,
                "updated_at": now,
            }
        )
        identities.append(
            {
                "user_id": uid,
                "issuer": f"https://idp.place{inst}.edu",
                "subject": f"s{uid}",
                "email": f"p{uid}@place{inst}.edu",
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
    _bulk(session, User, users)
    _bulk(session, Identity, identities)
    _bulk(session, RoleGrant, grants)
    _bulk(session, Affiliation, affiliations)
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
    return {"institutions": len(insts), "users": len(users), "audit_events": scale.audit_events}


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
