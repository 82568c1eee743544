"""The one declarative base, with a naming convention for every constraint."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from chm.core.timeutil import utcnow
from chm.core.types import BigIntPK, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class IdMixin:
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)


def _same_as_created(context: Any) -> Any:
    # A new row's updated_at equals its created_at, to the microsecond.
    return context.get_current_parameters()["created_at"]


class TimestampMixin:
    """Audit timestamps (FR-020). ``updated_at`` is moved by the services, only
    when a stored value really changes."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=_same_as_created
    )


def name_key(name: str) -> str:
    """The case-insensitive identity of a name (DI-001, DI-002)."""
    return name.strip().casefold()
