"""Write nothing before validating: `train --resume` checks every field of the checkpoint it restores (one
error line for a damaged epoch, RNG state, partial-epoch position or optimizer state), a checkpoint's σ
must be a usable noise level, and a refused train, certify, predict or import creates no ./rsbench.db."""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import assert_one_error_line
from rsbench.cli import app

TRAIN = ["train", "--dataset", "mnist", "--sigma", "0.25", "--epochs", "2", "--batch", "128", "--lr", "0.05"]
TRAIN += ["--train-limit", "512", "--test-limit", "100", "--no-progress"]


def invoke(args: list[str], cwd: Path, data: Path | None = None):
    """``rsbench ARGS`` in ``cwd`` with no RSBENCH_DB: the default store is ./rsbench.db there."""
    env = {"RSBENCH_DB": None, "RSBENCH_DATA": str(data) if data else None}
    with contextlib.chdir(cwd):
        return CliRunner().invoke(app, args, env=env)


@pytest.fixture(scope="module")
def trained(toy_mnist_root, tmp_path_factory) -> Path:
    """The checkpoint of `rsbench train TRAIN` (2 epochs on 512 toy images) and its store."""
    folder = tmp_path_factory.mktemp("trained")
    result = invoke([*TRAIN, "--out", str(folder / "run"), "--data-dir", str(toy_mnist_root)], folder)
    assert result.exit_code == 0, result.output
    return folder / "run" / "checkpoint.pth.tar"


def valid_partial(steps_done: int = 1) -> dict:
    """Where a run interrupted in its second epoch stopped, as training.train_epoch records it."""
    return {
        "step": steps_done,
        "examples": 128 * steps_done,
        "loss_count": 128 * steps_done,
        "loss_sum": 2.0 * 128 * steps_done,
        "generator_state": torch.Generator().manual_seed(7).get_state(),
        "epoch": 1,
    }


def within_epoch_two(saved: dict) -> dict:
    """``saved`` rewound to a position within its second epoch (a checkpoint resume continues)."""
    saved = copy.deepcopy(saved)
    saved["epoch"] = 1
    saved["rsbench"]["partial_epoch"] = valid_partial()
    return saved


def resume(saved: dict, toy_mnist_root: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir(exist_ok=True)
    torch.save(saved, out / "checkpoint.pth.tar")
    return invoke([*TRAIN, "--out", str(out), "--data-dir", str(toy_mnist_root), "--resume"], tmp_path)


def test_a_valid_position_within_an_epoch_resumes(trained, toy_mnist_root, tmp_path):
    """The control for the damaged cases below: the same edit with valid values resumes and finishes."""
    saved = within_epoch_two(torch.load(trained, weights_only=True))
    result = resume(saved, toy_mnist_root, tmp_path)
    assert result.exit_code == 0, result.output
    assert "step 1 of epoch 2" in result.stderr
    assert torch.load(tmp_path / "run" / "checkpoint.pth.tar", weights_only=True)["epoch"] == 2


def set_in(path: tuple, value):
    """A damage: set the field at ``path`` (keys into the checkpoint) to ``value``."""

    def damage(saved: dict) -> None:
        holder = saved
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = value

    return damage


def momentum_of_wrong_shape(saved: dict) -> None:
    state = saved["optimizer"]["state"]
    first = next(iter(state))
    state[first]["momentum_buffer"] = torch.zeros(3)


def nan_momentum(saved: dict) -> None:
    state = saved["optimizer"]["state"]
    first = next(iter(state))
    state[first]["momentum_buffer"] = torch.full_like(state[first]["momentum_buffer"], math.nan)


def weight_of_wrong_shape(saved: dict) -> None:
    name = next(iter(saved["state_dict"]))
    saved["state_dict"][name] = torch.zeros(2, 2)


PARTIAL = ("rsbench", "partial_epoch")
DAMAGES = {
    "epoch negative": (set_in(("epoch",), -1), "its epoch -1 is not a whole number from 0 to 2"),
    "epoch beyond schedule": (set_in(("epoch",), 99), "its epoch 99 is not a whole number"),
    "epoch a string": (set_in(("epoch",), "two"), "its epoch 'two'"),
    "epoch a float": (set_in(("epoch",), 1.5), "its epoch 1.5"),
    "epoch a bool": (set_in(("epoch",), True), "its epoch True"),
    "test accuracy": (set_in(("rsbench", "test_accuracy"), "high"), "test accuracy 'high' is not a fraction"),
    "test accuracy above 1": (set_in(("rsbench", "test_accuracy"), 7.0), "test accuracy 7.0"),
    "rng states empty": (set_in(("rsbench", "rng_states"), []), "random number generator states"),
    "rng states a string": (set_in(("rsbench", "rng_states"), "abc"), "random number generator states"),
    "rng state short": (
        set_in(("rsbench", "rng_states"), [(torch.zeros(3, dtype=torch.uint8), None)]),
        "random number generator states",
    ),
    "rng state float": (
        set_in(("rsbench", "rng_states"), [(torch.get_rng_state().float(), None)]),
        "random number generator states",
    ),
    "rng state not a pair": (
        set_in(("rsbench", "rng_states"), [torch.get_rng_state()]),
        "random number generator states",
    ),
    "cuda state a string": (
        set_in(("rsbench", "rng_states"), [(torch.get_rng_state(), "cuda")]),
        "random number generator states",
    ),
    "partial a string": (set_in(PARTIAL, "halfway"), "its partial epoch must hold exactly"),
    "partial missing a key": (
        set_in(PARTIAL, {k: v for k, v in valid_partial().items() if k != "loss_sum"}),
        "its partial epoch must hold exactly",
    ),
    "partial step negative": (set_in((*PARTIAL, "step"), -1), "is not a position within epoch 2"),
    "partial step beyond the epoch": (set_in((*PARTIAL, "step"), 10**9), "is not a position within epoch 2"),
    "partial step a float": (set_in((*PARTIAL, "step"), 1.5), "is not a position"),
    "partial of another epoch": (set_in((*PARTIAL, "epoch"), 0), "is not a position"),
    "partial loss NaN": (set_in((*PARTIAL, "loss_sum"), math.nan), "is not a position"),
    "partial examples negative": (set_in((*PARTIAL, "examples"), -128), "is not a position"),
    "partial generator state": (
        set_in((*PARTIAL, "generator_state"), torch.zeros(5, dtype=torch.uint8)),
        "is not a position",
    ),
    "optimizer missing": (set_in(("optimizer",), None), "its optimizer state is not that of this run's optimizer"),
    "optimizer empty": (set_in(("optimizer",), {}), "its optimizer state is not"),
    "optimizer without groups": (set_in(("optimizer", "param_groups"), []), "its optimizer state is not"),
    "optimizer momentum changed": (set_in(("optimizer", "param_groups", 0, "momentum"), 0.5), "optimizer state"),
    "optimizer momentum a string": (set_in(("optimizer", "param_groups", 0, "momentum"), "x"), "optimizer state"),
    "momentum buffer of wrong shape": (momentum_of_wrong_shape, "its optimizer's momentum_buffer does not fit"),
    "momentum buffer NaN": (nan_momentum, "momentum_buffer holds NaN"),
    "weights of wrong shape": (weight_of_wrong_shape, "its weights do not fit the model"),
    "weights NaN": (
        lambda saved: saved["state_dict"].update({k: v * math.nan for k, v in saved["state_dict"].items()}),
        "its weights hold NaN",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_resume_from_a_damaged_field_is_one_line(damage, trained, toy_mnist_root, tmp_path):
    saved = within_epoch_two(torch.load(trained, weights_only=True))
    change, fragment = DAMAGES[damage]
    change(saved)
    result = resume(saved, toy_mnist_root, tmp_path)
    assert_one_error_line(result, "is damaged", fragment)
    assert not (tmp_path / "rsbench.db").exists()


@pytest.mark.parametrize("sigma", [1e308, math.inf, math.nan, -0.5, 0, "half", True])
def test_a_checkpoint_sigma_that_is_no_noise_level_is_refused_at_load(sigma, trained, toy_mnist_root, tmp_path):
    saved = torch.load(trained, weights_only=True)
    saved["rsbench"]["sigma"] = sigma
    torch.save(saved, tmp_path / "bad.pth.tar")
    for command in ("certify", "predict"):
        result = invoke([command, str(tmp_path / "bad.pth.tar"), "--n", "100"], tmp_path, toy_mnist_root)
        assert_one_error_line(result, "the checkpoint records an invalid sigma")
    assert not (tmp_path / "rsbench.db").exists()


def test_refused_commands_create_no_store(trained, toy_mnist_root, tmp_path):
    """Each command refused for a reason found after its flags parsed (its method's parameters, the
    checkpoint's settings, the data, the file to import) leaves the working folder as it was."""
    (tmp_path / "bad.tsv").write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\tnever\n")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    refused = [
        [*TRAIN, "--out", str(tmp_path / "a"), "--data-dir", str(toy_mnist_root), "--lam", "1"],
        [*TRAIN, "--out", str(tmp_path / "b"), "--data-dir", str(tmp_path / "no-data")],
        [*TRAIN, "--out", str(trained.parent), "--data-dir", str(toy_mnist_root)],  # exists, no --resume
        ["certify", str(trained), "--n", "5"],
        ["certify", str(trained), "--n", "100", "--indices", "99999"],
        ["certify", str(tmp_path / "missing.pth.tar")],
        ["predict", str(trained), "--n", "100", "--certifier", "nosuch"],
        ["import", str(tmp_path / "bad.tsv"), "--dataset", "mnist", "--method", "gaussian", "--sigma", "0.5"],
        ["import", str(tmp_path / "bad.json")],
    ]
    for args in refused:
        result = invoke(args, tmp_path, toy_mnist_root)
        assert result.exit_code == 2, (args, result.output)
        assert not (tmp_path / "rsbench.db").exists(), f"`rsbench {' '.join(args[:1])}` created ./rsbench.db"
