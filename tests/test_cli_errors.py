"""Bad input, tried as an adversarial user would: every case ends in one line on stderr with exit code 2,
no traceback, and nothing half-made (no run folder, no run in the store)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.store import open_store


def run(*args: str, env_db, data=None, cwd=None) -> subprocess.CompletedProcess:
    """``rsbench ARGS`` in this process (as the console script calls it), its exit code and output."""
    env = {"RSBENCH_DB": str(env_db), "RSBENCH_DATA": str(data) if data is not None else None}
    result = CliRunner().invoke(app, list(args), env=env, prog_name="rsbench")
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rsbench: error"), result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


USAGE_ERRORS = [
    (("nosuch",), "No such command"),
    (("certify",), "Missing argument"),
    (("leaderboard", "--dataset", "mnist", "--nn", "3"), "No such option: --nn"),
    (("certify", "ck.pth", "--n", "many"), "Invalid value for '--n'"),
    (("leaderboard",), "Missing option '--dataset'"),
    (("train", "--epochs", "1.5"), "Invalid value for '--epochs'"),
    (("export",), "Missing argument"),
]


@pytest.mark.parametrize(("args", "fragment"), USAGE_ERRORS)
def test_usage_errors_are_one_line(args, fragment, tmp_path):
    assert_one_line_error(run(*args, env_db=tmp_path / "s.db", cwd=tmp_path), fragment, "hint: see `rsbench")


def test_usage_errors_are_one_line_from_the_console_script(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rsbench", "runs", "--nn", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert_one_line_error(result, "No such option: --nn", "hint: see `rsbench runs --help`")


def test_an_unknown_certify_flag_is_checked_as_a_certifier_hyperparameter_before_anything_is_read(tmp_path):
    """Certifier hyperparameters are flags: a misspelt one names the certifier's hyperparameters, before the
    checkpoint is even opened."""
    result = run("certify", "missing.pth", "--nn", "3", env_db=tmp_path / "s.db", cwd=tmp_path)
    assert_one_line_error(result, "certifier 'cohen' has no hyperparameter 'nn'", "forward_batch")


TRAIN_ERRORS = [
    (("--lr", "inf"), "learning rate must be a positive number"),
    (("--lr", "nan"), "learning rate must be a positive number"),
    (("--lr", "-1"), "learning rate must be a positive number"),
    (("--train-limit", "0"), "train limit must be at least 1"),
    (("--test-limit", "-5"), "test limit must be at least 1"),
    (("--seed", str(2**70)), "seed must be a whole number from 0 to 4294967295"),
    (("--seed", "-1"), "seed must be a whole number from 0 to 4294967295"),
    (("--sigma", "inf"), "sigma must be a positive number"),
    (("--milestones", "a,b"), "--milestones must be comma-separated integers"),
    (("--epochs", "0"), "epochs must be at least 1"),
    (("--batch", "0"), "batch size must be at least 1"),
    (("--lam", "1"), "has no hyperparameter 'lam'"),
    (("--method", "consistencyy"), "unknown method 'consistencyy'"),
]


@pytest.mark.parametrize(("args", "fragment"), TRAIN_ERRORS)
def test_bad_training_settings_write_nothing(args, fragment, toy_mnist_root, tmp_path):
    result = run(
        "train",
        "--dataset",
        "mnist",
        "--sigma",
        "0.5",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        *args,
        env_db=tmp_path / "s.db",
        data=toy_mnist_root,
        cwd=tmp_path,
    )
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


CONFIG_FILES = [
    ("epochs: ten\n", "epochs must be int"),
    ("sigma: [0.5]\n", "sigma must be a number"),
    ("params: 3\n", "'params' must be a mapping"),
    ("milestones: 30\n", "milestones must be a list of epochs"),
    ("colour: red\n", "unknown setting 'colour'"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("epochs: [1\n", "is malformed"),
    ("seed: true\n", "seed must be int"),
]


@pytest.mark.parametrize(("text", "fragment"), CONFIG_FILES)
def test_config_file_values_of_the_wrong_type(text, fragment, toy_mnist_root, tmp_path):
    (tmp_path / "run.yaml").write_text(text)
    result = run(
        "train",
        "--dataset",
        "mnist",
        "--sigma",
        "0.5",
        "--config",
        str(tmp_path / "run.yaml"),
        "--out",
        str(tmp_path / "run"),
        env_db=tmp_path / "s.db",
        data=toy_mnist_root,
        cwd=tmp_path,
    )
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


CERTIFY_ERRORS = [
    (("--indices", ","), "--indices must be comma-separated integers"),
    (("--indices", "1.7"), "--indices must be comma-separated integers"),
    (("--indices", "1,1"), "--indices names an index twice"),
    (("--indices", "5,99999"), "outside the split"),
    (("--certifier", "cohenn"), "unknown certifier 'cohenn'"),
    (("--certifier", "adaptive"), "the adaptive certifier decides a grid of radii"),
    (("--param", "speed=3"), "certifier 'cohen' has no hyperparameter 'speed'"),
    (("--radii", "0:1e12:1e-9"), "radii"),
    (("--radii", "0:inf:1"), "radii must be"),
    (("--radii", "-1,2"), "radii must be"),
    (("--seed", str(2**62)), "the noise seed (--seed) must be a whole number"),
    (("--alpha", "nan"), "alpha must lie strictly between 0 and 1"),
    (("--alpha", "1"), "alpha must lie strictly between 0 and 1"),
    (("--n", "0"), "n must be at least 1"),
    (("--n", "5"), "CERTIFY can never certify"),
    (("--sigma", "-0.5"), "sigma must be a positive number"),
    (("--split", "validation"), "split must be train or test"),
    (("--limit", "0"), "limit must be at least 1"),
    (("--skip", "0"), "skip must be at least 1"),
]


@pytest.mark.parametrize(("args", "fragment"), CERTIFY_ERRORS)
def test_bad_certification_settings_create_no_run(args, fragment, toy_checkpoint, toy_mnist_root, tmp_path):
    result = run(
        "certify", str(toy_checkpoint), "--n", "100", *args, env_db=tmp_path / "s.db", data=toy_mnist_root, cwd=tmp_path
    )
    assert_one_line_error(result, fragment)
    assert len(open_store(str(tmp_path / "s.db")).runs(kind=None)) == 0


@pytest.mark.parametrize("sigma", [float("nan"), -1.0, 0.0, "half"])
def test_a_checkpoint_recording_an_invalid_sigma_creates_no_run(sigma, toy_checkpoint, toy_mnist_root, tmp_path):
    saved = torch.load(toy_checkpoint, weights_only=True)
    saved["rsbench"]["sigma"] = sigma
    torch.save(saved, tmp_path / "bad.pth.tar")
    result = run("certify", str(tmp_path / "bad.pth.tar"), "--n", "100", env_db=tmp_path / "s.db", data=toy_mnist_root)
    assert_one_line_error(result, "records an invalid sigma")
    assert len(open_store(str(tmp_path / "s.db")).runs(kind=None)) == 0


def test_import_of_a_misspelt_method_needs_new_method(tmp_path):
    log = tmp_path / "noise_0.50.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t7\t7\t0.8\t1\t0.5\n1\t2\t-1\t0.0\t0\t0.5\n")
    args = ("import", str(log), "--dataset", "mnist", "--method", "gausian", "--sigma", "0.5")
    assert_one_line_error(run(*args, env_db=tmp_path / "s.db"), "did you mean 'gaussian'", "--new-method")
    assert len(open_store(str(tmp_path / "s.db")).runs(kind=None)) == 0
    admitted = run(*args, "--new-method", env_db=tmp_path / "s.db")
    assert admitted.returncode == 0, admitted.stderr
    assert open_store(str(tmp_path / "s.db")).runs()["method"].tolist() == ["gausian"]
