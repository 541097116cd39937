"""Where the portal looks for its files: the instance folder comes from ``PORTAL_INSTANCE_PATH`` or
the working directory (never the installed package); templates and static files from the package
when installed from a wheel, else from the checkout. (tests/ops/test_release.py installs a wheel.)"""

from __future__ import annotations

from pathlib import Path

import pytest

import portal
from portal import asset_folder, create_app
from tests.support.app import TEST_CONFIG

pytestmark = pytest.mark.once


def test_the_instance_folder_is_the_configured_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "deploy" / "instance"
    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(folder))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("PORTAL_DATABASE_URL", raising=False)
    app = create_app({**TEST_CONFIG})
    assert Path(app.instance_path) == folder and folder.is_dir()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{folder / 'portal.sqlite3'}"


def test_the_instance_folder_defaults_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORTAL_INSTANCE_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    app = create_app({**TEST_CONFIG})
    assert Path(app.instance_path) == tmp_path / "instance"
    assert not Path(app.instance_path).is_relative_to(Path(portal.__file__).parent)


def test_a_checkout_serves_its_top_level_templates_and_static_files() -> None:
    checkout = Path(portal.__file__).resolve().parent.parent
    assert asset_folder("templates") == checkout / "templates"
    assert asset_folder("static") == checkout / "static"


def test_an_installed_package_serves_its_own_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "portal"
    for name in ("templates", "static"):
        (package / name).mkdir(parents=True)
    monkeypatch.setattr(portal, "PACKAGE", package)
    assert asset_folder("templates") == package / "templates"
    assert asset_folder("static") == package / "static"
