from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from chm.core.timeutil import utcnow
from chm.core.types import UTCDateTime
from chm.models.base import Base


class DatabaseSetting(Base):
    """What a database must remember about itself, e.g. its environment."""

    __tablename__ = "chm_settings"

    key: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
