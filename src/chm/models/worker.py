"""The worker processes that run on this database (``chm worker``)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from chm.core.types import UTCDateTime
from chm.models.base import Base


class WorkerProcess(Base):
    """One ``chm worker`` process: registered at start, its heartbeat renewed
    while it runs, ``stopped_at`` set when it stops cleanly. A worker whose
    heartbeat is older than the lease time is gone (killed, or its machine
    lost): its leases have expired too. On SQLite, which has one writer, a
    second worker refuses to start while the first is alive."""

    __tablename__ = "workers"
    __table_args__ = (sa.Index(None, "heartbeat_at"),)

    id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    pid: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
