"""SmoothMix and CAT-RS end to end: trained and certified from the command line, CAT-RS's reference recorded
by its sha256 with its soft labels cached, an interrupted epoch resumed to the uninterrupted run's weights, and
(slow) two ranks under ``rsbench launch``."""

from __future__ import annotations

import pytest
import torch
from test_distributed import rsbench, train_on_two_ranks
from test_training import toy_config

from rsbench.checkpoint import load_checkpoint
from rsbench.provenance import file_sha256
from rsbench.store import open_store
from rsbench.training import train

QUICK = {"smoothmix": ["--steps", "1", "--m", "2"], "catrs": ["--steps", "1", "--m", "2"]}


def method_flags(method: str, reference) -> list[str]:
    extra = ["--param", f"reference={reference}", "--param", "reference_draws=16"] if method == "catrs" else []
    return ["--method", method, *QUICK[method], *extra]


@pytest.mark.parametrize("method", ["smoothmix", "catrs"])
def test_trains_and_certifies_from_the_cli(method, toy_mnist_root, toy_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "s.db"
    out = tmp_path / "run"
    common = ["--dataset", "mnist", "--sigma", "0.5", "--train-limit", "64", "--test-limit", "50", "--epochs", "1"]
    done = rsbench(
        "train", *common, *method_flags(method, toy_checkpoint), "--batch", "64", "--out", str(out), "--no-progress",
        data=toy_mnist_root, db=db,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    checkpoint = out / "checkpoint.pth.tar"
    meta = load_checkpoint(checkpoint)["rsbench"]
    assert meta["method"] == method
    training = open_store(str(db)).training_run_for(file_sha256(checkpoint))
    if method == "catrs":
        recorded = meta["provenance"]["method_inputs"]
        assert recorded["catrs_reference_sha256"] == file_sha256(toy_checkpoint)
        assert training.provenance["method_inputs"] == recorded
        cached = list((tmp_path / "cache" / "soft-labels").glob("*.pt"))
        assert [p.name for p in cached] == [recorded["catrs_soft_labels"].rsplit("/", 1)[-1]]
        assert torch.load(cached[0], weights_only=True).shape == (64, 10)
    certified = rsbench(
        "certify",
        str(checkpoint),
        "--n0",
        "10",
        "--n",
        "100",
        "--limit",
        "3",
        "--no-progress",
        data=toy_mnist_root,
        db=db,
    )
    assert certified.returncode == 0, certified.stderr


def test_catrs_resume_refuses_a_changed_reference(toy_mnist_root, toy_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))
    reference = tmp_path / "reference.pth.tar"
    reference.write_bytes(toy_checkpoint.read_bytes())
    args = ["train", "--dataset", "mnist", "--sigma", "0.5", "--train-limit", "32", "--test-limit", "20"]
    args += ["--epochs", "1"]
    args += [*method_flags("catrs", reference), "--out", str(tmp_path / "run"), "--no-progress"]
    assert rsbench(*args, data=toy_mnist_root, db=tmp_path / "s.db").returncode == 0
    changed = torch.load(reference, weights_only=True)
    changed["epoch"] += 1  # same path, other file
    torch.save(changed, reference)
    resumed = rsbench(*args, "--resume", data=toy_mnist_root, db=tmp_path / "s.db")
    assert resumed.returncode == 2 and "other inputs (catrs_reference_sha256" in resumed.stderr
    assert "Traceback" not in resumed.stderr


def test_catrs_without_reference_is_a_one_line_cli_error(toy_mnist_root, tmp_path):
    done = rsbench(
        "train", "--dataset", "mnist", "--sigma", "0.5", "--method", "catrs", "--train-limit", "64", "--epochs", "1",
        "--out", str(tmp_path / "run"), "--no-progress", data=toy_mnist_root, db=tmp_path / "s.db",
    )  # fmt: skip
    assert done.returncode == 2 and "reference" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("method", ["smoothmix", "catrs"])
def test_an_interrupted_epoch_resumes_to_the_same_weights(
    method, toy_mnist_root, toy_checkpoint, tmp_path, monkeypatch
):
    """Killed at SGD step 46 (loader batch 23 of 24 of 4 images, m = 2 steps each; a partial checkpoint after batch 20),
    the resumed run ends with the uninterrupted run's weights: noise, mixup ratios and Binomial draws resume."""
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))
    params = {"steps": 1, "m": 2}
    if method == "catrs":
        params.update(reference=str(toy_checkpoint), reference_draws=16)
    settings = dict(method=method, sigma=0.5, params=params, batch_size=4, epochs=1, train_limit=96)
    straight = train(toy_config(toy_mnist_root, tmp_path / "a", checkpoint_every=1e9, **settings), show_progress=False)
    steps = []
    real_step = torch.optim.SGD.step

    def dies_at_step_46(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 46:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", dies_at_step_46)
    with pytest.raises(KeyboardInterrupt):
        train(toy_config(toy_mnist_root, tmp_path / "b", checkpoint_every=0, **settings), show_progress=False)
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    assert (
        torch.load(tmp_path / "b" / "checkpoint.pth.tar", weights_only=True)["rsbench"]["partial_epoch"]["step"] == 20
    )
    resumed = train(
        toy_config(toy_mnist_root, tmp_path / "b", checkpoint_every=0, **settings), resume=True, show_progress=False
    )
    a, b = (torch.load(r.checkpoint, weights_only=True) for r in (straight, resumed))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["smoothmix", "catrs"])
def test_two_ranks_under_launch(method, toy_mnist_root, toy_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))
    args = ["--dataset", "mnist", "--sigma", "0.5", "--train-limit", "256", "--test-limit", "50", "--batch", "64"]
    out = tmp_path / "run"
    done = train_on_two_ranks(
        *args, *method_flags(method, toy_checkpoint), "--epochs", "1", "--no-progress", "--out", str(out),
        data=toy_mnist_root, db=tmp_path / "s.db",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    meta = load_checkpoint(out / "checkpoint.pth.tar")["rsbench"]
    assert meta["world_size"] == 2 and meta["method"] == method
