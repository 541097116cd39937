"""The shape of every domain's permission rules, and the one way to enforce them.

A rule is a plain predicate ``can_<verb>(user, obj) -> bool`` whose docstring states the rule in one
line, wrapped by :func:`rule` with the message shown to someone it refuses, so the refusal lives
beside the rule. Views and services call :func:`check`; templates call the rule itself to decide
which buttons to show; each domain's ``visible_<plural>(user)`` is the same rule as a query filter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, ParamSpec

from portal.core.errors import PermissionDeniedError

P = ParamSpec("P")

DEFAULT_REFUSAL = "You are not allowed to do this."


class Rule(Generic[P]):
    """A permission predicate with the message for those it refuses."""

    def __init__(self, fn: Callable[P, bool], refusal: str) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.refusal = refusal

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Rule {self.fn.__name__}>"


def rule(refusal: str = DEFAULT_REFUSAL) -> Callable[[Callable[P, bool]], Rule[P]]:
    """Declare a permission rule: ``@rule("Only program staff …")`` above ``def can_x(user, obj)``."""

    def wrap(fn: Callable[P, bool]) -> Rule[P]:
        return Rule(fn, refusal)

    return wrap


def require(allowed: bool, message: str = DEFAULT_REFUSAL) -> None:
    """Raise PermissionDeniedError unless ``allowed``; the refusal is audited by the error handler."""
    if not allowed:
        raise PermissionDeniedError(message)


def check(predicate: Rule[P], *args: P.args, **kwargs: P.kwargs) -> None:
    """Enforce ``predicate``: PermissionDeniedError with the rule's own refusal message."""
    require(predicate(*args, **kwargs), predicate.refusal)


def permission_helpers(*modules: Any) -> dict[str, Callable[..., Any]]:
    """The ``can_*``/``is_*`` functions of ``modules``, for templates. Two different functions under
    one name are refused: a template must never call a rule other than the one its author meant."""
    out: dict[str, Callable[..., Any]] = {}
    for mod in modules:
        for name in dir(mod):
            if not name.startswith(("can_", "is_")):
                continue
            fn = getattr(mod, name)
            if not callable(fn):
                continue
            if name in out and out[name] is not fn:
                raise RuntimeError(f"two permission helpers are called {name!r} ({mod.__name__})")
            out[name] = fn
    return out
