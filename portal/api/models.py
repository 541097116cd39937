"""API tokens: how resource operators' schedulers and the storage systems that serve the datasets
authenticate to the operator API.

A token is shown once, when it is made; the portal keeps only its SHA-256 and a short prefix
that lets people tell their tokens apart. A token expires, can be revoked, and has one scope: a
resource operator's token acts only on the resources it names, a storage operator's token reads
who may use the datasets it names — and neither reaches what the other scope's routes serve.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, ForeignKey, String, Table
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.auth.models import User
from portal.core.models import Base, LabelledEnum, TimestampMixin, enum_type, utcnow
from portal.datasets.models import Dataset
from portal.proposals.models import Resource

#: The longest a token may live, in days.
MAX_DAYS = 366


class TokenScope(LabelledEnum):
    #: A cluster's scheduler: reads the allocations to enforce, pushes the jobs that ran.
    RESOURCE_OPERATOR = "resource_operator", "Resource operator"
    #: A storage system serving datasets: reads who may use each of its datasets now.
    DATASET_OPERATOR = "dataset_operator", "Storage operator"


#: The resources a token acts on (its operator's clusters).
api_token_resources = Table(
    "api_token_resources",
    Base.metadata,
    Column("token_id", ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True),
    Column("resource_id", ForeignKey("resources.id", ondelete="CASCADE"), primary_key=True),
)

#: The datasets a storage operator's token reads the grants of.
api_token_datasets = Table(
    "api_token_datasets",
    Base.metadata,
    Column("token_id", ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True),
    Column("dataset_id", ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True),
)


class ApiToken(TimestampMixin, Base):
    """A bearer token for the operator API, scoped to a role (``scope``) and the objects of that
    role: a set of resources (resource operator) or of datasets (storage operator), never both."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: What the token is for, e.g. "Slurm on cluster-1".
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[TokenScope] = mapped_column(
        enum_type(TokenScope, "api_token_scope"), default=TokenScope.RESOURCE_OPERATOR
    )
    #: The token's first characters, shown so that people can tell tokens apart.
    prefix: Mapped[str] = mapped_column(String(16))
    #: SHA-256 (hex) of the whole token: the token itself is never stored.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    last_used_at: Mapped[dt.datetime | None]

    resources: Mapped[list[Resource]] = relationship(
        secondary=api_token_resources, order_by=Resource.id
    )
    datasets: Mapped[list[Dataset]] = relationship(
        secondary=api_token_datasets, order_by=Dataset.id
    )
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
    revoked_by: Mapped[User | None] = relationship(foreign_keys=[revoked_by_id])

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= utcnow()

    @property
    def status(self) -> str:
        """Active, Expired or Revoked (as the admin page shows it)."""
        if self.revoked_at is not None:
            return "Revoked"
        return "Expired" if self.is_expired else "Active"

    @property
    def covers(self) -> list[str]:
        """The names of what the token acts on (its resources or its datasets)."""
        if self.scope == TokenScope.DATASET_OPERATOR:
            return [d.slug for d in self.datasets]
        return [r.name for r in self.resources]

    def __repr__(self) -> str:
        return f"<ApiToken {self.id} {self.prefix}… {self.status}>"
