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

Importing a record whose protocol the store already holds merges its rows into that run (shards and index
selections of one protocol are one run, never extra seeds): identical rows are skipped, a row that differs
for an index already held is an error. A version-2 record whose ``protocol_key`` is not the key of its own
protocol fields is refused, never merged.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from rsbench.atomic import atomic_write, json_text, strict_json
from rsbench.errors import RsbenchError
from rsbench.protocol import DESCRIPTION_FIELDS, PROTOCOL_FIELDS, CertificationProtocol, RunDescription
from rsbench.store import RESULT_COLUMNS, Store

FORMAT = "rsbench-run-record"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
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
MODEL_INFO_KEYS = ("paper", "paper_url", "architecture", "extra_data", "checkpoint_sha256")
# version 1 kept these protocol fields elsewhere, or not at all
V1_PROTOCOL = (
    "protocol_key", "kind", "dataset", "split", "sigma", "certifier", "certifier_params", "n0", "n", "alpha",
    "noise_seed", "budget",
)  # fmt: skip
V1_RUN = (
    "created_at", "origin", "status", "method", "params", "arch", "train_sigma", "seed", "batch_size", "indices",
    "num_planned", "experiment", "checkpoint_path", "checkpoint_sha256",
)  # fmt: skip
V1_COLUMNS = [c for c in RESULT_COLUMNS if c != "p_a_lower"]


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
    """The run record of run ``run_id`` (see the module docstring)."""
    run, training = store.run_with_training(run_id)
    provenance = {k: v for k, v in (run.provenance or {}).items() if k != "model_info"}
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
    data = json_text(document).encode()
    return atomic_write(path, gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)


def is_record_path(path: str | os.PathLike) -> bool:
    return str(path).endswith((".json", ".json.gz"))


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check a run record, upgraded to the current format version; raises :class:`RsbenchError`
    naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise RsbenchError(f"run record {str(path)!r} does not exist")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        document = json.loads(raw)
    except (OSError, ValueError, EOFError) as error:
        raise RsbenchError(f"{path} is not a JSON run record: {str(error).splitlines()[0]}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise RsbenchError(f"{path} is not an rsbench run record", f'expected "format": "{FORMAT}"')
    version = document.get("format_version")
    if version not in READABLE_VERSIONS:
        raise RsbenchError(
            f"{path} has record format version {version!r}",
            f"this rsbench reads versions {', '.join(map(str, READABLE_VERSIONS))}",
        )
    if version == 1:
        _check_sections(path, document, V1_PROTOCOL, V1_RUN, V1_COLUMNS)
        document = _from_version_1(document)
    else:
        _check_sections(path, document, ("protocol_key", *PROTOCOL_FIELDS), RUN_FIELDS, RESULT_COLUMNS)
    _check_rows(path, document)
    return document


def _check_sections(
    path: Path, document: dict[str, Any], protocol: tuple[str, ...], run: tuple[str, ...], columns: list[str]
) -> None:
    for section, fields in (("protocol", protocol), ("run", run)):
        part = document.get(section)
        if not isinstance(part, dict):
            raise RsbenchError(f"{path}: {section!r} must be an object")
        missing, unknown = set(fields) - set(part), set(part) - set(fields)
        if missing or unknown:
            name = sorted(missing or unknown)[0]
            raise RsbenchError(f"{path}: {section} {'lacks' if missing else 'has unknown field'} {name!r}")
    if document.get("columns") != list(columns):
        raise RsbenchError(f"{path}: columns must be {', '.join(columns)}")


def _from_version_1(document: dict[str, Any]) -> dict[str, Any]:
    """A version-1 record in version 2's shape: radii from the provenance, the checkpoint hash and training σ
    from the run section, an imported log identified by its file hash, no p_A bounds in the rows."""
    run, provenance = dict(document["run"]), document.get("provenance") or {}
    protocol = {k: v for k, v in document["protocol"].items() if k != "protocol_key"}
    protocol.update(
        train_sigma=run.pop("train_sigma"),
        checkpoint_sha256=run.pop("checkpoint_sha256"),
        radii=provenance.get("radii") or [],
        normalization=None,
    )
    protocol["source_sha256"] = provenance.get("file_sha256") if protocol["checkpoint_sha256"] is None else None
    rows = document.get("rows")
    if isinstance(rows, list):
        where = RESULT_COLUMNS.index("p_a_lower")
        rows = [[*r[:where], None, *r[where:]] if isinstance(r, list) else r for r in rows]
    return {**document, "format_version": 2, "protocol": {"protocol_key": None, **protocol}, "run": run,
            "columns": list(RESULT_COLUMNS), "rows": rows}  # fmt: skip


def _check_rows(path: Path, document: dict[str, Any]) -> None:
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


def protocol_of(document: dict[str, Any], path: Path | str = "record") -> CertificationProtocol:
    """The record's protocol, checked; a stated ``protocol_key`` must be the key of these very fields."""
    fields = document["protocol"]
    try:
        protocol = CertificationProtocol.from_dict(fields)
    except TypeError as error:
        raise RsbenchError(f"{path}: malformed protocol: {error}") from None
    protocol.check()
    stated = fields.get("protocol_key")
    if stated is not None and stated != protocol.key():
        raise RsbenchError(
            f"{path}: its protocol_key does not match its own protocol fields",
            "the record was edited or is damaged; export it again with `rsbench export`",
        )
    return protocol


def _parse_time(value: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value) if value else None


def import_record(store: Store, path: str | os.PathLike) -> tuple[int, int, int]:
    """Import a run record in one transaction: a new run, or rows merged into the run of the same
    protocol. Returns (run id, rows added, identical rows skipped)."""
    path = Path(path)
    document = read_record(path)
    protocol = protocol_of(document, path)
    run = document["run"]
    info = {k: v for k, v in (document.get("model_info") or {}).items() if v is not None}
    description = RunDescription(
        **{f: run[f] for f in DESCRIPTION_FIELDS if f != "provenance"},
        provenance={**(document.get("provenance") or {}), "model_info": info},
    )
    training = document.get("training")
    if training:
        training = {f: training.get(f) for f in TRAINING_FIELDS}
        training["created_at"] = _parse_time(training["created_at"])
    rows = pd.DataFrame(document["rows"], columns=RESULT_COLUMNS, dtype=object)
    try:
        return store.import_run(
            protocol, description, rows, run["indices"], training=training, created_at=_parse_time(run["created_at"])
        )
    except RsbenchError as error:
        raise RsbenchError(f"{path}: {error.message}", error.hint) from None
