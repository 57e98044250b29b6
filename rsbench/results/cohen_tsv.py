"""Cohen et al.'s certification logs: ``idx label predict radius correct time`` separated by tabs,
``time`` as seconds or ``H:MM:SS.ffffff`` (``predict.py``'s logs: ``idx label predict correct time``).
Imported into and exported from the store."""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsbench.atomic import atomic_write
from rsbench.errors import RsbenchError, check_seed, did_you_mean
from rsbench.params import params_to_dict, parse_params
from rsbench.plugins import get_dataset, get_manager
from rsbench.protocol import CertificationProtocol, RunDescription, Split
from rsbench.provenance import file_sha256, provenance
from rsbench.results.record_schema import MAX_SECONDS
from rsbench.smoothing import max_certified_radius
from rsbench.store import Store, frame_rows
from rsbench.store.store import RunExists

COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]
PREDICT_COLUMNS = ["idx", "label", "predict", "correct", "time"]
INTEGER_LIMIT = 2**31  # integer columns are 32-bit in the store
RADIUS_ROUNDING = 5e-3  # logs print radii to 3 significant digits: allow that much above the largest certificate


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
    except (ValueError, TypeError, OverflowError) as error:
        raise RsbenchError(f"{path} has a malformed value: {error}") from None
    for column in ("idx", "label", "predict", "correct"):
        if not np.all((np.mod(rows[column], 1) == 0) & (np.abs(rows[column]) < INTEGER_LIMIT)):
            raise RsbenchError(f"{path}: column {column} must hold integers below 2^31")
        rows[column] = rows[column].astype(np.int64)
    checks = {
        "idx must be >= 0 and unique": (rows.idx >= 0).all() and rows.idx.is_unique,
        "label must be a class (>= 0)": (rows.label >= 0).all(),
        "predict must be a class or -1": (rows.predict >= -1).all(),
        "radius must be finite and >= 0": np.isfinite(rows.radius).all() and (rows.radius >= 0).all(),
        f"time must be finite, >= 0 and at most {MAX_SECONDS:g} s": np.isfinite(rows.seconds).all()
        and (rows.seconds >= 0).all()
        and (rows.seconds <= MAX_SECONDS).all(),
        "correct must be 0 or 1": rows.correct.isin([0, 1]).all(),
        "correct must equal (predict == label)": (rows.correct == (rows.predict == rows.label)).all(),
    }
    for message, ok in checks.items():
        if not ok:
            raise RsbenchError(f"{path}: {message}")
    return rows


def typed_params(method: str, raw: dict[str, str], new_method: bool = False) -> dict[str, Any]:
    """Full hyperparameters (defaults filled in) for a registered method, so imported and reproduced runs
    of one configuration share a leaderboard row; literal values for a method not installed here, which
    must be asked for with ``new_method`` (a misspelt name would otherwise start a leaderboard row)."""
    registry = get_manager().registries["method"]
    if method in registry.names():
        return params_to_dict(parse_params(registry.get(method).Params, raw, f"method {method!r}"))
    if not new_method:
        raise RsbenchError(
            f"unknown method {method!r}",
            f"{did_you_mean(method, registry.names())} (--new-method imports it under a new name)",
        )
    values = {}
    for key, text in raw.items():
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def check_protocol(sigma: float, n0: int, n: int, alpha: float, seed: int | None) -> None:
    """The certification protocol a log is imported under: σ finite and positive, 0 < α < 1, N0, N ≥ 1."""
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
        raise RsbenchError(f"sigma must be positive and finite, not {sigma}")
    if not 0 < alpha < 1:
        raise RsbenchError(f"alpha must lie strictly between 0 and 1, not {alpha}")
    if not 1 <= n0 < INTEGER_LIMIT or not 1 <= n < INTEGER_LIMIT:
        raise RsbenchError("n0 and n must be at least 1 (and below 2^31)")
    if seed is not None:
        check_seed(seed)


def check_rows(
    rows: pd.DataFrame, path: str | os.PathLike, num_classes: int, sigma: float, n: int, alpha: float
) -> None:
    """Rows that the dataset and protocol can produce: classes below ``num_classes``, radii at most
    σ·Φ⁻¹(α^{1/N}) (CERTIFY's largest, when all N draws agree), up to the logs' printing precision."""
    if (rows.label >= num_classes).any() or (rows.predict >= num_classes).any():
        raise RsbenchError(
            f"{path}: labels and predictions must be classes of the dataset (0 to {num_classes - 1})",
            "wrong --dataset?",
        )
    largest = max_certified_radius(sigma, n, alpha)
    if (rows.radius > max(largest, 0.0) * (1 + RADIUS_ROUNDING)).any():
        raise RsbenchError(
            f"{path}: radius {rows.radius.max():g} exceeds {largest:.4g}, the largest any certificate with "
            f"sigma={sigma:g}, N={n} and alpha={alpha:g} can give",
            "check --sigma, --n and --alpha",
        )


def import_tsv(
    store: Store,
    path: str | os.PathLike,
    *,
    dataset: str,
    method: str,
    sigma: float,
    params: dict[str, str] | None = None,
    seed: int | None = None,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    split: Split = "test",
    arch: str | None = None,
    new_method: bool = False,
    source: str | None = None,
) -> int:
    """Import one log as a complete run (one transaction); returns its run id. ``new_method`` admits a
    method name no installed plugin registers; ``source`` names the log in the run's provenance (default:
    its resolved path)."""
    check_protocol(sigma, n0, n, alpha, seed)
    spec = get_dataset(dataset)
    full_params = typed_params(method, params or {}, new_method)
    rows = read_tsv(path)
    check_rows(rows, path, spec.num_classes, sigma, n, alpha)
    sha256 = file_sha256(path)
    protocol = CertificationProtocol(
        kind="certify", dataset=dataset, split=split, sigma=float(sigma), train_sigma=float(sigma), certifier="cohen",
        certifier_params={}, n0=n0, n=n, alpha=alpha, source_sha256=sha256,
    )  # fmt: skip
    description = RunDescription(
        origin="imported", method=method, params=full_params, arch=arch, seed=seed,
        provenance={**provenance(), "imported_file": source or str(Path(path).resolve()), "file_sha256": sha256},
    )  # fmt: skip
    rows = rows.assign(n_a=None, p_a_lower=None, n=n, n0=n0, alpha=alpha, draws=n0 + n, radius_kind="exact")
    indices = rows.idx.tolist()
    selection = {"selections": [{"list": indices}], "planned": indices}
    try:
        return store.import_run(protocol, description, [frame_rows(rows)], selection, merge=False)[0]
    except RunExists as exists:
        raise RsbenchError(f"{path} is already imported as run {exists.run_id}", "`rsbench runs` lists it") from None


def format_time(seconds: float) -> str:
    text = str(datetime.timedelta(seconds=float(seconds)))
    return text if "." in text else text + ".000000"


def export_tsv(store: Store, run_id: int, path: str | os.PathLike) -> int:
    """Write a run's rows as Cohen's TSV (atomically): ``certify.py``'s columns for a certification,
    ``predict.py``'s (``idx label predict correct time``) for a prediction; returns the number of rows."""
    predicting = store.get_run(run_id).kind == "predict"
    rows = store.results([run_id])
    lines = ["\t".join(PREDICT_COLUMNS if predicting else COLUMNS)]
    lines += [
        f"{row.idx}\t{row.label}\t{row.predict}\t{row.correct}\t{format_time(row.seconds)}"
        if predicting
        else f"{row.idx}\t{row.label}\t{row.predict}\t{float(row.radius)!r}\t{row.correct}\t{format_time(row.seconds)}"
        for row in rows.itertuples()
    ]
    atomic_write(path, ("\n".join(lines) + "\n").encode())
    return len(rows)
