"""A real PostgreSQL server for the store's tests, started and stopped by the test session itself.

It needs the server binaries (Debian: ``apt-get install postgresql``; found under
``/usr/lib/postgresql/*/bin`` or on ``PATH``) and the driver (``pip install -e ".[postgres]"``); where
either is absent the PostgreSQL half of the tests is skipped, saying which. Run as root, the server runs as
the ``postgres`` user (initdb refuses root).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

USER = "rsbench"
PASSWORD = "s3cret-pw"  # trust authentication ignores it; tests check that it is never shown or stored


def server_binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (newest Debian version first, then ``PATH``), or None."""

    def version(folder: str) -> tuple[int, ...]:
        return tuple(int(part) for part in Path(folder).parent.name.split(".") if part.isdigit())

    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(folder) / "initdb").is_file():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A throwaway cluster in a private folder, reachable only through a unix socket in that folder."""

    def __init__(self, binaries: Path):
        self.binaries = binaries
        self.root = Path(tempfile.mkdtemp(prefix="rsbench-pg-"))
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.names = itertools.count()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_postgres, str(self.binaries / tool), *args], check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", USER, "-A", "trust", "--no-sync", "-E", "UTF8")
        options = f"-k {self.root} -c listen_addresses='' -c fsync=off -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def version(self) -> str:
        import psycopg

        with psycopg.connect(host=str(self.root), user=USER, dbname="postgres") as connection:
            return connection.execute("show server_version").fetchone()[0]

    def new_database(self) -> str:
        """A fresh, empty database; its URL carries :data:`PASSWORD`."""
        import psycopg

        name = f"store{next(self.names)}"
        with psycopg.connect(host=str(self.root), user=USER, dbname="postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql://{USER}:{PASSWORD}@/{name}?host={self.root}"


@pytest.fixture(scope="session")
def postgres_server():
    """A running server for the session, or a skip naming what is missing."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries are absent (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip('the PostgreSQL driver psycopg is absent (pip install -e ".[postgres]")')
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, the server needs a 'postgres' user to run as (initdb refuses root)")
    server = PostgresServer(binaries)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A new, empty store's URL, once on SQLite and once on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_server").new_database()
