"""The floor: a bare Flask app whose one page is a static HTML page of ``BENCH_FLOOR_BYTES`` bytes
(the size of the proposal list the bench loads), served by the same gunicorn command as the
portal. What the portal takes beyond it is the portal's own work: its database, its templates,
its login and permission checks. ``gunicorn 'tests.benchmarks.floor:create_app()'``."""

from __future__ import annotations

import os

from flask import Flask, Response

HEAD = (
    '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">'
    "<title>Floor</title></head>\n<body>\n<main>\n"
)
TAIL = "</main>\n</body>\n</html>\n"
ROW = "<p>A line of static text, as long as a row of a list is.</p>\n"


def page(size: int) -> bytes:
    """An HTML page of exactly ``size`` bytes (or the shortest valid one, if larger)."""
    body = HEAD + ROW * max(0, (size - len(HEAD) - len(TAIL)) // len(ROW))
    filler = max(0, size - len(body) - len(TAIL))
    return (body + " " * filler + TAIL).encode()


def create_app() -> Flask:
    app = Flask(__name__)
    body = page(int(os.environ.get("BENCH_FLOOR_BYTES", "20000")))

    @app.get("/")
    def index() -> Response:
        return Response(body, mimetype="text/html")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
