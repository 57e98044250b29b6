"""Named budgets: what each promises about a row's training and certification, and the label a certification
run gets.

A budget scales an experiment (``rsbench reproduce --budget``); it is recorded in every certification run
(``budget``) so that a scaled row is never mistaken for a full one in a leaderboard:

- ``full``: the paper's settings (dataset schedule, all training images, all test images, N0=100, N=100,000,
  α=0.001).
- ``paper-subset``: the paper's training and certification protocol on every 20th test image (500 of MNIST's
  or CIFAR-10's 10,000): the paper's rows as the paper ran them, certified in a twentieth of the time. Its
  models are those of ``full`` (same run folders), so either budget reuses the other's training.
- ``quick``: 10 epochs (learning-rate drops scaled to the same fractions of training), every 50th test
  image, N=10,000: the shape of the paper's results on a CPU in minutes per row.
- ``smoke``: 1 epoch on 512 images, 20 test images, N=1,000: checks that an experiment runs end to end.

A budget's name is a claim about the whole row, so a run is labelled with one only when it keeps every
promise (:func:`label`): a name given with ``--budget`` is checked, and with none a run gets the name of the
budget it matches, else ``custom``. Other names are free labels. Method hyperparameters counted in epochs
(SmoothAdv's ε warm-up) are not rescaled.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from rsbench.errors import RsbenchError, did_you_mean
from rsbench.plugins import get_dataset
from rsbench.specs import Dataset

UNNAMED = "custom"  # the label of a run that keeps no named budget's promises


def every_nth(size: int, skip: int, limit: int | None) -> list[int]:
    """The test indices ``0, skip, 2·skip, …`` of a split of ``size`` images, at most ``limit`` (None: all):
    the one definition of a budget's (and ``--skip``/``--limit``'s) image selection."""
    return list(range(0, size, skip))[:limit]


@dataclasses.dataclass(frozen=True)
class Budget:
    """Training (``epochs``: None for the dataset's paper schedule; ``train_limit`` images, None for all) and
    certification (N0, N, α; test indices ``0, skip, 2·skip, …``, at most ``limit``) of every row;
    ``test_limit`` caps the noisy test accuracy printed while training."""

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


BUDGETS = {  # cheapest first
    "smoke": Budget("smoke", 1, 20, 1_000, 0.001, 1, 20, train_limit=512, test_limit=200),
    "quick": Budget("quick", 10, 100, 10_000, 0.001, 50, None),
    "paper-subset": Budget("paper-subset", None, 100, 100_000, 0.001, 20, None, trains_as="full"),
    "full": Budget("full", None, 100, 100_000, 0.001, 1, None),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise RsbenchError(f"unknown budget {name!r}", did_you_mean(name, BUDGETS))
    return BUDGETS[name]


def scaled_milestones(dataset: str, epochs: int | None) -> tuple[int, ...] | None:
    """The dataset's lr milestones at the same fractions of a shorter run."""
    if epochs is None:
        return None
    schedule = get_dataset(dataset).schedule
    return tuple(max(1, round(m * epochs / schedule.epochs)) for m in schedule.milestones)


def selection_text(budget: Budget) -> str:
    """Which test images a budget certifies: ``test indices 0, 50, 100, …``, ``the first 20 test images``."""
    if budget.skip == 1:
        return f"the first {budget.limit:,} test images" if budget.limit else "all test images"
    return f"test indices 0, {budget.skip}, {2 * budget.skip}, …" + (
        f", at most {budget.limit:,}" if budget.limit else ""
    )


def budget_text(budget: Budget) -> str:
    """What a budget does per row: ``10 epochs on all training images; test indices 0, 50, 100, …, N0 100 +
    N 10,000 draws each``."""
    epochs = f"{budget.epochs} epoch{'s' * (budget.epochs != 1)}" if budget.epochs else "the paper's epochs"
    images = f"{budget.train_limit:,}" if budget.train_limit else "all"
    return (
        f"{epochs} on {images} training images; {selection_text(budget)}, N0 {budget.n0:,} + N {budget.n:,} draws each"
    )


@dataclasses.dataclass(frozen=True)
class Certification:
    """What a certification run does, as a budget sees it: ``n0`` None for PREDICT; ``split_size`` None where
    the dataset's split has no fixed size (then the images are checked as ``0, skip, 2·skip, …`` only)."""

    split: str
    n0: int | None
    n: int
    alpha: float
    indices: Sequence[int]
    split_size: int | None


def training_differences(budget: Budget, meta: dict[str, Any], epochs_done: int | None, dataset: Dataset) -> list[str]:
    """How a model (its checkpoint's ``meta`` and the epochs it holds) was not trained as ``budget`` trains.
    An official checkpoint (no recorded schedule) counts as the paper's training."""
    schedule = meta.get("schedule")
    if schedule is None:
        return [] if budget.epochs is None else ["an official checkpoint, not trained by rsbench for this budget"]
    paper = dataset.schedule
    epochs = budget.epochs or paper.epochs
    milestones = scaled_milestones(dataset.name, budget.epochs) or paper.milestones
    wanted = {"epochs": epochs, "lr": paper.lr, "milestones": list(milestones), "batch_size": paper.batch_size}
    differences = [
        f"trained with {key} {schedule[key]} (not {value})"
        for key, value in wanted.items()
        if (list(schedule[key]) if key == "milestones" else schedule[key]) != value
    ]
    if meta.get("train_limit") != budget.train_limit:
        differences.append(f"trained on {meta.get('train_limit') or 'all'} images (not {budget.train_limit or 'all'})")
    if epochs_done is not None and epochs_done < schedule["epochs"]:
        differences.append(f"its training stopped after {epochs_done} of {schedule['epochs']} epochs")
    return differences


def certification_differences(budget: Budget, run: Certification) -> list[str]:
    """How a certification run does not certify as ``budget`` does."""
    differences = []
    if run.split != "test":
        differences.append(f"the {run.split} split (not test)")
    if run.n0 is not None and run.n0 != budget.n0:
        differences.append(f"N0 {run.n0:,} (not {budget.n0:,})")
    if run.n != budget.n:
        differences.append(f"N {run.n:,} (not {budget.n:,})")
    if not math.isclose(run.alpha, budget.alpha):
        differences.append(f"alpha {run.alpha:g} (not {budget.alpha:g})")
    size = run.split_size if run.split_size is not None else budget.skip * len(run.indices)
    if list(run.indices) != every_nth(size, budget.skip, budget.limit):
        differences.append(f"other test images (not {selection_text(budget)})")
    return differences


def named_budget(name: str) -> Budget | None:
    """The named budget ``name`` claims, None for a free label; an error for a case variant of a budget's name
    (``Full``), which would read as that budget without keeping it."""
    named = next((budget for key, budget in BUDGETS.items() if key.lower() == name.lower()), None)
    if named is not None and named.name != name:
        raise RsbenchError(f"budget {name!r} is too close to the named budget {named.name!r}", f"--budget {named.name}")
    return named


def label(
    given: str | None, run: Certification, meta: dict[str, Any], epochs_done: int | None, dataset: Dataset
) -> str:
    """The budget label of a certification run. A budget's name (given, or a case variant of one) must be kept
    in full, else an error that says what differs; with none given, the budget the run keeps in full, else
    ``custom``; any other name is a free label."""
    if given is not None:
        budget = named_budget(given)
        if budget is None:
            return given
        named = budget.name
        differences = training_differences(budget, meta, epochs_done, dataset) + certification_differences(budget, run)
        if differences:
            raise RsbenchError(
                f"--budget {named} means {budget_text(budget)}, alpha {budget.alpha:g}, but this run differs: "
                + "; ".join(differences),
                "leave --budget out: the run is then labelled with the budget it keeps, or custom",
            )
        return named
    for budget in BUDGETS.values():  # no run keeps two: each pair differs in N, N0 or the images
        if not training_differences(budget, meta, epochs_done, dataset) and not certification_differences(budget, run):
            return budget.name
    return UNNAMED
