"""The results store's schema (SQLAlchemy 2.0). Every table of rsbench is in this module.

Bump :data:`SCHEMA_VERSION` with any change to these models and add an Alembic migration
(``rsbench/store/migrations/versions/``) that brings a store of the previous version to it: ``rsbench db
upgrade`` applies them in place. A store of another version is refused with a message saying which.

What is written is storable on every backend: JSON and float columns hold NaN and ±inf as NULL (SQLite
does so anyway; PostgreSQL's JSON refuses them), and strings in JSON columns (provenance, command lines,
configs) are stored with URL passwords hidden.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from rsbench.protocol import KINDS, ORIGINS, RADIUS_KINDS, SPLITS, STATUSES
from rsbench.store.redaction import redact

SCHEMA_VERSION = 4
# 3: unique protocol_key, 64-bit seeds, nullable test accuracy, NaN/inf stored as NULL
# 4: every protocol field a column (radii, normalization, source_sha256), the typed protocol's key,
#    closed vocabularies, each row's p_A lower bound, per-run metrics (run_metrics)
RADIUS_STEP = 0.01  # run_metrics.certified_counts[k] counts certified examples at radius k·RADIUS_STEP


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def storable(value: Any) -> Any:
    """``value`` (JSON-like) with non-finite floats as None and passwords in strings hidden."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


class StoredJSON(TypeDecorator):
    """JSON written through :func:`storable`."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return storable(value)


class Real(TypeDecorator):
    """A float column; NaN and ±inf are stored as NULL on every backend."""

    impl = Float
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None or not math.isfinite(value) else float(value)


def vocabulary(values: tuple[str, ...], name: str) -> Enum:
    """A closed vocabulary stored as a short string; a value outside it is refused before it is written."""
    return Enum(*values, name=name, native_enum=False, create_constraint=False, length=16, validate_strings=True)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: StoredJSON}


class Meta(Base):
    """Key/value facts about the store itself; ``schema_version`` among them."""

    __tablename__ = "rsbench_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class TrainingRun(Base):
    """One ``rsbench train`` run and the checkpoint it wrote."""

    __tablename__ = "training_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    checkpoint_path: Mapped[str] = mapped_column(String(1024))
    checkpoint_sha256: Mapped[str] = mapped_column(String(64), index=True)
    dataset: Mapped[str] = mapped_column(String(64))
    arch: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]]
    sigma: Mapped[float] = mapped_column(Real)
    seed: Mapped[int] = mapped_column(BigInteger)
    epochs: Mapped[int] = mapped_column(Integer)
    test_accuracy: Mapped[float | None] = mapped_column(Real)  # None: no epoch was left to evaluate
    images_per_second: Mapped[float | None] = mapped_column(Real)
    config: Mapped[dict[str, Any]]
    provenance: Mapped[dict[str, Any]]


class CertificationRun(Base):
    """One certification (or prediction) of a smoothed classifier on a set of test indices.

    The protocol columns (those of :class:`rsbench.protocol.CertificationProtocol`) are the run's identity,
    hashed into the unique ``protocol_key``; the indices it covers are not: every selection of one protocol
    adds rows to one run. ``origin`` is ``rsbench`` for runs certified here and ``imported`` for records and
    published logs.
    """

    __tablename__ = "certification_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    protocol_key: Mapped[str] = mapped_column(String(64), unique=True)  # one run per protocol, enforced here
    # the protocol
    kind: Mapped[str] = mapped_column(vocabulary(KINDS, "run_kind"))
    dataset: Mapped[str] = mapped_column(String(64), index=True)
    split: Mapped[str] = mapped_column(vocabulary(SPLITS, "split"))
    sigma: Mapped[float] = mapped_column(Real)
    train_sigma: Mapped[float | None] = mapped_column(Real)
    certifier: Mapped[str] = mapped_column(String(64))
    certifier_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n0: Mapped[int | None] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Real)
    radii: Mapped[list[float]] = mapped_column(JSON, default=list)
    noise_seed: Mapped[int | None] = mapped_column(BigInteger)
    normalization: Mapped[str | None] = mapped_column(String(16))
    budget: Mapped[str | None] = mapped_column(String(32))  # e.g. "quick" for a scaled-down reproduction
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    source_sha256: Mapped[str | None] = mapped_column(String(64))  # an imported log's file
    # the run
    origin: Mapped[str] = mapped_column(vocabulary(ORIGINS, "origin"))
    status: Mapped[str] = mapped_column(vocabulary(STATUSES, "status"))
    method: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]]
    arch: Mapped[str | None] = mapped_column(String(128))
    seed: Mapped[int | None] = mapped_column(BigInteger)  # training seed: distinct checkpoints of one recipe
    batch_size: Mapped[int | None] = mapped_column(Integer)
    indices: Mapped[dict[str, Any]]  # {"selections": [{"skip": K, "limit": N} | {"list": [...]}], "planned": [...]}
    num_planned: Mapped[int] = mapped_column(Integer)
    experiment: Mapped[str | None] = mapped_column(String(128))
    checkpoint_path: Mapped[str | None] = mapped_column(String(1024))
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"))
    provenance: Mapped[dict[str, Any]]
    results: Mapped[list[Result]] = relationship(back_populates="run", cascade="all, delete-orphan")
    metrics: Mapped[RunMetrics | None] = relationship(back_populates="run", cascade="all, delete-orphan")


class Result(Base):
    """One certified (or predicted) example: ``predict`` = -1 is an abstention; ``radius`` is full
    precision (ℓ2, [0,1] pixel units) and ``radius_kind`` says what it means (``exact``: CERTIFY's radius;
    ``grid``: the largest requested radius certified, a lower bound on CERTIFY's); ``n_a`` the count of
    the selected class among ``n`` estimation draws and ``p_a_lower`` the certificate's lower confidence
    bound on p_A (NULL where unknown); ``draws`` every noise draw spent (selection included; NULL where
    unknown, e.g. imported logs)."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("run_id", "idx"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("certification_runs.id"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    label: Mapped[int] = mapped_column(Integer)
    predict: Mapped[int] = mapped_column(Integer)
    radius: Mapped[float] = mapped_column(Real)
    radius_kind: Mapped[str | None] = mapped_column(vocabulary(RADIUS_KINDS, "radius_kind"))
    correct: Mapped[int] = mapped_column(Integer)
    n_a: Mapped[int | None] = mapped_column(Integer)
    p_a_lower: Mapped[float | None] = mapped_column(Real)
    n: Mapped[int | None] = mapped_column(Integer)
    n0: Mapped[int | None] = mapped_column(Integer)
    alpha: Mapped[float | None] = mapped_column(Real)
    draws: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Real)
    run: Mapped[CertificationRun] = relationship(back_populates="results")


class RunMetrics(Base):
    """A complete run's summary, computed once when it completes or is imported, so leaderboards, plots
    and the site never reread the per-example rows. Over the run's ``num_examples`` rows: ``acr`` is the
    mean of correct × radius and ``acr_square`` the mean of its square (for the standard error);
    ``certified_counts[k]`` counts rows with correct = 1 and radius ≥ k·:data:`RADIUS_STEP`, from 0 up to
    the largest radius the protocol can certify; ``draws_sum``/``draws_count`` sum the known draws;
    ``lower_bound``: some radius is a grid radius."""

    __tablename__ = "run_metrics"
    run_id: Mapped[int] = mapped_column(ForeignKey("certification_runs.id"), primary_key=True)
    num_examples: Mapped[int] = mapped_column(Integer)
    num_correct: Mapped[int] = mapped_column(Integer)
    num_abstain: Mapped[int] = mapped_column(Integer)
    acr: Mapped[float] = mapped_column(Real)
    acr_square: Mapped[float] = mapped_column(Real)
    draws_sum: Mapped[int] = mapped_column(BigInteger)
    draws_count: Mapped[int] = mapped_column(Integer)
    lower_bound: Mapped[bool] = mapped_column(Boolean)
    certified_counts: Mapped[list[int]] = mapped_column(JSON)
    run: Mapped[CertificationRun] = relationship(back_populates="metrics")
