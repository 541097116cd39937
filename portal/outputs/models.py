"""What a project released (model weights, code, datasets, papers), checked off against the
outputs its proposal planned, and the final report due at the project's end."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Date, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.auth.models import User
from portal.core.models import (
    Base,
    LabelledEnum,
    TimestampMixin,
    Tone,
    enum_type,
    partial_unique_index,
)
from portal.proposals.models import OutputKind, PlannedOutput, Proposal


class ReleasedOutput(TimestampMixin, Base):
    """One thing a project released, where to find it and under which licence."""

    __tablename__ = "released_outputs"
    __table_args__ = (
        # A planned output is checked off by one release.
        partial_unique_index(
            "uq_released_outputs_planned",
            "planned_output_id",
            where="planned_output_id IS NOT NULL",
        ),
        CheckConstraint("url LIKE 'https://%' OR url LIKE 'http://%'", name="url_is_web"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(
        ForeignKey("proposals.id", ondelete="CASCADE"), index=True
    )
    #: The planned output this release fulfils (None: released without being planned).
    planned_output_id: Mapped[int | None] = mapped_column(
        ForeignKey("planned_outputs.id", ondelete="SET NULL")
    )
    kind: Mapped[OutputKind] = mapped_column(enum_type(OutputKind, "released_output_kind"))
    title: Mapped[str] = mapped_column(String(300))
    url: Mapped[str] = mapped_column(String(500))
    #: An SPDX licence expression (``Apache-2.0``, ``CC-BY-4.0``).
    license: Mapped[str] = mapped_column(String(200))
    #: A DOI (``10.5281/zenodo.1234567``), without the ``https://doi.org/`` prefix.
    doi: Mapped[str | None] = mapped_column(String(200))
    released_on: Mapped[dt.date] = mapped_column(Date)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    proposal: Mapped[Proposal] = relationship()
    planned_output: Mapped[PlannedOutput | None] = relationship()
    recorded_by: Mapped[User | None] = relationship(foreign_keys=[recorded_by_id])


class ReportState(LabelledEnum):
    #: The project ends (or ended) and its report is not in yet.
    DUE = "due", None, Tone.PENDING
    SUBMITTED = "submitted", None, Tone.INFO
    #: Program staff sent it back with their reasons; due again.
    RETURNED = "returned", "Changes requested", Tone.WARNING
    ACCEPTED = "accepted", None, Tone.SUCCESS


class FinalReport(TimestampMixin, Base):
    """The short report a project owes at its end (its outputs are the released ones)."""

    __tablename__ = "final_reports"
    __table_args__ = (
        UniqueConstraint("proposal_id"),
        CheckConstraint(
            "state NOT IN ('submitted', 'accepted') OR submitted_at IS NOT NULL",
            name="submitted_when_submitted",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.id", ondelete="CASCADE"))
    #: The project's last day: the report is due then.
    due_on: Mapped[dt.date] = mapped_column(Date)
    state: Mapped[ReportState] = mapped_column(
        enum_type(ReportState, "final_report_state"), default=ReportState.DUE
    )
    summary: Mapped[str] = mapped_column(Text, default="")
    #: What worked, what did not, and what the GPU-hours made possible.
    outcomes: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[dt.datetime | None]
    submitted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[dt.datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decision_note: Mapped[str | None] = mapped_column(String(2000))
    #: The last reminder sent, so each (days-before-due threshold) is mailed once.
    last_reminder: Mapped[str | None] = mapped_column(String(20))
    state_changed_at: Mapped[dt.datetime | None]

    proposal: Mapped[Proposal] = relationship()
    submitted_by: Mapped[User | None] = relationship(foreign_keys=[submitted_by_id])
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])
