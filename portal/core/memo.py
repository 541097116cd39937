"""Answers kept for the rest of a read-only request.

A page asks some questions several times (is this person an allocation decider? — once for the
navigation, once for a dashboard card); ``@per_request`` answers each once per request. Only while
the request only reads (a GET page), so nothing the answer depends on can change in between;
elsewhere (a POST, a CLI command) the function simply runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask import g, has_request_context

from portal.core.database import is_read_only

P = ParamSpec("P")
R = TypeVar("R")


def per_request(fn: Callable[P, R]) -> Callable[P, R]:
    """Keep ``fn``'s answer for its (hashable) arguments until the read-only request ends."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not (has_request_context() and is_read_only()):
            return fn(*args, **kwargs)
        memo: dict[Any, Any] = g.setdefault("_memo", {})
        key = (fn, args, tuple(sorted(kwargs.items())))
        if key not in memo:
            memo[key] = fn(*args, **kwargs)
        return memo[key]  # type: ignore[no-any-return]

    return wrapper
