"""The paper's experiments as configurations (``rsbench/experiments/*.toml``) and a runner that trains,
certifies and ranks a whole set, skipping what is already done (a sweep survives interruption).

A budget scales an experiment; it is recorded in every certification run (``budget``) so that a scaled
row is never mistaken for a full one in a leaderboard:

- ``full``: the paper's settings (dataset schedule, all test images, N0=100, N=100,000, α=0.001).
- ``quick``: 10 epochs (learning-rate drops scaled to the same fractions of training), every 50th test
  image, N=10,000: the shape of the paper's results on a CPU in minutes per row.
- ``paper-subset``: the paper's training (dataset schedule, all training images) and the paper's
  certification protocol (N0=100, N=100,000, α=0.001) on every 20th test image (500 of MNIST's or
  CIFAR-10's 10,000): the paper's rows as the paper ran them, certified in a twentieth of the time. Its
  models are those of ``full`` (same run folders), so either budget reuses the other's training.
- ``smoke``: 1 epoch on 512 images, 20 test images, N=1,000: checks that an experiment runs end to end.

Method hyperparameters counted in epochs (SmoothAdv's ε warm-up) are not rescaled.
"""

from __future__ import annotations

import dataclasses
import json
import time
import tomllib
from pathlib import Path
from typing import Any

from rsbench.atomic import atomic_write_text
from rsbench.certification import certify
from rsbench.checkpoint import CHECKPOINT_NAME, load_checkpoint
from rsbench.config import CertifyConfig, TrainConfig, preset_settings, run_name
from rsbench.errors import RsbenchError, did_you_mean
from rsbench.params import params_to_dict, parse_params
from rsbench.plugins import get_dataset, get_method
from rsbench.progress import console
from rsbench.results.board import Board, build, parse_radii
from rsbench.results.render import render
from rsbench.store import Store
from rsbench.training import train

EXPERIMENTS = Path(__file__).resolve().parent / "experiments"


@dataclasses.dataclass(frozen=True)
class Budget:
    name: str
    epochs: int | None
    n0: int
    n: int
    alpha: float
    skip: int
    limit: int | None
    train_limit: int | None = None
    test_limit: int | None = None
    trains_as: str | None = None  # the budget whose run folders (trained models) this one shares

    @property
    def training_folder(self) -> str:
        return self.trains_as or self.name


BUDGETS = {
    "full": Budget("full", None, 100, 100_000, 0.001, 1, None),
    "quick": Budget("quick", 10, 100, 10_000, 0.001, 50, None),
    "paper-subset": Budget("paper-subset", None, 100, 100_000, 0.001, 20, None, trains_as="full"),
    "smoke": Budget("smoke", 1, 20, 1_000, 0.001, 1, 20, train_limit=512, test_limit=200),
}


def list_experiments() -> dict[str, str]:
    return {path.stem: tomllib.loads(path.read_text())["description"] for path in sorted(EXPERIMENTS.glob("*.toml"))}


def load_experiment(name: str) -> dict[str, Any]:
    path = EXPERIMENTS / f"{name}.toml"
    if not path.is_file():
        raise RsbenchError(f"unknown experiment {name!r}", did_you_mean(name, list_experiments()))
    experiment = tomllib.loads(path.read_text())
    rows = []
    for row in experiment["rows"]:
        settings: dict[str, Any] = preset_settings(row["preset"]) if "preset" in row else {"preset": None}
        settings.update({k: v for k, v in row.items() if k != "preset"})
        settings.setdefault("dataset", experiment["dataset"])
        settings.setdefault("arch", experiment.get("arch") or get_dataset(settings["dataset"]).default_arch)
        settings.setdefault("params", {})
        method = get_method(settings["method"])
        settings["params"] = params_to_dict(parse_params(method.Params, settings["params"], settings["method"]))
        rows.append(settings)
    experiment["rows"] = rows
    experiment["name"] = name
    return experiment


def scaled_milestones(dataset: str, epochs: int | None) -> tuple[int, ...] | None:
    """The dataset's lr milestones at the same fractions of a shorter run."""
    if epochs is None:
        return None
    schedule = get_dataset(dataset).schedule
    return tuple(max(1, round(m * epochs / schedule.epochs)) for m in schedule.milestones)


def row_key(method: str, params: dict[str, Any], sigma: float, arch: str | None) -> tuple:
    return method, json.dumps(params, sort_keys=True), float(sigma), arch


def reproduce(
    name: str,
    budget_name: str,
    store: Store,
    data_dir: str | None = None,
    runs_dir: str = "runs",
    output_dir: str | None = "leaderboards",
    device: str | None = None,
    show_progress: bool = True,
    methods: list[str] | None = None,
    sigmas: list[float] | None = None,
) -> tuple[Board, list[dict[str, Any]]]:
    """Train and certify every row × seed of an experiment (or those of ``methods`` and ``sigmas``) that the
    store lacks; returns the experiment's leaderboard and the time each row took here.

    A configuration is trained once per budget whichever experiment asks for it: run folders are
    ``RUNS/DATASET/BUDGET/METHOD-σ-PARAMS-SEED`` (``paper-subset`` shares ``full``'s) and certifications are
    found again by their protocol.
    """
    if budget_name not in BUDGETS:
        raise RsbenchError(f"unknown budget {budget_name!r}", did_you_mean(budget_name, BUDGETS))
    budget = BUDGETS[budget_name]
    experiment = load_experiment(name)
    selected = [
        row
        for row in experiment["rows"]
        if (not methods or row["method"] in methods) and (not sigmas or float(row["sigma"]) in sigmas)
    ]
    if not selected:
        raise RsbenchError(f"no row of {name} matches the given methods and sigmas")
    timings = [
        run_row(row, seed, budget, name, store, runs_dir, data_dir, device, show_progress)
        for row in selected
        for seed in experiment.get("seeds", [0])
    ]
    board = build(store, experiment["dataset"], parse_radii(experiment.get("radii")))
    wanted = {row_key(r["method"], r["params"], r["sigma"], r["arch"]) for r in experiment["rows"]}
    board.rows = [
        r for r in board.rows if r.budget == budget.name and row_key(r.method, r.params, r.sigma, r.arch) in wanted
    ]
    if output_dir:
        path = Path(output_dir) / f"{name}-{budget.name}.md"
        atomic_write_text(path, experiment_markdown(experiment, budget, board), make_folder=True)
        console.print(f"wrote {path}")
    return board, timings


def run_row(
    row: dict[str, Any], seed: int, budget: Budget, experiment: str, store: Store, runs_dir: str,
    data_dir: str | None, device: str | None, show_progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Train one row × seed of an experiment (resuming or skipping what is done), certify it under the
    budget's protocol (skipping a complete certification), and return the time each took."""
    name = run_name(row["method"], row["sigma"], row["params"], seed)
    out = Path(runs_dir) / row["dataset"] / budget.training_folder / name
    config = TrainConfig(
        dataset=row["dataset"], arch=row["arch"], method=row["method"], sigma=row["sigma"], params=dict(row["params"]),
        out=str(out), epochs=budget.epochs, milestones=scaled_milestones(row["dataset"], budget.epochs), seed=seed,
        train_limit=budget.train_limit, test_limit=budget.test_limit, data_dir=data_dir, device=device,
        preset=row.get("preset"),
    )  # fmt: skip
    console.rule(f"{experiment} [{budget.name}]: {row['method']} σ={row['sigma']} {row['params']} seed {seed}")
    started = time.perf_counter()
    checkpoint = out / CHECKPOINT_NAME
    target_epochs = budget.epochs or get_dataset(row["dataset"]).schedule.epochs
    done_epochs = int(load_checkpoint(checkpoint)["epoch"]) if checkpoint.exists() else 0
    if done_epochs < target_epochs:
        result = train(config, resume=checkpoint.exists(), show_progress=show_progress)
        store.record_training(config, result)
    trained = time.perf_counter()
    protocol = CertifyConfig(
        checkpoint=str(checkpoint), n0=budget.n0, n=budget.n, alpha=budget.alpha, skip=budget.skip,
        limit=budget.limit, budget=budget.name, experiment=experiment, data_dir=data_dir, device=device,
    )  # fmt: skip
    certify(protocol, store, show_progress=show_progress, reuse_complete=True)
    timing = {"train_seconds": trained - started, "certify_seconds": time.perf_counter() - trained}
    return {"method": row["method"], "sigma": row["sigma"], "params": row["params"], "seed": seed, **timing}


def experiment_markdown(experiment: dict[str, Any], budget: Budget, board: Board) -> str:
    images = "all test images" if budget.skip == 1 else f"test indices 0, {budget.skip}, {2 * budget.skip}, …"
    if budget.limit:
        images += f", at most {budget.limit}"
    protocol = (
        f"budget `{budget.name}`: epochs {budget.epochs or 'paper schedule'}, train images "
        f"{budget.train_limit or 'all'}, certification N0={budget.n0}, N={budget.n:,}, α={budget.alpha}, "
        f"{images}"
    )
    return (
        f"# {experiment['name']} ({budget.name})\n\n{experiment['description']}.\n\nProtocol: {protocol}.\n\n"
        f"Regenerate: `rsbench reproduce {experiment['name']} --budget {budget.name}` (skips what the store "
        f"holds), or `rsbench leaderboard --dataset {experiment['dataset']}` for the whole store.\n\n"
        + render(board, "markdown")
    )
