"""The training engine: data, SGD with Nesterov momentum, the step schedule, per-epoch noisy test
accuracy, atomic checkpoints, exact resume and progress. Methods only supply their loss and steps."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rsbench.checkpoint import CHECKPOINT_NAME, atomic_save, load_checkpoint
from rsbench.data import data_root, head, iterate_batches
from rsbench.errors import RsbenchError
from rsbench.methods import TrainingMethod, noisy_copies
from rsbench.nets import build_classifier
from rsbench.params import params_to_dict, parse_params
from rsbench.plugins import get_dataset, get_method
from rsbench.progress import console, make_progress
from rsbench.provenance import auto_device, provenance
from rsbench.specs import Schedule

LOG_NAME = "log.tsv"


@dataclasses.dataclass
class TrainConfig:
    """One training run. ``None`` schedule fields take the dataset's paper schedule."""

    dataset: str
    arch: str
    method: str
    sigma: float
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    out: str = "runs/train"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    milestones: tuple[int, ...] | None = None
    seed: int = 0
    train_limit: int | None = None
    test_limit: int | None = None
    data_dir: str | None = None
    device: str | None = None
    workers: int = 2
    preset: str | None = None


@dataclasses.dataclass
class TrainResult:
    checkpoint: Path
    epochs: int
    test_accuracy: float
    images_per_second: float
    noisy_passes_per_second: float
    meta: dict[str, Any]


def resolve(config: TrainConfig) -> tuple[Any, TrainingMethod, Schedule, dict[str, Any]]:
    """Validate a config: the dataset, the method with its typed parameters, the schedule."""
    if not (isinstance(config.sigma, int | float) and math.isfinite(config.sigma) and config.sigma > 0):
        raise RsbenchError(f"sigma must be a positive number, not {config.sigma}", "e.g. --sigma 0.5")
    dataset = get_dataset(config.dataset)
    method_cls = get_method(config.method)
    params = parse_params(method_cls.Params, config.params, f"method {config.method!r}")
    base = dataset.schedule
    schedule = dataclasses.replace(
        base,
        epochs=config.epochs if config.epochs is not None else base.epochs,
        lr=config.lr if config.lr is not None else base.lr,
        batch_size=config.batch_size if config.batch_size is not None else base.batch_size,
        milestones=tuple(config.milestones) if config.milestones is not None else base.milestones,
    )
    for name, value in (("epochs", schedule.epochs), ("batch size", schedule.batch_size)):
        if value < 1:
            raise RsbenchError(f"{name} must be at least 1, not {value}")
    if not schedule.lr > 0:
        raise RsbenchError(f"learning rate must be positive, not {schedule.lr}")
    return dataset, method_cls(params, float(config.sigma)), schedule, params_to_dict(params)


def learning_rate(schedule: Schedule, epoch: int) -> float:
    """lr at 0-based ``epoch``: multiplied by ``gamma`` at every milestone reached."""
    return schedule.lr * schedule.gamma ** sum(epoch >= m for m in schedule.milestones)


@torch.no_grad()
def noisy_accuracy(model: nn.Module, dataset, sigma: float, device: torch.device, batch_size: int = 1000):
    """Accuracy and mean cross-entropy of the base classifier on one noisy copy of each example."""
    model.eval()
    correct, total, loss = 0, 0, 0.0
    for x, y in iterate_batches(dataset, batch_size, False, torch.Generator()):
        x, y = x.to(device), y.to(device)
        logits = model(noisy_copies(x, sigma))
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        total += len(y)
    return correct / max(total, 1), loss / max(total, 1)


def _run_identity(config: TrainConfig, params: dict, schedule: Schedule) -> dict[str, Any]:
    """What must match for ``--resume`` to continue a run rather than start another."""
    return {
        "dataset": config.dataset, "arch": config.arch, "method": config.method, "params": params,
        "sigma": float(config.sigma), "seed": config.seed, "train_limit": config.train_limit,
        "schedule": dataclasses.asdict(schedule),
    }


def train(config: TrainConfig, resume: bool = False, show_progress: bool = True) -> TrainResult:
    dataset, method, schedule, params = resolve(config)
    device = auto_device(config.device)
    out = Path(config.out)
    checkpoint_path = out / CHECKPOINT_NAME
    identity = _run_identity(config, params, schedule)
    root = data_root(config.data_dir)
    train_set = head(dataset.load(root, "train", True), config.train_limit)
    test_set = head(dataset.load(root, "test", False), config.test_limit)

    torch.manual_seed(config.seed)
    model = build_classifier(config.arch, dataset).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=schedule.lr, momentum=schedule.momentum,
        weight_decay=schedule.weight_decay, nesterov=True,
    )
    start_epoch, test_acc = 0, float("nan")
    if resume and checkpoint_path.exists():
        start_epoch, test_acc = _restore(checkpoint_path, identity, model, optimizer)
    elif checkpoint_path.exists():
        raise RsbenchError(
            f"{checkpoint_path} already exists", "pass --resume to continue that run, or choose another --out"
        )
    elif resume:
        raise RsbenchError(f"nothing to resume: {checkpoint_path} does not exist", "drop --resume")

    meta = {
        **identity,
        "normalization": {
            "kind": dataset.normalization.kind,
            "mean": list(dataset.normalization.mean), "std": list(dataset.normalization.std),
        },
        "preset": config.preset,
        "test_limit": config.test_limit,
        "provenance": provenance(device),
    }
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_NAME
    if start_epoch == 0:
        log_path.write_text("epoch\ttime\tlr\ttrain_loss\ttest_loss\ttest_acc\n")

    examples, train_seconds = 0, 0.0
    steps_per_epoch = math.ceil(len(train_set) / schedule.batch_size)
    with make_progress(show_progress) as progress:
        task = progress.add_task(
            f"train {config.method}", total=(schedule.epochs - start_epoch) * steps_per_epoch, status=""
        )
        for epoch in range(start_epoch, schedule.epochs):
            lr = learning_rate(schedule, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            method.start_epoch(epoch, schedule)
            model.train()
            generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            started = time.perf_counter()
            loss_sum, loss_count = torch.zeros((), device=device), 0  # summed on the device: no sync per step
            for step, (x, y) in enumerate(
                iterate_batches(train_set, schedule.batch_size, True, generator, config.workers)
            ):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                for chunk_x, chunk_y in method.split_batch(x, y):
                    loss = method.loss(model, chunk_x, chunk_y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.detach() * len(chunk_y)
                    loss_count += len(chunk_y)
                examples += len(y)
                progress.advance(task)
                if step % 20 == 0:
                    mean_loss = loss_sum.item() / max(loss_count, 1)
                    progress.update(task, status=f"epoch {epoch + 1}/{schedule.epochs} loss {mean_loss:.4f}")
            elapsed = time.perf_counter() - started
            train_seconds += elapsed
            test_acc, test_loss = noisy_accuracy(model, test_set, method.sigma, device)
            train_loss = loss_sum.item() / max(loss_count, 1)
            meta["rng_state"] = torch.get_rng_state()
            if device.type == "cuda":
                meta["cuda_rng_state"] = torch.cuda.get_rng_state(device)
            meta["test_accuracy"] = test_acc
            atomic_save(
                {"epoch": epoch + 1, "arch": config.arch, "state_dict": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "rsbench": meta},
                checkpoint_path,
            )
            with log_path.open("a") as log:  # after the checkpoint: a resumed run never logs an epoch twice
                log.write(f"{epoch + 1}\t{elapsed:.3f}\t{lr:.6g}\t{train_loss:.4f}\t{test_loss:.4f}\t{test_acc:.4f}\n")
            progress.console.print(
                f"epoch {epoch + 1:>3}/{schedule.epochs}  lr {lr:.4g}  train loss {train_loss:.4f}  "
                f"noisy test acc {test_acc:.4f}  {len(train_set) / elapsed:,.0f} img/s"
            )
    rate = examples / train_seconds if train_seconds else float("nan")
    return TrainResult(
        checkpoint_path, schedule.epochs, test_acc, rate, rate * method.noisy_passes_per_example, meta
    )


def _restore(path: Path, identity: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    """Load an interrupted run's state; returns the epochs done and the last noisy test accuracy."""
    checkpoint = load_checkpoint(path)
    meta = checkpoint.get("rsbench")
    if not isinstance(meta, dict):
        raise RsbenchError(f"{path} was not written by rsbench train", "cannot resume it; choose another --out")
    recorded = {key: meta.get(key) for key in identity}
    if recorded != identity:
        differing = sorted(k for k in identity if recorded[k] != identity[k])
        raise RsbenchError(
            f"{path} belongs to a different run (differs in: {', '.join(differing)})",
            "resume with the same settings, or choose another --out",
        )
    model.load_state_dict(checkpoint["state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(meta["rng_state"])
    if "cuda_rng_state" in meta and next(model.parameters()).is_cuda:
        torch.cuda.set_rng_state(meta["cuda_rng_state"], next(model.parameters()).device)
    console.print(f"resuming {path} after epoch {checkpoint['epoch']}")
    return int(checkpoint["epoch"]), float(meta.get("test_accuracy", float("nan")))

