"""What a run is, in one typed place: :class:`TrainConfig` and :class:`CertifyConfig`, their assembly from a
preset, a YAML/TOML config file and command-line flags (merged in that order, later wins), and the one
function that names a run's folder.

A setting travels: CLI flag -> :func:`train_config` -> :class:`TrainConfig` -> ``training.resolve``
(typed by the method's ``Params``) -> the method's loss; and for certification: CLI flag ->
:class:`CertifyConfig` -> ``certification.open_job`` -> the certifier and the store's run record.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import yaml

from rsbench.errors import RsbenchError, did_you_mean
from rsbench.methods import Preset
from rsbench.params import describe_params, params_to_dict, parse_params
from rsbench.plugins import get_dataset, get_manager, get_method
from rsbench.protocol import RunKind, Split


def setting(help: str, example: Any = None, **field: Any) -> Any:
    """A :class:`TrainConfig` field with its one-line help and, where it defaults to None, an example value:
    what ``rsbench train --config-example`` prints about it."""
    return dataclasses.field(metadata={"help": help, "example": example}, **field)


@dataclasses.dataclass
class TrainConfig:
    """One training run. ``None`` schedule fields take the dataset's paper schedule; ``nesterov`` None
    keeps the schedule's (plain momentum, as the official code). A checkpoint is written after every epoch
    and every ``checkpoint_every`` seconds within one, so a long epoch resumes where it stopped. The keys of
    a config file (``rsbench train --config``) are these fields; :func:`config_example` writes one."""

    dataset: str = setting("Dataset plugin: mnist, cifar10, imagenet, ... (`rsbench plugins` lists them).")
    arch: str = setting("Architecture (default: the dataset's).")
    method: str = setting("Training method plugin (default: gaussian); its hyperparameters go under [params].")
    sigma: float = setting("Noise level σ in [0,1] pixel units.")
    params: dict[str, Any] = setting("The method's hyperparameters.", default_factory=dict)
    out: str = setting(
        "Run folder (delete the line for runs/DATASET/METHOD-sigmaσ-PARAMS-seedSEED of the settings above).",
        default="runs/train",
    )
    epochs: int | None = setting("Epochs (default: the dataset's paper schedule).", default=None)
    batch_size: int | None = setting("Loader batch size (default: the schedule's).", default=None)
    lr: float | None = setting("Initial learning rate (default: the schedule's).", default=None)
    milestones: tuple[int, ...] | None = setting(
        "0-based epochs from which the learning rate is multiplied by 0.1 (default: the schedule's).", default=None
    )
    nesterov: bool | None = setting("Nesterov momentum (default: plain momentum, as the official code).", default=None)
    seed: int = setting("Random seed.", default=0)
    train_limit: int | None = setting("Train on the first N examples (smoke runs; default: all).", 2000, default=None)
    test_limit: int | None = setting("Evaluate on the first N test examples (default: all).", 1000, default=None)
    data_dir: str | None = setting("Data root (default: $RSBENCH_DATA, else ./data).", "data", default=None)
    device: str | None = setting("cpu, cuda, cuda:1 ... (default: CUDA when present).", "cuda", default=None)
    workers: int = setting("Data-loader workers for file-based datasets.", default=2)
    checkpoint_every: float = setting("Seconds between checkpoints within an epoch (0: every 20 steps).", default=600.0)
    preset: str | None = setting(
        "A named configuration (`rsbench plugins` lists them): its settings, then those of this file.",
        "mnist-consistency-0.50",
        default=None,
    )


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


def train_config(
    preset: str | None, config_file: str | Path | None, flags: dict[str, Any], base: dict[str, Any] | None = None
) -> TrainConfig:
    """Assemble a :class:`TrainConfig`: defaults (``base`` on top of them), then the preset (``preset``, else
    the config file's), the config file, the flags (None = not given). The run folder defaults to
    ``runs/DATASET/RUN_NAME``."""
    file_settings = read_config_file(config_file) if config_file else {}
    _check_types({k: v for k, v in file_settings.items() if k != "params"}, str(config_file))
    preset = preset or file_settings.get("preset")
    layers = [{"method": "gaussian", **(base or {})}]
    if preset:
        layers.append(preset_settings(preset))
    settings = merge(*layers, file_settings, flags, {"preset": preset})
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


def config_example(config: TrainConfig) -> str:
    """``config`` as a commented TOML file for ``rsbench train --config``: every setting with its help; the
    run's own settings as values (hyperparameters typed), the others commented out with their defaults (the
    dataset's paper schedule) or an example; under ``[params]`` the method's hyperparameters, those not given
    commented out with their defaults. Read back, it gives ``config``."""
    schedule = get_dataset(config.dataset).schedule
    scheduled = {
        "epochs": schedule.epochs, "batch_size": schedule.batch_size, "lr": schedule.lr,
        "milestones": schedule.milestones, "nesterov": schedule.nesterov,
    }  # fmt: skip
    written = ("dataset", "arch", "method", "sigma", "seed", "out")
    lines = [
        "# rsbench train --config FILE: the settings of one training run (TOML; YAML with the same keys works",
        "# too). Flags given beside --config override them; a line starting with '#' keeps the default.",
    ]
    for field in dataclasses.fields(TrainConfig):
        if field.name == "params":
            continue
        value = getattr(config, field.name)
        lines.append(f"\n# {field.metadata['help']}")
        if field.name in written or value != field.default:
            lines.append(f"{field.name} = {toml_value(value)}")
        else:
            shown = value if value is not None else scheduled.get(field.name, field.metadata["example"])
            lines.append(f"# {field.name} = {toml_value(shown)}")
    method = get_method(config.method)
    typed = params_to_dict(parse_params(method.Params, config.params, f"method {config.method!r}"))
    lines.append(f"\n[params]  # {config.method}'s hyperparameters (`rsbench train --method {config.method} --help`)")
    for param in describe_params(method.Params):
        constraint = f" [{param['constraint']}]" if param["constraint"] else ""
        given = param["name"] in config.params
        lines.append(f"# {param['help']}{constraint}")
        lines.append(f"{'' if given else '# '}{param['name']} = {toml_value(typed[param['name']])}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A TOML value: a boolean, number, string (TOML's basic strings take JSON's escapes) or array."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(str(value))
