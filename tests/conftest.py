"""Shared fixtures: the real data (``RSBENCH_DATA``, else ``../shared/data``; skipped with a reason where
absent), toy datasets, a fresh plugin manager and store per test, and a one-line-per-reason summary of
skipped tests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from helpers import SHARED_DATA, need, write_toy_mnist
from rsbench.config import TrainConfig
from rsbench.plugins import reset_manager
from rsbench.training import train


@pytest.fixture
def mnist_root() -> Path:
    """The real MNIST (torchvision layout)."""
    need(SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte.gz")
    return SHARED_DATA


@pytest.fixture(scope="session")
def toy_mnist_root(tmp_path_factory) -> Path:
    """MNIST's file layout with 1024 training and 200 test toy images."""
    return write_toy_mnist(tmp_path_factory.mktemp("toy_data"))


@pytest.fixture(scope="session")
def toy_checkpoint(toy_mnist_root, tmp_path_factory) -> Path:
    """A Gaussian LeNet (σ = 0.25, 2 epochs) trained once on the toy MNIST, for the tests that certify a real
    checkpoint file (read-only: a test that alters it saves a copy)."""
    config = TrainConfig(
        dataset="mnist",
        arch="lenet",
        method="gaussian",
        sigma=0.25,
        out=str(tmp_path_factory.mktemp("toy_checkpoint")),
        epochs=2,
        lr=0.05,
        batch_size=128,
        data_dir=str(toy_mnist_root),
    )
    return train(config, show_progress=False).checkpoint


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch, tmp_path):
    """Each test loads plugins anew and writes its store into its own folder."""
    reset_manager()
    monkeypatch.setenv("RSBENCH_DB", str(tmp_path / "rsbench-test.db"))
    torch.manual_seed(0)
    yield
    reset_manager()


def pytest_terminal_summary(terminalreporter):
    """Say what was skipped and why, one line per reason, without needing ``-rs``."""
    reasons = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"skipped {count}: {reason}")
