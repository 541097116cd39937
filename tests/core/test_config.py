from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from portal import create_app
from portal.config import DEV_SECRET_KEY, ConfigError, normalise_database_url


def _prod(tmp_path: Path, **kw: object) -> dict[str, object]:
    return {"ENV": "production", "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite3'}", **kw}


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "not set"),
        ("", "not set"),
        (DEV_SECRET_KEY, "development default"),
        ("short-key", "shorter than 32"),
        ("a" * 32, "too predictable"),
        ("changeme" * 4, "too predictable"),
        (" " * 32, "too predictable"),
        ("ab" * 24, "too predictable"),
    ],
)
def test_production_refuses_to_start_with_a_weak_secret_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str | None, message: str
) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("PORTAL_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match=message):
        create_app(_prod(tmp_path, SECRET_KEY=key))


def test_production_starts_with_a_long_secret_and_secure_cookies(tmp_path: Path) -> None:
    app = create_app(_prod(tmp_path, SECRET_KEY=secrets.token_urlsafe(48)))
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-atom_session"
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_environment_variables_configure_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = secrets.token_urlsafe(40)
    monkeypatch.setenv("SECRET_KEY", key)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite3'}")
    monkeypatch.setenv("PORTAL_PAGE_SIZE", "7")
    monkeypatch.setenv("PORTAL_SITE_NAME", "Test Portal")
    app = create_app({"ENV": "production"})
    assert app.config["SECRET_KEY"] == key
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("env.sqlite3")
    assert app.config["PAGE_SIZE"] == 7
    assert app.config["SITE_NAME"] == "Test Portal"


def test_unknown_environment_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ENV must be"):
        create_app(_prod(tmp_path, ENV="staging", SECRET_KEY="x" * 40))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_database_urls_use_psycopg3(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected


def test_production_accepts_32_random_hex_digits(tmp_path: Path) -> None:
    for _ in range(20):
        create_app(_prod(tmp_path, SECRET_KEY=secrets.token_hex(16)))


def test_production_refuses_debug_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``PORTAL_ENV=production FLASK_DEBUG=1 flask run`` would expose the Werkzeug debugger."""
    monkeypatch.setenv("FLASK_DEBUG", "1")
    with pytest.raises(ConfigError, match="Debug mode is on"):
        create_app(_prod(tmp_path, SECRET_KEY=secrets.token_urlsafe(48)))
