"""Run configurations: presets, YAML/TOML config files and command-line flags, merged in that order
(later wins)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import tomllib
import yaml

from rsbench.errors import RsbenchError, did_you_mean
from rsbench.plugins import get_manager


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
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise RsbenchError(f"config file {path} is malformed: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RsbenchError(f"config file {path} must hold a mapping of settings")
    return data


def find_preset(name: str):
    """The preset called ``name`` among all registered methods, with its method's name."""
    presets = {}
    for method_name, method in get_manager().registries["method"].items():
        for preset in method.presets:
            presets[preset.name] = (method_name, preset)
    if name not in presets:
        raise RsbenchError(f"unknown preset {name!r}", did_you_mean(name, presets))
    return presets[name]


def preset_settings(name: str) -> dict[str, Any]:
    method_name, preset = find_preset(name)
    settings = {"method": method_name, "dataset": preset.dataset, "sigma": preset.sigma,
                "params": dict(preset.params), "preset": name}
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
                merged["params"].update(value)
            else:
                merged[key] = value
    return merged


def check_keys(settings: dict[str, Any], allowed: type, source: str) -> None:
    names = {f.name for f in dataclasses.fields(allowed)}
    for key in settings:
        if key not in names:
            raise RsbenchError(f"{source}: unknown setting {key!r}", did_you_mean(key, names))
