"""Apply the project's migrations: the one source of the schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from chm.core.environment import claim_environment, ensure_same_environment, recorded_environment
from chm.core.settings import Environment, get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    if database_url is not None:
        # ConfigParser interpolation: a literal % must be doubled.
        cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head", environment: Environment | None = None) -> None:
    """Migrate to ``revision``, refusing a database of another environment; at
    head, a database's first upgrade records its environment (SE-004)."""
    environment = environment or get_settings().env
    cfg = alembic_config()
    with engine.begin() as connection:
        ensure_same_environment(recorded_environment(connection), environment)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
        if revision == "head":
            claim_environment(connection, environment)
