"""CIFAR-10 (Krizhevsky 2009): 32x32 colour images, random translation by 4 pixels and horizontal flip
for training, per-channel mean/std normalization as the model's first layer (Cohen et al.).

Expected at ``DATA/cifar-10-batches-py/`` (the python pickle batches, torchvision's layout).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from rsbench import hookimpl
from rsbench.data import InMemoryDataset, random_crop_flip
from rsbench.errors import RsbenchError
from rsbench.specs import Dataset, Normalization, Schedule

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


# What the python batches' pickles reference (numpy arrays, as written by numpy 1 and 2, protocols 0-5, and
# Python 2's str/bytes); anything else, like os.system, is refused before it is called.
PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data and numpy arrays: a batch file can never run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR-10 batch never does")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """The batch's dict; :class:`RsbenchError` for anything else, code-carrying files included."""
    with open(path, "rb") as handle:
        try:
            entry = BatchUnpickler(handle, encoding="latin1").load()
        except Exception as error:  # a damaged pickle raises nearly anything; all mean "not a batch"
            raise RsbenchError(f"{path} is not a CIFAR-10 batch ({error})", "download it again") from None
    if not isinstance(entry, dict):
        raise RsbenchError(f"{path} is not a CIFAR-10 batch (it holds a {type(entry).__name__})", "download it again")
    return entry


def _read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """A batch's images (uint8 [N, 3072], channel-major) and labels (0-9)."""
    if not path.is_file():
        raise RsbenchError(
            f"CIFAR-10 file {path.name} not found in {path.parent}",
            "point --data-dir or RSBENCH_DATA at the folder holding cifar-10-batches-py, "
            "or run `rsbench download cifar10`",
        )
    entry = _unpickle(path)
    data, labels = entry.get("data"), entry.get("labels")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or not isinstance(labels, list)
        or len(labels) != len(data)
        or not all(isinstance(label, int) and 0 <= label < 10 for label in labels)
    ):
        raise RsbenchError(
            f"{path} is not a CIFAR-10 batch (needs uint8 data [N, 3072] and N labels 0-9)", "download it again"
        )
    return data, labels


def load(root: Path, split: str, train: bool) -> InMemoryDataset:
    folder = Path(root) / "cifar-10-batches-py"
    parts = [_read_batch(folder / name) for name in BATCHES[split]]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32))
    labels = torch.tensor([label for p in parts for label in p[1]], dtype=torch.long)
    return InMemoryDataset(images, labels, augment=random_crop_flip(4) if train else None)


def download(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=True, download=True)


@hookimpl
def register_datasets(register):
    register(
        Dataset(
            name="cifar10",
            description="CIFAR-10, 3x32x32, 10 classes; random crop (pad 4) + flip; mean/std in the model",
            num_classes=10,
            input_shape=(3, 32, 32),
            normalization=Normalization("mean_std", MEAN, STD),
            schedule=Schedule(lr=0.1, epochs=150, milestones=(51, 101)),  # official StepLR(50) after each epoch
            load=load,
            download=download,
            default_arch="cifar_resnet110",
            layout="cifar-10-batches-py/{data_batch_1..5,test_batch}",
            split_sizes={"train": 50_000, "test": 10_000},
        )
    )
