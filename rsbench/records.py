"""Run records: one certification run as one JSON document (``rsbench export RUN --format json``), the
submission format of a community leaderboard, read back by ``rsbench import``.

A record holds ``protocol`` (the run's identity: checkpoint and certification protocol, with its
``protocol_key``), ``run`` (method, hyperparameters, seed, indices, ...), ``provenance`` (versions, commit,
device, command), ``training`` (the training run's configuration and provenance, or null), ``model_info``
(as RobustBench's model_info files: paper, architecture, extra data, checkpoint hash) and the per-example
``rows`` as lists under ``columns``. A file ending in ``.gz`` is gzip-compressed.

Importing a record whose ``protocol_key`` the store already holds merges its rows into that run (shards and
index selections of one protocol are one run, never extra seeds): identical rows are skipped, a row that
differs for an index already held is an error.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from rsbench.atomic import write_json_strict
from rsbench.errors import RsbenchError
from rsbench.leaderboard import strict_json
from rsbench.store import RESULT_COLUMNS, Store
from rsbench.store.models import CertificationRun, Result, TrainingRun

FORMAT = "rsbench-run-record"
FORMAT_VERSION = 1
PROTOCOL_FIELDS = (
    "protocol_key",
    "kind",
    "dataset",
    "split",
    "sigma",
    "certifier",
    "certifier_params",
    "n0",
    "n",
    "alpha",
    "noise_seed",
    "budget",
)
RUN_FIELDS = (
    "created_at",
    "origin",
    "status",
    "method",
    "params",
    "arch",
    "train_sigma",
    "seed",
    "batch_size",
    "indices",
    "num_planned",
    "experiment",
    "checkpoint_path",
    "checkpoint_sha256",
)
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
MODEL_INFO_KEYS = ("paper", "paper_url", "architecture", "extra_data", "checkpoint_sha256")


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime.datetime) else value


def model_info(run: CertificationRun, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """RobustBench-style facts about the model: those recorded at import, the run's architecture and
    checkpoint hash, then ``overrides`` (None values are ignored)."""
    info: dict[str, Any] = {key: None for key in MODEL_INFO_KEYS}
    info.update(architecture=run.arch, checkpoint_sha256=run.checkpoint_sha256)
    info.update((run.provenance or {}).get("model_info", {}))
    info.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return info


def record_of(store: Store, run_id: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run record of run ``run_id`` (see the module docstring)."""
    with store.session() as session:
        run = session.get(CertificationRun, run_id)
        if run is None:
            raise RsbenchError(f"no certification run {run_id} in the store", "list them with `rsbench runs`")
        training = session.get(TrainingRun, run.training_run_id) if run.training_run_id else None
        provenance = {k: v for k, v in (run.provenance or {}).items() if k != "model_info"}
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_info": model_info(run, overrides),
            "protocol": {f: getattr(run, f) for f in PROTOCOL_FIELDS},
            "run": {f: _plain(getattr(run, f)) for f in RUN_FIELDS},
            "provenance": provenance,
            "training": {f: _plain(getattr(training, f)) for f in TRAINING_FIELDS} if training else None,
        }
    rows = store.results([run_id])[RESULT_COLUMNS]
    rows = rows.astype(object).where(rows.notna(), None)
    return strict_json({**document, "columns": list(RESULT_COLUMNS), "rows": rows.values.tolist()})


def write_record(document: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``document`` atomically (gzip-compressed when ``path`` ends in ``.gz``)."""
    return write_json_strict(path, document)


def is_record_path(path: str | os.PathLike) -> bool:
    return str(path).endswith((".json", ".json.gz"))


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check a run record; raises :class:`RsbenchError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise RsbenchError(f"run record {str(path)!r} does not exist")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        document = json.loads(raw)
    except (OSError, ValueError) as error:
        raise RsbenchError(f"{path} is not a JSON run record: {str(error).splitlines()[0]}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise RsbenchError(f"{path} is not an rsbench run record", f'expected "format": "{FORMAT}"')
    if document.get("format_version") != FORMAT_VERSION:
        raise RsbenchError(
            f"{path} has record format version {document.get('format_version')!r}",
            f"this rsbench reads version {FORMAT_VERSION}",
        )
    _check_fields(path, document)
    return document


def _check_fields(path: Path, document: dict[str, Any]) -> None:
    for section, fields in (("protocol", PROTOCOL_FIELDS), ("run", RUN_FIELDS)):
        part = document.get(section)
        if not isinstance(part, dict):
            raise RsbenchError(f"{path}: {section!r} must be an object")
        missing, unknown = set(fields) - set(part), set(part) - set(fields)
        if missing or unknown:
            name = sorted(missing or unknown)[0]
            raise RsbenchError(f"{path}: {section} {'lacks' if missing else 'has unknown field'} {name!r}")
    if document.get("columns") != list(RESULT_COLUMNS):
        raise RsbenchError(f"{path}: columns must be {', '.join(RESULT_COLUMNS)}")
    sigma = document["protocol"]["sigma"]
    if not isinstance(sigma, int | float) or not sigma > 0:
        raise RsbenchError(f"{path}: sigma must be a positive number, not {sigma!r}")
    rows = document.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == len(RESULT_COLUMNS) for r in rows):
        raise RsbenchError(f"{path}: rows must be lists of {len(RESULT_COLUMNS)} values")
    for values in rows:
        row = dict(zip(RESULT_COLUMNS, values, strict=True))
        if not (isinstance(row["radius"], int | float) and row["radius"] >= 0) or row["correct"] != int(
            row["predict"] == row["label"]
        ):
            raise RsbenchError(
                f"{path}: malformed row for index {row['idx']!r}",
                "radius must be >= 0 and correct must equal (predict == label)",
            )
    if len({r[0] for r in rows}) != len(rows):
        raise RsbenchError(f"{path}: an index appears twice in rows")


def _parse_time(value: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value) if value else None


def _training_run(session, training: dict[str, Any] | None) -> int | None:
    """The id of the store's training run of this checkpoint, created from the record if absent."""
    if not training:
        return None
    query = select(TrainingRun).where(TrainingRun.checkpoint_sha256 == training["checkpoint_sha256"])
    existing = session.scalars(query.order_by(TrainingRun.id)).first()
    if existing is not None:
        return existing.id
    fields = {f: training.get(f) for f in TRAINING_FIELDS}
    fields["created_at"] = _parse_time(fields["created_at"])
    run = TrainingRun(**fields)
    session.add(run)
    session.flush()
    return run.id


def protocol_key(protocol: dict[str, Any], checkpoint_sha256: str | None) -> str:
    """The record's ``protocol_key``, or, for a hand-made record without one, a hash of its protocol."""
    if protocol.get("protocol_key"):
        return protocol["protocol_key"]
    identity = {**{k: v for k, v in protocol.items() if k != "protocol_key"}, "checkpoint": checkpoint_sha256}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _new_run(session, document: dict[str, Any], key: str) -> CertificationRun:
    fields = {**document["run"], **document["protocol"], "protocol_key": key}
    fields["created_at"] = _parse_time(fields["created_at"])
    info = {k: v for k, v in (document.get("model_info") or {}).items() if v is not None}
    run = CertificationRun(
        **fields,
        provenance={**(document.get("provenance") or {}), "model_info": info},
        training_run_id=_training_run(session, document.get("training")),
    )
    session.add(run)
    session.flush()
    return run


def _merge_indices(run: CertificationRun, incoming: dict[str, Any]) -> None:
    """Union of the selections and planned indices of ``run`` and a record of the same protocol."""
    selections = list(run.indices.get("selections", []))
    selections += [s for s in incoming.get("selections", []) if s not in selections]
    planned = sorted(set(run.indices.get("planned", [])) | set(incoming.get("planned", [])))
    run.indices = {"selections": selections, "planned": planned}
    run.num_planned = len(planned)


def _new_rows(session, run: CertificationRun, rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """``rows`` whose index ``run`` lacks; an index it holds with different values is an error."""
    columns = [getattr(Result, c) for c in RESULT_COLUMNS]
    held = {r[0]: tuple(r) for r in session.execute(select(*columns).where(Result.run_id == run.id))}
    fresh = []
    for row in rows:
        existing = held.get(row["idx"])
        if existing is None:
            fresh.append(row)
        elif existing != tuple(row[c] for c in RESULT_COLUMNS):
            raise RsbenchError(
                f"{path}: index {row['idx']} conflicts with the row run {run.id} already holds",
                "a run's rows are fixed by its protocol and noise seed; is the record edited?",
            )
    return fresh


def import_record(store: Store, path: str | os.PathLike) -> tuple[int, int, int]:
    """Import a run record in one transaction: a new run, or rows merged into the run of the same
    protocol. Returns (run id, rows added, identical rows skipped)."""
    path = Path(path)
    document = read_record(path)
    key = protocol_key(document["protocol"], document["run"].get("checkpoint_sha256"))
    rows = [dict(zip(RESULT_COLUMNS, values, strict=True)) for values in document["rows"]]
    with store.session() as session:
        query = select(CertificationRun).where(CertificationRun.protocol_key == key)
        run = session.scalars(query.order_by(CertificationRun.id.desc())).first()
        if run is None:
            run = _new_run(session, document, key)
            fresh = rows
        else:
            fresh = _new_rows(session, run, rows, path)
            _merge_indices(run, document["run"]["indices"])
        if fresh:
            session.execute(insert(Result), [{"run_id": run.id, **row} for row in fresh])
        held = len(session.scalars(select(Result.idx).where(Result.run_id == run.id)).all())
        run.status = "complete" if held >= run.num_planned else "running"
        return run.id, len(fresh), len(rows) - len(fresh)
