"""The layering rule of ``portal/``, as data, and a checker that reads the imports with ``ast``.

Imports flow one way (docs: DESIGN.md, "Architecture"). The rules, numbered as in the design:

0. placement     every module under ``portal/`` belongs to a declared area: the app factory
                 (``portal/__init__.py``), the shared kit, a domain, or ``portal/dev``.
1. kit           the shared kit (``core``, ``extensions``, ``config``) imports no domain.
2. notifications ``notifications`` imports no other domain: domains import it, not the reverse.
3. layers        inside the domains, a lower layer never imports a higher one (same domain or
                 another); from another domain only its "public" modules may be imported; forms
                 are imported by views/api/cli of their own domain only. A domain's ``__init__``
                 (its ``init_app``) is exempt from this rule.
4. dev           nothing outside ``portal.dev`` imports ``portal.dev``, except the app factory.

Every import counts: module level, inside functions, under ``if TYPE_CHECKING:``, relative ones.
``check(root)`` returns the violations; ``format_violations`` makes them readable.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

# --------------------------------------------------------------------------------------------
# The rule table
# --------------------------------------------------------------------------------------------

#: The shared kit: importable by everyone; imports no domain (rule 1).
KIT = ("core", "extensions", "config")

#: The domain packages, present and planned.
DOMAINS = (
    "auth",
    "institutions",
    "notifications",
    "proposals",
    "reviews",
    "allocations",
    "agreements",
    "datasets",
    "outputs",
    "console",
    "public",
    "api",
    "reports",
    # Operating the portal: health, metrics, the deployment check, backups (reads other domains).
    "ops",
)

#: Domains that import no other domain (rule 2): everybody imports them, they import nobody.
LEAF_DOMAINS = ("notifications",)

#: Demo and development code (demo data, dev server, demo identity provider, mail sink).
DEV = "dev"

#: Modules that may import ``portal.dev`` although they are outside it (rule 4).
DEV_IMPORTERS = ("portal",)  # the app factory lists what to register

#: Not checked at all.
SKIPPED = ("migrations",)

#: Rule 3, top to bottom. A module's role is its file name inside the domain package
#: (``portal/<domain>/<role>.py`` or ``portal/<domain>/<role>/...``); patterns use fnmatch.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry", ("views", "*_views", "api", "cli")),
    ("services", ("services",)),
    # A workflow names each action's permission rule and mail (portal.core.workflow).
    ("workflow", ("workflow",)),
    ("emails", ("emails",)),
    # What the rules read and the workflow checks with: a proposal's checklist, an agreement's text.
    ("rules", ("permissions", "forms", "checklist", "text")),
    # Facts the permission rules read (conflicts of interest), and the guarded budget counters the
    # allocation workflow moves.
    ("facts", ("conflicts", "budget")),
    # Registries every layer reads (the kinds of e-mail).
    ("registry", ("kinds",)),
    ("models", ("models",)),
)

#: The layer of every other module (``oidc``, ``claims``, ``kinds``, ``rendering``, ...).
DEFAULT_LAYER = "services"

#: Roles that only their own domain may import (views, api, cli, forms and the package itself).
PRIVATE_ROLES = ("views", "*_views", "api", "cli", "forms", "__init__")

#: Roles that only these layers (of the same domain) may import: services never touch forms.
IMPORTED_ONLY_BY = {"forms": ("entry",)}

#: A layer that may also import any public module of these domains, whatever its layer:
#: e-mails are built on notifications (kinds, rendering, reminders, enqueue).
ALSO_ALLOWED = {"emails": ("notifications",)}

RULES = {
    "placement": "rule 0 (placement): every module under portal/ belongs to a declared area",
    "kit": "rule 1 (kit): core, extensions and config import no domain package",
    "notifications": "rule 2 (notifications): notifications imports no other domain package",
    "layers": "rule 3 (layers): a lower layer never imports a higher one",
    "dev": "rule 4 (dev): nothing outside portal.dev imports portal.dev (except the app factory)",
    "parse": "the file must parse",
}

# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Violation:
    """One import that breaks one rule (or one misplaced or unparsable file)."""

    path: str  # relative to the root, with forward slashes
    line: int
    importer: str
    imported: str  # "" for a file-level violation (placement, parse)
    rule: str  # a key of RULES
    detail: str

    @property
    def message(self) -> str:
        what = f"{self.importer} imports {self.imported}" if self.imported else self.importer
        return f"{what}: {self.detail} [{RULES[self.rule]}]"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Place:
    """Where a module sits: its area, and inside a domain its domain, role and layer."""

    area: str  # "root", "kit", "domain", "dev", "skipped" or "unplaced"
    domain: str = ""
    role: str = ""

    @property
    def layer(self) -> str:
        if self.role == "__init__":
            return LAYERS[0][0]  # the registration point sits on top
        return layer_of(self.role)


def layer_of(role: str) -> str:
    for layer, patterns in LAYERS:
        if _matches(role, patterns):
            return layer
    return DEFAULT_LAYER


def _matches(role: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(role, pattern) for pattern in patterns)


def _rank(layer: str) -> int:
    """Higher is higher up: entry has the largest rank."""
    names = [name for name, _ in LAYERS]
    return len(names) - names.index(layer)


def place(module: str) -> Place:
    parts = module.split(".")
    if parts[0] != "portal":
        raise ValueError(f"not a portal module: {module}")
    if len(parts) == 1:
        return Place("root")
    top = parts[1]
    if top in SKIPPED:
        return Place("skipped")
    if top in KIT:
        return Place("kit")
    if top == DEV:
        return Place("dev")
    if top in DOMAINS:
        return Place("domain", domain=top, role=parts[2] if len(parts) > 2 else "__init__")
    return Place("unplaced")


def module_name(relative: Path) -> str:
    """``portal/auth/views.py`` → ``portal.auth.views``; ``portal/auth/__init__.py`` → ``portal.auth``."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # a dotted portal module


def _resolve_base(node: ast.ImportFrom, importer: str, is_package: bool) -> str | None:
    if node.level == 0:
        return node.module
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    up = node.level - 1
    if up > len(package) - 1:
        return None  # beyond the top: Python would refuse it as well
    base = package[: len(package) - up]
    if node.module:
        base = [*base, *node.module.split(".")]
    return ".".join(base)


def imports_of(tree: ast.AST, importer: str, is_package: bool, modules: set[str]) -> list[Import]:
    """Every ``portal`` import in ``tree``, wherever it is, with submodules resolved."""
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_base(node, importer, is_package)
            if base is None:
                continue
            # `from portal.auth import services` imports the module portal.auth.services;
            # `from portal.auth.models import User` imports the module portal.auth.models.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in dict.fromkeys(targets):  # unique, in order
            if target == "portal" or target.startswith("portal."):
                found.append(Import(node.lineno, target))
    return found


def judge(importer: str, target: str) -> tuple[str, str] | None:
    """The rule ``importer`` breaks by importing ``target``, with a detail; None if it is fine."""
    src, dst = place(importer), place(target)
    if src.area in ("dev", "skipped", "unplaced") or dst.area in ("skipped", "unplaced"):
        return None
    if dst.area == "dev":
        if src.area == "dev" or importer in DEV_IMPORTERS:
            return None
        return "dev", "demo/development code is only reached from the app factory"
    if src.area == "kit" and dst.area == "domain":
        return "kit", f"the shared kit must not know the domain {dst.domain!r}"
    if src.area != "domain" or dst.area != "domain":
        return None
    if src.domain in LEAF_DOMAINS and dst.domain != src.domain:
        return "notifications", f"{src.domain!r} must not know the domain {dst.domain!r}"
    return _judge_layers(src, dst)


def _judge_layers(src: Place, dst: Place) -> tuple[str, str] | None:
    if src.role == "__init__":
        return None  # the registration point
    src_layer, dst_layer = src.layer, dst.layer
    if dst.domain != src.domain:
        if _matches(dst.role, PRIVATE_ROLES):
            what = "package" if dst.role == "__init__" else dst.role
            return "layers", (
                f"{src.domain}/{src.role} must not use another domain's {what} "
                f"({dst.domain}); only its models, permissions, workflow, services, emails"
            )
        if dst.domain in ALSO_ALLOWED.get(src_layer, ()):
            return None
    for role, layers in IMPORTED_ONLY_BY.items():
        if fnmatchcase(dst.role, role) and src_layer not in layers:
            return "layers", (
                f"{src.domain}/{src.role} (layer {src_layer!r}) must not use {role}; "
                f"only the layers {', '.join(layers)} do"
            )
    if _rank(dst_layer) > _rank(src_layer):
        return "layers", (
            f"{src.domain}/{src.role} (layer {src_layer!r}) must not use "
            f"{dst.domain}/{dst.role} (higher layer {dst_layer!r})"
        )
    return None


def _python_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "portal").rglob("*.py") if p.is_file())


def check(root: Path) -> list[Violation]:
    """All layering violations in ``root/portal`` (``portal/migrations`` is not checked)."""
    files = _python_files(root)
    modules: set[str] = set()
    for path in files:
        parts = module_name(path.relative_to(root)).split(".")
        modules.update(".".join(parts[: i + 1]) for i in range(len(parts)))

    violations: list[Violation] = []
    for path in files:
        relative = path.relative_to(root)
        rel = relative.as_posix()
        importer = module_name(relative)
        where = place(importer)
        if where.area == "skipped":
            continue
        if where.area == "unplaced":
            detail = (
                f"not the app factory, the kit ({', '.join(KIT)}), a declared domain, "
                f"nor under portal/{DEV}/: move it, or declare its area in tests/support/layers.py"
            )
            violations.append(Violation(rel, 1, importer, "", "placement", detail))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. SyntaxWarning: ruff reports those
                tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as error:
            violations.append(
                Violation(
                    rel, error.lineno or 1, importer, "", "parse", f"cannot parse: {error.msg}"
                )
            )
            continue
        is_package = path.name == "__init__.py"
        for found in imports_of(tree, importer, is_package, modules):
            verdict = judge(importer, found.target)
            if verdict is not None:
                rule, detail = verdict
                violations.append(Violation(rel, found.line, importer, found.target, rule, detail))
    return sorted(violations)


def format_violations(violations: list[Violation]) -> str:
    lines = [f"{len(violations)} layering violation(s):"]
    lines += [f"  {violation}" for violation in violations]
    return "\n".join(lines)
