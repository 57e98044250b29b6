"""Store URLs: where a ``--db`` value points and which driver it needs.

Every store URL that is shown (titles, errors) or stored (provenance, the command line) passes through
:func:`rsbench.store.redaction.redact` first, so a password given in ``--db`` or ``RSBENCH_DB`` never leaves
the process.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from rsbench.errors import RsbenchError
from rsbench.store.redaction import redact

DEFAULT_DB = "rsbench.db"
# drivers SQLAlchemy picks for a bare dialect name, and the pip requirement that brings the one rsbench uses
DEFAULT_DRIVERS = {"postgresql": "psycopg"}
INSTALL_HINTS = {"psycopg": 'pip install "rsbench[postgres]"'}


def store_url(db: str | None = None) -> str:
    """``db``, else ``$RSBENCH_DB``, else ``./rsbench.db``; a bare path means SQLite, a URL passes through."""
    value = db or os.environ.get("RSBENCH_DB") or DEFAULT_DB
    return value if "://" in value else f"sqlite:///{Path(value).expanduser()}"


def parse_store_url(url: str) -> URL:
    """The parsed URL; ``postgresql://`` means the psycopg (3) driver that ``rsbench[postgres]`` installs."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is no number (an unencoded ':' or '@')
        raise RsbenchError(f"{redact(url)!r} is not a database URL", "e.g. sqlite:///rsbench.db") from None
    driver = DEFAULT_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=f"{parsed.drivername}+{driver}") if driver else parsed


def missing_driver(url: str, error: ImportError) -> RsbenchError:
    """The one-line error for a URL whose database driver is not installed."""
    module = (error.name or str(error)).split(".")[0]
    hint = INSTALL_HINTS.get(module, f"install the Python package that provides {module!r}")
    return RsbenchError(f"the store {redact(url)} needs the database driver {module!r}, which is not installed", hint)
