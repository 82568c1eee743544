"""``chm db ...``: the database schema."""

from __future__ import annotations

from typing import Annotated

import typer

from chm.cli.runtime import configure_logging, load_settings, open_database

app = typer.Typer(help="Database schema commands.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Create or migrate the schema of CHM_DATABASE_URL to the latest revision."""
    from chm.core.migrate import upgrade as migrate

    settings = load_settings()
    configure_logging(settings.log_level)
    # Not verified first: upgrade is what records the environment, and it
    # refuses another environment's database itself (exit 1).
    with open_database(settings, verify_environment=False) as engine:
        migrate(engine, revision)
    typer.echo(f"database at revision {revision} ({engine.dialect.name}, {settings.env.value})")
