"""What a run is, in one typed place: :class:`TrainConfig` and :class:`CertifyConfig`, their assembly from a
preset, a YAML/TOML config file and command-line flags (merged in that order, later wins), and the one
function that names a run's folder.

A setting travels: CLI flag -> :func:`train_config` -> :class:`TrainConfig` -> ``training.resolve``
(typed by the method's ``Params``) -> the method's loss; and for certification: CLI flag ->
:class:`CertifyConfig` -> ``certification.open_job`` -> the certifier and the store's run record.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

import yaml

from rsbench.errors import RsbenchError, did_you_mean
from rsbench.methods import Preset
from rsbench.plugins import get_dataset, get_manager
from rsbench.protocol import RunKind, Split


@dataclasses.dataclass
class TrainConfig:
    """One training run. ``None`` schedule fields take the dataset's paper schedule; ``nesterov`` None
    keeps the schedule's (plain momentum, as the official code). A checkpoint is written after every epoch
    and every ``checkpoint_every`` seconds within one, so a long epoch resumes where it stopped."""

    dataset: str
    arch: str
    method: str
    sigma: float
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    out: str = "runs/train"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    milestones: tuple[int, ...] | None = None
    nesterov: bool | None = None
    seed: int = 0
    train_limit: int | None = None
    test_limit: int | None = None
    data_dir: str | None = None
    device: str | None = None
    workers: int = 2
    checkpoint_every: float = 600.0  # seconds between checkpoints within an epoch (0: every 20 steps)
    preset: str | None = None


@dataclasses.dataclass
class CertifyConfig:
    """One certification (``kind`` certify) or prediction (``kind`` predict) of a checkpoint's smoothed
    classifier. ``sigma`` defaults to the checkpoint's training σ; ``skip``/``limit`` take every
    ``skip``-th index of the split, at most ``limit`` of them; ``indices`` lists them explicitly. ``radii``
    are the ℓ2 radii a grid certifier decides (ignored by exact ones); ``n`` is then the most draws any
    input may use. ``images_per_batch`` inputs share forward passes (their certificates are unchanged)."""

    checkpoint: str
    kind: RunKind = "certify"
    sigma: float | None = None
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int = 1000
    split: Split = "test"
    skip: int = 1
    limit: int | None = None
    indices: list[int] | None = None
    noise_seed: int = 0
    dataset: str | None = None
    normalization: str | None = None
    certifier: str = "cohen"
    certifier_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    radii: tuple[float, ...] = ()
    data_dir: str | None = None
    device: str | None = None
    budget: str | None = None
    experiment: str | None = None
    images_per_batch: int = 1


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A mapping from a ``.toml``, ``.yaml`` or ``.yml`` file."""
    path = Path(path)
    if not path.is_file():
        raise RsbenchError(f"config file {str(path)!r} does not exist")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix in {".yaml", ".yml"}:
            data = yaml.safe_load(path.read_text()) or {}
        else:
            raise RsbenchError(f"config file {path} must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise RsbenchError(f"config file {path} is malformed: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RsbenchError(f"config file {path} must hold a mapping of settings")
    return data


def find_preset(name: str) -> tuple[str, Preset]:
    """The preset called ``name`` among all registered methods, with its method's name."""
    presets = {}
    for method_name, method in get_manager().methods.items():
        for preset in method.presets:
            presets[preset.name] = (method_name, preset)
    if name not in presets:
        raise RsbenchError(f"unknown preset {name!r}", did_you_mean(name, presets))
    return presets[name]


def preset_settings(name: str) -> dict[str, Any]:
    """A preset as a layer of settings (method, dataset, σ, hyperparameters, architecture)."""
    method_name, preset = find_preset(name)
    settings = {
        "method": method_name,
        "dataset": preset.dataset,
        "sigma": preset.sigma,
        "params": dict(preset.params),
        "preset": name,
    }
    if preset.arch:
        settings["arch"] = preset.arch
    return settings


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers override earlier ones; ``params`` mappings merge key by key; None means unset."""
    merged: dict[str, Any] = {"params": {}}
    for layer in layers:
        for key, value in layer.items():
            if value is None:
                continue
            if key == "params":
                if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                    raise RsbenchError(f"'params' must be a mapping of hyperparameter names, not {value!r}")
                merged["params"].update(value)
            else:
                merged[key] = value
    return merged


def _check_types(settings: dict[str, Any], source: str) -> None:
    """Each setting has its field's type (a config file's ``epochs: "ten"`` is one clear error)."""
    expected: dict[str, type | tuple[type, ...]] = {
        "dataset": str,
        "arch": str,
        "method": str,
        "sigma": (int, float),
        "out": str,
        "epochs": int,
        "batch_size": int,
        "lr": (int, float),
        "nesterov": bool,
        "seed": int,
        "train_limit": int,
        "test_limit": int,
        "data_dir": str,
        "device": str,
        "workers": int,
        "preset": str,
        "checkpoint_every": (int, float),
    }
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in settings.items():
        if not isinstance(key, str):
            raise RsbenchError(f"{source}: setting names must be words, not {key!r}")
        if key not in names:
            raise RsbenchError(f"{source}: unknown setting {key!r}", did_you_mean(key, names))
        kind = expected.get(key)
        if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise RsbenchError(f"{source}: {key} must be {getattr(kind, '__name__', 'a number')}, not {value!r}")
    milestones = settings.get("milestones")
    if milestones is not None and not (
        isinstance(milestones, list | tuple) and all(isinstance(m, int) and not isinstance(m, bool) for m in milestones)
    ):
        raise RsbenchError(f"{source}: milestones must be a list of epochs, not {milestones!r}")


def run_name(method: str, sigma: float, params: dict[str, Any], seed: int) -> str:
    """A run's folder name: method, σ, the hyperparameters given, seed (``consistency-sigma0.5-lam5-seed0``)."""
    given = "".join(f"-{key}{value}" for key, value in sorted(params.items()))
    return f"{method}-sigma{sigma:g}{given}-seed{seed}"


def train_config(preset: str | None, config_file: str | Path | None, flags: dict[str, Any]) -> TrainConfig:
    """Assemble a :class:`TrainConfig`: defaults, then the preset, the config file, the flags (None =
    not given). The run folder defaults to ``runs/DATASET/RUN_NAME``."""
    layers = [{"method": "gaussian"}]
    if preset:
        layers.append(preset_settings(preset))
    if config_file:
        file_settings = read_config_file(config_file)
        _check_types({k: v for k, v in file_settings.items() if k != "params"}, str(config_file))
        layers.append(file_settings)
    settings = merge(*layers, flags)
    if "dataset" not in settings:
        raise RsbenchError("no dataset given", "pass --dataset (e.g. mnist) or a --preset")
    if "sigma" not in settings:
        raise RsbenchError("no noise level given", "pass --sigma (e.g. 0.5) or a --preset")
    settings.setdefault("arch", get_dataset(settings["dataset"]).default_arch)
    settings.setdefault("seed", 0)
    if "milestones" in settings:
        settings["milestones"] = tuple(settings["milestones"])
    settings.setdefault(
        "out",
        str(
            Path("runs")
            / settings["dataset"]
            / run_name(settings["method"], settings["sigma"], settings["params"], settings["seed"])
        ),
    )
    return TrainConfig(**settings)


def parse_radii(text: str | None, default: tuple[float, ...] = ()) -> tuple[float, ...]:
    """A radius grid: ``start:stop:step`` (stop included) or a list ``0.25,0.5``; ℓ2, [0,1] pixel units.

    Refuses grids that are not finite, negative, or of more than 1,000 radii.
    """
    if text is None or not text.strip():
        return default
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if not all(math.isfinite(v) for v in (start, stop, step)) or step <= 0 or stop < start:
                raise ValueError
            span = (stop - start) / step
            count = math.floor(span + 1e-9) + 1 if math.isfinite(span) and span < 1e6 else 10**6
            if count > 1000:
                raise RsbenchError(f"radius grid {text!r} has {count} radii", "at most 1,000; use a larger step")
            radii = tuple(round(start + i * step, 10) for i in range(count))
        else:
            radii = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise RsbenchError(
            f"radii must be start:stop:step or a comma-separated list, not {text!r}", "e.g. --radii 0:2.5:0.25"
        ) from None
    if not radii or not all(math.isfinite(r) and r >= 0 for r in radii) or len(radii) > 1000:
        raise RsbenchError(f"radii must be 1 to 1,000 finite numbers >= 0, not {text!r}", "e.g. --radii 0:2.5:0.25")
    return tuple(sorted(set(radii)))
