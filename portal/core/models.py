"""The typed declarative base, column types and mixins shared by every domain's models."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, Self, TypeAlias, TypeVar

from sqlalchemy import DDL, DateTime, Dialect, Enum, Index, MetaData, event, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, registry, scoped_session
from sqlalchemy.sql import FromClause
from sqlalchemy.types import TypeDecorator

#: Constraint names Alembic can rely on (and that read well in an IntegrityError).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: What services accept: a plain Session (tests, scripts) or Flask-SQLAlchemy's scoped ``db.session``.
AnySession: TypeAlias = Session | scoped_session[Any]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    PostgreSQL keeps the zone itself; SQLite has no zone type, so values are normalised to UTC on the
    way in and marked as UTC on the way out. Naive datetimes are refused: they are always a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC times")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Base of every model: named constraints and timezone-aware datetimes."""

    registry = registry(
        metadata=MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={dt.datetime: UTCDateTime()},
    )


E = TypeVar("E", bound=enum.Enum)


def enum_type(enum_cls: type[E], name: str) -> Enum:
    """A portable enum column: stored as its string value with a CHECK constraint named ``name``."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(str(m.value)) for m in enum_cls) + 8,
        values_callable=lambda cls: [str(m.value) for m in cls],
        validate_strings=True,
    )


class TimestampMixin:
    """``created_at`` and ``updated_at``, set by the application in UTC."""

    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class Tone(enum.StrEnum):
    """How a state is drawn: the badge colour of every state of every domain comes from its tone."""

    NEUTRAL = "neutral"
    INFO = "info"
    PENDING = "pending"
    SUCCESS = "success"
    WARNING = "warning"
    DANGER = "danger"


class LabelledEnum(enum.StrEnum):
    """A string enum whose members carry a label and a tone: ``ACTIVE = "active", "Active", Tone.SUCCESS``.

    Without a label the value is used, capitalised, with spaces for underscores.
    """

    _value_: str
    label: str
    tone: Tone

    def __new__(cls, value: str, label: str | None = None, tone: Tone = Tone.NEUTRAL) -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.label = label or value.replace("_", " ").capitalize()
        member.tone = tone
        return member


def partial_unique_index(name: str, *columns: str, where: str) -> Index:
    """A unique index over ``columns`` for the rows matching ``where`` (SQL over this table's
    columns), on SQLite and PostgreSQL alike: e.g. one open request per person and institution."""
    return Index(
        name,
        *columns,
        unique=True,
        sqlite_where=text(where),
        postgresql_where=text(where),
    )


def install_after_create(table: FromClause, statements: dict[str, list[str]]) -> None:
    """Run each dialect's ``statements`` (triggers a table guards itself with) after ``create_all``
    creates ``table``; migrations execute the same statements."""
    for dialect, sqls in statements.items():
        for sql in sqls:
            event.listen(
                table,
                "after_create",
                DDL(sql).execute_if(dialect=dialect),  # type: ignore[no-untyped-call]
            )
