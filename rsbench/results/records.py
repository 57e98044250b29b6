"""Run records: one certification run as one JSON document (``rsbench export RUN --format json``), the
submission format of a community leaderboard, read back by ``rsbench import``. This module only converts
between JSON and the store's typed calls (:meth:`Store.import_run`, :meth:`Store.run_with_training`).

A record (format version 2) holds ``protocol`` (the run's identity: every field of
:class:`~rsbench.protocol.CertificationProtocol` and its ``protocol_key``), ``run`` (method,
hyperparameters, seed, indices, ...), ``provenance`` (versions, commit, device, command, plugins),
``training`` (the training run's configuration and provenance, or null), ``model_info`` (as RobustBench's
model_info files: paper, architecture, extra data, checkpoint hash) and the per-example ``rows`` as lists
under ``columns``. A file ending in ``.gz`` is gzip-compressed. Version-1 records (before the typed
protocol) are read too: their protocol is completed from their run and provenance sections, and their key,
made by an older hasher, is recomputed.

Every record read is checked as untrusted input first (``record_schema``: types, ranges, vocabularies,
safe names, rows against the protocol, bounded memory); ``rsbench validate`` runs the same checks alone.
Importing a record whose protocol the store already holds merges its rows into that run (shards and index
selections of one protocol are one run, never extra seeds): identical rows are skipped, a row that differs
for an index already held is an error. A version-2 record whose ``protocol_key`` is not the key of its own
protocol fields is refused, never merged.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from rsbench.atomic import strict_json, write_json_strict
from rsbench.errors import RsbenchError
from rsbench.protocol import DESCRIPTION_FIELDS, PROTOCOL_FIELDS, RunDescription
from rsbench.results.record_schema import FORMAT, RecordReader
from rsbench.store import RESULT_COLUMNS, Store

FORMAT_VERSION = 2
RUN_FIELDS = (*(f for f in DESCRIPTION_FIELDS if f != "provenance"), "created_at", "status", "indices", "num_planned")
TRAINING_FIELDS = (
    "created_at",
    "checkpoint_path",
    "checkpoint_sha256",
    "dataset",
    "arch",
    "method",
    "params",
    "sigma",
    "seed",
    "epochs",
    "test_accuracy",
    "images_per_second",
    "config",
    "provenance",
)
MODEL_INFO_KEYS = (
    "paper", "authors", "title", "venue", "year", "paper_url", "code_url", "architecture", "extra_data",
    "checkpoint_sha256",
)  # fmt: skip


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime.datetime) else value


def model_info(run: Any, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """RobustBench-style facts about the model: those recorded at import, the run's architecture and
    checkpoint hash, then ``overrides`` (None values are ignored)."""
    info: dict[str, Any] = {key: None for key in MODEL_INFO_KEYS}
    info.update(architecture=run.arch, checkpoint_sha256=run.checkpoint_sha256)
    info.update((run.provenance or {}).get("model_info", {}))
    info.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return info


def record_of(store: Store, run_id: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run record of run ``run_id`` (see the module docstring). The processes that certified it in this
    store (``workers``) stay here: in another store they would claim to be writing into it."""
    run, training = store.run_with_training(run_id)
    provenance = {k: v for k, v in (run.provenance or {}).items() if k not in ("model_info", "workers")}
    rows = store.results([run_id])[RESULT_COLUMNS]
    rows = rows.astype(object).where(rows.notna(), None)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_info": model_info(run, overrides),
        "protocol": {"protocol_key": run.protocol_key, **{f: getattr(run, f) for f in PROTOCOL_FIELDS}},
        "run": {f: _plain(getattr(run, f)) for f in RUN_FIELDS},
        "provenance": provenance,
        "training": {f: _plain(getattr(training, f)) for f in TRAINING_FIELDS} if training else None,
        "columns": list(RESULT_COLUMNS),
        "rows": rows.values.tolist(),
    }
    return strict_json(document)


def write_record(document: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``document`` atomically (gzip-compressed when ``path`` ends in ``.gz``)."""
    return write_json_strict(path, document)


def is_record_path(path: str | os.PathLike) -> bool:
    return str(path).endswith((".json", ".json.gz"))


def validate_record(path: str | os.PathLike) -> tuple[RecordReader, int]:
    """Every check an import makes (``record_schema``), without a store: the checked reader and its row count."""
    reader = RecordReader(path)
    return reader, sum(len(batch) for batch in reader.batches())


def import_record(store: Store, path: str | os.PathLike) -> tuple[int, int, int]:
    """Import a run record in one transaction, its rows streamed and checked batch by batch: a new run, or rows
    merged into the run of the same protocol. Returns (run id, rows added, identical rows skipped)."""
    reader = RecordReader(path)
    header = reader.header
    run = header.run.model_dump(by_alias=True)
    info = header.model_info.model_dump(exclude_none=True)
    description = RunDescription(
        **{f: run[f] for f in DESCRIPTION_FIELDS if f != "provenance"},
        provenance={**header.provenance, "model_info": info},
    )
    training = header.training.model_dump() if header.training else None
    try:
        return store.import_run(
            reader.protocol, description, reader.batches(), reader.raw["run"]["indices"], training=training,
            created_at=header.run.created_at,
        )  # fmt: skip
    except RsbenchError as error:
        message = error.message if error.message.startswith(str(reader.path)) else f"{reader.path}: {error.message}"
        raise RsbenchError(message, error.hint) from None
