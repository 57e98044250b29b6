"""Import the consistency paper's official certification logs into a results store.

    python leaderboards/import_official_logs.py ../shared/reference/smoothing-consistency-certify-logs.tar.gz \
        --db leaderboards/official.db

The log folders name the method and hyperparameters (e.g. ``mnist/consistency/cohen/num_2/lbd_5.0/eta_0.5/
noise_0.50_3``: consistency, m=2, λ=5, η=0.5, σ=0.5, seed 3). SmoothAdv's ε is converted exactly from the
official 1/256 units (255 -> 255/256, as in the presets). Logs whose folder this script cannot read are listed
and skipped.
"""

from __future__ import annotations

import argparse
import re
import tarfile
import tempfile
from pathlib import Path

from rsbench.errors import RsbenchError
from rsbench.results.cohen_tsv import import_tsv
from rsbench.store import open_store

NOISE = re.compile(r"noise_(?P<sigma>[0-9.]+)(?:_(?P<seed>\d+))?$")


def describe(relative: Path) -> dict | None:
    """(dataset, method, params, sigma, seed, arch) from a log's path, or None when not understood."""
    parts = relative.parts
    match = NOISE.match(parts[-1])
    if not match:
        return None
    dataset, sigma = parts[0], float(match["sigma"])
    seed = int(match["seed"]) if match["seed"] else 0
    keys = {}
    arch = None
    for part in parts[1:-1]:
        for prefix, key in (("num_", "m"), ("lbd_", "lam"), ("eta_", "eta"), ("gamma_", "gamma"), ("beta_", "beta")):
            if part.startswith(prefix):
                keys[key] = float(part[len(prefix) :])
        if part.startswith(("cifar_", "resnet")):
            arch = part
    if "m" in keys:
        keys["m"] = int(keys["m"])
    attack = next((p for p in parts if p.startswith(("salman_", "pgd_"))), None)
    adversarial = {}
    if attack:
        eps, steps, _ = attack.split("_")[1:]
        adversarial = {"attack": "pgd", "eps": float(eps) / 256, "steps": int(steps), "warmup": 10}
    family = parts[1]
    if family == "cohen":
        method, params = "gaussian", {}
    elif family == "consistency" and attack:
        method, params = "smoothadv", {**adversarial, **keys}
    elif family == "consistency":
        method, params = "consistency", keys
    elif family == "salman":
        method, params = "smoothadv", {**adversarial, **keys}
    elif family.startswith("macer"):
        method, params = "macer", {**keys, "deferred": "deferred" in family}
    elif family == "stab":
        method, params = "stability", {"lam": keys.get("lam", 2.0)}
    else:
        return None
    arch = arch or {"mnist": "lenet", "imagenet": "resnet50"}.get(dataset)
    return {"dataset": dataset, "method": method, "params": params, "sigma": sigma, "seed": seed, "arch": arch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    store = open_store(args.db)
    with tempfile.TemporaryDirectory() as folder, tarfile.open(args.archive) as archive:
        archive.extractall(folder, filter="data")
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            relative = path.relative_to(folder)
            info = describe(relative)
            if info is None:
                print(f"skipped {relative}: folder not understood")
                continue
            try:
                params = {key: str(value) for key, value in info.pop("params").items()}
                # the log is named by its place inside the archive, not by the temporary folder
                source = f"{Path(args.archive).name}:{relative}"
                run_id = import_tsv(store, path, params=params, source=source, **info)
                print(f"run {run_id}: {relative}")
            except RsbenchError as error:
                print(f"skipped {relative}: {error}")


if __name__ == "__main__":
    main()
