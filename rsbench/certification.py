"""Certify or predict a checkpoint on a dataset split, one row per example committed to the store as it
is done, so that an interrupted run resumes where it stopped.

Each example's noise comes from its own generator, seeded by (noise seed, index): a resumed run gives
exactly the rows an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import torch

from rsbench.checkpoint import classifier_from_checkpoint, load_checkpoint
from rsbench.data import data_root
from rsbench.errors import RsbenchError
from rsbench.plugins import get_certifier, get_dataset
from rsbench.progress import make_progress
from rsbench.provenance import auto_device, provenance
from rsbench.smoothing import max_certified_radius
from rsbench.store import Store, file_sha256


@dataclasses.dataclass
class CertifyConfig:
    """One certification. ``sigma`` defaults to the checkpoint's training σ; ``skip``/``limit`` take every
    ``skip``-th index of the split, at most ``limit`` of them; ``indices`` lists them explicitly."""

    checkpoint: str
    kind: str = "certify"  # certify | predict
    sigma: float | None = None
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int = 1000
    split: str = "test"
    skip: int = 1
    limit: int | None = None
    indices: list[int] | None = None
    noise_seed: int = 0
    dataset: str | None = None
    normalization: str | None = None
    certifier: str = "cohen"
    data_dir: str | None = None
    device: str | None = None
    budget: str | None = None
    experiment: str | None = None
    images_per_batch: int = 1  # certify: inputs whose noisy copies share a forward pass (faster on GPUs)


def validate(config: CertifyConfig) -> None:
    if config.sigma is not None and not (math.isfinite(config.sigma) and config.sigma > 0):
        raise RsbenchError(f"sigma must be a positive number, not {config.sigma}")
    if not 0 < config.alpha < 1:
        raise RsbenchError(f"alpha must lie strictly between 0 and 1, not {config.alpha}", "e.g. --alpha 0.001")
    for name in ("n0", "n", "batch", "skip", "images_per_batch"):
        if getattr(config, name) < 1:
            raise RsbenchError(f"{name} must be at least 1, not {getattr(config, name)}")
    if config.limit is not None and config.limit < 1:
        raise RsbenchError(f"limit must be at least 1, not {config.limit}")
    if config.split not in ("train", "test"):
        raise RsbenchError(f"split must be train or test, not {config.split!r}")


def select_indices(size: int, config: CertifyConfig) -> list[int]:
    if config.indices is not None:
        bad = [i for i in config.indices if not 0 <= i < size]
        if bad:
            raise RsbenchError(f"indices {bad[:5]} are outside the split (size {size})")
        return list(config.indices)
    return list(range(0, size, config.skip))[: config.limit]


def training_budget(meta: dict, dataset) -> str:
    """``full`` for a model trained on the paper's schedule and all training images (or an official
    checkpoint), else ``custom``: a leaderboard never mixes a shortened training run with full ones."""
    schedule = meta.get("schedule")
    if schedule is None:
        return "full"
    paper = dataset.schedule
    same = (schedule["epochs"], schedule["lr"], tuple(schedule["milestones"]), schedule["batch_size"]) == (
        paper.epochs, paper.lr, tuple(paper.milestones), paper.batch_size)
    return "full" if same and meta.get("train_limit") is None else "custom"


def protocol_key(sha256: str, sigma: float, config: CertifyConfig, indices: list[int]) -> str:
    identity = {
        "checkpoint": sha256, "kind": config.kind, "certifier": config.certifier, "sigma": sigma,
        "n0": config.n0 if config.kind == "certify" else None, "n": config.n, "alpha": config.alpha,
        "split": config.split, "indices": indices, "noise_seed": config.noise_seed,
        "dataset": config.dataset, "normalization": config.normalization, "budget": config.budget,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def certify(config: CertifyConfig, store: Store, show_progress: bool = True, reuse_complete: bool = False) -> int:
    """Run (or resume) a certification; returns its run id in ``store``. A complete run with the same
    protocol is an error, or is returned as it is with ``reuse_complete``."""
    validate(config)
    checkpoint = load_checkpoint(config.checkpoint)
    classifier, meta = classifier_from_checkpoint(checkpoint, config.dataset, config.normalization)
    dataset = get_dataset(meta["dataset"])
    sigma = config.sigma if config.sigma is not None else meta.get("sigma")
    if sigma is None:
        raise RsbenchError("the checkpoint does not record its σ (an official checkpoint?)", "pass --sigma")
    if config.kind == "certify" and max_certified_radius(sigma, config.n, config.alpha) <= 0:
        raise RsbenchError(
            f"with N={config.n} and alpha={config.alpha} CERTIFY can never certify (it needs "
            f"alpha^(1/N) > 0.5)", "raise --n",
        )
    device = auto_device(config.device)
    classifier.to(device)
    split = dataset.load(data_root(config.data_dir), config.split, False)
    indices = select_indices(len(split), config)
    sha256 = file_sha256(config.checkpoint)
    training = store.training_run_for(sha256)
    budget = config.budget or training_budget(meta, dataset)
    run_id, done, complete = store.start_run(
        kind=config.kind, origin="rsbench", protocol_key=protocol_key(sha256, sigma, config, indices),
        dataset=dataset.name, split=config.split, method=meta.get("method", "unknown"),
        params=meta.get("params", {}), arch=meta.get("arch"), sigma=float(sigma),
        train_sigma=meta.get("sigma"), seed=meta.get("seed"), noise_seed=config.noise_seed,
        certifier=config.certifier, n0=config.n0 if config.kind == "certify" else None, n=config.n,
        alpha=config.alpha, batch_size=config.batch,
        indices={"list": indices} if config.indices is not None else {"skip": config.skip, "limit": config.limit},
        num_planned=len(indices), budget=budget, experiment=config.experiment,
        checkpoint_path=str(Path(config.checkpoint).resolve()), checkpoint_sha256=sha256,
        training_run_id=training.id if training else None,
        provenance={**provenance(device), "images_per_batch": config.images_per_batch,
                    "checkpoint_meta": {k: v for k, v in meta.items() if k in ("preset", "provenance", "train_limit")}},
    )
    if complete and reuse_complete:
        return run_id
    if complete:
        raise RsbenchError(
            f"this certification is already complete in the store (run {run_id})",
            f"see `rsbench runs` or `rsbench export {run_id}`; change --seed for another run",
        )
    smoothed = get_certifier(config.certifier).create(classifier, dataset.num_classes, float(sigma))
    todo = [i for i in indices if i not in done]
    previous = store.results([run_id])
    correct = int(previous["correct"].sum())
    radius_sum = float((previous["correct"] * previous["radius"]).sum())
    count = len(previous)
    group = config.images_per_batch if config.kind == "certify" else 1
    with make_progress(show_progress) as progress:
        task = progress.add_task(f"{config.kind} σ={sigma}", total=len(indices), completed=count, status="")
        for start in range(0, len(todo), group):
            chunk = todo[start : start + group]
            examples = [split[index] for index in chunk]
            xs = torch.stack([x for x, _ in examples]).to(device)
            generators = [torch.Generator(device=device).manual_seed(config.noise_seed * 1_000_003 + index)
                          for index in chunk]
            started = time.perf_counter()
            if config.kind == "certify":
                certificates = smoothed.certify_many(xs, config.n0, config.n, config.alpha, config.batch, generators)
                outcomes = [(c.prediction, c.radius, c.n_a) for c in certificates]
            else:
                outcomes = [(smoothed.predict(xs[0], config.n, config.alpha, config.batch, generators[0]), 0.0, None)]
            seconds = (time.perf_counter() - started) / len(chunk)
            for index, (_, label), (prediction, radius, n_a) in zip(chunk, examples, outcomes, strict=True):
                is_correct = int(prediction == int(label))
                store.add_result(
                    run_id, idx=index, label=int(label), predict=prediction, radius=radius, correct=is_correct,
                    n_a=n_a, n=config.n, n0=config.n0 if config.kind == "certify" else None, alpha=config.alpha,
                    seconds=seconds,
                )
                count += 1
                correct += is_correct
                radius_sum += radius * is_correct
            progress.update(task, advance=len(chunk),
                            status=f"accuracy {correct / count:.3f}  ACR {radius_sum / count:.3f}")
    store.finish_run(run_id)
    return run_id
