"""Imports flow one way: the layering of ``portal/`` (rules in tests/support/layers.py).

The first test checks the real tree; the others check the checker on small fake trees.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.layers import Violation, check, format_violations, place

REPOSITORY = Path(__file__).resolve().parents[1]


def test_portal_follows_the_layering() -> None:
    violations = check(REPOSITORY)
    if violations:
        pytest.fail(format_violations(violations), pytrace=False)


# --------------------------------------------------------------------------------------------
# The checker itself, on fake trees
# --------------------------------------------------------------------------------------------

#: A small tree that follows every rule, using each kind of import the real code uses.
CLEAN_TREE = {
    "portal/__init__.py": (
        "from portal import extensions\n"
        "from portal.dev import demo\n"
        "from portal.institutions import init_app\n"
        "from portal.institutions.views import bp\n"
    ),
    "portal/config.py": "import os\n",
    "portal/extensions.py": "from portal.core.models import Base\n",
    "portal/core/__init__.py": "",
    "portal/core/models.py": "from sqlalchemy.orm import DeclarativeBase\n",
    "portal/core/x.py": (
        "from portal import config, extensions\nfrom portal.core import models\nfrom . import models\n"
    ),
    "portal/auth/__init__.py": "",
    "portal/auth/models.py": (
        "from typing import TYPE_CHECKING\n"
        "from portal.core.models import Base\n"
        "if TYPE_CHECKING:\n"
        "    from portal.institutions.models import Institution\n"
    ),
    "portal/auth/permissions.py": "from portal.auth.models import User\n",
    "portal/auth/claims.py": "from portal.institutions.models import Institution\n",
    "portal/auth/services.py": (
        "from portal.auth import claims, models, permissions\n"
        "from portal.institutions import services as institution_services\n"
    ),
    "portal/auth/views.py": (
        "from portal.auth import services\nfrom portal.institutions.services import normalise\n"
    ),
    "portal/institutions/__init__.py": (
        "from portal.institutions import affiliation_views, cli, views\n\n\n"
        "def init_app() -> None:\n"
        "    from portal.notifications import kinds\n"
    ),
    "portal/institutions/models.py": "from ..auth.models import User\nfrom ..core.models import Base\n",
    "portal/institutions/workflow.py": "from .models import Institution\nfrom portal.core import x\n",
    "portal/institutions/permissions.py": (
        "from portal.auth.permissions import is_admin\nfrom portal.institutions.models import Institution\n"
    ),
    "portal/institutions/forms.py": "from portal.institutions.models import InstitutionState\n",
    "portal/institutions/emails.py": (
        "from portal.auth.models import User\n"
        "from portal.institutions.permissions import may_decide\n"
        "from portal.notifications.kinds import register_kind\n"
        "from portal.notifications.services import enqueue_email\n"
    ),
    "portal/institutions/services.py": (
        "from portal.institutions import emails, models, permissions, workflow\n"
        "from portal.auth.models import User\n"
        "from portal.notifications import services\n"
    ),
    "portal/institutions/views.py": (
        "from portal.institutions import forms, services\nfrom portal.auth import services\n"
    ),
    "portal/institutions/affiliation_views.py": "from portal.institutions.views import bp\n",
    "portal/institutions/cli.py": "from portal.institutions import services\n",
    "portal/notifications/__init__.py": "from portal.notifications import views\n",
    "portal/notifications/models.py": "from portal.core.models import Base\n",
    "portal/notifications/kinds.py": "",
    "portal/notifications/services.py": "from portal.notifications import kinds, models\n",
    "portal/notifications/views.py": "from portal.notifications import services\n",
    "portal/dev/__init__.py": "",
    "portal/dev/demo.py": (
        "from portal.auth.models import User\nfrom portal.institutions import forms, views\n"
    ),
    "portal/dev/server.py": "from portal import create_app\nfrom portal.dev.demo import load\n",
    "portal/migrations/env.py": "from portal.dev import demo\nfrom portal.institutions import views\n",
    "portal/templates_not_python.txt": "from portal.dev import demo\n",
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert check(write_tree(tmp_path, CLEAN_TREE)) == []


# (file, its new content, the rule it breaks, the line, the imported module)
PLANTED: dict[str, tuple[str, str, str, int, str]] = {
    "core imports a domain": (
        "portal/core/x.py",
        "from portal.core import models\nfrom portal.institutions.models import Institution\n",
        "kit",
        2,
        "portal.institutions.models",
    ),
    "extensions imports a domain": (
        "portal/extensions.py",
        "from portal.auth.models import User\n",
        "kit",
        1,
        "portal.auth.models",
    ),
    "core imports portal.dev": (
        "portal/core/x.py",
        "from portal.dev.demo import PEOPLE\n",
        "dev",
        1,
        "portal.dev.demo",
    ),
    "notifications imports a domain": (
        "portal/notifications/services.py",
        "from portal.notifications import kinds\nfrom portal.auth.models import User\n",
        "notifications",
        2,
        "portal.auth.models",
    ),
    "notifications' init_app imports a domain": (
        "portal/notifications/__init__.py",
        "import portal.institutions.emails  # noqa: F401\n",
        "notifications",
        1,
        "portal.institutions.emails",
    ),
    "a model imports services of its own domain": (
        "portal/institutions/models.py",
        "from portal.institutions.services import approve\n",
        "layers",
        1,
        "portal.institutions.services",
    ),
    "a model imports permissions of its own domain": (
        "portal/institutions/models.py",
        "from portal.institutions import permissions\n",
        "layers",
        1,
        "portal.institutions.permissions",
    ),
    "permissions import another domain's services": (
        "portal/institutions/permissions.py",
        "from portal.auth.services import find_user\n",
        "layers",
        1,
        "portal.auth.services",
    ),
    "e-mails import services of their own domain": (
        "portal/institutions/emails.py",
        "from portal.institutions import services\n",
        "layers",
        1,
        "portal.institutions.services",
    ),
    "services import views": (
        "portal/institutions/services.py",
        "from portal.institutions import models\nfrom portal.institutions.views import bp\n",
        "layers",
        2,
        "portal.institutions.views",
    ),
    "services import forms": (
        "portal/institutions/services.py",
        "from portal.institutions.forms import InstitutionForm\n",
        "layers",
        1,
        "portal.institutions.forms",
    ),
    "a domain imports another domain's views": (
        "portal/auth/views.py",
        "from portal.institutions.affiliation_views import bp\n",
        "layers",
        1,
        "portal.institutions.affiliation_views",
    ),
    "a domain imports another domain's forms": (
        "portal/auth/views.py",
        "from portal.institutions.forms import InstitutionForm\n",
        "layers",
        1,
        "portal.institutions.forms",
    ),
    "a domain imports another domain's cli": (
        "portal/auth/services.py",
        "from portal.institutions import cli\n",
        "layers",
        1,
        "portal.institutions.cli",
    ),
    "a domain imports another domain's package": (
        "portal/auth/services.py",
        "from portal.institutions import init_app\n",
        "layers",
        1,
        "portal.institutions",
    ),
    "domain code imports portal.dev": (
        "portal/institutions/views.py",
        "from portal.dev import demo\n",
        "dev",
        1,
        "portal.dev.demo",
    ),
    "a domain's init_app imports portal.dev": (
        "portal/auth/__init__.py",
        "import portal.dev\n",
        "dev",
        1,
        "portal.dev",
    ),
    "an import only under TYPE_CHECKING": (
        "portal/core/x.py",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from portal.auth.models import User\n",
        "kit",
        4,
        "portal.auth.models",
    ),
    "a relative import": (
        "portal/auth/services.py",
        "from ..institutions import views\n",
        "layers",
        1,
        "portal.institutions.views",
    ),
    "a relative import from a package's __init__": (
        "portal/core/__init__.py",
        "from .. import auth\n",
        "kit",
        1,
        "portal.auth",
    ),
    "a relative import of a sibling": (
        "portal/institutions/workflow.py",
        "from . import services\n",
        "layers",
        1,
        "portal.institutions.services",
    ),
    "an import inside a function": (
        "portal/core/x.py",
        "def f() -> None:\n    from portal.auth import models\n",
        "kit",
        2,
        "portal.auth.models",
    ),
    "an `import a.b` statement": (
        "portal/institutions/cli.py",
        "import portal.auth.views\n",
        "layers",
        1,
        "portal.auth.views",
    ),
    "a module in no declared area": (
        "portal/demo.py",
        "from portal.auth.models import User\n",
        "placement",
        1,
        "",
    ),
    "a file that does not parse": (
        "portal/auth/services.py",
        "from portal.auth import (\n",
        "parse",
        1,
        "",
    ),
}


@pytest.mark.parametrize(
    ("path", "source", "rule", "line", "imported"), PLANTED.values(), ids=PLANTED
)
def test_a_planted_import_is_found(
    tmp_path: Path, path: str, source: str, rule: str, line: int, imported: str
) -> None:
    root = write_tree(tmp_path, {**CLEAN_TREE, path: source})

    violations = check(root)

    assert [(v.path, v.line, v.imported, v.rule) for v in violations] == [
        (path, line, imported, rule)
    ], format_violations(violations)


def test_a_violation_reads_as_file_line_and_the_rule(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path, {**CLEAN_TREE, "portal/core/x.py": "from portal.institutions import models\n"}
    )

    (violation,) = check(root)

    assert violation == Violation(
        "portal/core/x.py",
        1,
        "portal.core.x",
        "portal.institutions.models",
        "kit",
        "the shared kit must not know the domain 'institutions'",
    )
    assert str(violation).startswith(
        "portal/core/x.py:1: portal.core.x imports portal.institutions.models: "
    )
    assert "rule 1 (kit)" in str(violation)
    assert format_violations([violation]).splitlines() == [
        "1 layering violation(s):",
        f"  {violation}",
    ]


def test_every_broken_import_is_reported_once_in_file_order(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            **CLEAN_TREE,
            "portal/core/x.py": (
                "from portal.auth.models import Role, User\n"  # two names, one module
                "from portal.institutions import models, views\n"  # two modules
            ),
            "portal/core/models.py": "from portal.dev import demo\n",
        },
    )

    assert [(v.path, v.line, v.imported) for v in check(root)] == [
        ("portal/core/models.py", 1, "portal.dev.demo"),
        ("portal/core/x.py", 1, "portal.auth.models"),
        ("portal/core/x.py", 2, "portal.institutions.models"),
        ("portal/core/x.py", 2, "portal.institutions.views"),
    ]


@pytest.mark.parametrize(
    ("module", "area", "domain", "role", "layer"),
    [
        ("portal", "root", "", "", "services"),
        ("portal.core.audit", "kit", "", "", "services"),
        ("portal.config", "kit", "", "", "services"),
        ("portal.dev.demo", "dev", "", "", "services"),
        ("portal.migrations.env", "skipped", "", "", "services"),
        ("portal.demo", "unplaced", "", "", "services"),
        ("portal.auth", "domain", "auth", "__init__", "entry"),
        ("portal.auth.views", "domain", "auth", "views", "entry"),
        (
            "portal.institutions.affiliation_views",
            "domain",
            "institutions",
            "affiliation_views",
            "entry",
        ),
        ("portal.api.api", "domain", "api", "api", "entry"),
        ("portal.notifications.cli", "domain", "notifications", "cli", "entry"),
        ("portal.auth.services", "domain", "auth", "services", "services"),
        ("portal.auth.oidc", "domain", "auth", "oidc", "services"),
        ("portal.notifications.kinds", "domain", "notifications", "kinds", "registry"),
        ("portal.reports.views.summary", "domain", "reports", "views", "entry"),
        ("portal.institutions.emails", "domain", "institutions", "emails", "emails"),
        ("portal.institutions.forms", "domain", "institutions", "forms", "rules"),
        ("portal.institutions.workflow", "domain", "institutions", "workflow", "workflow"),
        ("portal.auth.permissions", "domain", "auth", "permissions", "rules"),
        ("portal.auth.models", "domain", "auth", "models", "models"),
    ],
)
def test_where_a_module_sits(module: str, area: str, domain: str, role: str, layer: str) -> None:
    where = place(module)

    assert (where.area, where.domain, where.role, where.layer) == (area, domain, role, layer)
