"""Checkpoints in the official repositories' format, written atomically and read as data only.

A checkpoint is ``{"epoch", "arch", "state_dict", "optimizer", "rsbench"}``; ``state_dict`` is that of
``nn.Sequential(normalize_layer, model)``, so Cohen's, Salman's and Jeong & Shin's ``certify.py`` load
it, and their checkpoints load here (``rsbench`` entry absent: dataset and normalization are given).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsbench.errors import RsbenchError
from rsbench.nets import NORMALIZATION_KINDS, build_classifier, normalization_for
from rsbench.plugins import get_dataset
from rsbench.specs import Normalization

CHECKPOINT_NAME = "checkpoint.pth.tar"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a file needing arbitrary unpickling is refused."""
    path = Path(path)
    if not path.is_file():
        raise RsbenchError(f"checkpoint {str(path)!r} does not exist", "give the path to a .pth.tar file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):  # not a pickle of objects at all: damaged bytes
            raise RsbenchError(
                f"{path} is not a readable torch checkpoint (UnpicklingError)",
                "the file is corrupt or truncated; retrain or restore it",
            ) from None
        first = next(line for line in str(error).splitlines() if "Unsupported global" in line).strip()[:160]
        raise RsbenchError(
            f"{path} is not a plain-data checkpoint and is not loaded (it would run code): {first}",
            "re-save it with tensors, numbers and strings only",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise RsbenchError(
            f"{path} is not a readable torch checkpoint ({type(error).__name__})",
            "the file is corrupt or truncated; retrain or restore it",
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "arch" not in checkpoint:
        raise RsbenchError(
            f"{path} is not a smoothing checkpoint (needs 'arch' and 'state_dict')",
            "rsbench reads checkpoints of rsbench, Cohen et al., Salman et al. and Jeong & Shin",
        )
    return checkpoint


def _strip_data_parallel(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ImageNet checkpoints wrap the model in DataParallel: ``1.module.x`` -> ``1.x``."""
    return {key.replace("1.module.", "1.", 1) if key.startswith("1.module.") else key: value
            for key, value in state_dict.items()}


def classifier_from_checkpoint(
    checkpoint: dict[str, Any],
    dataset: str | None = None,
    normalization: str | None = None,
) -> tuple[nn.Sequential, dict[str, Any]]:
    """The classifier of a checkpoint, in eval mode, and its metadata (``rsbench`` entry or what was given).

    For official checkpoints without metadata, ``dataset`` is required and ``normalization`` defaults to
    the dataset's (mean/std for CIFAR-10 and ImageNet, as Cohen et al.).
    """
    meta = dict(checkpoint.get("rsbench") or {})
    dataset_name = dataset or meta.get("dataset")
    if dataset_name is None:
        raise RsbenchError(
            "the checkpoint does not say its dataset (an official checkpoint?)", "pass --dataset"
        )
    dataset_spec = get_dataset(dataset_name)
    if normalization is not None and normalization not in NORMALIZATION_KINDS:
        raise RsbenchError(
            f"unknown normalization {normalization!r}", f"choose one of {', '.join(NORMALIZATION_KINDS)}"
        )
    if normalization is None and "normalization" in meta:
        norm = Normalization(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in meta["normalization"].items()})
    else:
        norm = normalization_for(dataset_spec, normalization)
    classifier = build_classifier(str(checkpoint["arch"]), dataset_spec, norm)
    try:
        classifier.load_state_dict(_strip_data_parallel(checkpoint["state_dict"]))
    except RuntimeError as error:
        raise RsbenchError(
            f"the checkpoint's weights do not match architecture {checkpoint['arch']!r} on {dataset_name!r}",
            str(error).splitlines()[1].strip()[:160] if "\n" in str(error) else "wrong --dataset?",
        ) from None
    classifier.eval()
    meta.setdefault("dataset", dataset_name)
    meta.setdefault("arch", str(checkpoint["arch"]))
    meta["normalization"] = {"kind": norm.kind, "mean": list(norm.mean), "std": list(norm.std)}
    return classifier, meta
