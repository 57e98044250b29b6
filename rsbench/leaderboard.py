"""Leaderboards: one row per method + hyperparameters + architecture + origin + σ + certification protocol
(certifier, N0, N, α, examples, split, budget), seeds aggregated as mean ± sample standard deviation (ddof=1,
as the paper's Table 3). Rendering lives in :mod:`rsbench.render`.

Per run: certified accuracy at r = share of evaluated examples with correct = 1 and radius >= r;
ACR = mean of correct × radius (abstentions and errors count 0; a lower bound where radii are ``grid``
radii); clean accuracy = share correct; abstention rate = share with prediction -1. Radii are ℓ2, in [0,1]
pixel units.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
from typing import Any, Literal

import numpy as np
import pandas as pd

from rsbench import config
from rsbench.errors import RsbenchError
from rsbench.params import params_to_dict, parse_params
from rsbench.plugins import get_certifier
from rsbench.store import Store

DEFAULT_RADII = tuple(round(0.25 * i, 2) for i in range(11))
GROUP_KEYS = [
    "origin",
    "method",
    "params_key",
    "arch",
    "sigma",
    "certifier",
    "certifier_params_key",
    "n0",
    "n",
    "alpha",
    "num_examples",
    "split",
    "budget",
    "acr_kind",
]
REPORTED_RESOURCE = "paper_reported.json"


def parse_radii(text: str | None) -> tuple[float, ...]:
    """``"0:2.5:0.25"`` (start:stop:step, stop included) or ``"0,0.5,1"``; the default grid when empty."""
    return config.parse_radii(text, DEFAULT_RADII)


def radius_key(radius: float) -> str:
    return f"{radius:.2f}"


def certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """σ·Φ⁻¹(α^{1/N}): the largest radius CERTIFY can return with N draws at level α (all draws agree);
    a radius above it is certified for no input under this protocol."""
    from rsbench.smoothing import max_certified_radius

    return max_certified_radius(sigma, n, alpha)


@dataclasses.dataclass
class Stat:
    """Mean and sample standard deviation (ddof=1) over seeds; ``std`` is None with one seed or none."""

    mean: float | None
    std: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        array = np.asarray(values, dtype=float)
        return cls(float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else None)


@dataclasses.dataclass
class Row:
    """One leaderboard row; its fields are the JSON schema of ``rsbench leaderboard --format json``.

    ``source`` is ``reproduced`` (rows in the store) or ``reported`` (a paper's table, named by
    ``reference``); ``origin`` is ``rsbench`` (certified here), ``imported`` or ``reported``.
    ``acr_kind`` is ``lower_bound`` when any radius is a grid radius. ``draws_per_image`` is the mean noise
    draws spent per example (None where unknown). ``certifiable_radius`` is σ·Φ⁻¹(α^{1/N}).
    """

    method: str
    params: dict[str, Any]
    arch: str | None
    sigma: float
    seeds: list[int]
    num_examples: int | None
    n: int
    n0: int | None
    alpha: float
    split: str
    budget: str
    certifier: str
    certifier_params: dict[str, Any]
    draws_per_image: float | None
    acr: Stat
    acr_kind: Literal["exact", "lower_bound"]
    certified_accuracy: dict[str, Stat | None]
    certifiable_radius: float
    clean_accuracy: float | None
    abstain_rate: float | None
    source: Literal["reproduced", "reported"]
    origin: str
    reference: str | None
    runs: list[int]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        fields: dict[str, Any] = {f.name: data.get(f.name) for f in dataclasses.fields(cls)}
        fields["acr"] = Stat(**data["acr"])
        fields["certified_accuracy"] = {k: Stat(**v) if v else None for k, v in data["certified_accuracy"].items()}
        return cls(**fields)

    def protocol(self) -> tuple:
        """What must agree for two rows to be ranked against each other."""
        return (
            self.sigma,
            self.certifier,
            json.dumps(self.certifier_params, sort_keys=True),
            self.n,
            self.n0,
            self.alpha,
            self.num_examples,
            self.split,
            self.budget,
            self.acr_kind,
        )


def run_metrics(rows: pd.DataFrame, radii: tuple[float, ...]) -> dict[str, Any]:
    """One run's ACR, certified accuracy at each radius (fractions), clean accuracy, abstention rate, and
    the sum and count of its known noise draws."""
    correct = rows["correct"].to_numpy() == 1
    radius = rows["radius"].to_numpy(dtype=float)
    draws = pd.to_numeric(rows["draws"], errors="coerce").dropna()
    return {
        "acr": float(np.mean(correct * radius)),
        "certified_accuracy": {radius_key(r): float(np.mean(correct & (radius >= r))) for r in radii},
        "clean_accuracy": float(np.mean(correct)),
        "abstain_rate": float(np.mean(rows["predict"].to_numpy() == -1)),
        "draws": (float(draws.sum()), len(draws)),
        "lower_bound": bool((rows["radius_kind"] == "grid").any()),
    }


def certifier_params_with_defaults(certifier: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """A certifier's parameters with its defaults filled in, so that runs recorded with none (imported logs,
    runs certified before a parameter existed, a paper's rows) rank with runs that spell the defaults out;
    as recorded when the certifier is not installed or its parameters no longer parse."""
    try:
        spec = get_certifier(certifier)
        return params_to_dict(parse_params(spec.Params, params or {}, f"certifier {certifier!r}"))
    except RsbenchError:
        return dict(params or {})


def _run_table(store: Store, dataset: str, radii: tuple[float, ...]) -> tuple[pd.DataFrame, dict[int, dict]]:
    """Complete certify runs of ``dataset`` with their grouping keys, and each run's metrics."""
    runs = store.runs(dataset, kind="certify", complete_only=True)
    results = store.results(runs["id"].tolist())
    per_run = {int(i): run_metrics(rows, radii) for i, rows in results.groupby("run_id")}
    runs = runs[runs["id"].isin(per_run)].copy()
    runs["acr_kind"] = runs["id"].map(lambda i: "lower_bound" if per_run[i]["lower_bound"] else "exact")
    runs["num_examples"] = runs["id"].map(results.groupby("run_id").size())
    runs["params_key"] = runs["params"].map(lambda p: json.dumps(p, sort_keys=True))
    runs["certifier_params"] = [
        certifier_params_with_defaults(c, p) for c, p in zip(runs["certifier"], runs["certifier_params"], strict=True)
    ]
    runs["certifier_params_key"] = runs["certifier_params"].map(lambda p: json.dumps(p, sort_keys=True))
    runs["budget"] = runs["budget"].astype(object).where(runs["budget"].notna(), "full").replace("", "full")
    runs["arch"] = runs["arch"].astype(object).where(runs["arch"].notna(), "")
    runs["n0"] = runs["n0"].astype(object).where(runs["n0"].notna(), -1)
    return runs, per_run


def _group_row(group: pd.DataFrame, per_run: dict[int, dict], radii: tuple[float, ...]) -> Row:
    first = group.iloc[0]
    metrics = [per_run[i] for i in group["id"]]
    draws_sum, draws_count = (sum(values) for values in zip(*(m["draws"] for m in metrics), strict=True))
    return Row(
        method=first["method"],
        params=first["params"],
        arch=first["arch"] or None,
        sigma=float(first["sigma"]),
        seeds=sorted(int(s) for s in group["seed"].dropna()),
        num_examples=int(first["num_examples"]),
        n=int(first["n"]),
        n0=None if first["n0"] == -1 else int(first["n0"]),
        alpha=float(first["alpha"]),
        split=first["split"],
        budget=first["budget"],
        certifier=first["certifier"],
        certifier_params=first["certifier_params"],
        draws_per_image=draws_sum / draws_count if draws_count else None,
        acr=Stat.of([m["acr"] for m in metrics]),
        acr_kind=first["acr_kind"],
        certified_accuracy={
            radius_key(r): Stat.of([m["certified_accuracy"][radius_key(r)] for m in metrics]) for r in radii
        },
        certifiable_radius=certifiable_radius(float(first["sigma"]), int(first["n"]), float(first["alpha"])),
        clean_accuracy=float(np.mean([m["clean_accuracy"] for m in metrics])),
        abstain_rate=float(np.mean([m["abstain_rate"] for m in metrics])),
        source="reproduced",
        origin=first["origin"],
        reference=None,
        runs=[int(i) for i in group["id"]],
    )


def reproduced_rows(store: Store, dataset: str, radii: tuple[float, ...]) -> list[Row]:
    """Rows of the complete certify runs of ``dataset`` in ``store``."""
    runs, per_run = _run_table(store, dataset, radii)
    if runs.empty:
        return []
    return [_group_row(group, per_run, radii) for _, group in runs.groupby(GROUP_KEYS, dropna=False, sort=True)]


def reported_entries() -> list[dict[str, Any]]:
    """The paper's reported numbers (package data ``rsbench/data/paper_reported.json``)."""
    resource = importlib.resources.files("rsbench") / "data" / REPORTED_RESOURCE
    if not resource.is_file():
        raise RsbenchError(
            f"the paper's reported numbers are missing from the installation ({resource})", "reinstall rsbench"
        )
    return json.loads(resource.read_text(encoding="utf-8"))["rows"]


def reported_rows(dataset: str, radii: tuple[float, ...]) -> list[Row]:
    """The paper's rows for ``dataset`` at the requested radii (a radius the paper does not report is None)."""
    rows = []
    for entry in (e for e in reported_entries() if e["dataset"] == dataset):
        reported = entry.get("certified_accuracy", {})
        n, alpha = entry.get("n", 100_000), entry.get("alpha", 0.001)
        rows.append(
            Row(
                method=entry["method"],
                params=entry["params"],
                arch=entry.get("arch"),
                sigma=entry["sigma"],
                seeds=entry.get("seeds", []),
                num_examples=entry.get("num_examples"),
                n=n,
                n0=entry.get("n0", 100),
                alpha=alpha,
                split="test",
                budget="full",
                certifier="cohen",
                certifier_params=certifier_params_with_defaults("cohen", {}),
                draws_per_image=None,
                acr=Stat(entry["acr"], entry.get("acr_std")),
                acr_kind="exact",
                certified_accuracy={
                    radius_key(r): Stat(reported[radius_key(r)]) if radius_key(r) in reported else None for r in radii
                },
                certifiable_radius=certifiable_radius(entry["sigma"], n, alpha),
                clean_accuracy=entry.get("clean_accuracy"),
                abstain_rate=None,
                source="reported",
                origin="reported",
                reference=entry["reference"],
                runs=[],
            )
        )
    return rows


def sort_key(row: Row) -> tuple:
    return (
        row.sigma,
        row.budget,
        row.method,
        json.dumps(row.params, sort_keys=True),
        row.source,
        row.origin,
        row.reference or "",
        row.runs,
    )


def build_rows(
    store: Store, dataset: str, radii: tuple[float, ...] = DEFAULT_RADII, include_reported: bool = False
) -> list[Row]:
    """Typed rows of ``dataset``'s leaderboard, sorted by σ, budget, method and hyperparameters."""
    rows = reproduced_rows(store, dataset, radii)
    if include_reported:
        rows += reported_rows(dataset, radii)
    return sorted(rows, key=sort_key)


def build(
    store: Store, dataset: str, radii: tuple[float, ...] = DEFAULT_RADII, include_reported: bool = False
) -> dict[str, Any]:
    """The leaderboard of ``dataset`` as the JSON object of DESIGN.md (rows as :class:`Row` fields)."""
    rows = build_rows(store, dataset, radii, include_reported)
    return {"dataset": dataset, "radii": list(radii), "rows": [dataclasses.asdict(r) for r in rows]}


def board_rows(board: dict[str, Any]) -> list[Row]:
    """The typed rows of a board built by :func:`build`."""
    return [Row.from_dict(r) for r in board["rows"]]


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, so it serializes as strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def render(board: dict[str, Any], fmt: str, wanted: list[str] | None = None) -> str:
    """``board`` as markdown, latex, csv or json text (see :func:`rsbench.render.render`)."""
    from rsbench.render import render as render_board

    return render_board(board, fmt, wanted)
