"""The wheel carries the top-level ``templates/`` and ``static/`` folders inside the package
(``portal/templates``, ``portal/static``), where ``portal.asset_folder`` finds them once installed.
In a checkout (and an editable install) they stay where they are. Everything else is in
pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ASSETS = ("templates", "static")


class BuildWithAssets(build_py):  # type: ignore[misc]
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for name in ASSETS:
            target = Path(self.build_lib) / "portal" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(Path(__file__).parent / name, target)


setup(cmdclass={"build_py": BuildWithAssets})
