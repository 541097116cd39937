"""What happened, for whoever watches (``portal.ops.metrics`` counts it): blinker signals sent by
core and the domains, so that neither knows who listens.

Each is sent with the Flask app as sender and keyword arguments only.
"""

from __future__ import annotations

from typing import Any

from blinker import NamedSignal, Namespace

_signals = Namespace()

#: A request ended: ``endpoint`` (None when no route matched), ``method``, ``status``,
#: ``seconds`` (wall time) and ``statements`` (SQL statements it sent).
request_observed = _signals.signal("request-observed")

#: A login through an identity provider ended: ``outcome`` ("success" or the refusal's reason, e.g.
#: "state_mismatch") and ``provider`` (its slug, or None).
login_finished = _signals.signal("login-finished")

#: A request was refused (403) by a permission rule: ``endpoint``.
request_refused = _signals.signal("request-refused")

#: A request was answered 429 by a rate limit (Flask-Limiter's or the refusal limit): ``endpoint``
#: and ``limit`` ("refusals" or the limit's text, e.g. "20 per 1 minute").
rate_limited = _signals.signal("rate-limited")


def emit(signal: NamedSignal, **data: Any) -> None:
    """Send ``signal`` from the current app (in a request or app context)."""
    from flask import current_app

    signal.send(current_app._get_current_object(), **data)  # type: ignore[attr-defined]
