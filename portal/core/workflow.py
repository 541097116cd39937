"""Workflows as data, and the one runner every state change of every domain goes through.

A domain declares a :class:`Workflow`: its transition table, who may take each action (an
allow-list of permission rules: an action without a rule is refused to everyone), the mail each
action sends, and the actions that deliberately send none. :meth:`Workflow.run` then does, in the
caller's transaction: permission → from-state → reason → checks and other domains' gates
(``portal.core.hooks``) → **compare-and-set write**
(``UPDATE … SET state = :to WHERE id = :id AND state = :from``; any other row count means someone
else decided first) → effects and follow-ups → audit event → mail → flush. Nothing else assigns
``.state``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value

from portal.core import audit, hooks
from portal.core.errors import ConflictError, InvalidTransitionError, ValidationError
from portal.core.models import AnySession
from portal.core.permissions import Rule, require

S = TypeVar("S", bound=enum.Enum)
M = TypeVar("M")

#: The longest reason kept (audit log, decision notes).
MAX_REASON = 1000


@dataclass(frozen=True)
class Transition(Generic[S]):
    """An action allowed from any state in ``frm``, leading to ``to``."""

    frm: frozenset[S]
    to: S
    #: Button text for the action.
    label: str
    #: Whether the person acting must give a reason (kept in the audit log and told to others).
    needs_reason: bool = False
    #: Bootstrap colour of the button: primary, danger, secondary …
    style: str = "primary"


class StaleStateError(ConflictError):
    """Someone else changed the object between reading it and this change: nothing was changed."""


@dataclass(frozen=True)
class Step(Generic[M, S]):
    """One action being taken: what a workflow's checks, fields, effects and mails are given."""

    obj: M
    action: str
    transition: Transition[S]
    #: The state the object was in when the action was taken.
    frm: S
    actor: Any
    reason: str | None


#: Hooks a workflow declares. Each receives the step; effects and mails also the session.
Check = Callable[[Step[Any, Any]], None]
Effect = Callable[[AnySession, Step[Any, Any]], None]


def _label(state: enum.Enum) -> str:
    return str(getattr(state, "label", state.value)).lower()


@dataclass(frozen=True)
class Workflow(Generic[M, S]):
    """A domain's state machine: table, permissions (allow-list), mail per action, silent actions."""

    #: Prefix of the audit actions (``institution`` → ``institution.suspend``).
    name: str
    #: How the object is named in messages ("request", "institution").
    noun: str
    model: type[M]
    transitions: Mapping[str, Transition[S]]
    #: Who may take each action. An action missing here is refused to everyone.
    permissions: Mapping[str, Rule[Any]]
    #: The mail each action sends (recipients are picked from the same permission rules).
    mails: Mapping[str, Effect]
    #: Actions that send no mail, on purpose (each with the reason in the domain's workflow.py).
    silent: frozenset[str]
    #: Columns written together with the state by every action (who decided, when).
    fields: Callable[[Step[M, S]], dict[str, Any]] | None = None
    #: Rules an action checks before it changes anything (raise ValidationError).
    checks: Mapping[str, Check] = field(default_factory=dict)
    #: What else an action changes, after the state (grant a role, issue an agreement).
    effects: Mapping[str, Effect] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = self.inconsistencies()
        if problems:
            raise ValueError(f"workflow {self.name!r}: " + "; ".join(problems))

    def inconsistencies(self) -> list[str]:
        """Where the table, the permissions and the mail/silent sets do not name the same actions."""
        actions = set(self.transitions)
        out = []
        for what, names in (
            ("permissions", set(self.permissions)),
            ("mails or silent", set(self.mails) | set(self.silent)),
        ):
            if names - actions:
                out.append(f"{what} name unknown actions {sorted(names - actions)}")
            if actions - names:
                out.append(f"actions without {what}: {sorted(actions - names)}")
        if set(self.mails) & set(self.silent):
            out.append(f"both mailed and silent: {sorted(set(self.mails) & set(self.silent))}")
        for declared in (self.checks, self.effects):
            if set(declared) - actions:
                out.append(f"hooks for unknown actions {sorted(set(declared) - actions)}")
        return out

    def may(self, user: Any, obj: M, action: str) -> bool:
        """Whether ``user`` may take ``action`` on ``obj`` now (its state allows it, a rule grants it)."""
        tr = self.transitions.get(action)
        rule = self.permissions.get(action)
        return (
            tr is not None
            and rule is not None
            and getattr(obj, "state") in tr.frm  # noqa: B009 - M is any model with a state
            and rule(user, obj)
        )

    def available(self, user: Any, obj: M) -> list[tuple[str, Transition[S]]]:
        """The actions ``user`` may take on ``obj`` now, in table order (for buttons)."""
        return [(name, tr) for name, tr in self.transitions.items() if self.may(user, obj, name)]

    def run(
        self,
        session: AnySession,
        obj: M,
        action: str,
        *,
        actor: Any,
        reason: str | None = None,
        values: Mapping[str, Any] | None = None,
        **details: Any,
    ) -> M:
        """Take ``action`` on ``obj`` for ``actor``, in the caller's transaction (flushes only).

        ``values`` are further columns this call writes with the state; ``details`` go into the
        audit event. Raises PermissionDeniedError, InvalidTransitionError, ValidationError, or
        StaleStateError when someone else changed the object first.
        """
        tr = self.transitions.get(action)
        rule = self.permissions.get(action)
        if tr is None or rule is None:
            raise InvalidTransitionError(f"Unknown action {action!r}.")
        require(rule(actor, obj), rule.refusal)
        frm: S = getattr(obj, "state")  # noqa: B009
        if frm not in tr.frm:
            raise InvalidTransitionError(
                f"{tr.label} is not possible while the {self.noun} is {_label(frm)}."
            )
        reason = (reason or "").strip()[:MAX_REASON] or None
        if tr.needs_reason and not reason:
            raise ValidationError(f"{tr.label}: please give a reason.")
        step: Step[M, S] = Step(obj, action, tr, frm, actor, reason)
        if action in self.checks:
            self.checks[action](step)
        hooks.check_gates(session, f"{self.name}.{action}", obj)
        columns = {"state": tr.to, **(self.fields(step) if self.fields else {}), **(values or {})}
        model: Any = self.model
        result = session.execute(
            update(model)
            .where(model.id == getattr(obj, "id"), model.state == frm)  # noqa: B009
            .values(**columns)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            session.expire(obj, ["state"])
            raise StaleStateError(
                f"{tr.label}: someone else has already changed this {self.noun} "
                f"(it is {_label(getattr(obj, 'state'))} now). Nothing was changed."  # noqa: B009
            )
        for key, value in columns.items():
            set_committed_value(obj, key, value)
        if hasattr(obj, "updated_at"):
            session.expire(obj, ["updated_at"])
        if action in self.effects:
            self.effects[action](session, step)
        hooks.run_follow_ups(session, f"{self.name}.{action}", step)
        audit.record(
            session,
            f"{self.name}.{action}",
            actor=actor,
            obj=obj,
            frm=frm.value,
            to=tr.to.value,
            reason=reason,
            **details,
        )
        if action in self.mails:
            self.mails[action](session, step)
        session.flush()
        return obj
