"""The program's public face (anonymous, cached): partner directory, awarded projects and their
open outputs, open calls, and a program overview with charts."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Pages, with their cache. They are linked from the site's footer on every page, and from
    the header for visitors who are not logged in (the logged-in navigation is full enough)."""
    from portal.public import views

    app.extensions[views.CACHE_KEY] = views.make_cache()
    app.register_blueprint(views.bp)
