"""Which environment a database belongs to (SE-004).

The first ``chm db upgrade`` records the CHM environment (``CHM_ENV``) in the
database. From then on a process of another environment refuses to use it:
a development shell pointed by mistake at the production database, or the
reverse, stops with a clear message instead of reading, writing or migrating.

The record is a row of ``chm_settings`` (migration 0003), read here through a
Core description of the columns this module uses, not through the ORM
model (``chm.models.settings``): it is the database's own bookkeeping, as
Alembic's ``alembic_version`` is, read before the schema is known to exist
(``has_table``) and around the migrations themselves, where the models may
be ahead of the database. Core knows no table of the domain.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from chm.core.dialects import dialect_for
from chm.core.settings import Environment
from chm.core.timeutil import utcnow
from chm.core.types import UTCDateTime

ENVIRONMENT_KEY = "environment"

# The columns of chm_settings this module reads and writes (the table is the
# migrations'; chm.models.settings maps it for the schema check).
_SETTINGS = sa.table(
    "chm_settings",
    sa.column("key", sa.String(100)),
    sa.column("value", sa.String(500)),
    sa.column("created_at", UTCDateTime()),
)


class EnvironmentMismatch(Exception):
    """The database belongs to another environment than this process."""


class DatabaseNotMigrated(Exception):
    """The database has no (current) CHM schema."""


def recorded_environment(connection: Connection) -> str | None:
    """The environment the database belongs to; None before its first upgrade."""
    if not sa.inspect(connection).has_table(_SETTINGS.name):
        return None
    return connection.scalar(sa.select(_SETTINGS.c.value).where(_SETTINGS.c.key == ENVIRONMENT_KEY))


def ensure_same_environment(recorded: str | None, environment: Environment) -> None:
    if recorded is not None and recorded != environment.value:
        raise EnvironmentMismatch(
            f"this database belongs to the {recorded} environment and this process runs as"
            f" {environment.value} (CHM_ENV); refusing to use it"
        )


def claim_environment(connection: Connection, environment: Environment) -> None:
    """Record ``environment`` unless the database already has one; then check it."""
    connection.execute(
        dialect_for(connection)
        .insert(_SETTINGS)
        .values(key=ENVIRONMENT_KEY, value=environment.value, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key"])
    )
    ensure_same_environment(recorded_environment(connection), environment)


def verify_database_environment(engine: Engine, environment: Environment) -> None:
    """Before serving or ingesting: the database is migrated and is ours."""
    with engine.connect() as connection:
        recorded = recorded_environment(connection)
    if recorded is None:
        raise DatabaseNotMigrated(
            "the database has no CHM schema or environment yet; run `chm db upgrade` first"
        )
    ensure_same_environment(recorded, environment)
