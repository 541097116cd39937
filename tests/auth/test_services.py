"""The identity-provider registry: seeding from configuration, and the rules on its fields."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import IdentityProvider, ProviderKind
from portal.auth.services import save_provider, seed_providers
from portal.core.errors import ValidationError
from tests.factories import make_institution
from tests.support.oidc import add_provider

ALLOWED = ["RS256", "ES256", "HS256", "none"]  # a careless configuration


def test_seeding_from_configuration_creates_then_updates_by_slug(db: Session) -> None:
    inst = make_institution(db)
    cfg = {
        "slug": "cilogon",
        "name": "CILogon",
        "kind": "federation",
        "issuer": "https://cilogon.org",
        "client_id": "cilogon:/client_id/abc",
        "institutions": [{"ror_id": inst.ror_id, "entity_id": "urn:mace:incommon:uni"}],
    }
    (p,) = seed_providers(db, [cfg], allowed_algorithms=ALLOWED)
    assert p.kind == ProviderKind.FEDERATION and p.served[0].entity_id == "urn:mace:incommon:uni"
    (again,) = seed_providers(db, [{**cfg, "name": "CILogon (US)"}], allowed_algorithms=ALLOWED)
    assert again.id == p.id and again.name == "CILogon (US)"
    assert len(db.scalars(select(IdentityProvider)).all()) == 1


def test_seeding_refuses_unknown_institutions(db: Session) -> None:
    cfg = {
        "slug": "x",
        "issuer": "https://x.example",
        "client_id": "c",
        "institutions": [{"ror_id": "https://ror.org/00nvk0a10"}],
    }
    with pytest.raises(ValidationError):
        seed_providers(db, [cfg], allowed_algorithms=ALLOWED)


@pytest.mark.parametrize("algs", [["none"], ["HS256"], ["RS256", "HS512"], []])
def test_unsigned_and_hmac_algorithms_are_never_allowed(db: Session, algs: list[str]) -> None:
    with pytest.raises(ValidationError):
        save_provider(
            db,
            None,
            actor=None,
            slug="p",
            name="P",
            kind=ProviderKind.INSTITUTION,
            issuer="https://p.example",
            client_id="c",
            algorithms=algs,
            allowed_algorithms=ALLOWED,
        )


def test_a_federation_proxy_needs_entity_ids(db: Session) -> None:
    inst = make_institution(db)
    with pytest.raises(ValidationError):
        save_provider(
            db,
            None,
            actor=None,
            slug="f",
            name="F",
            kind=ProviderKind.FEDERATION,
            issuer="https://f.example",
            client_id="c",
            allowed_algorithms=ALLOWED,
            served=[(inst, None)],
        )


def test_a_provider_tampered_in_the_database_to_hs256_cannot_log_anyone_in(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    p = add_provider(db, "idp-a", idp_a_url)
    p.id_token_algs = "HS256"
    db.flush()
    resp = client.post("/auth/login/idp-a", data={"next": ""})
    assert resp.status_code == 400


def test_seed_command(app: Flask, db: Session) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["auth", "seed-providers"])
    assert result.exit_code == 0 and "0 identity provider(s)" in result.output
