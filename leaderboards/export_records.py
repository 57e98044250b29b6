"""Export every complete certification run of a store as a run record (gzip-compressed JSON), one file per
run, named by dataset, method, architecture, hyperparameters, σ and seed:

    python leaderboards/export_records.py --db official.db leaderboards/records

Import them into a fresh store with ``rsbench import leaderboards/records/mnist/*.json.gz --db new.db``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from rsbench.results.records import record_of, write_record
from rsbench.store import open_store


def record_name(run) -> str:
    params = hashlib.sha256(json.dumps(run.params, sort_keys=True).encode()).hexdigest()[:8]
    seed = "none" if run.seed is None or run.seed != run.seed else int(run.seed)
    protocol = run.protocol_key[:8]
    return f"{run.method}-{run.arch or 'unknown'}-{params}-sigma{run.sigma:.2f}-seed{seed}-{protocol}.json.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    store = open_store(args.db)
    for run in store.runs(complete_only=True).itertuples():
        target = args.folder / run.dataset / record_name(run)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_record(record_of(store, run.id), target)
        print(f"run {run.id}: {target}")


if __name__ == "__main__":
    main()
