"""Test helpers: where the real data is (``RSBENCH_DATA``, else ``../shared/data``) and small datasets
written in the torchvision layouts."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RSBENCH_DATA") or REPO.parent / "shared" / "data").resolve()
REFERENCE_LOGS = SHARED_DATA.parent / "reference" / "smoothing-consistency-certify-logs.tar.gz"


def need(path: Path) -> Path:
    """``path``, or skip the test saying what is missing and where it is looked for."""
    if not path.exists():
        pytest.skip(
            f"{path} is absent (set RSBENCH_DATA to the folder holding MNIST/, cifar10-samples/; CI has ../shared/data)"
        )
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file (MNIST's format), gzipped, from a uint8 array."""
    codes = {np.uint8: 0x08}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype.type], array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def make_digit_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable toy 'MNIST': class k is a bright 6x6 square at one of 10 positions, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = (rng.random((count, 28, 28)) * 60).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        images[i, 4 + 10 * row : 10 + 10 * row, 1 + 5 * col : 7 + 5 * col] = 255
    return images, labels


def write_toy_mnist(root: Path) -> Path:
    """MNIST's file layout under ``root`` with 1024 training and 200 test toy images."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", 1024, 0), ("t10k", 200, 1)):
        images, labels = make_digit_images(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def write_cifar_batches(root: Path, images: np.ndarray, labels: list[int]) -> None:
    """CIFAR-10's python pickle batches from uint8 [N,32,32,3] images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    flat = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    parts = np.array_split(np.arange(len(images)), 5)
    for i, part in enumerate(parts, start=1):
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump({"data": flat[part], "labels": [labels[j] for j in part]}, handle)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": flat, "labels": list(labels)}, handle)


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write into (root ignores permission bits; /sys is not writable)."""
    if os.geteuid() == 0:
        return Path("/sys/kernel")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def assert_one_error_line(result, *fragments: str, starts: str = "rsbench: error") -> None:
    """A CLI result (typer's CliRunner) that failed with exit code 2 and one stderr line starting with
    ``starts`` and holding every fragment."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
