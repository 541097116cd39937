"""The console's rules: ``consoles_of`` (the list a person chooses from) agrees with
``can_use_console`` (each console's door) for every kind of person and institution, and who may
change an institution's logins."""

from __future__ import annotations

from sqlalchemy.orm import Session

from portal.auth.models import Role, RoleGrant
from portal.console.permissions import (
    can_map_login,
    can_open_consoles,
    can_use_console,
    consoles_of,
)
from portal.institutions.models import InstitutionState
from tests.factories import make_affiliation, make_institution, make_user
from tests.support.visibility import disagreements


def test_the_console_list_and_the_console_rule_agree(db: Session) -> None:
    first = make_institution(db)
    second = make_institution(db)
    applied = make_institution(db, state=InstitutionState.APPLIED, ror_id=None)
    suspended = make_institution(db, state=InstitutionState.SUSPENDED)
    institutions = [first, second, applied, suspended]
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=first)
    of_two = make_user(db, Role.SIGNING_OFFICIAL, institution=second)
    db.add(RoleGrant(user_id=of_two.id, role=Role.SIGNING_OFFICIAL, institution_id=suspended.id))
    # A member of the first institution who only asked to join the second: no console.
    member = make_user(db, Role.RESEARCHER, institution=first)
    make_affiliation(db, user=member, institution=second)
    disabled = make_user(db, Role.SIGNING_OFFICIAL, institution=first, is_disabled=True)
    users = [
        None,
        official,
        of_two,
        member,
        disabled,
        make_user(db, Role.REVIEWER),
        make_user(db, Role.DATA_STEWARD),
        make_user(db, Role.PROGRAM_OFFICER),
        make_user(db, Role.ADMIN),
    ]
    db.flush()
    for u in users:
        if u is not None:
            db.refresh(u)
    assert disagreements(db, consoles_of, can_use_console, users, institutions) == []
    assert [can_use_console(of_two, i) for i in institutions] == [False, True, False, True]
    assert [can_open_consoles(u) for u in users] == [
        False,
        True,
        True,
        False,
        False,
        False,
        False,
        True,
        True,
    ]


def test_officials_of_the_institution_and_administrators_change_its_logins(db: Session) -> None:
    mine = make_institution(db)
    theirs = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=mine)
    assert can_map_login(official, mine) and not can_map_login(official, theirs)
    assert can_map_login(make_user(db, Role.ADMIN), theirs)
    assert not can_map_login(make_user(db, Role.PROGRAM_OFFICER), mine)
    assert not can_map_login(make_user(db, Role.RESEARCHER, institution=mine), mine)
    assert not can_map_login(None, mine)
