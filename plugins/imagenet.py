"""ImageNet (ILSVRC 2012) from class folders: random resized crop 224 + flip for training, resize 256
and center crop 224 for testing; mean/std normalization as the model's first layer.

Expected at ``DATA/imagenet/train/<class>/*.JPEG`` and ``DATA/imagenet/val/<class>/*.JPEG``; the
``test`` split is ``val``. ImageNet's licence forbids automatic download.
"""

from __future__ import annotations

from pathlib import Path

from rsbench import hookimpl
from rsbench.errors import RsbenchError
from rsbench.specs import Dataset, Normalization, Schedule

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def load(root: Path, split: str, train: bool):
    from torchvision import datasets, transforms  # imported when used

    folder = Path(root) / "imagenet" / ("train" if split == "train" else "val")
    if not folder.is_dir() or not any(folder.iterdir()):
        raise RsbenchError(
            f"ImageNet folder {folder} not found or empty",
            "put the ILSVRC 2012 images in DATA/imagenet/{train,val}/<class>/ (download them from "
            "image-net.org after accepting its licence)",
        )
    if train:
        transform = transforms.Compose(
            [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
        )
    else:
        transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    return datasets.ImageFolder(str(folder), transform=transform)


@hookimpl
def register_datasets(register):
    register(
        Dataset(
            name="imagenet",
            description="ImageNet class folders, 3x224x224, 1000 classes; resized crop + flip / 256-224",
            num_classes=1000,
            input_shape=(3, 224, 224),
            normalization=Normalization("mean_std", MEAN, STD),
            schedule=Schedule(lr=0.1, epochs=90, milestones=(31, 61)),  # official StepLR(30) after each epoch
            load=load,
            default_arch="resnet50",
            layout="imagenet/{train,val}/<class>/*.JPEG",
            split_sizes={"train": 1_281_167, "test": 50_000},
        )
    )
