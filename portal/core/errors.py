"""Domain errors raised by services. Views turn them into flash messages or 4xx responses."""

from __future__ import annotations


class DomainError(Exception):
    """A business rule refused the request; the message is safe to show to the user."""

    status_code = 400


class PermissionDeniedError(DomainError):
    """The acting user may not do this."""

    status_code = 403


class NotFoundError(DomainError):
    """The object does not exist (or the user may not know it does)."""

    status_code = 404


class InvalidTransitionError(DomainError):
    """The object's current state does not allow this action."""

    status_code = 409


class ValidationError(DomainError):
    """The input breaks a rule the form could not check on its own."""

    status_code = 422


class ConflictError(DomainError):
    """The change conflicts with existing data (a duplicate, a concurrent change)."""

    status_code = 409
