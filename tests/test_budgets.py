"""A budget's name is a claim about a whole row (rsbench.budgets): checked where given, worked out where not."""

import dataclasses
from pathlib import Path

import pytest

from rsbench.budgets import BUDGETS, Certification, label
from rsbench.errors import RsbenchError
from rsbench.plugins import get_dataset
from rsbench.results.record_schema import RecordReader

MNIST = get_dataset("mnist")
PAPER = {"schedule": dataclasses.asdict(MNIST.schedule), "train_limit": None}  # the paper's 90 epochs
QUICK = {"schedule": {**PAPER["schedule"], "epochs": 10, "milestones": (3, 7)}, "train_limit": None}
UNSCALED = {"schedule": {**QUICK["schedule"], "milestones": (30, 60)}, "train_limit": None}  # never drops the lr
OFFICIAL: dict = {}  # an official checkpoint records no schedule
EVERY_20TH = range(0, 10_000, 20)


def certified(indices=EVERY_20TH, n0=100, n=100_000, alpha=0.001, split="test"):
    return Certification(split, n0, n, alpha, list(indices), 10_000)


@pytest.mark.parametrize(
    ("run", "meta", "epochs", "expected"),
    [
        (certified(), PAPER, 90, "paper-subset"),
        (certified(range(10_000)), PAPER, 90, "full"),
        (certified(range(10_000)), OFFICIAL, None, "full"),
        (certified(range(0, 10_000, 50), n=10_000), QUICK, 10, "quick"),
        (certified(n=10_000), PAPER, 90, "custom"),  # the paper's model, another N
        (certified(n0=1_000), PAPER, 90, "custom"),
        (certified(alpha=0.01), PAPER, 90, "custom"),
        (certified(range(0, 10_000, 20)[:100]), PAPER, 90, "custom"),  # the first 100 of the subset only
        (certified(range(1, 10_000, 20)), PAPER, 90, "custom"),  # off by one
        (certified(split="train"), PAPER, 90, "custom"),
        (certified(), PAPER, 40, "custom"),  # a checkpoint taken while it trained
        (certified(), {**PAPER, "train_limit": 1024}, 90, "custom"),
        (certified(), {"schedule": {**PAPER["schedule"], "lr": 0.1}, "train_limit": None}, 90, "custom"),
        (certified(range(0, 10_000, 50), n=10_000), UNSCALED, 10, "custom"),
        (certified(range(0, 10_000, 50), n=10_000), OFFICIAL, None, "custom"),  # the paper's model, quick protocol
    ],
)  # fmt: skip
def test_a_run_left_unlabelled_gets_the_budget_it_keeps_in_full(run, meta, epochs, expected):
    assert label(None, run, meta, epochs, MNIST) == expected


@pytest.mark.parametrize(
    ("given", "run", "meta", "epochs", "says"),
    [
        ("paper-subset", certified(range(10_000)), PAPER, 90, "other test images (not test indices 0, 20, 40, …)"),
        ("paper-subset", certified(), PAPER, 40, "its training stopped after 40 of 90 epochs"),
        ("full", certified(range(10_000), n=10_000), PAPER, 90, "N 10,000 (not 100,000)"),
        ("quick", certified(range(0, 10_000, 50), n=10_000), OFFICIAL, None, "an official checkpoint"),
        ("quick", certified(range(0, 10_000, 50), n=10_000), PAPER, 90, "trained with epochs 90 (not 10)"),
        ("Paper-Subset", certified(), PAPER, 90, "too close to the named budget 'paper-subset'"),
    ],
)
def test_a_named_budget_that_the_run_does_not_keep_is_refused_with_what_differs(given, run, meta, epochs, says):
    with pytest.raises(RsbenchError) as error:
        label(given, run, meta, epochs, MNIST)
    assert says in str(error.value)


def test_a_named_budget_the_run_keeps_and_a_free_label_are_taken_as_given():
    assert label("paper-subset", certified(), PAPER, 90, MNIST) == "paper-subset"
    assert label("quick-n1000", certified(n=1_000), PAPER, 90, MNIST) == "quick-n1000"


RSBENCH_RECORDS = sorted(
    path
    for folder in ("mnist-quick", "mnist-heldout", "mnist-paper")
    for path in (Path(__file__).parents[1] / "leaderboards" / "records" / folder).glob("*.json.gz")
)


@pytest.mark.parametrize("path", RSBENCH_RECORDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_rsbench_record_keeps_the_budget_it_is_labelled_with(path):
    """The import-time check (certification side: N0, N, α, split, images) on rsbench's own committed runs; a
    label that names a budget is one of them, the rest are free labels such as quick-model."""
    protocol = RecordReader(path).header.protocol
    assert protocol.budget is not None
    assert protocol.budget in BUDGETS or protocol.budget in ("custom", "quick-model") or "ep" in protocol.budget
