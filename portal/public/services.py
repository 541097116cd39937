"""The one change the public pages depend on: a person's consent to be named on them."""

from __future__ import annotations

from portal.auth.models import User
from portal.core import audit
from portal.core.models import AnySession
from portal.core.permissions import check
from portal.public.permissions import can_set_public_name


def set_public_name(session: AnySession, person: User, *, actor: User, consent: bool) -> User:
    """The person agrees (or no longer agrees) to be named on the program's public pages as the
    principal investigator of their awarded projects. Only they decide; each change is audited
    (an unchanged answer changes nothing and records nothing)."""
    check(can_set_public_name, actor, person)
    if person.public_name == consent:
        return person
    person.public_name = consent
    session.flush()
    audit.record(session, "user.public_name", actor=actor, obj=person, consent=consent)
    return person
