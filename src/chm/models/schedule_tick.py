from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from chm.core.types import UTCDateTime
from chm.models.base import Base


class ScheduleTick(Base):
    """One tick of a pipeline's schedule, with the times the contract derives
    from it (chm.schedules.ticks): stored for the view ``chm_overdue_pipelines``
    and alert evaluation, which must find a pipeline's expected tick in SQL.
    Only ticks at or after the pipeline's creation and its schedule's last
    change are stored; rewritten whenever the schedule's fields change."""

    __tablename__ = "schedule_ticks"
    __table_args__ = (
        # The latest tick due at a time: one short index walk per pipeline.
        sa.Index(None, "pipeline_id", "due_missed"),
    )

    pipeline_id: Mapped[int] = mapped_column(
        sa.ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True
    )
    tick_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    # tick - grace: the earliest event time of a run that answers the tick.
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # tick + grace: from then on, no run in the window means missed.
    due_missed: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # tick + deadline (null: no deadline): from then on, a run of the window
    # still queued or running is late.
    due_late: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
