"""The paper's experiments as configurations (``rsbench/experiments/*.toml``) and a runner that trains,
certifies and ranks a whole set, skipping what is already done (a sweep survives interruption).

A budget (``rsbench.budgets``: ``full``, ``paper-subset``, ``quick``, ``smoke``) scales an experiment; it is
recorded in every certification run so that a scaled row is never mistaken for a full one in a leaderboard.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
from rich.text import Text

from rsbench.atomic import atomic_write_text
from rsbench.budgets import BUDGETS, Budget, every_nth, get_budget, scaled_milestones, selection_text
from rsbench.certification import certify
from rsbench.checkpoint import CHECKPOINT_NAME, load_checkpoint
from rsbench.config import CertifyConfig, TrainConfig, preset_settings, run_name
from rsbench.errors import RsbenchError, did_you_mean
from rsbench.params import params_to_dict, parse_params
from rsbench.plugins import get_dataset, get_method
from rsbench.progress import console
from rsbench.provenance import auto_device, device_name
from rsbench.results.board import Board, build, parse_radii
from rsbench.results.render import render
from rsbench.results.tables import amount
from rsbench.store import Store
from rsbench.training import train

EXPERIMENTS = Path(__file__).resolve().parent / "experiments"


@dataclasses.dataclass(frozen=True)
class Job:
    """One row × seed of an experiment under a budget: its run folder, the epochs it trains and on how many
    images, and how many test images it certifies (None where the dataset's size is not fixed)."""

    row: dict[str, Any]
    seed: int
    folder: Path
    epochs: int
    images_per_epoch: int | None
    certified: int | None

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_NAME

    def epochs_done(self) -> int:
        """Epochs its checkpoint holds (0 before the first)."""
        return int(load_checkpoint(self.checkpoint)["epoch"]) if self.checkpoint.exists() else 0


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


def row_key(method: str, params: dict[str, Any], sigma: float, arch: str | None) -> tuple:
    return method, json.dumps(params, sort_keys=True), float(sigma), arch


def plan(
    experiment: dict[str, Any],
    budget: Budget,
    runs_dir: str = "runs",
    methods: list[str] | None = None,
    sigmas: list[float] | None = None,
) -> list[Job]:
    """The jobs (row × seed) of an experiment's rows of ``methods`` and ``sigmas`` (all when None) under
    ``budget``. Run folders are ``RUNS/DATASET/BUDGET/METHOD-σ-PARAMS-SEED`` (``paper-subset`` shares
    ``full``'s), so a configuration is trained once per budget whichever experiment asks for it."""
    selected = [
        row
        for row in experiment["rows"]
        if (not methods or row["method"] in methods) and (not sigmas or float(row["sigma"]) in sigmas)
    ]
    if not selected:
        raise RsbenchError(f"no row of {experiment['name']} matches the given methods and sigmas")
    jobs = []
    for row in selected:
        dataset = get_dataset(row["dataset"])
        sizes = dataset.split_sizes or {}
        train_size, test_size = sizes.get("train"), sizes.get("test")
        images = min(train_size, budget.train_limit or train_size) if train_size else budget.train_limit
        certified = len(every_nth(test_size, budget.skip, budget.limit)) if test_size else budget.limit
        for seed in experiment.get("seeds", [0]):
            folder = Path(runs_dir) / row["dataset"] / budget.training_folder
            folder /= run_name(row["method"], row["sigma"], row["params"], seed)
            jobs.append(Job(row, seed, folder, budget.epochs or dataset.schedule.epochs, images, certified))
    return jobs


def announce(
    name: str,
    budget_name: str,
    store: Store,
    runs_dir: str = "runs",
    device: str | None = None,
    methods: list[str] | None = None,
    sigmas: list[float] | None = None,
) -> tuple[dict[str, Any], Budget, list[Job]]:
    """Print what reproducing an experiment (the rows of ``methods`` and ``sigmas``) under a budget still
    costs (:func:`plan_lines`); returns the experiment, the budget and the jobs."""
    budget = get_budget(budget_name)
    experiment = load_experiment(name)
    jobs = plan(experiment, budget, runs_dir, methods, sigmas)
    for line in plan_lines(experiment, budget, jobs, store, device):
        console.print(line, markup=False, highlight=False)
    return experiment, budget, jobs


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
    store lacks, after printing what that costs (:func:`announce`); returns the experiment's leaderboard and
    the time each row took here. Certifications the store holds are found again by their protocol."""
    experiment, budget, jobs = announce(name, budget_name, store, runs_dir, device, methods, sigmas)
    timings = [run_job(job, budget, name, store, data_dir, device, show_progress) for job in jobs]
    board = build(store, experiment["dataset"], parse_radii(experiment.get("radii")))
    wanted = {row_key(r["method"], r["params"], r["sigma"], r["arch"]) for r in experiment["rows"]}
    board.rows = [
        r for r in board.rows if r.budget == budget.name and row_key(r.method, r.params, r.sigma, r.arch) in wanted
    ]
    if output_dir:
        path = Path(output_dir) / f"{name}-{budget.name}.md"
        atomic_write_text(path, experiment_markdown(experiment, budget, board), make_folder=True)
        console.print(f"wrote {path}", markup=False)
    return board, timings


def run_job(
    job: Job, budget: Budget, experiment: str, store: Store, data_dir: str | None, device: str | None,
    show_progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Train one row × seed of an experiment (resuming or skipping what is done), certify it under the
    budget's protocol (skipping a complete certification), and return the time each took."""
    row, seed = job.row, job.seed
    config = TrainConfig(
        dataset=row["dataset"], arch=row["arch"], method=row["method"], sigma=row["sigma"], params=dict(row["params"]),
        out=str(job.folder), epochs=budget.epochs, milestones=scaled_milestones(row["dataset"], budget.epochs),
        seed=seed, train_limit=budget.train_limit, test_limit=budget.test_limit, data_dir=data_dir, device=device,
        preset=row.get("preset"),
    )  # fmt: skip
    console.rule(Text(f"{experiment} [{budget.name}]: {row['method']} σ={row['sigma']} {row['params']} seed {seed}"))
    started = time.perf_counter()
    if job.epochs_done() < job.epochs:
        result = train(config, resume=job.checkpoint.exists(), show_progress=show_progress)
        store.record_training(config, result)
    trained = time.perf_counter()
    protocol = CertifyConfig(
        checkpoint=str(job.checkpoint), n0=budget.n0, n=budget.n, alpha=budget.alpha, skip=budget.skip,
        limit=budget.limit, budget=budget.name, experiment=experiment, data_dir=data_dir, device=device,
    )  # fmt: skip
    certify(protocol, store, show_progress=show_progress, reuse_complete=True)
    timing = {"train_seconds": trained - started, "certify_seconds": time.perf_counter() - trained}
    return {"method": row["method"], "sigma": row["sigma"], "params": row["params"], "seed": seed, **timing}


# ------------------------------------------------------------------------------------------------ cost


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.4 h``, ``2.5 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.2g} h"
    return f"{seconds / 86400:.2g} days"


def experiment_costs() -> list[dict[str, Any]]:
    """Every experiment: its ``name``, ``description``, ``rows`` (recipe × seed) and per budget what
    reproducing it from scratch costs (``costs[BUDGET]``): training ``epochs``, ``training_images``
    (epochs × images per epoch) and certification ``draws``, all rows together (None where a dataset's size
    is not fixed)."""
    listing = []
    for name in list_experiments():
        experiment = load_experiment(name)
        costs = {}
        for budget in BUDGETS.values():
            jobs = plan(experiment, budget)
            images = [None if job.images_per_epoch is None else job.epochs * job.images_per_epoch for job in jobs]
            certified = [job.certified for job in jobs]
            costs[budget.name] = {
                "epochs": sum(job.epochs for job in jobs),
                "training_images": sum(i for i in images if i is not None) if None not in images else None,
                "draws": sum(c for c in certified if c is not None) * (budget.n0 + budget.n)
                if None not in certified
                else None,
            }
        listing.append({"name": name, "description": experiment["description"], "rows": len(jobs), "costs": costs})
    return listing


def plan_lines(
    experiment: dict[str, Any], budget: Budget, jobs: list[Job], store: Store, device: str | None
) -> list[str]:
    """What reproducing ``jobs`` still costs: training epochs left, certifications left and their draws, and
    an estimated time where the store holds earlier runs of the same models on this machine."""
    machine = {"host": platform.node(), "device": device_name(auto_device(device))}
    finished = {
        (run.checkpoint_path, run.budget)
        for run in store.runs(experiment["dataset"], kind="certify").itertuples()
        if run.status == "complete"
    }
    left = [(job, job.epochs - min(job.epochs, job.epochs_done())) for job in jobs]
    to_certify = [job for job, epochs in left if epochs or (str(job.checkpoint.resolve()), budget.name) not in finished]
    first = jobs[0]
    epochs = f"{first.epochs} epoch{'s' * (first.epochs != 1)}"
    images = "all" if first.images_per_epoch is None else f"{first.images_per_epoch:,}"
    certified = f"{first.certified:,} test images" if first.certified is not None else "the test images"
    draws_per_image = budget.n0 + budget.n
    epochs_left = sum(epochs for _, epochs in left)
    draws_left = sum(job.certified or 0 for job in to_certify) * draws_per_image
    lines = [
        f"{experiment['name']}, budget {budget.name}: {len(jobs)} row{'s' * (len(jobs) != 1)} (recipe × seed) on "
        f"{first.row['dataset']}",
        f"  training: {epochs} on {images} images per row; {epochs_left:,} of {sum(j.epochs for j in jobs):,} "
        "epochs left",
        f"  certification: {certified} per row ({selection_text(budget)}), {draws_per_image:,} draws per image "
        f"(N0 {budget.n0:,} + N {budget.n:,}); {len(to_certify)} of {len(jobs)} rows left, {amount(draws_left)} draws",
    ]
    if not epochs_left and not to_certify:
        lines.append("  nothing left to do: the store holds every row")
        return lines
    estimate = estimated_seconds(left, to_certify, draws_per_image, store, machine)
    if isinstance(estimate, str):
        lines.append(f"  time: no estimate ({estimate}); the progress bars show an ETA")
    else:
        lines.append(f"  time: about {duration(estimate)} (at the speeds of this machine's earlier runs in the store)")
    return lines


def estimated_seconds(
    left: list[tuple[Job, int]], to_certify: list[Job], draws_per_image: int, store: Store, machine: dict[str, str]
) -> float | str:
    """Seconds to train the epochs ``left`` and certify ``to_certify``, at the speeds the store measured on
    ``machine`` (host and device): training images per second of the same recipe (else method), certification
    draws per second of the same dataset and architecture. Else what is missing."""
    measured: dict[tuple[str, str, str], pd.DataFrame] = {}

    def speeds(kind: str, row: dict[str, Any]) -> pd.DataFrame:
        key = (kind, row["dataset"], row["arch"])
        if key not in measured:
            read = store.training_speeds if kind == "training" else store.certification_speeds
            found = read(row["dataset"], row["arch"])
            measured[key] = found[(found.host == machine["host"]) & (found.device == machine["device"])]
        return measured[key]

    seconds = 0.0
    for job, epochs in left:
        if not epochs:
            continue
        row = job.row
        trained = speeds("training", row)
        same = trained[trained.method == row["method"]]
        recipe = same[[json.dumps(p, sort_keys=True) == json.dumps(row["params"], sort_keys=True) for p in same.params]]
        basis = recipe if len(recipe) else same
        if not len(basis) or job.images_per_epoch is None:
            return f"no {row['method']} training of {row['dataset']}/{row['arch']} on this machine in the store"
        seconds += epochs * job.images_per_epoch / basis.images_per_second.median()
    for job in to_certify:
        row = job.row
        certified = speeds("certification", row)
        if not certified.seconds.sum() or job.certified is None:
            return f"no certification of {row['dataset']}/{row['arch']} on this machine in the store"
        seconds += job.certified * draws_per_image * certified.seconds.sum() / certified.draws.sum()
    return seconds


def experiment_markdown(experiment: dict[str, Any], budget: Budget, board: Board) -> str:
    protocol = (
        f"budget `{budget.name}`: epochs {budget.epochs or 'paper schedule'}, train images "
        f"{budget.train_limit or 'all'}, certification N0={budget.n0}, N={budget.n:,}, α={budget.alpha}, "
        f"{selection_text(budget)}"
    )
    return (
        f"# {experiment['name']} ({budget.name})\n\n{experiment['description']}.\n\nProtocol: {protocol}.\n\n"
        f"Regenerate: `rsbench reproduce {experiment['name']} --budget {budget.name}` (skips what the store "
        f"holds), or `rsbench leaderboard --dataset {experiment['dataset']}` for the whole store.\n\n"
        + render(board, "markdown")
    )
