"""Checkpoints in the official repositories' format, written atomically and read as data only.

A checkpoint is ``{"epoch", "arch", "state_dict", "optimizer", "rsbench"}``; ``state_dict`` is that of
``nn.Sequential(normalize_layer, model)``, so Cohen's, Salman's and Jeong & Shin's ``certify.py`` load
it, and their checkpoints load here (``rsbench`` entry absent: dataset and normalization are given).
"""

from __future__ import annotations

import io
import math
import os
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from rsbench.atomic import atomic_write
from rsbench.errors import RsbenchError, check_seed, check_sigma
from rsbench.nets import NORMALIZATION_KINDS, build_classifier, normalization_for
from rsbench.plugins import get_dataset
from rsbench.specs import Dataset, Normalization

CHECKPOINT_NAME = "checkpoint.pth.tar"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically (:func:`rsbench.atomic.atomic_write`), creating its folder."""
    atomic_write(path, lambda handle: torch.save(obj, handle), make_folder=True)


def _pickled_globals(stream: BinaryIO) -> list[str]:
    """The dotted names of the globals (classes, functions) the pickles in ``stream``, one after another,
    refer to, read with :mod:`pickletools` (nothing is executed); damaged bytes end the scan."""
    names: list[str] = []
    strings: list[str] = []  # strings pushed so far: STACK_GLOBAL takes its module and name from the last two
    memo: dict[int, str | None] = {}
    top: str | None = None  # the string the last opcode pushed, if it pushed one
    try:
        while stream.read(1):
            stream.seek(-1, io.SEEK_CUR)
            memo.clear()
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    memo[len(memo) if arg is None else arg] = top
                    continue
                top = None
                if opcode.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(".".join(strings[-2:]))
                elif "UNICODE" in opcode.name or "STRING" in opcode.name:
                    top = str(arg)
                elif opcode.name in ("GET", "BINGET", "LONG_BINGET"):
                    top = memo.get(arg) if isinstance(arg, int) else None
                if top is not None:
                    strings.append(top)
    except Exception:  # damaged bytes end the scan, whatever genops raises on them
        pass
    return names


def code_references(path: Path) -> list[str]:
    """Globals a checkpoint's pickles refer to beyond the plain data that ``torch.load(weights_only=True)``
    admits (tensors, storages, dtypes, ordered dicts): functions or classes that unpickling would call."""
    allowed = set(torch._weights_only_unpickler._get_allowed_globals())
    try:
        with zipfile.ZipFile(path) as archive:
            names = [
                name
                for member in archive.namelist()
                if member.endswith(".pkl")
                for name in _pickled_globals(io.BytesIO(archive.read(member)))
            ]
    except Exception:  # not a readable zip: a legacy checkpoint (several pickles in a row) or a bare pickle
        with open(path, "rb") as handle:
            names = _pickled_globals(handle)
    return sorted({name for name in names if name not in allowed and not name.startswith("torch._utils._rebuild")})


MAX_BYTES_VARIABLE = "RSBENCH_MAX_CHECKPOINT_BYTES"
DEFAULT_MAX_BYTES = 4 * 2**30  # 20x the largest official smoothing checkpoint (ResNet-50 with its optimizer)
ZIP_MAGIC = b"PK\x03\x04"  # torch.load reads a file that starts so as a zip archive, anything else as legacy


def max_checkpoint_bytes() -> int:
    """The most bytes a checkpoint may unpack to: ``$RSBENCH_MAX_CHECKPOINT_BYTES``, else 4 GiB."""
    text = os.environ.get(MAX_BYTES_VARIABLE)
    if text is None:
        return DEFAULT_MAX_BYTES
    try:
        limit = int(text.replace("_", ""))
    except ValueError:
        limit = 0
    if limit < 1:
        raise RsbenchError(
            f"{MAX_BYTES_VARIABLE} must be a positive whole number of bytes, not {text!r}",
            f"e.g. {MAX_BYTES_VARIABLE}={2 * DEFAULT_MAX_BYTES} for {2 * DEFAULT_MAX_BYTES // 2**30} GiB",
        )
    return limit


def unpacked_size(path: Path) -> int:
    """The bytes ``torch.load`` allocates for a checkpoint's contents, read without unpacking it: the
    uncompressed sizes a zip checkpoint's directory declares (torch's reader allocates exactly those and
    fails on data that would exceed them), or the file's size for a legacy checkpoint, whose storages are
    raw bytes of the file."""
    with open(path, "rb") as handle:
        is_zip = handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    if not is_zip:
        return path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(member.file_size for member in archive.infolist())
    except Exception:  # a damaged directory makes zipfile raise nearly any type (NotImplementedError included)
        raise RsbenchError(
            f"{path} is not a readable torch checkpoint (a damaged zip archive)",
            "the file is corrupt or truncated; retrain or restore it",
        ) from None


def check_unpacked_size(path: Path) -> None:
    """Refuse, before anything is unpacked, a checkpoint that would take more memory than
    :func:`max_checkpoint_bytes` (a zip bomb: a small file whose members inflate to gigabytes)."""
    size, limit = unpacked_size(path), max_checkpoint_bytes()
    if size > limit:
        raise RsbenchError(
            f"{path} unpacks to {size:,} bytes, more than the limit of {limit:,} bytes ({MAX_BYTES_VARIABLE})",
            f"if you trust the file, raise the limit: {MAX_BYTES_VARIABLE}={size}",
        )


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``, after checking what it unpacks to against the limit
    (:func:`check_unpacked_size`). A file that would run code when unpickled is refused as such, naming what
    it calls; any other unreadable file as corrupt (whatever torch raised on it)."""
    path = Path(path)
    if not path.is_file():
        raise RsbenchError(f"checkpoint {str(path)!r} does not exist", "give the path to a .pth.tar file")
    check_unpacked_size(path)
    try:
        with warnings.catch_warnings():  # torch warns about protocols of bare pickles: the error below says it all
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged bytes make torch.load raise nearly any type
        code = code_references(path)
        if code:
            raise RsbenchError(
                f"{path} is not a plain-data checkpoint and is not loaded: it holds pickled code that would call "
                f"{', '.join(code[:3])}",
                "load it only if you trust its source, and re-save its state_dict with torch.save",
            ) from None
        raise RsbenchError(
            f"{path} is not a readable torch checkpoint ({type(error).__name__})",
            "the file is corrupt or truncated; retrain or restore it",
        ) from None
    check_structure(checkpoint, path)
    return checkpoint


def check_structure(checkpoint: Any, path: Path) -> None:
    """A smoothing checkpoint: a dict with ``arch`` (str), ``state_dict`` (str -> tensor) and an optional
    ``rsbench`` metadata dict."""
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "arch" not in checkpoint:
        raise RsbenchError(
            f"{path} is not a smoothing checkpoint (needs 'arch' and 'state_dict')",
            "rsbench reads checkpoints of rsbench, Cohen et al., Salman et al. and Jeong & Shin",
        )
    state_dict, meta = checkpoint["state_dict"], checkpoint.get("rsbench")
    if (
        not isinstance(checkpoint["arch"], str)
        or not isinstance(state_dict, dict)
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items())
        or not isinstance(meta, dict | None)
    ):
        raise RsbenchError(
            f"{path} is a damaged checkpoint: 'arch' must be a name, 'state_dict' map names to tensors "
            "and 'rsbench' be a mapping",
            "the file is corrupt; retrain or restore it",
        )


def _strip_data_parallel(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ImageNet checkpoints wrap the model in DataParallel: ``1.module.x`` -> ``1.x``."""
    return {
        key.replace("1.module.", "1.", 1) if key.startswith("1.module.") else key: value
        for key, value in state_dict.items()
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def recorded_normalization(recorded: Any, dataset: Dataset) -> Normalization:
    """The normalization a checkpoint's metadata records, checked: a known kind, and the constants it needs
    (finite, one per channel or one for all, std > 0)."""
    channels = dataset.input_shape[0]
    if not isinstance(recorded, dict) or recorded.get("kind") not in NORMALIZATION_KINDS:
        raise RsbenchError(
            f"the checkpoint records an invalid normalization {recorded!r}",
            f"pass --normalization ({', '.join(NORMALIZATION_KINDS)})",
        )
    kind = recorded["kind"]
    constants = {}
    for name, needed in (("mean", kind != "none"), ("std", kind == "mean_std")):
        values = recorded.get(name) or []
        if (
            not isinstance(values, list | tuple)
            or not all(_is_number(v) for v in values)
            or (needed and len(values) not in (1, channels))
            or (name == "std" and not all(v > 0 for v in values))
        ):
            raise RsbenchError(
                f"the checkpoint records an invalid normalization {name} {values!r} for {kind!r}",
                f"pass --normalization ({', '.join(NORMALIZATION_KINDS)}) to use the dataset's",
            )
        constants[name] = tuple(float(v) for v in values) if needed else ()
    return Normalization(kind, **constants)


def check_meta(meta: dict[str, Any]) -> None:
    """The metadata a run takes from a checkpoint (σ, seed, method, hyperparameters) is of its types."""
    if meta.get("sigma") is not None:
        check_sigma(
            meta["sigma"], "the checkpoint records an invalid sigma: its sigma", "the file is damaged; pass --sigma"
        )
    if meta.get("seed") is not None:
        check_seed(meta["seed"], "the checkpoint's recorded seed")
    for key, kind in (("dataset", str), ("method", str), ("params", dict)):
        if key in meta and not isinstance(meta[key], kind):
            raise RsbenchError(f"the checkpoint records an invalid {key} {meta[key]!r}", "the file is damaged")


def classifier_from_checkpoint(
    checkpoint: dict[str, Any], dataset: str | None = None, normalization: str | None = None
) -> tuple[nn.Sequential, dict[str, Any]]:
    """The classifier of a checkpoint, in eval mode, and its metadata (``rsbench`` entry or what was given).

    For official checkpoints without metadata, ``dataset`` is required and ``normalization`` defaults to
    the dataset's (mean/std for CIFAR-10 and ImageNet, as Cohen et al.).
    """
    meta = dict(checkpoint.get("rsbench") or {})
    check_meta(meta)
    dataset_name = dataset or meta.get("dataset")
    if dataset_name is None:
        raise RsbenchError("the checkpoint does not say its dataset (an official checkpoint?)", "pass --dataset")
    dataset_spec = get_dataset(dataset_name)
    if normalization is not None and normalization not in NORMALIZATION_KINDS:
        raise RsbenchError(
            f"unknown normalization {normalization!r}", f"choose one of {', '.join(NORMALIZATION_KINDS)}"
        )
    if normalization is None and "normalization" in meta:
        norm = recorded_normalization(meta["normalization"], dataset_spec)
    else:
        norm = normalization_for(dataset_spec, normalization)
    classifier = build_classifier(checkpoint["arch"], dataset_spec, norm)
    try:
        classifier.load_state_dict(_strip_data_parallel(checkpoint["state_dict"]))
    except RuntimeError as error:
        raise RsbenchError(
            f"the checkpoint's weights do not match architecture {checkpoint['arch']!r} on {dataset_name!r}",
            str(error).splitlines()[1].strip()[:160] if "\n" in str(error) else "wrong --dataset?",
        ) from None
    classifier.eval()
    meta.setdefault("dataset", dataset_name)
    meta.setdefault("arch", checkpoint["arch"])
    meta["normalization"] = {"kind": norm.kind, "mean": list(norm.mean), "std": list(norm.std)}
    return classifier, meta


def load_classifier(
    path: str | os.PathLike, dataset: str | None = None, normalization: str | None = None
) -> tuple[nn.Sequential, dict[str, Any]]:
    """The base classifier saved in a checkpoint file (rsbench's, or Cohen's, Salman's and Jeong & Shin's
    official ones) and its metadata: ``model(x)`` maps a batch [B,C,H,W] in [0,1] pixel space to logits
    (normalization is its first layer), in eval mode on the CPU. ``meta`` holds the dataset, architecture,
    σ it was trained at (official checkpoints: absent), method, hyperparameters, seed and normalization.
    An official checkpoint needs ``dataset`` (and ``normalization`` when not the dataset's). The file is read
    as data only, never as code::

        from rsbench import SmoothedClassifier, load_classifier
        model, meta = load_classifier("runs/mnist/gaussian-sigma0.5-seed0/checkpoint.pth.tar")
        g = SmoothedClassifier(model, num_classes=10, sigma=meta["sigma"])
    """
    return classifier_from_checkpoint(load_checkpoint(path), dataset, normalization)
