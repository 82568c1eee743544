from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, validates

from chm.models.base import Base, IdMixin, TimestampMixin, name_key


class Client(IdMixin, TimestampMixin, Base):
    __tablename__ = "clients"
    __table_args__ = (
        # DI-001: unique case-insensitively, enforced by the database.
        sa.UniqueConstraint("name_key"),
    )

    name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    name_key: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)

    @validates("name")
    def _keep_name_key(self, _key: str, value: str) -> str:
        self.name_key = name_key(value)
        return value
