"""Real identity providers for the login tests: two oidc-provider-mock processes (two issuers, two
keys) served over HTTP in threads, and the hand-signing stub for the bad cases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.auth import oidc
from portal.auth.models import IdentityProvider
from tests.auth.stub_idp import StubIdP, run_stub
from tests.support.oidc import add_provider, mock_idp_process

SECRETS = {"idp-a": "secret-a", "idp-b": "secret-b", "stub": "secret-stub", "fed": "secret-fed"}


def _mock() -> Iterator[str]:
    with mock_idp_process() as url:
        yield url


@pytest.fixture(scope="session")
def idp_a_url() -> Iterator[str]:
    yield from _mock()


@pytest.fixture(scope="session")
def idp_b_url() -> Iterator[str]:
    yield from _mock()


@pytest.fixture(scope="session")
def stub_server() -> Iterator[StubIdP]:
    with run_stub() as stub:
        yield stub


@pytest.fixture
def stub(stub_server: StubIdP) -> Iterator[StubIdP]:
    stub_server.reset()
    yield stub_server
    stub_server.reset()


@pytest.fixture(autouse=True)
def _oidc_config(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fresh provider metadata per test, and the test providers' client secrets (for tests that
    use the shared ``app``; tests that build their own app configure it themselves)."""
    oidc.clear_metadata_cache()
    if "app" not in request.fixturenames:
        yield
        oidc.clear_metadata_cache()
        return
    app: Flask = request.getfixturevalue("app")
    before = app.config["OIDC_CLIENT_SECRETS"]
    app.config["OIDC_CLIENT_SECRETS"] = SECRETS
    yield
    app.config["OIDC_CLIENT_SECRETS"] = before
    oidc.clear_metadata_cache()


@pytest.fixture
def provider_a(db: Session, idp_a_url: str) -> IdentityProvider:
    return add_provider(db, "idp-a", idp_a_url)


@pytest.fixture
def provider_b(db: Session, idp_b_url: str) -> IdentityProvider:
    return add_provider(db, "idp-b", idp_b_url)


@pytest.fixture
def stub_provider(db: Session, stub: StubIdP) -> IdentityProvider:
    return add_provider(db, "stub", stub.base)
