import re

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.config import TrainConfig
from rsbench.nets import NormalizeLayer
from rsbench.specs import Normalization
from rsbench.training import learning_rate, resolve, train
from rsbench_plugins.lenet import LeNet

runner = CliRunner()


def test_paper_schedules_are_dataset_defaults():
    from rsbench.plugins import get_dataset

    mnist, cifar, imagenet = (get_dataset(n).schedule for n in ("mnist", "cifar10", "imagenet"))
    assert (mnist.lr, mnist.epochs, mnist.milestones, mnist.batch_size) == (0.01, 90, (31, 61), 256)
    assert (cifar.lr, cifar.epochs, cifar.milestones) == (0.1, 150, (51, 101))
    assert (imagenet.lr, imagenet.epochs, imagenet.milestones) == (0.1, 90, (31, 61))
    assert learning_rate(mnist, 30) == pytest.approx(0.01)
    assert learning_rate(mnist, 31) == pytest.approx(0.001)
    assert learning_rate(mnist, 61) == pytest.approx(0.0001)


def toy_config(root, out, **overrides):
    settings = dict(
        dataset="mnist",
        arch="lenet",
        method="gaussian",
        sigma=0.25,
        out=str(out),
        epochs=2,
        batch_size=128,
        lr=0.05,
        data_dir=str(root),
        seed=3,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def test_checkpoint_is_official_format_and_resume_gives_the_same_result(toy_mnist_root, tmp_path):
    straight = train(toy_config(toy_mnist_root, tmp_path / "a"), show_progress=False)
    checkpoint = torch.load(straight.checkpoint, weights_only=True)
    assert set(checkpoint) == {"epoch", "arch", "state_dict", "optimizer", "rsbench"}
    assert checkpoint["epoch"] == 2 and checkpoint["arch"] == "lenet"
    assert all(k.startswith("1.") for k in checkpoint["state_dict"])
    meta = checkpoint["rsbench"]
    assert (meta["dataset"], meta["method"], meta["sigma"], meta["seed"]) == ("mnist", "gaussian", 0.25, 3)
    assert meta["normalization"]["kind"] == "none" and "versions" in meta["provenance"]
    # the official certify.py builds nn.Sequential(normalize_layer, model) and loads strictly
    official = nn.Sequential(NormalizeLayer(Normalization("none")), LeNet())
    official.load_state_dict(checkpoint["state_dict"])
    assert straight.test_accuracy > 0.5  # the toy task is learnable in two epochs

    # killed during the second epoch (after the first checkpoint), then resumed: the same weights
    import rsbench.training as engine

    calls = []
    real_accuracy = engine.noisy_accuracy

    def dies_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_accuracy(*args, **kwargs)

    engine.noisy_accuracy = dies_in_second_epoch
    try:
        with pytest.raises(KeyboardInterrupt):
            train(toy_config(toy_mnist_root, tmp_path / "c"), show_progress=False)
    finally:
        engine.noisy_accuracy = real_accuracy
    assert torch.load(tmp_path / "c" / "checkpoint.pth.tar", weights_only=True)["epoch"] == 1
    resumed = train(toy_config(toy_mnist_root, tmp_path / "c"), resume=True, show_progress=False)
    a = torch.load(straight.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    assert b["epoch"] == 2
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert resumed.test_accuracy == straight.test_accuracy
    log = (tmp_path / "c" / "log.tsv").read_text().splitlines()
    assert log[0].startswith("epoch") and [line.split("\t")[0] for line in log[1:]] == ["1", "2"]
    # a finished run resumes to itself without training
    again = train(toy_config(toy_mnist_root, tmp_path / "c"), resume=True, show_progress=False)
    assert again.test_accuracy == straight.test_accuracy


def test_a_long_epoch_resumes_within_the_epoch_exactly(toy_mnist_root, tmp_path, monkeypatch):
    """Checkpoints every 20 steps (checkpoint_every=0): killed at step 50 of 64 in epoch 1, the resumed run
    starts at step 40, not at the epoch's start, and ends with the uninterrupted run's weights."""
    settings = dict(batch_size=16, epochs=2)
    straight = train(toy_config(toy_mnist_root, tmp_path / "a", checkpoint_every=1e9, **settings), show_progress=False)
    steps = []
    real_step = torch.optim.SGD.step

    def dies_at_step_50(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 50:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", dies_at_step_50)
    with pytest.raises(KeyboardInterrupt):
        train(toy_config(toy_mnist_root, tmp_path / "b", checkpoint_every=0, **settings), show_progress=False)
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    saved = torch.load(tmp_path / "b" / "checkpoint.pth.tar", weights_only=True)
    assert saved["epoch"] == 0 and saved["rsbench"]["partial_epoch"]["step"] == 40
    counted = []
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: (counted.append(1), real_step(self, *a, **k)))
    resumed = train(
        toy_config(toy_mnist_root, tmp_path / "b", checkpoint_every=0, **settings), resume=True, show_progress=False
    )
    assert len(counted) == 2 * 64 - 40  # the 40 steps before the checkpoint are not taken again
    a, b = (torch.load(r.checkpoint, weights_only=True) for r in (straight, resumed))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert b["rsbench"]["partial_epoch"] is None and resumed.test_accuracy == straight.test_accuracy


def test_train_limit_trains_on_a_prefix(toy_mnist_root, tmp_path):
    result = train(toy_config(toy_mnist_root, tmp_path / "r", epochs=1, train_limit=100), show_progress=False)
    assert result.meta["train_limit"] == 100


def cli(*args):
    return runner.invoke(app, list(args))


def test_cli_train_prints_checkpoint_and_records_run(toy_mnist_root, tmp_path):
    out = tmp_path / "cli"
    result = cli(
        "train",
        "--dataset",
        "mnist",
        "--method",
        "gaussian",
        "--sigma",
        "0.5",
        "--epochs",
        "1",
        "--data-dir",
        str(toy_mnist_root),
        "--out",
        str(out),
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out / "checkpoint.pth.tar")
    from rsbench.store import open_store
    from rsbench.store.models import TrainingRun

    with open_store().session() as session:
        run = session.query(TrainingRun).one()
        assert run.method == "gaussian" and run.sigma == 0.5 and run.provenance["versions"]["torch"]


def test_preset_sets_method_dataset_sigma_and_params(toy_mnist_root, tmp_path):
    result = cli(
        "train",
        "--preset",
        "mnist-consistency-0.50",
        "--epochs",
        "1",
        "--train-limit",
        "256",
        "--data-dir",
        str(toy_mnist_root),
        "--out",
        str(tmp_path / "p"),
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    meta = torch.load(tmp_path / "p" / "checkpoint.pth.tar", weights_only=True)["rsbench"]
    assert (meta["method"], meta["sigma"], meta["params"]["lam"], meta["preset"]) == (
        "consistency",
        0.5,
        5.0,
        "mnist-consistency-0.50",
    )
    unknown = cli("train", "--preset", "mnist-consistency-0.5")
    assert unknown.exit_code == 2 and "mnist-consistency-0.50" in unknown.stderr


def test_yaml_config(toy_mnist_root, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"dataset: mnist\nmethod: consistency\nsigma: 0.25\nepochs: 1\ntrain_limit: 256\n"
        f"data_dir: {toy_mnist_root}\nout: {tmp_path / 'y'}\nparams:\n  lam: 3\n  m: 4\n"
    )
    result = cli("train", "--config", str(config), "--lam", "2", "--no-progress")
    assert result.exit_code == 0, result.output
    meta = torch.load(tmp_path / "y" / "checkpoint.pth.tar", weights_only=True)["rsbench"]
    assert meta["params"]["lam"] == 2.0 and meta["params"]["m"] == 4
    config.write_text("dataset: mnist\nsigmma: 0.5\n")
    result = cli("train", "--config", str(config))
    assert result.exit_code == 2 and "unknown setting 'sigmma'" in result.stderr


def test_config_file_and_flags_override(toy_mnist_root, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        f'dataset = "mnist"\nsigma = 0.25\nepochs = 1\ndata_dir = "{toy_mnist_root}"\n'
        f'out = "{tmp_path / "cfg"}"\n[params]\n'
    )
    result = cli("train", "--config", str(config), "--sigma", "0.5", "--no-progress")
    assert result.exit_code == 0, result.output
    meta = torch.load(tmp_path / "cfg" / "checkpoint.pth.tar", weights_only=True)["rsbench"]
    assert meta["sigma"] == 0.5 and meta["schedule"]["epochs"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "gausian"], "unknown method 'gausian'"),
        (["--arch", "lenett"], "unknown architecture 'lenett'"),
        (["--dataset", "mnits"], "unknown dataset 'mnits'"),
        (["--sigma", "0"], "sigma must be a positive number"),
        (["--sigma", "-0.5"], "sigma must be a positive number"),
        (["--arch", "cifar_resnet20", "--dataset", "cifar10"], "cifar-10-batches-py"),
        (["--lam", "3"], "method 'gaussian' has no hyperparameter 'lam'"),
        (["--epochs", "0"], "epochs must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(toy_mnist_root, tmp_path, args, message):
    base = {"--dataset": "mnist", "--method": "gaussian", "--sigma": "0.5", "--epochs": "1"}
    flags = dict(zip(args[::2], args[1::2], strict=True))
    merged = [item for pair in {**base, **flags}.items() for item in pair]
    out = tmp_path / "never"
    result = cli("train", *merged, "--data-dir", str(toy_mnist_root), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (out / "checkpoint.pth.tar").exists()


def test_missing_data_directory(tmp_path):
    result = cli(
        "train",
        "--dataset",
        "mnist",
        "--sigma",
        "0.5",
        "--data-dir",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 2 and "MNIST file" in result.stderr and "RSBENCH_DATA" in result.stderr


def test_architecture_that_does_not_fit(toy_mnist_root, tmp_path):
    result = cli(
        "train",
        "--dataset",
        "mnist",
        "--arch",
        "resnet50",
        "--sigma",
        "0.5",
        "--data-dir",
        str(toy_mnist_root),
        "--out",
        str(tmp_path / "o2"),
    )
    assert result.exit_code == 2 and "does not fit dataset 'mnist'" in result.stderr


def resume_training(data_root, out):
    """``rsbench train --resume`` of a σ = 0.5 MNIST run whose folder ``out`` already holds a checkpoint."""
    return cli(
        "train", "--dataset", "mnist", "--sigma", "0.5", "--data-dir", str(data_root), "--out", str(out), "--resume"
    )


@pytest.mark.parametrize("content", [b"garbage, not a checkpoint", b""])
def test_resume_from_corrupt_checkpoint(toy_mnist_root, tmp_path, content):
    out = tmp_path / "o"
    out.mkdir()
    (out / "checkpoint.pth.tar").write_bytes(content)
    result = resume_training(toy_mnist_root, out)
    assert result.exit_code == 2 and "not a readable torch checkpoint" in result.stderr
    assert (out / "checkpoint.pth.tar").read_bytes() == content


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_resume_refuses_foreign_or_code_carrying_checkpoints(toy_mnist_root, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    torch.save({"arch": "lenet", "state_dict": {}, "payload": Evil()}, out / "checkpoint.pth.tar")
    result = resume_training(toy_mnist_root, out)
    assert result.exit_code == 2 and "not a plain-data checkpoint" in result.stderr
    torch.save({"epoch": 1, "arch": "lenet", "state_dict": {}}, out / "checkpoint.pth.tar")
    result = resume_training(toy_mnist_root, out)
    assert result.exit_code == 2 and "not written by rsbench train" in result.stderr


EXAMPLES = [
    ["--preset", "mnist-consistency-0.50"],
    ["--dataset", "cifar10", "--sigma", "1.0", "--method", "macer"],
    ["--method", "consistency", "--lam", "3", "--m", "4", "--dataset", "mnist", "--sigma", "0.25", "--epochs", "7"]
    + ["--milestones", "2,5", "--nesterov", "--device", "cpu", "--workers", "0", "--train-limit", "300", "--seed", "4"],
]


@pytest.mark.parametrize("args", EXAMPLES)
def test_the_config_example_reads_back_as_the_run_train_would_start(args, tmp_path, monkeypatch):
    """The reference is the config `rsbench train ARGS` hands to the training engine (caught before it trains);
    the example file, read back, must be that config, its hyperparameters typed (flags give strings)."""
    import dataclasses

    import rsbench.training
    from rsbench.config import train_config
    from rsbench.params import parse_params
    from rsbench.plugins import get_method

    started = []
    monkeypatch.setattr(rsbench.training, "train", lambda config, **_: started.append(config) or 1 / 0)
    runner.invoke(app, ["train", *args, "--db", str(tmp_path / "s.db")])
    (reference,) = started
    example = runner.invoke(app, ["train", *args, "--config-example"])
    assert example.exit_code == 0, example.output
    path = tmp_path / "run.toml"
    path.write_text(example.stdout)
    read = train_config(None, path, {})
    typed = get_method(reference.method).Params
    assert parse_params(typed, read.params, "") == parse_params(typed, reference.params, "")
    assert set(read.params) == set(reference.params)  # only the hyperparameters given are set
    assert dataclasses.replace(read, params={}) == dataclasses.replace(reference, params={})
    # uncommented, the defaults it shows are those a run takes: the paper schedule, the method's hyperparameters
    names = ["epochs", "batch_size", "lr", "milestones", "nesterov", "workers", "checkpoint_every"]
    names += [f.name for f in dataclasses.fields(typed)]
    path.write_text(re.sub(rf"^# (({'|'.join(names)}) = )", r"\1", example.stdout, flags=re.MULTILINE))
    spelled_out = train_config(None, path, {})
    assert resolve(spelled_out)[2:] == resolve(reference)[2:]  # the schedule and the typed hyperparameters
    assert (spelled_out.workers, spelled_out.checkpoint_every) == (reference.workers, reference.checkpoint_every)


def test_without_a_dataset_the_config_example_is_an_mnist_run_and_a_file_preset_applies(tmp_path):
    from rsbench.config import preset_settings, train_config

    example = runner.invoke(app, ["train", "--config-example"])
    assert example.exit_code == 0 and 'dataset = "mnist"' in example.stdout and "sigma = 0.5" in example.stdout
    path = tmp_path / "run.toml"
    path.write_text('preset = "mnist-consistency-1.00"\nepochs = 3\n')
    config = train_config(None, path, {})
    preset = preset_settings("mnist-consistency-1.00")
    assert (config.method, config.sigma, config.params, config.epochs) == ("consistency", 1.0, preset["params"], 3)
