"""Typed, validated hyperparameters for plugins.

A plugin declares its hyperparameters as a dataclass whose fields are made with :func:`hyperparameter`;
the CLI, the store and ``rsbench plugins`` read the same declaration, so a value is checked once, in one
place, whichever way it arrives (flag, ``--param k=v``, config file or preset).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any

from rsbench.errors import RsbenchError, did_you_mean


def hyperparameter(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with a default, a one-line help text and an allowed range or choice set."""
    return dataclasses.field(default=default, metadata={"help": help, "min": min, "max": max, "choices": choices})


@dataclasses.dataclass(frozen=True)
class NoParams:
    """For plugins without hyperparameters."""


def _field_types(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _convert(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise RsbenchError(f"hyperparameter {name!r} must be true or false, not {value!r}")
    try:
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(str(value)) if not isinstance(value, float) else int(value)
        return kind(value)
    except (TypeError, ValueError):
        raise RsbenchError(f"hyperparameter {name!r} must be {kind.__name__}, not {value!r}") from None


def parse_params(cls: type, raw: Mapping[str, Any], owner: str) -> Any:
    """Build ``cls`` from ``raw`` (strings or values), checking names, types, ranges and choices."""
    types = _field_types(cls)
    values = {}
    for key, value in raw.items():
        name = key.lstrip("-").replace("-", "_")
        if name not in types:
            raise RsbenchError(
                f"{owner} has no hyperparameter {name!r}",
                did_you_mean(name, types) if types else f"{owner} takes no hyperparameters",
            )
        values[name] = _convert(name, value, types[name])
    params = cls(**values)
    for field in dataclasses.fields(cls):
        check_value(owner, field, getattr(params, field.name))
    return params


def check_value(owner: str, field: dataclasses.Field, value: Any) -> None:
    meta = field.metadata
    if isinstance(value, float) and not math.isfinite(value):
        raise RsbenchError(f"{owner}: {field.name} must be finite, not {value}")
    if meta.get("choices") and value not in meta["choices"]:
        raise RsbenchError(
            f"{owner}: {field.name} must be one of {', '.join(meta['choices'])}, not {value!r}",
            did_you_mean(str(value), meta["choices"]),
        )
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        raise RsbenchError(f"{owner}: {field.name} must be >= {low}, not {value}")
    if high is not None and value > high:
        raise RsbenchError(f"{owner}: {field.name} must be <= {high}, not {value}")


def params_to_dict(params: Any) -> dict[str, Any]:
    return dataclasses.asdict(params)


def describe_params(cls: type) -> list[dict[str, Any]]:
    """One dict per hyperparameter: name, type, default, help and constraint (for docs and listings)."""
    types = _field_types(cls)
    rows = []
    for field in dataclasses.fields(cls):
        meta = field.metadata
        constraint = []
        if meta.get("min") is not None:
            constraint.append(f">= {meta['min']}")
        if meta.get("max") is not None:
            constraint.append(f"<= {meta['max']}")
        if meta.get("choices"):
            constraint.append("|".join(meta["choices"]))
        rows.append(
            {
                "name": field.name,
                "type": types[field.name].__name__,
                "default": field.default,
                "help": meta.get("help", ""),
                "constraint": ", ".join(constraint),
            }
        )
    return rows
