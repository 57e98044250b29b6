"""The results store's schema (SQLAlchemy 2.0). Every table of rsbench is in this module.

Bump :data:`SCHEMA_VERSION` with any change to these models; a store written by another version is
refused with a clear message rather than read wrongly.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 1


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


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
    sigma: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    test_accuracy: Mapped[float] = mapped_column(Float)
    images_per_second: Mapped[float] = mapped_column(Float)
    config: Mapped[dict[str, Any]]
    provenance: Mapped[dict[str, Any]]


class CertificationRun(Base):
    """One certification (or prediction) of a smoothed classifier on a set of test indices.

    ``protocol_key`` identifies the run for resumption: the same checkpoint, σ, N0, N, α, split, indices
    and noise seed. ``origin`` is ``rsbench`` for runs made here and ``imported`` for Cohen-format logs.
    """

    __tablename__ = "certification_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # certify | predict
    origin: Mapped[str] = mapped_column(String(16))  # rsbench | imported
    status: Mapped[str] = mapped_column(String(16))  # running | complete
    protocol_key: Mapped[str] = mapped_column(String(64), index=True)
    dataset: Mapped[str] = mapped_column(String(64), index=True)
    split: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]]
    arch: Mapped[str | None] = mapped_column(String(128))
    sigma: Mapped[float] = mapped_column(Float)
    train_sigma: Mapped[float | None] = mapped_column(Float)
    seed: Mapped[int | None] = mapped_column(Integer)  # training seed: runs differing only here aggregate
    noise_seed: Mapped[int | None] = mapped_column(Integer)
    certifier: Mapped[str] = mapped_column(String(64))
    n0: Mapped[int | None] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    indices: Mapped[dict[str, Any]]  # {"skip": K, "limit": N} or {"list": [...]}
    num_planned: Mapped[int] = mapped_column(Integer)
    budget: Mapped[str | None] = mapped_column(String(32))  # e.g. "quick" for a scaled-down reproduction
    experiment: Mapped[str | None] = mapped_column(String(128))
    checkpoint_path: Mapped[str | None] = mapped_column(String(1024))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"))
    provenance: Mapped[dict[str, Any]]
    results: Mapped[list[Result]] = relationship(back_populates="run", cascade="all, delete-orphan")


class Result(Base):
    """One certified (or predicted) example: ``predict`` = -1 is an abstention; ``radius`` is full
    precision (ℓ2, [0,1] pixel units); ``n_a`` the count of the selected class among ``n`` draws."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("run_id", "idx"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("certification_runs.id"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    label: Mapped[int] = mapped_column(Integer)
    predict: Mapped[int] = mapped_column(Integer)
    radius: Mapped[float] = mapped_column(Float)
    correct: Mapped[int] = mapped_column(Integer)
    n_a: Mapped[int | None] = mapped_column(Integer)
    n: Mapped[int | None] = mapped_column(Integer)
    n0: Mapped[int | None] = mapped_column(Integer)
    alpha: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    run: Mapped[CertificationRun] = relationship(back_populates="results")
