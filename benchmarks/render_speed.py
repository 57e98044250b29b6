"""Leaderboard render time: from the store's per-run metrics (what rsbench does) against re-reading every
per-example row (what it did before the metrics were kept: load all rows into pandas, then compute each run's
ACR and certified accuracies), on the committed records and on a synthetic store of many rows.

    python benchmarks/render_speed.py                              # the committed records (leaderboards/records)
    python benchmarks/render_speed.py --synthetic-rows 10000000    # plus a synthetic store of 10 M rows

Prints wall times (best of ``--repeats``), the ratio, and the machine's load average while it ran.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rsbench.protocol import CertificationProtocol, RunDescription
from rsbench.results.board import DEFAULT_RADII, build
from rsbench.results.records import import_record
from rsbench.results.render import render
from rsbench.store import Store, frame_rows, open_store

RECORDS = Path(__file__).resolve().parent.parent / "leaderboards" / "records"


def best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def from_rows(store: Store, datasets: list[str]) -> None:
    """The per-example path: every row of every complete run read, then per-run metrics in pandas."""
    for dataset in datasets:
        runs = store.runs(dataset, complete_only=True)
        results = store.results(runs["id"].tolist())
        for _, rows in results.groupby("run_id"):
            correct = rows["correct"].to_numpy() == 1
            radius = rows["radius"].to_numpy(dtype=float)
            _ = float(np.mean(correct * radius)), [float(np.mean(correct & (radius >= r))) for r in DEFAULT_RADII]


def from_metrics(store: Store, datasets: list[str]) -> None:
    """rsbench's path: the board from the kept metrics, rendered as markdown."""
    for dataset in datasets:
        render(build(store, dataset, DEFAULT_RADII, include_reported=True), "markdown")


def synthetic_store(path: Path, total_rows: int, rows_per_run: int = 10_000) -> Store:
    """``total_rows`` example rows in runs of ``rows_per_run`` (Gaussian-like radii, 10 classes, σ = 0.5)."""
    store = open_store(str(path))
    generator = np.random.default_rng(0)
    for run in range(total_rows // rows_per_run):
        labels = generator.integers(0, 10, rows_per_run)
        correct = generator.random(rows_per_run) < 0.9
        rows = pd.DataFrame(
            {
                "idx": np.arange(rows_per_run), "label": labels, "predict": np.where(correct, labels, -1),
                "radius": np.where(correct, generator.uniform(0, 1.9, rows_per_run), 0.0), "radius_kind": "exact",
                "correct": correct.astype(int), "n_a": 99_000, "p_a_lower": None, "n": 100_000, "n0": 100,
                "alpha": 0.001, "draws": 100_100, "seconds": 0.1,
            }
        )  # fmt: skip
        protocol = CertificationProtocol(
            kind="certify", dataset="mnist", split="test", sigma=0.5, train_sigma=0.5, certifier="cohen",
            certifier_params={}, n0=100, n=100_000, alpha=0.001, checkpoint_sha256=f"synthetic-{run}",
        )  # fmt: skip
        description = RunDescription(origin="rsbench", method=f"method{run % 20}", params={}, arch="lenet", seed=run)
        indices = {"selections": [{"skip": 1, "limit": rows_per_run}], "planned": list(range(rows_per_run))}
        store.import_run(protocol, description, [frame_rows(rows)], indices)
    return store


def cli_seconds(db: str, dataset: str) -> float:
    """Wall time of one ``rsbench leaderboard`` process (interpreter start and imports included)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rsbench", "leaderboard", "--dataset", dataset, "--format", "markdown", "--db", db],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def report(name: str, store: Store, datasets: list[str], repeats: int, rows: int) -> None:
    old = best_of(repeats, lambda: from_rows(store, datasets))
    new = best_of(repeats, lambda: from_metrics(store, datasets))
    print(f"{name}: {rows:,} example rows, datasets {', '.join(datasets)}")
    print(f"  per-example rows (before): {old:8.3f} s")
    print(f"  kept metrics (rsbench):    {new:8.3f} s   {old / new:6.1f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, default=RECORDS)
    parser.add_argument("--synthetic-rows", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "records.db"
        store = open_store(str(db))
        files = sorted(p for d in ("mnist", "cifar10", "imagenet") for p in (args.records / d).glob("*.json.gz"))
        started = time.perf_counter()
        for path in files:
            import_record(store, path)
        rows = sum(store.result_counts(store.runs()["id"].tolist()).values())
        print(f"imported {len(files)} records in {time.perf_counter() - started:.1f} s")
        report("committed records", store, ["mnist", "cifar10", "imagenet"], args.repeats, rows)
        print(f"  one `rsbench leaderboard --dataset mnist` process: {cli_seconds(str(db), 'mnist'):.2f} s")
        if args.synthetic_rows:
            started = time.perf_counter()
            synthetic = synthetic_store(Path(folder) / "synthetic.db", args.synthetic_rows)
            print(f"wrote the synthetic store in {time.perf_counter() - started:.0f} s")
            report("synthetic store", synthetic, ["mnist"], 1, args.synthetic_rows)
    print(f"load average (1 min) at start {load:.2f}, at end {os.getloadavg()[0]:.2f}, on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
