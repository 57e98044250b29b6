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
import datetime
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, create_engine, delete, event, func, insert, inspect, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rsbench.errors import RsbenchError
from rsbench.processes import is_alive, this_process
from rsbench.protocol import CertificationProtocol, RunDescription
from rsbench.smoothing import max_certified_radius
from rsbench.store.models import (
    RADIUS_STEP,
    SCHEMA_VERSION,
    Base,
    CertificationRun,
    Meta,
    Result,
    RunMetrics,
    TrainingRun,
)
from rsbench.store.redaction import redact
from rsbench.store.url import missing_driver, parse_store_url, store_url

RESULT_COLUMNS = [
    "idx",
    "label",
    "predict",
    "radius",
    "radius_kind",
    "correct",
    "n_a",
    "p_a_lower",
    "n",
    "n0",
    "alpha",
    "draws",
    "seconds",
]
SQLITE_BUSY_TIMEOUT_MS = 60_000  # how long a SQLite writer waits for another's lock before "locked"
MAX_RADIUS_STEPS = 20_000  # run_metrics.certified_counts covers radii up to 200 ([0,1] pixel units)
SCHEMA_LOCK = 0x7273626E  # PostgreSQL advisory lock key held while a store's schema is created ("rsbn")
# INSERT ... ON CONFLICT DO NOTHING, per backend
INSERT_IGNORING_DUPLICATES = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun by _sqlite_begin, DDL included
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    _enable_wal(cursor)
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """WAL mode (kept in the file). Switching a new file into it takes an exclusive lock, and while another
    process switches it SQLite answers "database is locked" at once, without waiting out the busy timeout
    (seen with six processes creating one store): retry within that timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


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
    """An import without merging met a protocol the store already holds, as run ``run_id``."""

    def __init__(self, run_id: int):
        super().__init__(f"already imported as run {run_id}")
        self.run_id = run_id


class Store:
    """Training runs, certification runs, their per-example rows and per-run metrics in one SQLAlchemy
    database. Every other module reads and writes the store through these methods only.

    ``url`` is the store's address with any password hidden (safe to show); the engine keeps the real one.
    """

    def __init__(self, url: str, *, upgrading: bool = False):
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
            if not upgrading:
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

    def schema_version(self, connection: Connection) -> int | None:
        """The recorded schema version; None when the store has no rsbench tables yet."""
        tables = set(inspect(connection).get_table_names())
        if Meta.__tablename__ not in tables:
            if tables & set(Base.metadata.tables):
                raise RsbenchError(f"{self.url} holds rsbench tables without a schema version", "use another --db")
            return None
        value = connection.scalar(select(Meta.value).where(Meta.key == "schema_version"))
        return int(value) if value is not None else 0

    def _create_schema(self) -> int:
        """Create the tables, record the version and stamp the newest migration, holding the database's write
        lock, unless a racing process did so first; returns the version then recorded."""
        from rsbench.store.migrations import stamp_head

        with self._writes.begin() as session:
            connection = session.connection()
            if self.backend == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            version = self.schema_version(connection)
            if version is None:
                Base.metadata.create_all(connection)
                connection.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
                stamp_head(connection)
                version = SCHEMA_VERSION
            return version

    def _check_schema(self) -> None:
        with self.engine.connect() as connection:
            version = self.schema_version(connection)
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
                "upgrade it in place with `rsbench db upgrade` (same --db); back it up first",
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
                checkpoint_sha256=result.checkpoint_sha256,
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

    def find_run(self, protocol: CertificationProtocol) -> int | None:
        """The id of the run of ``protocol``, if the store holds one."""
        with self.session(write=False) as session:
            run = self._run_with_key(session, protocol.key())
            return run.id if run else None

    def start_run(
        self,
        protocol: CertificationProtocol,
        description: RunDescription,
        indices: list[int],
        selection: dict[str, Any],
        training_run_id: int | None = None,
    ) -> tuple[int, set[int]]:
        """The run of ``protocol``, created if new, planned to cover ``indices`` as well; returns its id and
        the indices it already holds (an interrupted or partial run is extended). The calling process is
        recorded among the run's ``workers`` (:mod:`rsbench.processes`), those known to have ended dropped.

        Identical commands started together share one run: the one that loses the race to create it
        (the unique ``protocol_key`` refuses its copy) joins the winner's."""
        with self._database_errors():
            try:
                with self._writes.begin() as session:
                    return self._open_run(session, protocol, description, indices, selection, training_run_id)
            except IntegrityError:
                with self._writes.begin() as session:
                    return self._open_run(session, protocol, description, indices, selection, training_run_id)

    def _open_run(
        self,
        session: Session,
        protocol: CertificationProtocol,
        description: RunDescription,
        indices: list[int],
        selection: dict[str, Any],
        training_run_id: int | None,
    ) -> tuple[int, set[int]]:
        run = self._run_with_key(session, protocol.key(), lock=True)
        if run is None:
            run = _new_run(protocol, description, {"selections": [selection], "planned": indices}, "running")
            run.training_run_id = training_run_id
            run.provenance = {**run.provenance, "workers": [this_process()]}
            session.add(run)
            session.flush()
            return run.id, set()
        done = set(session.scalars(select(Result.idx).where(Result.run_id == run.id)))
        _plan(run, [selection], indices)
        if not set(indices) <= done:
            run.status = "running"
        me = this_process()
        workers = [w for w in run.provenance.get("workers", []) if w != me and is_alive(w) is not False]
        run.provenance = {**run.provenance, "workers": [*workers, me]}
        return run.id, done

    def add_certificates(self, run_id: int, rows: Sequence[dict[str, Any]]) -> None:
        """Record rows (:data:`RESULT_COLUMNS`) in one transaction; a row the run already holds is kept (a
        joined identical command certified it too, with the same noise, so its certificate is the same)."""
        dialect_insert = INSERT_IGNORING_DUPLICATES.get(self.backend)
        statement = dialect_insert(Result).on_conflict_do_nothing() if dialect_insert else insert(Result)  # type: ignore[attr-defined]
        with self.session() as session:
            session.execute(statement, [{"run_id": run_id, **row} for row in rows])

    def finish_run(self, run_id: int) -> str:
        """Mark a run complete once it holds a row for every planned index, and compute its metrics then;
        returns its status."""
        with self.session() as session:
            run = session.get_one(CertificationRun, run_id)
            _settle(session, run)
            return run.status

    def import_run(
        self,
        protocol: CertificationProtocol,
        description: RunDescription,
        batches: Iterable[Sequence[dict[str, Any]]],
        indices: dict[str, Any],
        *,
        training: dict[str, Any] | None = None,
        created_at: datetime.datetime | None = None,
        merge: bool = True,
    ) -> tuple[int, int, int]:
        """Store an imported run (a run record or a published log) in one transaction: a new run, or, with
        ``merge``, rows added to the run of the same protocol (another shard or selection); an index that run
        already holds must have the identical row. ``batches`` yields rows (:data:`RESULT_COLUMNS` dicts)
        batch by batch, each inserted as it comes. Without ``merge`` a protocol already held is
        :class:`RunExists`. ``training`` (a training run's fields) is linked by its checkpoint hash, created
        if absent. Returns (run id, rows added, identical rows skipped)."""
        with self._database_errors():
            try:
                return self._import(protocol, description, batches, indices, training, created_at, merge)
            except IntegrityError:  # another process stored the same protocol a moment ago: join it
                return self._import(protocol, description, batches, indices, training, created_at, merge)

    def _import(
        self,
        protocol: CertificationProtocol,
        description: RunDescription,
        batches: Iterable[Sequence[dict[str, Any]]],
        indices: dict[str, Any],
        training: dict[str, Any] | None,
        created_at: datetime.datetime | None,
        merge: bool,
    ) -> tuple[int, int, int]:
        with self._writes.begin() as session:
            run = self._run_with_key(session, protocol.key(), lock=True)
            held: dict[int, tuple] = {}
            if run is None:
                run = _new_run(protocol, description, indices, "running")
                run.created_at = created_at or run.created_at
                run.training_run_id = _training_run_id(session, training)
                session.add(run)
                session.flush()
            elif not merge:
                raise RunExists(run.id)
            else:
                columns = [getattr(Result, c) for c in RESULT_COLUMNS]
                held = {r[0]: tuple(r) for r in session.execute(select(*columns).where(Result.run_id == run.id))}
                _plan(run, indices.get("selections", []), indices.get("planned", []))
            added = skipped = 0
            for batch in batches:
                fresh = _new_rows(run.id, held, batch)
                if fresh:
                    session.execute(insert(Result), [{"run_id": run.id, **row} for row in fresh])
                added, skipped = added + len(fresh), skipped + len(batch) - len(fresh)
            _settle(session, run)
            return run.id, added, skipped

    def get_run(self, run_id: int) -> CertificationRun:
        with self.session(write=False) as session:
            run = session.get(CertificationRun, run_id)
            if run is None:
                raise RsbenchError(f"no certification run {run_id} in {self.url}", "list them with `rsbench runs`")
            return run

    def run_with_training(self, run_id: int) -> tuple[CertificationRun, TrainingRun | None]:
        """A certification run and the training run of its checkpoint (None when unknown)."""
        with self.session(write=False) as session:
            run = session.get(CertificationRun, run_id)
            if run is None:
                raise RsbenchError(f"no certification run {run_id} in {self.url}", "list them with `rsbench runs`")
            training = session.get(TrainingRun, run.training_run_id) if run.training_run_id else None
            return run, training

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

    def run_metrics(self, dataset: str | None = None, kind: str = "certify") -> pd.DataFrame:
        """Complete runs with their metrics: the columns of the runs table (but the bulky ``indices`` and
        ``provenance``) and those of ``run_metrics`` (``run_id`` dropped). No per-example row is read."""
        run_columns = [c for c in CertificationRun.__table__.columns if c.key not in ("indices", "provenance")]
        metric_columns = [c for c in RunMetrics.__table__.columns if c.key != "run_id"]
        query = (
            select(*run_columns, *metric_columns)
            .join(RunMetrics, RunMetrics.run_id == CertificationRun.id)
            .where(CertificationRun.kind == kind, CertificationRun.status == "complete")
        )
        if dataset:
            query = query.where(CertificationRun.dataset == dataset)
        with self.session(write=False) as session:
            rows = session.execute(query.order_by(CertificationRun.id)).all()
        return pd.DataFrame(rows, columns=[c.key for c in run_columns + metric_columns])

    def model_infos(self, run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Each run's recorded model facts (paper, venue, year, links: ``provenance["model_info"]``)."""
        query = select(CertificationRun.id, CertificationRun.provenance).where(CertificationRun.id.in_(run_ids))
        with self.session(write=False) as session:
            return {run_id: (provenance or {}).get("model_info") or {} for run_id, provenance in session.execute(query)}

    def training_speeds(self, dataset: str, arch: str) -> pd.DataFrame:
        """Training runs of ``dataset`` and ``arch`` that measured their speed: ``method``, ``params``,
        ``images_per_second`` and the ``host`` and ``device`` their provenance names."""
        query = select(TrainingRun.method, TrainingRun.params, TrainingRun.images_per_second, TrainingRun.provenance)
        query = query.where(
            TrainingRun.dataset == dataset, TrainingRun.arch == arch, TrainingRun.images_per_second.is_not(None)
        )
        with self.session(write=False) as session:
            rows = session.execute(query.order_by(TrainingRun.id)).all()
        return pd.DataFrame(
            [(method, params, speed, where.get("host"), where.get("device")) for method, params, speed, where in rows],
            columns=["method", "params", "images_per_second", "host", "device"],
        )

    def certification_speeds(self, dataset: str, arch: str) -> pd.DataFrame:
        """Certifications of ``dataset`` by ``arch`` models run here (not imported), one line per run: its
        rows' ``draws`` and ``seconds`` summed, and the ``host`` and ``device`` its provenance names."""
        query = (
            select(CertificationRun.provenance, func.sum(Result.draws), func.sum(Result.seconds))
            .join(Result, Result.run_id == CertificationRun.id)
            .where(
                CertificationRun.dataset == dataset,
                CertificationRun.arch == arch,
                CertificationRun.kind == "certify",
                CertificationRun.origin == "rsbench",
            )
            .group_by(CertificationRun.id)
        )
        with self.session(write=False) as session:
            rows = session.execute(query.order_by(CertificationRun.id)).all()
        return pd.DataFrame(
            [(draws, seconds, where.get("host"), where.get("device")) for where, draws, seconds in rows],
            columns=["draws", "seconds", "host", "device"],
        )

    def result_counts(self, run_ids: list[int]) -> dict[int, int]:
        """How many rows each run holds, counted in the database."""
        query = select(Result.run_id, func.count()).where(Result.run_id.in_(run_ids)).group_by(Result.run_id)
        with self.session(write=False) as session:
            return dict(session.execute(query).all())

    def results(self, run_ids: list[int], columns: Sequence[str] = RESULT_COLUMNS) -> pd.DataFrame:
        """Per-example rows of the given runs: ``run_id`` plus ``columns`` (of :data:`RESULT_COLUMNS`)."""
        names = ["run_id", *columns]
        if not run_ids:
            return pd.DataFrame(columns=names)
        table = Result.__table__.c  # Core columns: rows come back as plain tuples, not through the ORM
        query = select(*(table[name] for name in names)).where(table.run_id.in_(run_ids))
        with self.session(write=False) as session:
            rows = session.connection().execute(query.order_by(table.run_id, table.idx)).fetchall()
        values = list(zip(*rows, strict=True)) if rows else [()] * len(names)
        return pd.DataFrame({name: list(column) for name, column in zip(names, values, strict=True)}, columns=names)


def _new_run(
    protocol: CertificationProtocol, description: RunDescription, indices: dict[str, Any], status: str
) -> CertificationRun:
    fields = {**protocol.as_dict(), **dataclasses.asdict(description)}
    return CertificationRun(
        protocol_key=protocol.key(), status=status, indices=indices, num_planned=len(indices["planned"]), **fields
    )


def _plan(run: CertificationRun, selections: list[dict[str, Any]], planned: list[int]) -> None:
    """Add ``selections`` and ``planned`` indices to what ``run`` covers."""
    known = list(run.indices.get("selections", []))
    known += [s for s in selections if s not in known]
    union = sorted(set(run.indices.get("planned", [])) | set(planned))
    run.indices = {"selections": known, "planned": union}
    run.num_planned = len(union)


def _new_rows(run_id: int, held: dict[int, tuple], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` whose index the run (holding ``held``) lacks; an index it holds with a different row is an
    error."""
    fresh = []
    for row in rows:
        existing = held.get(row["idx"])
        if existing is None:
            fresh.append(row)
        elif existing != tuple(row[c] for c in RESULT_COLUMNS):
            raise RsbenchError(
                f"index {row['idx']} conflicts with the row run {run_id} already holds",
                "a run's rows are fixed by its protocol and noise seed; is the record edited?",
            )
    return fresh


def frame_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame of example rows as :meth:`Store.import_run` takes them: :data:`RESULT_COLUMNS` dicts of
    plain Python values, missing ones (absent columns, NaN) as None."""
    table = frame.reindex(columns=RESULT_COLUMNS).astype(object)
    return table.where(table.notna(), None).to_dict("records")


def _training_run_id(session: Session, training: dict[str, Any] | None) -> int | None:
    """The id of the store's training run of this checkpoint, created from ``training`` if absent."""
    if not training:
        return None
    query = select(TrainingRun).where(TrainingRun.checkpoint_sha256 == training["checkpoint_sha256"])
    existing = session.scalars(query.order_by(TrainingRun.id)).first()
    if existing is not None:
        return existing.id
    run = TrainingRun(**training)
    session.add(run)
    session.flush()
    return run.id


def _settle(session: Session, run: CertificationRun) -> None:
    """Set ``run``'s status from its row count and, once complete, (re)compute its metrics."""
    held = session.scalar(select(func.count()).where(Result.run_id == run.id)) or 0
    run.status = "complete" if held >= run.num_planned else "running"
    session.execute(delete(RunMetrics).where(RunMetrics.run_id == run.id))
    if run.status == "complete" and held:
        columns = ["correct", "radius", "predict", "draws", "radius_kind"]
        rows = pd.DataFrame(
            session.execute(select(*(getattr(Result, c) for c in columns)).where(Result.run_id == run.id)).all(),
            columns=columns,
        )
        session.add(RunMetrics(run_id=run.id, **summarize(rows, run.sigma, run.n, run.alpha)))


def summarize(rows: pd.DataFrame, sigma: float, n: int, alpha: float) -> dict[str, Any]:
    """A run's metrics (the columns of ``run_metrics``) from its rows (``correct``, ``radius``, ``predict``,
    ``draws``, ``radius_kind``). Certified accuracy at r = share of rows with correct = 1 and radius ≥ r;
    ACR = mean of correct × radius (abstentions and errors count 0); radii in [0,1] pixel units."""
    correct = rows["correct"].to_numpy() == 1
    radius = rows["radius"].to_numpy(dtype=float)
    score = np.where(correct, radius, 0.0)
    certified = np.sort(radius[correct])
    top = max(max_certified_radius(sigma, n, alpha), float(certified[-1]) if len(certified) else 0.0)
    steps = min(int(math.floor(top / RADIUS_STEP + 1e-9)) + 1, MAX_RADIUS_STEPS)
    grid = np.arange(steps) / round(1 / RADIUS_STEP)  # k/100: the same floats as the radii 0.25, 0.5, ...
    counts = len(certified) - np.searchsorted(certified, grid, side="left")
    draws = pd.to_numeric(rows["draws"], errors="coerce").dropna()
    return {
        "num_examples": len(rows),
        "num_correct": int(correct.sum()),
        "num_abstain": int((rows["predict"].to_numpy() == -1).sum()),
        "acr": float(score.mean()),
        "acr_square": float((score**2).mean()),
        "draws_sum": int(draws.sum()),
        "draws_count": len(draws),
        "lower_bound": bool((rows["radius_kind"] == "grid").any()),
        "certified_counts": [int(c) for c in counts],
    }


def certified_count(counts: Sequence[int], radius: float) -> int:
    """Rows certified at ``radius`` (a multiple of :data:`RADIUS_STEP`) from ``run_metrics.certified_counts``."""
    step = round(radius / RADIUS_STEP)
    if step < 0 or not math.isclose(step * RADIUS_STEP, radius, abs_tol=1e-9):
        raise RsbenchError(f"radius {radius:g} is not a multiple of {RADIUS_STEP:g}", "e.g. --radii 0:2.5:0.25")
    return int(counts[step]) if step < len(counts) else 0


def open_store(db: str | None = None) -> Store:
    """The store at ``db`` (a path or URL), else ``$RSBENCH_DB``, else ``./rsbench.db``."""
    return Store(store_url(db))


def upgrade_store(db: str | None = None) -> tuple[int, int]:
    """Migrate the store at ``db`` in place to this rsbench's schema, in one transaction (a failed upgrade
    leaves the store as it was); returns (version before, version after)."""
    from rsbench.store.migrations import upgrade

    store = Store(store_url(db), upgrading=True)
    with store.session() as session:
        connection = session.connection()
        if store.backend == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        before = store.schema_version(connection)
        if before is None:
            raise RsbenchError(f"{store.url} holds no rsbench store", "check --db / RSBENCH_DB")
        if before > SCHEMA_VERSION:
            raise RsbenchError(
                f"the store {store.url} has schema version {before}, newer than this rsbench's {SCHEMA_VERSION}",
                "upgrade rsbench (pip install -U rsbench) to read it",
            )
        if before < SCHEMA_VERSION:
            upgrade(connection, before)
    store.engine.dispose()
    return before, SCHEMA_VERSION
