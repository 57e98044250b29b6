"""Leaderboards: a typed :class:`Board` of :class:`Row` s, built from the per-run metrics the store keeps (no
per-example row is read).

A row is one recipe under one certification protocol: method + hyperparameters + architecture + training
σ + origin, certified with one certifier (and its parameters), σ, N0, N, α, radii grid, split, budget and
number of examples. Its runs are told apart by the model they certify: distinct checkpoints (distinct
training seeds) aggregate as mean ± sample standard deviation (ddof=1, as the paper's Table 3); the same
checkpoint certified again (another noise seed) is never another seed: its reruns are averaged into that
model's value and counted apart (``reruns``). A row certified at a σ other than its training σ is its own
row (``train_sigma`` differs from ``sigma``). Rows are ranked by score (ACR, or certified accuracy at a
radius) within one σ and protocol.

Per run: certified accuracy at r = share of evaluated examples with correct = 1 and radius >= r;
ACR = mean of correct × radius (abstentions and errors count 0; a lower bound where radii are ``grid``
radii); clean accuracy = share correct; abstention rate = share with prediction -1. Radii are ℓ2, in [0,1]
pixel units.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
from typing import Any, Literal

import numpy as np

from rsbench import config
from rsbench.errors import RsbenchError
from rsbench.params import params_to_dict, parse_params
from rsbench.plugins import get_certifier, get_method
from rsbench.results import examples, stats
from rsbench.smoothing import IMPLEMENTATION_PARAMS, max_certified_radius
from rsbench.store import Store, certified_count

DEFAULT_RADII = tuple(round(0.25 * i, 2) for i in range(11))
GROUP_KEYS = [
    "origin",
    "method",
    "params_key",
    "arch",
    "train_sigma_key",
    "sigma",
    "certifier",
    "certifier_params_key",
    "n0",
    "n",
    "alpha",
    "radii_key",
    "num_examples",
    "split",
    "budget",
    "acr_kind",
]
REPORTED_RESOURCE = "paper_reported.json"
SORT_CHOICES = "acr, or a radius such as 0.50"
PAPER_KEYS = ("paper", "authors", "title", "venue", "year", "paper_url", "code_url")


def parse_radii(text: str | None) -> tuple[float, ...]:
    """``"0:2.5:0.25"`` (start:stop:step, stop included) or ``"0,0.5,1"``; the default grid when empty."""
    return config.parse_radii(text, DEFAULT_RADII)


def radius_key(radius: float) -> str:
    return f"{radius:.2f}"


@dataclasses.dataclass
class Stat:
    """Mean and sample standard deviation (ddof=1) over models; ``std`` is None with one model or none."""

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
    ``reference``); ``origin`` is ``rsbench`` (certified here), ``imported`` or ``reported``. ``seeds`` are
    the training seeds of the row's distinct models, ``reruns`` the certifications of an already counted
    model (another noise seed), averaged into its value; ``model_runs`` groups ``runs`` by model.
    ``train_sigma`` is the σ the models were trained at (None where unknown). ``acr_kind`` is
    ``lower_bound`` when any radius is a grid radius. ``draws_per_image`` is the mean noise draws spent per
    example (None where unknown). ``certifiable_radius`` is σ·Φ⁻¹(α^{1/N}).
    """

    method: str
    params: dict[str, Any]
    arch: str | None
    sigma: float
    train_sigma: float | None
    seeds: list[int]
    reruns: int
    num_examples: int | None
    n: int
    n0: int | None
    alpha: float
    split: str
    budget: str
    certifier: str
    certifier_params: dict[str, Any]
    radii: list[float]
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
    model_runs: list[list[int]]
    acr_interval: list[float] | None = None
    certified_accuracy_interval: dict[str, list[float] | None] = dataclasses.field(default_factory=dict)
    best: list[str] = dataclasses.field(default_factory=list)
    tied: list[str] = dataclasses.field(default_factory=list)
    comparisons: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    paper: dict[str, Any] = dataclasses.field(default_factory=dict)
    reported: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        fields: dict[str, Any] = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        fields["acr"] = Stat(**data["acr"])
        fields["certified_accuracy"] = {k: Stat(**v) if v else None for k, v in data["certified_accuracy"].items()}
        return cls(**fields)

    @property
    def sigma_mismatch(self) -> bool:
        """Certified at a σ other than the models' training σ."""
        return self.train_sigma is not None and not math.isclose(self.sigma, self.train_sigma, rel_tol=1e-9)

    def protocol(self) -> tuple:
        """What must agree for two rows to be ranked against each other."""
        return (
            self.sigma,
            self.certifier,
            json.dumps(self.certifier_params, sort_keys=True),
            self.n,
            self.n0,
            self.alpha,
            tuple(self.radii),
            self.num_examples,
            self.split,
            self.budget,
            self.acr_kind,
        )

    def score(self, sort_by: str) -> float | None:
        """The ranking value: the mean ACR (``acr``) or mean certified accuracy at a radius (``"0.50"``)."""
        stat = self.acr if sort_by == "acr" else self.certified_accuracy.get(sort_by)
        return None if stat is None else stat.mean


@dataclasses.dataclass
class Board:
    """One dataset's leaderboard: rows ranked by ``sort_by`` within each σ and protocol; certified
    accuracies at ``radii`` (ℓ2, [0,1] pixel units)."""

    dataset: str
    radii: tuple[float, ...]
    rows: list[Row]
    sort_by: str = "acr"
    common_examples: int | None = None  # rows restricted to the test examples all of them evaluated: how many

    def to_json(self) -> dict[str, Any]:
        """The JSON object of DESIGN.md (``rsbench leaderboard --format json``), with how its intervals and
        best marks are computed (``uncertainty``)."""
        return {
            "dataset": self.dataset,
            "radii": list(self.radii),
            "sort_by": self.sort_by,
            "common_examples": self.common_examples,
            "uncertainty": stats.INTERVALS,
            "rows": [dataclasses.asdict(row) for row in self.rows],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Board:
        rows = [Row.from_dict(r) for r in data["rows"]]
        return cls(data["dataset"], tuple(data["radii"]), rows, data.get("sort_by", "acr"), data.get("common_examples"))


def certifier_params_with_defaults(certifier: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """A certifier's parameters with its defaults filled in, so that runs recorded with none (imported logs,
    runs certified before a parameter existed, a paper's rows) rank with runs that spell the defaults out;
    as recorded when the certifier is not installed or its parameters no longer parse."""
    try:
        spec = get_certifier(certifier)
        return params_to_dict(parse_params(spec.Params, params or {}, f"certifier {certifier!r}"))
    except RsbenchError:
        return dict(params or {})


@functools.cache
def method_defaults(method: str) -> dict[str, Any]:
    """A training method's hyperparameter defaults; none where the method is not installed."""
    try:
        return params_to_dict(parse_params(get_method(method).Params, {}, f"method {method!r}"))
    except RsbenchError:
        return {}


def configuration(row: Row) -> str:
    """What a reproduced row and a paper's reported row of one recipe share: dataset-free method, its
    parameters with the defaults filled in (a paper's table omits them), σ and architecture."""
    params = {**method_defaults(row.method), **row.params}
    return json.dumps([row.method, params, round(row.sigma, 6), row.arch], sort_keys=True, default=str)


def _difference(mine: Stat | None, theirs: Stat | None) -> float | None:
    if mine is None or theirs is None or mine.mean is None or theirs.mean is None:
        return None
    return mine.mean - theirs.mean


def pair_with_reported(rows: list[Row]) -> None:
    """Give each reproduced row the paper's reported numbers for its configuration (every table that reports
    it, the one with the most radii first), with the differences (reproduced minus reported: ACR in ℓ2
    units, certified accuracy as a share)."""
    reported: dict[str, list[Row]] = {}
    for paper in (r for r in rows if r.source == "reported"):
        reported.setdefault(configuration(paper), []).append(paper)
    for row in (r for r in rows if r.source == "reproduced"):
        papers = sorted(
            reported.get(configuration(row), []),
            key=lambda paper: -sum(stat is not None for stat in paper.certified_accuracy.values()),
        )
        row.reported = [
            {
                "reference": paper.reference,
                "acr": paper.acr.mean,
                "acr_difference": _difference(row.acr, paper.acr),
                "certified_accuracy_difference": {
                    key: _difference(stat, paper.certified_accuracy.get(key))
                    for key, stat in row.certified_accuracy.items()
                },
            }
            for paper in papers
        ]


def _model(run: dict[str, Any]) -> str:
    """What tells a run's model apart: its checkpoint, else (imported logs) its training seed, else its log."""
    if run["checkpoint_sha256"]:
        return f"checkpoint {run['checkpoint_sha256']}"
    if run["seed"] is not None:
        return f"seed {int(run['seed'])}"
    return f"log {run['source_sha256'] or run['id']}"


@functools.cache
def _certifier_params(certifier: str, params: str) -> str:
    """The certifier parameters that define a protocol: with defaults, without the implementation knobs
    (forward batch, compile), which never change a certificate; runs apart only in those share a row."""
    full = certifier_params_with_defaults(certifier, json.loads(params))
    return json.dumps({k: v for k, v in full.items() if k not in IMPLEMENTATION_PARAMS}, sort_keys=True)


def _run_table(store: Store, dataset: str) -> list[dict[str, Any]]:
    """Complete certify runs of ``dataset`` with their metrics and grouping keys, as plain dicts."""
    frame = store.run_metrics(dataset)
    runs = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for run in runs:
        run["params_key"] = json.dumps(run["params"], sort_keys=True)
        run["certifier_params_key"] = _certifier_params(
            run["certifier"], json.dumps(run["certifier_params"] or {}, sort_keys=True)
        )
        run["radii_key"] = json.dumps([float(x) for x in run["radii"] or []])
        run["train_sigma_key"] = -1.0 if run["train_sigma"] is None else float(run["train_sigma"])
        run["acr_kind"] = "lower_bound" if run["lower_bound"] else "exact"
        run["budget"] = run["budget"] or "full"
        run["arch"] = run["arch"] or ""
        run["n0"] = -1 if run["n0"] is None else int(run["n0"])
        run["model"] = _model(run)
    return runs


def _run_values(run: dict[str, Any], radii: tuple[float, ...]) -> dict[str, float]:
    """One run's ACR (and the variance of correct × radius over its examples), certified accuracy at each
    radius, clean accuracy and abstention rate (fractions)."""
    total = run["num_examples"]
    return {
        "acr": run["acr"],
        "acr_variance": max(run["acr_square"] - run["acr"] ** 2, 0.0),
        **{radius_key(r): certified_count(run["certified_counts"], r) / total for r in radii},
        "clean": run["num_correct"] / total,
        "abstain": run["num_abstain"] / total,
    }


def _group_row(group: list[dict[str, Any]], radii: tuple[float, ...]) -> Row:
    first = group[0]
    models: dict[str, list[dict[str, Any]]] = {}
    for run in group:
        models.setdefault(run["model"], []).append(run)
    per_model = []
    for runs in models.values():  # a model's values: the mean over its certifications (noise reseeds)
        values = [_run_values(run, radii) for run in runs]
        per_model.append({key: float(np.mean([v[key] for v in values])) for key in values[0]})
    seeds = {int(runs[0]["seed"]) for runs in models.values() if runs[0]["seed"] is not None}
    draws = sum(int(run["draws_count"]) for run in group)
    train_sigma = float(first["train_sigma_key"])
    return Row(
        method=first["method"],
        params=first["params"],
        arch=first["arch"] or None,
        sigma=float(first["sigma"]),
        train_sigma=None if train_sigma == -1 else train_sigma,
        seeds=sorted(seeds),
        reruns=len(group) - len(models),
        num_examples=int(first["num_examples"]),
        n=int(first["n"]),
        n0=None if first["n0"] == -1 else int(first["n0"]),
        alpha=float(first["alpha"]),
        split=first["split"],
        budget=first["budget"],
        certifier=first["certifier"],
        certifier_params=json.loads(first["certifier_params_key"]),
        radii=json.loads(first["radii_key"]),
        draws_per_image=sum(float(run["draws_sum"]) for run in group) / draws if draws else None,
        acr=Stat.of([m["acr"] for m in per_model]),
        acr_kind=first["acr_kind"],
        certified_accuracy={radius_key(r): Stat.of([m[radius_key(r)] for m in per_model]) for r in radii},
        certifiable_radius=max_certified_radius(float(first["sigma"]), int(first["n"]), float(first["alpha"])),
        clean_accuracy=float(np.mean([m["clean"] for m in per_model])),
        abstain_rate=float(np.mean([m["abstain"] for m in per_model])),
        source="reproduced",
        origin=first["origin"],
        reference=None,
        runs=[int(run["id"]) for run in group],
        model_runs=[[int(run["id"]) for run in runs] for runs in models.values()],
        **_intervals(per_model, int(first["num_examples"]), radii),
    )


def _intervals(per_model: list[dict[str, float]], count: int, radii: tuple[float, ...]) -> dict[str, Any]:
    """95% intervals over ``count`` test examples (:mod:`rsbench.results.stats`): Clopper-Pearson at the mean
    certified count over models; the ACR's normal interval with the models' mean variance."""
    acr = float(np.mean([m["acr"] for m in per_model]))
    variance = float(np.mean([m["acr_variance"] for m in per_model]))
    accuracy = {}
    for radius in radii:
        key = radius_key(radius)
        accuracy[key] = list(stats.binomial_interval(float(np.mean([m[key] for m in per_model])) * count, count))
    return {
        "acr_interval": list(stats.mean_interval(acr, acr * acr + variance, count)),
        "certified_accuracy_interval": accuracy,
    }


def reproduced_rows(store: Store, dataset: str, radii: tuple[float, ...]) -> list[Row]:
    """Rows of the complete certify runs of ``dataset`` in ``store``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in _run_table(store, dataset):
        groups.setdefault(tuple(run[key] for key in GROUP_KEYS), []).append(run)
    return [_group_row(groups[key], radii) for key in sorted(groups, key=lambda k: json.dumps(k, default=str))]


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
        count = entry.get("num_examples")  # a reported share times its count: the count, up to rounding
        rows.append(
            Row(
                method=entry["method"],
                params=entry["params"],
                arch=entry.get("arch"),
                sigma=entry["sigma"],
                train_sigma=entry["sigma"],
                seeds=entry.get("seeds", []),
                reruns=0,
                num_examples=entry.get("num_examples"),
                n=n,
                n0=entry.get("n0", 100),
                alpha=alpha,
                split="test",
                budget="full",
                certifier="cohen",
                certifier_params=certifier_params_with_defaults("cohen", {}),
                radii=[],
                draws_per_image=None,
                acr=Stat(entry["acr"], entry.get("acr_std")),
                acr_kind="exact",
                certified_accuracy={
                    radius_key(r): Stat(reported[radius_key(r)]) if radius_key(r) in reported else None for r in radii
                },
                certifiable_radius=max_certified_radius(entry["sigma"], n, alpha),
                clean_accuracy=entry.get("clean_accuracy"),
                abstain_rate=None,
                source="reported",
                origin="reported",
                reference=entry["reference"],
                runs=[],
                model_runs=[],
                certified_accuracy_interval={
                    radius_key(r): list(stats.binomial_interval(reported[radius_key(r)] * count, count))
                    if count and radius_key(r) in reported
                    else None
                    for r in radii
                },
            )
        )
    return rows


def check_sort_by(sort_by: str, radii: tuple[float, ...]) -> str:
    """``acr`` or one of ``radii`` (as ``0.50``); anything else is an error naming the choices."""
    if sort_by == "acr":
        return sort_by
    try:
        key = radius_key(float(sort_by))
    except ValueError:
        key = sort_by
    if key not in {radius_key(r) for r in radii}:
        raise RsbenchError(f"cannot sort by {sort_by!r}", f"choose {SORT_CHOICES} among the board's radii")
    return key


def ranked(rows: list[Row], sort_by: str) -> list[Row]:
    """Rows grouped by σ and protocol (protocols in a stable order), best score first within each group;
    rows without a score last."""
    protocols = sorted({json.dumps(r.protocol(), default=str) for r in rows})
    order = {p: i for i, p in enumerate(protocols)}

    def key(row: Row) -> tuple:
        score = row.score(sort_by)
        protocol = order[json.dumps(row.protocol(), default=str)]
        return (row.sigma, protocol, score is None, -(score or 0.0), row.method, row.source, row.runs)

    return sorted(rows, key=key)


def column_value(row: Row, key: str) -> float | None:
    """A row's mean in a ranked column (``acr`` or a radius key); None where missing or beyond what its
    protocol can certify."""
    if key == "acr":
        return row.acr.mean
    if float(key) > row.certifiable_radius + 1e-12:
        return None
    stat = row.certified_accuracy.get(key)
    return None if stat is None else stat.mean


class RowOutcomes:
    """The per-example outcomes of rows, loaded from the store once each (restricted to ``only`` test
    indices where given)."""

    def __init__(self, store: Store, only: np.ndarray | None = None):
        self.store, self.only = store, only
        self.loaded: dict[str, examples.Outcomes] = {}

    def restricted(self, only: np.ndarray) -> RowOutcomes:
        """The same rows' outcomes on the ``only`` test indices (what is loaded stays loaded)."""
        narrowed = RowOutcomes(self.store, only)
        narrowed.loaded = {key: outcomes.on(only) for key, outcomes in self.loaded.items()}
        return narrowed

    def __call__(self, row: Row) -> examples.Outcomes:
        key = json.dumps(row.model_runs)
        if key not in self.loaded:
            outcomes = examples.load_outcomes(self.store, row.model_runs)
            self.loaded[key] = outcomes if self.only is None else outcomes.on(self.only)
        return self.loaded[key]


def mark_best(rows: list[Row], outcomes_of: RowOutcomes, keys: list[str]) -> None:
    """Per σ and protocol and per column in ``keys``: the best row is marked ``best`` only where a paired test
    on the examples it and the runner-up both evaluated tells them apart (:func:`examples.compare`), else both
    are marked ``tied``; the test is kept in the best row's ``comparisons``. A paper's reported row has no
    examples: where it is best or runner-up, nothing is marked."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.protocol(), []).append(row)

    for members in (m for m in groups.values() if len(m) > 1):
        for key in keys:
            scored = sorted(
                (r for r in members if column_value(r, key) is not None), key=lambda r: -(column_value(r, key) or 0)
            )
            if len(scored) < 2 or not scored[0].model_runs or not scored[1].model_runs:
                continue
            top, runner_up = scored[:2]
            comparison = examples.compare(outcomes_of(top), outcomes_of(runner_up), key)
            if comparison is None:
                continue
            top.comparisons[key] = {
                **dataclasses.asdict(comparison),
                "significant": comparison.significant,
                "versus_runs": runner_up.runs,
            }
            if comparison.significant and comparison.difference > 0:
                top.best.append(key)
            else:
                top.tied.append(key)
                runner_up.tied.append(key)


def add_papers(rows: list[Row], store: Store) -> None:
    """Each reproduced row's paper (title, authors, venue, year, paper and code links) from its runs' recorded
    model facts, where they agree."""
    infos = store.model_infos([run for row in rows for run in row.runs])
    for row in rows:
        facts = [infos.get(run, {}) for run in row.runs]
        row.paper = {
            key: facts[0][key]
            for key in PAPER_KEYS
            if facts and facts[0].get(key) is not None and all(f.get(key) == facts[0][key] for f in facts)
        }


def restrict_to_common(rows: list[Row], outcomes_of: RowOutcomes, radii: tuple[float, ...]) -> np.ndarray:
    """Recompute every row (all reproduced: a paper's reported rows cannot be restricted) on the test
    examples all of them evaluated; returns those indices."""
    shared = examples.common_indices([outcomes_of(row) for row in rows])
    if len(shared) == 0:
        raise RsbenchError("the rows share no test example", "narrow the board, e.g. --sigma 0.5")
    for row in rows:
        per_model = outcomes_of(row).on(shared).per_model(radii)
        intervals = _intervals(per_model, len(shared), radii)
        row.num_examples = len(shared)
        row.acr = Stat.of([m["acr"] for m in per_model])
        row.certified_accuracy = {radius_key(r): Stat.of([m[radius_key(r)] for m in per_model]) for r in radii}
        row.clean_accuracy = float(np.mean([m["clean"] for m in per_model]))
        row.abstain_rate = float(np.mean([m["abstain"] for m in per_model]))
        row.acr_interval = intervals["acr_interval"]
        row.certified_accuracy_interval = intervals["certified_accuracy_interval"]
    return shared


def build(
    store: Store,
    dataset: str,
    radii: tuple[float, ...] = DEFAULT_RADII,
    include_reported: bool = False,
    sort_by: str = "acr",
    sigma: float | None = None,
    common_examples: bool = False,
) -> Board:
    """The leaderboard of ``dataset`` (at ``sigma`` only, if given): rows ranked by ``sort_by`` (``acr`` or a
    radius) within σ and protocol, with 95% intervals and best marks that a paired test supports;
    ``common_examples``: every row recomputed on the test examples all of them evaluated (reported rows,
    which have no examples, are left out)."""
    sort_by = check_sort_by(sort_by, radii)
    rows = [r for r in reproduced_rows(store, dataset, radii) if sigma is None or math.isclose(r.sigma, sigma)]
    outcomes_of, common = RowOutcomes(store), None
    if common_examples and rows:
        shared = restrict_to_common(rows, outcomes_of, radii)
        outcomes_of, common = outcomes_of.restricted(shared), len(shared)
    add_papers(rows, store)
    if include_reported and not common_examples:
        rows += [r for r in reported_rows(dataset, radii) if sigma is None or math.isclose(r.sigma, sigma)]
        pair_with_reported(rows)
    mark_best(rows, outcomes_of, ["acr", *(radius_key(r) for r in radii)])
    return Board(dataset, tuple(radii), ranked(rows, sort_by), sort_by, common)
