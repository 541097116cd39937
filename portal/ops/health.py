"""``/healthz`` (liveness) and ``/readyz`` (readiness) for load balancers and orchestrators.

Both are unauthenticated and cheap, and say nothing about the configuration: no URLs, host names,
versions or error texts, only which check failed and what an operator should do.

- ``/healthz``: the process answers (no database): restart the process when this fails.
- ``/readyz``: this process can serve pages: the database answers, its schema is at the code's
  migration head, the templates load and render; also the outbox backlog (mail waiting, the age of
  the oldest due, dead mail), reported but not failing readiness. 503 when a check fails: take the
  instance out of the load balancer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, render_template
from flask.typing import ResponseReturnValue
from sqlalchemy import select, text

from portal.extensions import db

bp = Blueprint("ops", __name__)
log = logging.getLogger(__name__)

#: Templates every page needs, loaded (and compiled once per process) by the readiness check; the
#: error page is also rendered, which exercises the base layout.
KEY_TEMPLATES = ("base.html", "core/index.html", "auth/login.html", "errors/error.html")


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    checks = {
        "database": _database(),
        "migrations": "skipped",
        "templates": _templates(),
    }
    outbox: dict[str, Any] | None = None
    if checks["database"] == "ok":
        checks["migrations"] = _migrations()
        if checks["migrations"] == "ok":
            outbox = _outbox()
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
    if outbox is not None:
        body["outbox"] = outbox
    return body, 200 if ready else 503, {"Cache-Control": "no-store"}


def _database() -> str:
    try:
        db.session.execute(select(1))
    except Exception:
        log.exception("readiness: the database does not answer")
        db.session.rollback()
        return "unreachable"
    return "ok"


def _migrations() -> str:
    try:
        heads = migration_heads()
    except Exception:
        log.exception("readiness: the migration scripts cannot be read")
        return "migration scripts missing"
    try:
        current = set(db.session.scalars(text("SELECT version_num FROM alembic_version")))
    except Exception:
        db.session.rollback()
        return "database not migrated; run flask db upgrade"
    if current == heads:
        return "ok"
    if current <= _cache.revisions:
        return "database behind the code; run flask db upgrade"
    return "database ahead of the code (a newer release migrated it)"


def _templates() -> str:
    try:
        env = current_app.jinja_env
        for name in KEY_TEMPLATES:
            env.get_template(name)
        render_template("errors/error.html", status=503, title="Ready", message="")
    except Exception:
        log.exception("readiness: the templates do not render")
        return "templates missing or broken"
    return "ok"


def _outbox() -> dict[str, Any]:
    from portal.notifications.delivery import backlog

    b = backlog(db.session)
    return {
        "waiting": b.waiting,
        "due": b.due,
        "oldest_due_seconds": round(b.oldest_due_seconds),
        "dead": b.dead,
    }


@dataclass
class _Heads:
    stamp: tuple[int, int] | None = None
    heads: frozenset[str] = frozenset()
    revisions: frozenset[str] = frozenset()


_cache = _Heads()


def migration_heads() -> frozenset[str]:
    """The head revision(s) of the migrations the code ships, read again only when the versions
    folder changes (a stat per call)."""
    from alembic.script import ScriptDirectory

    folder = Path(current_app.extensions["migrate"].directory)
    versions = folder / "versions"
    stat = versions.stat()
    stamp = (stat.st_mtime_ns, stat.st_ino)
    if _cache.stamp != stamp:
        script = ScriptDirectory(str(folder))
        _cache.heads = frozenset(script.get_heads())
        _cache.revisions = frozenset(r.revision for r in script.walk_revisions())
        _cache.stamp = stamp
    return _cache.heads
