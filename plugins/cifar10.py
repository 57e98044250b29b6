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


def _read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    if not path.is_file():
        raise RsbenchError(
            f"CIFAR-10 file {path.name} not found in {path.parent}",
            "point --data-dir or RSBENCH_DATA at the folder holding cifar-10-batches-py, "
            "or run `rsbench download cifar10`",
        )
    with open(path, "rb") as handle:
        try:
            # The dataset's own format is a pickle of numpy arrays and lists.
            entry = pickle.load(handle, encoding="latin1")
        except Exception as error:
            raise RsbenchError(f"{path} is not a CIFAR-10 batch ({error})", "download it again") from None
    return np.asarray(entry["data"], dtype=np.uint8), list(entry.get("labels", entry.get("fine_labels")))


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
            schedule=Schedule(lr=0.1, epochs=150, milestones=(50, 100)),
            load=load,
            download=download,
            default_arch="cifar_resnet110",
            layout="cifar-10-batches-py/{data_batch_1..5,test_batch}",
        )
    )
