"""MNIST (LeCun et al. 1998): 28x28 grey digits, pixels in [0,1] and no other preprocessing.

Expected at ``DATA/MNIST/raw/`` (torchvision's layout, ``.gz`` or extracted idx files).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from rsbench import hookimpl
from rsbench.data import InMemoryDataset
from rsbench.errors import RsbenchError
from rsbench.specs import Dataset, Normalization, Schedule

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4")}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, unzipped for ``.gz``; a damaged or truncated gzip stream is an :class:`RsbenchError`."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError; a cut stream an EOFError
        raise RsbenchError(
            f"{path} cannot be read ({type(error).__name__}: {error})", "delete it and download MNIST again"
        ) from None


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (plain or gzipped) into an array; a damaged file is an :class:`RsbenchError`."""
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise RsbenchError(f"{path} is not an idx file", "delete it and download MNIST again")
    ndim, dtype = data[3], np.dtype(IDX_TYPES[data[2]])  # type: ignore[call-overload]
    offset = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) < offset or len(data) - offset != math.prod(shape) * dtype.itemsize:
        raise RsbenchError(f"{path} is truncated or its header gives a wrong size", "download MNIST again")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


def _find(raw: Path, stem: str) -> Path:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise RsbenchError(
        f"MNIST file {stem}(.gz) not found in {raw}",
        "point --data-dir or RSBENCH_DATA at the folder holding MNIST/raw, or run `rsbench download mnist`",
    )


def load(root: Path, split: str, train: bool) -> InMemoryDataset:
    raw = Path(root) / "MNIST" / "raw"
    images_file, labels_file = FILES[split]
    images, labels = read_idx(_find(raw, images_file)), read_idx(_find(raw, labels_file))
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise RsbenchError(
            f"MNIST files {images_file} and {labels_file} in {raw} do not hold N 28x28 images and "
            f"their N labels (shapes {images.shape} and {labels.shape})",
            "download MNIST again",
        )
    if len(labels) and not 0 <= labels.min() <= labels.max() < 10:
        raise RsbenchError(f"MNIST labels in {raw / labels_file} lie outside 0-9", "download MNIST again")
    return InMemoryDataset(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def download(root: Path) -> None:
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(root), train=train, download=True)


@hookimpl
def register_datasets(register):
    register(
        Dataset(
            name="mnist",
            description="MNIST digits, 1x28x28, 10 classes; no preprocessing but [0,1] pixels",
            num_classes=10,
            input_shape=(1, 28, 28),
            normalization=Normalization("none"),
            schedule=Schedule(lr=0.01, epochs=90, milestones=(31, 61)),  # official StepLR(30) after each epoch
            load=load,
            download=download,
            default_arch="lenet",
            layout="MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
            split_sizes={"train": 60_000, "test": 10_000},
        )
    )
