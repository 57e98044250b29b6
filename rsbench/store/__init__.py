"""The results store: SQLite by default (WAL + busy timeout: several certify processes may write at
once), any SQLAlchemy URL through ``--db`` or ``RSBENCH_DB``.

Every write is a transaction: a failed import or an interrupted certification leaves the rows already
committed and nothing half-written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import create_engine, event, func, insert, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rsbench.errors import RsbenchError
from rsbench.store.models import SCHEMA_VERSION, Base, CertificationRun, Meta, Result, TrainingRun

DEFAULT_DB = "rsbench.db"
RESULT_COLUMNS = ["idx", "label", "predict", "radius", "correct", "n_a", "n", "n0", "alpha", "seconds"]


def store_url(db: str | None = None) -> str:
    """``db``, else ``$RSBENCH_DB``, else ``./rsbench.db``; a bare path means SQLite."""
    value = db or os.environ.get("RSBENCH_DB") or DEFAULT_DB
    return value if "://" in value else f"sqlite:///{Path(value).expanduser()}"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 60000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


@contextlib.contextmanager
def _database_errors(url: str) -> Iterator[None]:
    try:
        yield
    except OperationalError as error:
        text = str(error.orig) if error.orig else str(error)
        if "locked" in text or "busy" in text:
            raise RsbenchError(f"the store {url} is locked by another process", "retry when it finishes") from None
        raise RsbenchError(f"cannot use the store {url}: {text}", "check --db / RSBENCH_DB") from None
    except SQLAlchemyError as error:
        raise RsbenchError(f"store error at {url}: {str(error).splitlines()[0]}") from None


class Store:
    def __init__(self, url: str):
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise RsbenchError(f"{url!r} is not a database URL", "e.g. sqlite:///rsbench.db") from None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            parent = Path(parsed.database).expanduser().parent
            if not parent.is_dir():
                raise RsbenchError(f"folder {parent} of the store does not exist", "create it or change --db")
        with _database_errors(url):
            self.engine: Engine = create_engine(url)
            if parsed.get_backend_name() == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self.sessions = sessionmaker(self.engine, expire_on_commit=False)
            self._check_schema()

    def _check_schema(self) -> None:
        tables = set(inspect(self.engine).get_table_names())
        if Meta.__tablename__ not in tables:
            if tables & set(Base.metadata.tables):
                raise RsbenchError(f"{self.url} holds rsbench tables without a schema version", "use another --db")
            Base.metadata.create_all(self.engine)
            with self.sessions.begin() as session:
                session.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            return
        with self.sessions() as session:
            row = session.get(Meta, "schema_version")
        version = int(row.value) if row else 0
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
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with _database_errors(self.url), self.sessions.begin() as session:
            yield session

    # ------------------------------------------------------------------------------------- training

    def record_training(self, config, result) -> int:
        meta = result.meta
        with self.session() as session:
            run = TrainingRun(
                checkpoint_path=str(Path(result.checkpoint).resolve()),
                checkpoint_sha256=file_sha256(result.checkpoint),
                dataset=config.dataset, arch=config.arch, method=config.method,
                params=meta["params"], sigma=float(config.sigma), seed=config.seed, epochs=result.epochs,
                test_accuracy=result.test_accuracy, images_per_second=result.images_per_second,
                config=json.loads(json.dumps(dataclasses.asdict(config), default=str)),
                provenance=meta["provenance"],
            )
            session.add(run)
            session.flush()
            return run.id

    def training_run_for(self, sha256: str) -> TrainingRun | None:
        with self.session() as session:
            return session.scalars(
                select(TrainingRun).where(TrainingRun.checkpoint_sha256 == sha256).order_by(TrainingRun.id.desc())
            ).first()

    # -------------------------------------------------------------------------------- certification

    @staticmethod
    def _latest_with_key(session: Session, protocol_key: str) -> CertificationRun | None:
        query = select(CertificationRun).where(CertificationRun.protocol_key == protocol_key)
        return session.scalars(query.order_by(CertificationRun.id.desc())).first()

    def find_run(self, protocol_key: str) -> int | None:
        """The id of the latest run with this ``protocol_key``, if any."""
        with self.session() as session:
            run = self._latest_with_key(session, protocol_key)
            return run.id if run else None

    def start_run(self, **fields: Any) -> tuple[int, set[int], bool]:
        """The latest run with the same ``protocol_key`` or a new one: its id, the indices already done, and
        whether it is complete (a complete run is never repeated; an unfinished one is resumed)."""
        with self.session() as session:
            existing = self._latest_with_key(session, fields["protocol_key"])
            if existing is not None:
                done = set(session.scalars(select(Result.idx).where(Result.run_id == existing.id)))
                return existing.id, done, existing.status == "complete"
            run = CertificationRun(status="running", **fields)
            session.add(run)
            session.flush()
            return run.id, set(), False

    def add_result(self, run_id: int, **row: Any) -> None:
        with self.session() as session:
            session.add(Result(run_id=run_id, **row))

    def finish_run(self, run_id: int) -> None:
        with self.session() as session:
            session.get(CertificationRun, run_id).status = "complete"

    def add_complete_run(self, rows: pd.DataFrame, **fields: Any) -> int:
        """A whole run and its rows in one transaction (imports)."""
        with self.session() as session:
            run = CertificationRun(status="complete", **fields)
            session.add(run)
            session.flush()
            records = rows[RESULT_COLUMNS].astype(object).where(rows[RESULT_COLUMNS].notna(), None)
            records = [{"run_id": run.id, **record} for record in records.to_dict("records")]
            session.execute(insert(Result), records)  # one executemany, not one ORM object per row
            return run.id

    def get_run(self, run_id: int) -> CertificationRun:
        with self.session() as session:
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
        with self.session() as session:
            runs = session.scalars(query.order_by(CertificationRun.id)).all()
        columns = [c.key for c in CertificationRun.__table__.columns]
        return pd.DataFrame([{c: getattr(run, c) for c in columns} for run in runs], columns=columns)

    def result_counts(self, run_ids: list[int]) -> dict[int, int]:
        """How many rows each run holds, counted in the database."""
        query = select(Result.run_id, func.count()).where(Result.run_id.in_(run_ids)).group_by(Result.run_id)
        with self.session() as session:
            return dict(session.execute(query).all())

    def results(self, run_ids: list[int]) -> pd.DataFrame:
        """Per-example rows of the given runs (``run_id`` plus :data:`RESULT_COLUMNS`)."""
        if not run_ids:
            return pd.DataFrame(columns=["run_id", *RESULT_COLUMNS])
        columns = [Result.run_id, *(getattr(Result, c) for c in RESULT_COLUMNS)]
        query = select(*columns).where(Result.run_id.in_(run_ids)).order_by(Result.run_id, Result.idx)
        with self.session() as session:
            rows = session.execute(query).all()
        return pd.DataFrame(rows, columns=["run_id", *RESULT_COLUMNS])


def open_store(db: str | None = None) -> Store:
    return Store(store_url(db))
