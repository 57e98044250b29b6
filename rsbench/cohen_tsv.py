"""Cohen et al.'s certification logs: ``idx label predict radius correct time`` separated by tabs,
``time`` as seconds or ``H:MM:SS.ffffff``. Imported into and exported from the store."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsbench.errors import RsbenchError
from rsbench.params import params_to_dict, parse_params
from rsbench.plugins import get_dataset, get_manager
from rsbench.provenance import provenance
from rsbench.store import Store, file_sha256

COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]


def _seconds(column: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(column, errors="coerce")
    if numeric.notna().all():
        return numeric.astype(float)
    return pd.to_timedelta(column.astype(str)).dt.total_seconds()


def read_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """Parse and check a log; raises :class:`RsbenchError` naming what is malformed."""
    path = Path(path)
    if not path.is_file():
        raise RsbenchError(f"log file {str(path)!r} does not exist")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise RsbenchError(f"{path} is not a tab-separated log: {str(error).splitlines()[0]}") from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise RsbenchError(f"{path} lacks columns {', '.join(missing)}", "expected: " + " ".join(COLUMNS))
    if frame.empty:
        raise RsbenchError(f"{path} has no rows")
    try:
        rows = pd.DataFrame({c: pd.to_numeric(frame[c], errors="raise") for c in COLUMNS[:5]})
        rows["seconds"] = _seconds(frame["time"])
    except (ValueError, TypeError) as error:
        raise RsbenchError(f"{path} has a malformed value: {error}") from None
    for column in ("idx", "label", "predict", "correct"):
        if not np.all(np.mod(rows[column], 1) == 0):
            raise RsbenchError(f"{path}: column {column} must hold integers")
        rows[column] = rows[column].astype(int)
    checks = {
        "idx must be >= 0 and unique": (rows.idx >= 0).all() and rows.idx.is_unique,
        "predict must be a class or -1": (rows.predict >= -1).all(),
        "radius must be finite and >= 0": np.isfinite(rows.radius).all() and (rows.radius >= 0).all(),
        "correct must be 0 or 1": rows.correct.isin([0, 1]).all(),
        "correct must equal (predict == label)": (rows.correct == (rows.predict == rows.label)).all(),
    }
    for message, ok in checks.items():
        if not ok:
            raise RsbenchError(f"{path}: {message}")
    return rows


def typed_params(method: str, raw: dict[str, str]) -> dict[str, Any]:
    """Full hyperparameters (defaults filled in) for a registered method, so imported and reproduced runs
    of one configuration share a leaderboard row; literal values for a method not installed here."""
    registry = get_manager().registries["method"]
    if method in registry.names():
        return params_to_dict(parse_params(registry.get(method).Params, raw, f"method {method!r}"))
    values = {}
    for key, text in raw.items():
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def import_tsv(store: Store, path: str | os.PathLike, *, dataset: str, method: str, sigma: float,
               params: dict[str, str] | None = None, seed: int | None = None, n0: int = 100,
               n: int = 100_000, alpha: float = 0.001, split: str = "test", arch: str | None = None,
               budget: str | None = None) -> int:
    """Import one log as a complete run (one transaction); returns its run id."""
    if not sigma > 0:
        raise RsbenchError(f"sigma must be positive, not {sigma}")
    if not 0 < alpha < 1:
        raise RsbenchError(f"alpha must lie strictly between 0 and 1, not {alpha}")
    if n0 < 1 or n < 1:
        raise RsbenchError("n0 and n must be at least 1")
    get_dataset(dataset)
    rows = read_tsv(path)
    full_params = typed_params(method, params or {})
    sha256 = file_sha256(path)
    key = hashlib.sha256(json.dumps(
        {"import": sha256, "dataset": dataset, "method": method, "params": full_params, "sigma": sigma,
         "seed": seed, "n0": n0, "n": n, "alpha": alpha, "split": split}, sort_keys=True).encode()).hexdigest()
    existing = store.find_run(key)
    if existing is not None:
        raise RsbenchError(f"{path} is already imported as run {existing}")
    rows = rows.assign(n_a=None, n=n, n0=n0, alpha=alpha)
    return store.add_complete_run(
        rows, kind="certify", origin="imported", protocol_key=key, dataset=dataset, split=split,
        method=method, params=full_params, arch=arch, sigma=float(sigma), train_sigma=float(sigma), seed=seed,
        noise_seed=None, certifier="cohen", n0=n0, n=n, alpha=alpha, batch_size=None,
        indices={"list": rows.idx.tolist()}, num_planned=len(rows), budget=budget, experiment=None,
        checkpoint_path=None, checkpoint_sha256=None, training_run_id=None,
        provenance={**provenance(), "imported_file": str(Path(path).resolve()), "file_sha256": sha256},
    )


def format_time(seconds: float) -> str:
    text = str(datetime.timedelta(seconds=float(seconds)))
    return text if "." in text else text + ".000000"


def export_tsv(store: Store, run_id: int, path: str | os.PathLike) -> int:
    """Write a run's rows as Cohen's TSV (atomically); returns the number of rows."""
    store.get_run(run_id)
    rows = store.results([run_id])
    buffer = io.StringIO()
    buffer.write("\t".join(COLUMNS) + "\n")
    for row in rows.itertuples():
        buffer.write(f"{row.idx}\t{row.label}\t{row.predict}\t{float(row.radius)!r}\t{row.correct}\t{format_time(row.seconds)}\n")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    with os.fdopen(fd, "w") as handle:
        handle.write(buffer.getvalue())
    os.replace(tmp, path)
    return len(rows)
