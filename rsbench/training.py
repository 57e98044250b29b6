"""The training engine: data, SGD with momentum, the step schedule, per-epoch noisy test
accuracy, atomic checkpoints, exact resume and progress. Methods only supply their loss and steps."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.markup import escape
from torch import nn

from rsbench.checkpoint import CHECKPOINT_NAME, atomic_save, load_checkpoint
from rsbench.config import TrainConfig
from rsbench.data import data_root, head, iterate_batches
from rsbench.distributed import World, current_world, rank_device
from rsbench.errors import RsbenchError, check_seed, check_sigma
from rsbench.methods import TrainingMethod, noisy_copies
from rsbench.nets import build_classifier
from rsbench.params import params_to_dict, parse_params
from rsbench.plugins import get_dataset, get_method, plugin_sources
from rsbench.progress import console, make_progress
from rsbench.provenance import auto_device, file_sha256, provenance
from rsbench.specs import Schedule

LOG_NAME = "log.tsv"


@dataclasses.dataclass
class TrainResult:
    checkpoint: Path
    checkpoint_sha256: str | None  # the final checkpoint's identity in the store (None on ranks other than 0)
    epochs: int
    test_accuracy: float
    images_per_second: float | None  # None when nothing was left to train (a resumed, finished run)
    noisy_passes_per_second: float | None
    meta: dict[str, Any]


def resolve(config: TrainConfig) -> tuple[Any, TrainingMethod, Schedule, dict[str, Any]]:
    """Validate a config: the dataset, the method with its typed parameters, the schedule."""
    check_sigma(config.sigma)
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
        nesterov=config.nesterov if config.nesterov is not None else base.nesterov,
    )
    for name, value in (
        ("epochs", schedule.epochs),
        ("batch size", schedule.batch_size),
        ("train limit", config.train_limit),
        ("test limit", config.test_limit),
    ):
        if value is not None and value < 1:
            raise RsbenchError(f"{name} must be at least 1, not {value}")
    if not (math.isfinite(schedule.lr) and schedule.lr > 0):
        raise RsbenchError(f"learning rate must be a positive number, not {schedule.lr}", "e.g. --lr 0.01")
    check_seed(config.seed)
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
        "dataset": config.dataset,
        "arch": config.arch,
        "method": config.method,
        "params": params,
        "sigma": float(config.sigma),
        "seed": config.seed,
        "train_limit": config.train_limit,
        "schedule": dataclasses.asdict(schedule),
    }


@dataclasses.dataclass
class Session:
    """A training run's live state: what the epochs read and update."""

    config: TrainConfig
    world: World
    method: TrainingMethod
    schedule: Schedule
    model: nn.Module  # the plain model: evaluated and saved
    step_model: nn.Module  # what the method's loss calls: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    train_set: Any
    test_set: Any
    device: torch.device
    out: Path
    meta: dict[str, Any]
    start_epoch: int
    test_accuracy: float
    partial: dict[str, Any] | None = None  # where an interrupted epoch stopped (see save_partial)
    last_save: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME


def make_optimizer(model: nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    """SGD with momentum (Nesterov's if the schedule says so) and weight decay, as the official code."""
    return torch.optim.SGD(
        model.parameters(),
        lr=schedule.lr,
        momentum=schedule.momentum,
        weight_decay=schedule.weight_decay,
        nesterov=schedule.nesterov,
    )


def open_session(config: TrainConfig, resume: bool) -> Session:
    """Validate the config, load the data, build model and optimizer, and restore them with ``resume``.
    Under torchrun every rank opens the same session; rank 0's checkpoint is broadcast to all."""
    dataset, method, schedule, params = resolve(config)
    world = current_world(config.device)
    if schedule.batch_size % world.size:
        raise RsbenchError(
            f"batch size {schedule.batch_size} is not divisible by the {world.size} processes",
            "choose --batch as a multiple of the number of processes",
        )
    device = auto_device(rank_device(world, config.device))
    identity = _run_identity(config, params, schedule)
    world.agree(identity, "the run's settings")
    root = data_root(config.data_dir)
    train_set = head(dataset.load(root, "train", True), config.train_limit)
    test_set = head(dataset.load(root, "test", False), config.test_limit)
    torch.manual_seed(config.seed)
    model = build_classifier(config.arch, dataset).to(device)
    optimizer = make_optimizer(model, schedule)
    steps = math.ceil(len(train_set) / schedule.batch_size)
    start_epoch, test_accuracy, partial = _start_state(
        Path(config.out) / CHECKPOINT_NAME, resume, identity, model, optimizer, world, steps
    )
    method_inputs = _prepare_method(method, dataset, root, config.train_limit, device, world)
    if resume and method_inputs and world.main:
        _check_same_inputs(Path(config.out) / CHECKPOINT_NAME, method_inputs["method_inputs"])
    normalization = dataset.normalization
    meta = {
        **identity,
        "normalization": {"kind": normalization.kind, "mean": list(normalization.mean), "std": list(normalization.std)},
        "preset": config.preset,
        "test_limit": config.test_limit,
        "world_size": world.size,
        "provenance": {
            **provenance(device),
            "world_size": world.size,
            "plugins": plugin_sources(method=config.method, architecture=config.arch, dataset=config.dataset),
            **method_inputs,
        },
    }
    step_model: nn.Module = model
    if world.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        step_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return Session(
        config,
        world,
        method,
        schedule,
        model,
        step_model,
        optimizer,
        train_set,
        test_set,
        device,
        Path(config.out),
        meta,
        start_epoch,
        test_accuracy,
        partial,
    )


def _prepare_method(
    method: TrainingMethod, dataset: Any, root: Path, train_limit: int | None, device: torch.device, world: World
) -> dict[str, Any]:
    """The method's one-off preparation (:meth:`TrainingMethod.prepare`): rank 0 first (it may compute and
    cache), the other ranks after it; returns what the provenance records (``method_inputs``), if anything."""

    def plain_train_set():
        return head(dataset.load(root, "train", False), train_limit)

    recorded = method.prepare(dataset.name, plain_train_set, device) if world.main else {}
    recorded = world.broadcast(recorded)
    if not world.main:
        method.prepare(dataset.name, plain_train_set, device)
    return {"method_inputs": recorded} if recorded else {}


def _check_same_inputs(path: Path, current: dict[str, Any]) -> None:
    """A resumed run must see the inputs it started with (the same reference checkpoint, by sha256)."""
    recorded = (load_checkpoint(path).get("rsbench") or {}).get("provenance", {}).get("method_inputs") or {}
    for key, value in recorded.items():
        if key.endswith("sha256") and current.get(key) != value:
            raise RsbenchError(
                f"{path} was trained with other inputs ({key} {value[:12]}…, now {str(current.get(key))[:12]}…)",
                "resume with the file it started with, or choose another --out",
            )


def train_epoch(session: Session, epoch: int, progress: Any, task: Any) -> tuple[float, int]:
    """One epoch of the method's steps at the schedule's learning rate (continuing a partial epoch saved by
    :func:`save_partial`); returns (mean loss, examples)."""
    lr = learning_rate(session.schedule, epoch)
    for group in session.optimizer.param_groups:
        group["lr"] = lr
    session.method.start_epoch(epoch, session.schedule)
    session.model.train()
    world, partial = session.world, session.partial
    generator = torch.Generator().manual_seed(session.config.seed * 100_003 + epoch)
    loss_sum = torch.zeros((), device=session.device)  # summed on the device: no sync per step
    loss_count, examples, first = 0, 0, 0
    if partial is not None:
        first, examples, loss_count = partial["step"], partial["examples"], partial["loss_count"]
        loss_sum += partial["loss_sum"]
    batches = iterate_batches(
        session.train_set,
        session.schedule.batch_size,
        True,
        generator,
        session.config.workers,
        shard=(world.rank, world.size),
        resume_at=(first, partial["generator_state"]) if partial is not None else None,
        with_indices=session.method.needs_example_index,
    )
    session.partial = None
    for step, batch in enumerate(batches, start=first):
        x, y = batch[0].to(session.device, non_blocking=True), batch[1].to(session.device, non_blocking=True)
        if session.method.needs_example_index:  # (label, index in the training set) per example
            y = torch.stack([y, batch[2].to(session.device)], dim=1)
        for chunk_x, chunk_y in session.method.split_batch(x, y):
            loss = session.method.loss(session.step_model, chunk_x, chunk_y)
            session.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            session.optimizer.step()
            loss_sum += loss.detach() * len(chunk_y)
            loss_count += len(chunk_y)
        examples += len(y) * world.size
        progress.advance(task)
        if step % 20 == 19:
            mean_loss = loss_sum.item() / max(loss_count, 1)
            progress.update(task, status=f"epoch {epoch + 1}/{session.schedule.epochs} loss {mean_loss:.4f}")
            if world.broadcast(time.monotonic() - session.last_save >= session.config.checkpoint_every):
                save_partial(
                    session,
                    epoch,
                    {
                        "step": step + 1,
                        "examples": examples,
                        "loss_count": loss_count,
                        "loss_sum": loss_sum.item(),
                        "generator_state": generator.get_state(),
                    },
                )
    return loss_sum.item() / max(loss_count, 1), examples


def save_checkpoint(session: Session, epochs_done: int, partial: dict[str, Any] | None) -> None:
    """Rank 0 writes the checkpoint atomically with every rank's RNG state (all ranks must call this)."""
    rng_states = session.world.gather(
        (torch.get_rng_state(), torch.cuda.get_rng_state(session.device) if session.device.type == "cuda" else None)
    )
    session.last_save = time.monotonic()
    if not session.world.main:
        return
    session.meta.update(rng_states=rng_states, test_accuracy=session.test_accuracy, partial_epoch=partial)
    atomic_save(
        {
            "epoch": epochs_done,
            "arch": session.config.arch,
            "state_dict": session.model.state_dict(),
            "optimizer": session.optimizer.state_dict(),
            "rsbench": session.meta,
        },
        session.checkpoint_path,
    )


def save_partial(session: Session, epoch: int, partial: dict[str, Any]) -> None:
    """A checkpoint within ``epoch``: the batches done, the data order's generator state, the loss so far."""
    save_checkpoint(session, epoch, {**partial, "epoch": epoch})


def save_epoch(session: Session, epoch: int, elapsed: float, train_loss: float) -> str:
    """Rank 0 evaluates; the checkpoint is written; rank 0 appends the log line and returns it to show."""
    if session.world.main:
        session.test_accuracy, test_loss = noisy_accuracy(
            session.model, session.test_set, session.method.sigma, session.device
        )
    save_checkpoint(session, epoch + 1, None)
    if not session.world.main:
        return ""
    lr = learning_rate(session.schedule, epoch)
    line = f"{epoch + 1}\t{elapsed:.3f}\t{lr:.6g}\t{train_loss:.4f}\t{test_loss:.4f}\t{session.test_accuracy:.4f}\n"
    with (session.out / LOG_NAME).open("a") as log:  # after the checkpoint: a resumed run never logs an epoch twice
        log.write(line)
    return (
        f"epoch {epoch + 1:>3}/{session.schedule.epochs}  lr {lr:.4g}  train loss {train_loss:.4f}  "
        f"noisy test acc {session.test_accuracy:.4f}  {len(session.train_set) / elapsed:,.0f} img/s"
    )


def train(
    config: TrainConfig, resume: bool = False, show_progress: bool = True, ready: Callable[[], object] | None = None
) -> TrainResult:
    """Train (or resume) the run ``config`` describes; returns its checkpoint and figures. ``ready`` (rank 0
    only) is called once the run is validated and restored, before anything is written: the command line
    opens the store there, so a refused run creates none and a bad store fails before hours of training."""
    session = open_session(config, resume)

    def get_ready() -> None:
        if ready is not None:
            ready()

    session.world.from_main(get_ready)  # rank 0's error (a bad store) is every rank's
    main = session.world.main
    if main:
        session.out.mkdir(parents=True, exist_ok=True)
    if main and session.start_epoch == 0:
        (session.out / LOG_NAME).write_text("epoch\ttime\tlr\ttrain_loss\ttest_loss\ttest_acc\n")
    schedule = session.schedule
    examples, seconds = 0, 0.0
    steps = math.ceil(len(session.train_set) / schedule.batch_size)
    with make_progress(show_progress and main) as progress:
        task = progress.add_task(
            f"train {escape(config.method)}", total=(schedule.epochs - session.start_epoch) * steps, status=""
        )
        for epoch in range(session.start_epoch, schedule.epochs):
            started = time.perf_counter()
            train_loss, epoch_examples = train_epoch(session, epoch, progress, task)
            elapsed = time.perf_counter() - started
            examples, seconds = examples + epoch_examples, seconds + elapsed
            line = save_epoch(session, epoch, elapsed, train_loss)
            if main:
                progress.console.print(line)
    rate = examples / seconds if seconds else None
    passes = rate * session.method.noisy_passes_per_example if rate is not None else None
    checkpoint = session.checkpoint_path
    sha256 = file_sha256(checkpoint) if main else None  # only rank 0 writes (and records) the checkpoint
    return TrainResult(checkpoint, sha256, schedule.epochs, session.test_accuracy, rate, passes, session.meta)


def _start_state(
    path: Path,
    resume: bool,
    identity: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    world: World,
    steps: int,
) -> tuple[int, float, dict[str, Any] | None]:
    """Epochs done, last noisy test accuracy and where a partial epoch stopped: (0, nan, None) for a new
    run, else restored from ``path`` (whose epochs have ``steps`` steps each)."""
    exists = world.broadcast(path.exists())
    if exists and not resume:
        raise RsbenchError(f"{path} already exists", "pass --resume to continue that run, or choose another --out")
    if resume and not exists:
        raise RsbenchError(f"nothing to resume: {path} does not exist", "drop --resume")
    if resume:
        checkpoint = world.from_main(lambda: load_checkpoint(path))  # rank 0's error is every rank's
        return _restore(checkpoint, path, identity, model, optimizer, world, steps)
    if world.rank:
        torch.manual_seed(identity["seed"] + 1_000_003 * world.rank)  # each rank its own noise; rank 0 as one process
    return 0, float("nan"), None


def _restore(
    checkpoint: dict[str, Any],
    path: Path,
    identity: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    world: World,
    steps: int,
) -> tuple[int, float, dict[str, Any] | None]:
    """Load an interrupted run's state: the epochs done, the last noisy test accuracy and where a partial
    epoch stopped, every field checked first (:func:`check_resume_state`). Each rank gets back its RNG state
    when the world has the size it was saved with, else a fresh per-rank seed."""
    meta = checkpoint.get("rsbench")
    if not isinstance(meta, dict) or "rng_states" not in meta:
        raise RsbenchError(
            f"{path} was not written by rsbench train (or by an older version)",
            "cannot resume it; choose another --out",
        )
    recorded = {key: meta.get(key) for key in identity}
    if recorded != identity:
        differing = sorted(k for k in identity if recorded[k] != identity[k])
        raise RsbenchError(
            f"{path} belongs to a different run (differs in: {', '.join(differing)})",
            "resume with the same settings, or choose another --out",
        )
    epoch, test_accuracy, partial = check_resume_state(checkpoint, path, identity["schedule"]["epochs"], steps)
    restore_weights(checkpoint, path, model, optimizer)
    if len(meta["rng_states"]) == world.size:
        cpu_state, cuda_state = meta["rng_states"][world.rank]
        torch.set_rng_state(cpu_state)
        if cuda_state is not None and next(model.parameters()).is_cuda:
            torch.cuda.set_rng_state(cuda_state, next(model.parameters()).device)
    else:
        torch.manual_seed(identity["seed"] + 1_000_003 * world.rank + 7_919 * epoch)
    if world.main:
        within = f", step {partial['step']} of epoch {epoch + 1}" if partial else ""
        console.print(f"resuming {path} after epoch {epoch}{within}", markup=False)
    return epoch, test_accuracy, partial


def _damaged(path: Path, what: str) -> RsbenchError:
    return RsbenchError(f"{path} is damaged: {what}", "cannot resume from it; restore the file or choose another --out")


def _is_whole(value: Any, low: int, high: float = math.inf) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_generator_state(state: Any, device: str = "cpu") -> bool:
    """Whether ``state`` is one a torch generator on ``device`` accepts (tried on a scratch generator)."""
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
        return False
    if device != "cpu":
        return True  # checked when set: only on a machine with that device
    try:
        torch.Generator().set_state(state)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def check_resume_state(
    checkpoint: dict[str, Any], path: Path, epochs: int, steps: int
) -> tuple[int, float, dict[str, Any] | None]:
    """The epochs done, last noisy test accuracy and partial-epoch position of a checkpoint to resume,
    each checked: epochs within the schedule's ``epochs``, an accuracy in [0, 1] (or NaN before the first
    epoch), one (CPU, CUDA) RNG state pair per saved rank that torch accepts, and a partial epoch within
    the ``steps`` of an epoch with finite loss sums. A damaged field is one :class:`RsbenchError` line."""
    meta = checkpoint["rsbench"]
    epoch = checkpoint.get("epoch")
    if not isinstance(epoch, int) or not _is_whole(epoch, 0, epochs):
        raise _damaged(path, f"its epoch {epoch!r} is not a whole number from 0 to {epochs}")
    accuracy = meta.get("test_accuracy", math.nan)
    if accuracy is None:
        accuracy = math.nan
    if (
        isinstance(accuracy, bool)
        or not isinstance(accuracy, int | float)
        or not (0 <= accuracy <= 1 or math.isnan(accuracy))
    ):
        raise _damaged(path, f"its test accuracy {accuracy!r} is not a fraction")
    rng_states = meta["rng_states"]
    if (
        not isinstance(rng_states, list | tuple)
        or not rng_states
        or not all(isinstance(pair, list | tuple) and len(pair) == 2 for pair in rng_states)
        or not all(_is_generator_state(cpu) for cpu, _ in rng_states)
        or not all(cuda is None or _is_generator_state(cuda, "cuda") for _, cuda in rng_states)
    ):
        raise _damaged(path, "its random number generator states are not ones torch saved")
    partial = meta.get("partial_epoch")
    if partial is not None:
        fields = ("step", "examples", "loss_count", "loss_sum", "generator_state", "epoch")
        if not isinstance(partial, dict) or set(partial) != set(fields):
            raise _damaged(path, f"its partial epoch must hold exactly {', '.join(fields)}")
        loss_sum = partial["loss_sum"]
        if (
            partial["epoch"] != epoch
            or epoch >= epochs
            or not _is_whole(partial["step"], 0, steps)
            or not _is_whole(partial["examples"], 0)
            or not _is_whole(partial["loss_count"], 0)
            or isinstance(loss_sum, bool)
            or not isinstance(loss_sum, int | float)
            or not math.isfinite(loss_sum)
            or not _is_generator_state(partial["generator_state"])
        ):
            raise _damaged(path, f"its partial epoch {_summary(partial)} is not a position within epoch {epoch + 1}")
    return epoch, float(accuracy), partial


def _summary(partial: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in partial.items() if k != "generator_state") + "}"


def restore_weights(checkpoint: dict[str, Any], path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the model's weights and the optimizer's state, refusing weights that do not fit the model,
    non-finite numbers, and optimizer state whose hyperparameters or buffers are not the run's."""
    weights = checkpoint["state_dict"]
    if not all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()):
        raise _damaged(path, "its weights hold NaN or infinite numbers")
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise _damaged(
            path, f"its weights do not fit the model ({str(error).splitlines()[-1].strip()[:120]})"
        ) from None
    expected = [
        {k: v for k, v in group.items() if k not in ("params", "lr", "initial_lr")}
        for group in optimizer.state_dict()["param_groups"]
    ]
    saved = checkpoint.get("optimizer")
    try:
        if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
            raise TypeError("not an optimizer's state_dict")
        groups = saved["param_groups"]
        if len(groups) != len(expected) or any(
            group[key] != value
            for group, wanted in zip(groups, expected, strict=True)
            for key, value in wanted.items()
            if key in group
        ):
            raise ValueError("hyperparameters differ")
        optimizer.load_state_dict(saved)
    except (TypeError, KeyError, ValueError, IndexError, RuntimeError, AttributeError):
        raise _damaged(path, "its optimizer state is not that of this run's optimizer") from None
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if not isinstance(value, torch.Tensor) or (value.dim() and value.shape != parameter.shape):
                    raise _damaged(path, f"its optimizer's {name} does not fit the weights")
                if value.is_floating_point() and not torch.isfinite(value).all():
                    raise _damaged(path, f"its optimizer's {name} holds NaN or infinite numbers")
