"""The registry of e-mail kinds. Each domain's ``emails.py`` registers the kinds it sends.

A kind's key is also its template path under ``templates/emails/`` (``institutions/affiliation_requested``
renders ``affiliation_requested.txt`` and ``.html`` there). Mandatory kinds (a decision about you, an
agreement that awaits your signature) are always sent at once; the others follow each person's
preference and carry a one-click unsubscribe link.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmailKind:
    key: str
    #: Shown on the notification settings page.
    label: str
    description: str = ""
    #: Cannot be switched off or delayed into the digest.
    mandatory: bool = False


_KINDS: dict[str, EmailKind] = {}


def register_kind(kind: EmailKind) -> EmailKind:
    """Declare a kind of e-mail (once per key; registering again replaces it)."""
    _KINDS[kind.key] = kind
    return kind


def get_kind(key: str) -> EmailKind:
    """The registered kind; an unknown key is a programming error."""
    try:
        return _KINDS[key]
    except KeyError:
        raise LookupError(f"e-mail kind {key!r} is not registered") from None


def all_kinds() -> list[EmailKind]:
    """Every registered kind, mandatory ones first, then by label."""
    return sorted(_KINDS.values(), key=lambda k: (not k.mandatory, k.label))


def optional_kinds() -> list[EmailKind]:
    return [k for k in all_kinds() if not k.mandatory]


#: The daily digest itself (internal: it exists because someone chose the digest).
DIGEST = register_kind(
    EmailKind(
        "notifications/digest",
        "Daily digest",
        "One mail a day with the notifications you chose to receive in a digest.",
        mandatory=True,
    )
)
