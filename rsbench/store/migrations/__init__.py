"""Schema migrations of the results store (Alembic), applied in place by ``rsbench db upgrade``.

A new store is created from the models at the newest schema and stamped with the newest revision; a store
of schema 3 (rsbench before migrations existed) is stamped ``0003`` and upgraded from there. Revisions are
named by the schema version they produce (``versions/0004_*.py`` makes schema 4).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from rsbench.errors import RsbenchError

FIRST_MIGRATABLE = 3  # the schema of the baseline revision 0003


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    return config


def revision_of(version: int) -> str:
    return f"{version:04d}"


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def stamp_head(connection: Connection) -> None:
    """Record that a store just created from the models is at the newest revision."""
    command.stamp(_config(connection), "head")


def create_schema3(connection: Connection) -> None:
    """An empty store of schema 3, made by the baseline revision (what rsbench wrote before migrations)."""
    command.upgrade(_config(connection), revision_of(FIRST_MIGRATABLE))


def upgrade(connection: Connection, version: int) -> None:
    """Bring a store of schema ``version`` to the newest schema, in the caller's transaction."""
    if version < FIRST_MIGRATABLE:
        raise RsbenchError(
            f"schema version {version} predates migrations",
            "export its runs with the rsbench that wrote it and import them into a new store",
        )
    if "alembic_version" not in inspect(connection).get_table_names() or current_revision(connection) is None:
        command.stamp(_config(connection), revision_of(version))
    command.upgrade(_config(connection), "head")
