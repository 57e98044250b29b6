"""The results store: SQLite by default (WAL + busy timeout: several certify processes may write at
once), any SQLAlchemy URL through ``--db`` or ``RSBENCH_DB`` (PostgreSQL with ``rsbench[postgres]``).

Every write is a transaction: a failed import or an interrupted certification leaves the rows already
committed and nothing half-written. Races between processes are settled by the database: schema creation
holds the database's write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), a protocol has
one run (a unique ``protocol_key``), an example one row per run (a unique ``(run_id, idx)``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, create_engine, event, func, insert, inspect, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rsbench.errors import RsbenchError, redact
from rsbench.provenance import file_sha256
from rsbench.store.models import SCHEMA_VERSION, Base, CertificationRun, Meta, Result, TrainingRun
from rsbench.store.url import missing_driver, parse_store_url, store_url

RESULT_COLUMNS = [
    "idx",
    "label",
    "predict",
    "radius",
    "radius_kind",
    "correct",
    "n_a",
    "n",
    "n0",
    "alpha",
    "draws",
    "seconds",
]
SQLITE_BUSY_TIMEOUT_MS = 60_000  # how long a SQLite writer waits for another's lock before "locked"
SCHEMA_LOCK = 0x7273626E  # PostgreSQL advisory lock key held while a store's schema is created ("rsbn")
# INSERT ... ON CONFLICT DO NOTHING, per backend
INSERT_IGNORING_DUPLICATES = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun by _sqlite_begin, DDL included
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """Writers take SQLite's write lock when they begin (waiting up to the busy timeout), so a transaction
    that reads then writes never fails halfway on a lock another writer took meanwhile."""
    write = connection.get_execution_options().get("rsbench_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _first_line(message: str) -> str:
    """A driver's message as one line, passwords hidden."""
    lines = redact(message).strip().splitlines()
    return lines[0] if lines else "unknown database error"


class RunExists(RsbenchError):
    """A complete run with this protocol key is already in the store (``run_id``)."""

    def __init__(self, run_id: int):
        super().__init__(f"the store already holds this run as run {run_id}")
        self.run_id = run_id


class Store:
    """Training runs, certification runs and their per-example rows in one SQLAlchemy database.

    ``url`` is the store's address with any password hidden (safe to show); the engine keeps the real one.
    """

    def __init__(self, url: str):
        parsed = parse_store_url(url)
        self.url = redact(url)
        self.backend = parsed.get_backend_name()
        if self.backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
            parent = Path(parsed.database).expanduser().parent
            if not parent.is_dir():
                raise RsbenchError(f"folder {parent} of the store does not exist", "create it or change --db")
        with self._database_errors():
            try:
                self.engine: Engine = create_engine(parsed)
            except ImportError as error:
                raise missing_driver(url, error) from None
            except NoSuchModuleError:
                raise RsbenchError(
                    f"{self.url} names an unknown kind of database", "use sqlite:///PATH or postgresql://USER@HOST/DB"
                ) from None
            if self.backend == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
                event.listen(self.engine, "begin", _sqlite_begin)
            self._reads = sessionmaker(self.engine, expire_on_commit=False)
            self._writes = sessionmaker(self.engine.execution_options(rsbench_write=True), expire_on_commit=False)
            self._check_schema()

    @contextlib.contextmanager
    def _database_errors(self) -> Iterator[None]:
        """Database failures as one line (locked, unreachable, anything else), passwords hidden."""
        try:
            yield
        except OperationalError as error:
            message = _first_line(str(error.orig) if error.orig else str(error))
            if "locked" in message or "busy" in message:
                raise RsbenchError(
                    f"the store {self.url} is locked by another process", "retry when it finishes"
                ) from None
            raise RsbenchError(f"cannot use the store {self.url}: {message}", "check --db / RSBENCH_DB") from None
        except SQLAlchemyError as error:
            raise RsbenchError(f"store error at {self.url}: {_first_line(str(error))}") from None

    def _schema_version(self, connection: Connection) -> int | None:
        """The recorded schema version; None when the store has no rsbench tables yet."""
        tables = set(inspect(connection).get_table_names())
        if Meta.__tablename__ not in tables:
            if tables & set(Base.metadata.tables):
                raise RsbenchError(f"{self.url} holds rsbench tables without a schema version", "use another --db")
            return None
        value = connection.scalar(select(Meta.value).where(Meta.key == "schema_version"))
        return int(value) if value is not None else 0

    def _create_schema(self) -> int:
        """Create the tables and record the version, holding the database's write lock, unless a racing
        process did so first; returns the version then recorded."""
        with self._writes.begin() as session:
            connection = session.connection()
            if self.backend == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            version = self._schema_version(connection)
            if version is None:
                Base.metadata.create_all(connection)
                connection.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
                version = SCHEMA_VERSION
            return version

    def _check_schema(self) -> None:
        with self.engine.connect() as connection:
            version = self._schema_version(connection)
        if version is None:
            version = self._create_schema()
        if version > SCHEMA_VERSION:
            raise RsbenchError(
                f"the store {self.url} has schema version {version}, newer than this rsbench's {SCHEMA_VERSION}",
                "upgrade rsbench (pip install -U rsbench) to read it",
            )
        if version < SCHEMA_VERSION:
            raise RsbenchError(
                f"the store {self.url} has schema version {version}, older than this rsbench's {SCHEMA_VERSION}",
                "export its runs with an older rsbench and import them into a new store",
            )

    @contextlib.contextmanager
    def session(self, write: bool = True) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error. ``write=False`` for reads only
        (SQLite readers then never wait for writers)."""
        with self._database_errors(), (self._writes if write else self._reads).begin() as session:
            yield session

    # ------------------------------------------------------------------------------------- training

    def record_training(self, config, result) -> int:
        meta = result.meta
        with self.session() as session:
            run = TrainingRun(
                checkpoint_path=str(Path(result.checkpoint).resolve()),
                checkpoint_sha256=file_sha256(result.checkpoint),
                dataset=config.dataset,
                arch=config.arch,
                method=config.method,
                params=meta["params"],
                sigma=float(config.sigma),
                seed=config.seed,
                epochs=result.epochs,
                test_accuracy=result.test_accuracy,
                images_per_second=result.images_per_second,
                config=json.loads(json.dumps(dataclasses.asdict(config), default=str)),
                provenance=meta["provenance"],
            )
            session.add(run)
            session.flush()
            return run.id

    def training_run_for(self, sha256: str) -> TrainingRun | None:
        with self.session(write=False) as session:
            return session.scalars(
                select(TrainingRun).where(TrainingRun.checkpoint_sha256 == sha256).order_by(TrainingRun.id.desc())
            ).first()

    # -------------------------------------------------------------------------------- certification

    @staticmethod
    def _run_with_key(session: Session, protocol_key: str, lock: bool = False) -> CertificationRun | None:
        """The run of a protocol (unique in the store); ``lock`` holds its row until the transaction ends."""
        query = select(CertificationRun).where(CertificationRun.protocol_key == protocol_key)
        return session.scalars(query.with_for_update() if lock else query).first()

    def find_run(self, protocol_key: str) -> int | None:
        """The id of the run with this ``protocol_key``, if any."""
        with self.session(write=False) as session:
            run = self._run_with_key(session, protocol_key)
            return run.id if run else None

    def start_run(self, indices: list[int], selection: dict[str, Any], **fields: Any) -> tuple[int, set[int]]:
        """The run with ``fields["protocol_key"]``, created if new, planned to cover ``indices`` as well;
        returns its id and the indices it already holds (an interrupted or partial run is extended).

        Identical commands started together share one run: the one that loses the race to create it
        (the unique ``protocol_key`` refuses its copy) joins the winner's."""
        with self._database_errors():
            try:
                with self._writes.begin() as session:
                    return self._open_run(session, indices, selection, fields)
            except IntegrityError:
                with self._writes.begin() as session:
                    return self._open_run(session, indices, selection, fields)

    def _open_run(
        self, session: Session, indices: list[int], selection: dict[str, Any], fields: dict[str, Any]
    ) -> tuple[int, set[int]]:
        run = self._run_with_key(session, fields["protocol_key"], lock=True)
        if run is None:
            run = CertificationRun(
                status="running",
                indices={"selections": [selection], "planned": indices},
                num_planned=len(indices),
                **fields,
            )
            session.add(run)
            session.flush()
            return run.id, set()
        done = set(session.scalars(select(Result.idx).where(Result.run_id == run.id)))
        planned = sorted(set(run.indices.get("planned", [])) | set(indices))
        selections = list(run.indices.get("selections", []))
        if selection not in selections:
            selections.append(selection)
        run.indices = {"selections": selections, "planned": planned}
        run.num_planned = len(planned)
        if not set(indices) <= done:
            run.status = "running"
        return run.id, done

    def add_result(self, run_id: int, **row: Any) -> None:
        """Record one example's row; a row the run already holds is kept (a joined identical command
        certified it too, with the same noise, so its certificate is the same)."""
        dialect_insert = INSERT_IGNORING_DUPLICATES.get(self.backend)
        statement = (
            dialect_insert(Result).values(run_id=run_id, **row).on_conflict_do_nothing()  # type: ignore[attr-defined]
            if dialect_insert
            else insert(Result).values(run_id=run_id, **row)
        )
        with self.session() as session:
            session.execute(statement)

    def finish_run(self, run_id: int) -> None:
        """Mark a run complete once it holds a row for every planned index."""
        with self.session() as session:
            run = session.get_one(CertificationRun, run_id)
            done = session.scalar(select(func.count()).where(Result.run_id == run_id)) or 0
            run.status = "complete" if done >= run.num_planned else "running"

    def add_complete_run(self, rows: pd.DataFrame, **fields: Any) -> int:
        """A whole run and its rows in one transaction (imports); :class:`RunExists` when its protocol key
        is already in the store, also when another process stored it a moment ago."""
        with self._database_errors():
            try:
                with self._writes.begin() as session:
                    run = CertificationRun(status="complete", **fields)
                    session.add(run)
                    session.flush()
                    records = rows[RESULT_COLUMNS].astype(object).where(rows[RESULT_COLUMNS].notna(), None)
                    records = [{"run_id": run.id, **record} for record in records.to_dict("records")]
                    session.execute(insert(Result), records)  # one executemany, not one ORM object per row
                    return run.id
            except IntegrityError:
                existing = self.find_run(fields["protocol_key"])
                if existing is None:
                    raise
                raise RunExists(existing) from None

    def get_run(self, run_id: int) -> CertificationRun:
        with self.session(write=False) as session:
            run = session.get(CertificationRun, run_id)
            if run is None:
                raise RsbenchError(f"no certification run {run_id} in {self.url}", "list them with `rsbench runs`")
            return run

    def runs(self, dataset: str | None = None, kind: str | None = "certify", complete_only: bool = False):
        """Certification runs as a DataFrame (one row per run, all columns of the runs table)."""
        query = select(CertificationRun)
        if dataset:
            query = query.where(CertificationRun.dataset == dataset)
        if kind:
            query = query.where(CertificationRun.kind == kind)
        if complete_only:
            query = query.where(CertificationRun.status == "complete")
        with self.session(write=False) as session:
            runs = session.scalars(query.order_by(CertificationRun.id)).all()
        columns = [c.key for c in CertificationRun.__table__.columns]
        return pd.DataFrame([{c: getattr(run, c) for c in columns} for run in runs], columns=columns)

    def result_counts(self, run_ids: list[int]) -> dict[int, int]:
        """How many rows each run holds, counted in the database."""
        query = select(Result.run_id, func.count()).where(Result.run_id.in_(run_ids)).group_by(Result.run_id)
        with self.session(write=False) as session:
            return dict(session.execute(query).all())

    def results(self, run_ids: list[int]) -> pd.DataFrame:
        """Per-example rows of the given runs (``run_id`` plus :data:`RESULT_COLUMNS`)."""
        if not run_ids:
            return pd.DataFrame(columns=["run_id", *RESULT_COLUMNS])
        columns = [Result.run_id, *(getattr(Result, c) for c in RESULT_COLUMNS)]
        query = select(*columns).where(Result.run_id.in_(run_ids)).order_by(Result.run_id, Result.idx)
        with self.session(write=False) as session:
            rows = session.execute(query).all()
        return pd.DataFrame(rows, columns=["run_id", *RESULT_COLUMNS])


def open_store(db: str | None = None) -> Store:
    """The store at ``db`` (a path or URL), else ``$RSBENCH_DB``, else ``./rsbench.db``."""
    return Store(store_url(db))
