"""Per-example outcomes of leaderboard rows and runs, for comparisons on the examples both evaluated.

An example's outcome in one run is its certified radius: the radius where it is classified correctly (ℓ2,
[0,1] pixel units; a grid certifier's is the largest grid radius it certified), -1 where the prediction is
wrong and -2 where the certifier abstained. A row averages its models (distinct training seeds), and each model its runs
(reruns with other noise seeds): its value on an example is that mean of ``correct × radius`` (the ACR's
summand) or of ``certified at r`` (certified accuracy's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd

from rsbench.errors import RsbenchError
from rsbench.results.stats import LEVEL, PairedComparison, compare_binary, compare_means
from rsbench.store import Store

WRONG = -1.0
ABSTAINED = -2.0


@dataclasses.dataclass
class Outcomes:
    """Certified radii on ``indices`` (sorted test indices): ``models[k][j]`` is model k's run j, aligned
    with ``indices`` (-1: wrong, -2: abstained)."""

    indices: np.ndarray
    models: list[list[np.ndarray]]

    @property
    def single_run(self) -> bool:
        """One model certified once: per-example values are 0/1, so McNemar's test applies."""
        return len(self.models) == 1 and len(self.models[0]) == 1

    def on(self, indices: np.ndarray) -> Outcomes:
        """These outcomes restricted to ``indices`` (a subset of :attr:`indices`)."""
        positions = np.searchsorted(self.indices, indices)
        return Outcomes(np.asarray(indices), [[run[positions] for run in runs] for runs in self.models])

    def values(self, key: str) -> np.ndarray:
        """Per-example values for ``key``: ``"acr"`` (correct × radius) or a radius such as ``"0.50"``
        (certified at that radius: correct and radius ≥ r), averaged over runs, then models."""
        if key == "acr":
            per_run = lambda radii: np.maximum(radii, 0.0)  # noqa: E731
        else:
            radius = round(float(key) * 100) / 100  # the floats the store's certified counts use
            per_run = lambda radii: (radii >= radius).astype(float)  # noqa: E731
        return np.mean([np.mean([per_run(run) for run in runs], axis=0) for runs in self.models], axis=0)

    def per_model(self, radii: Sequence[float]) -> list[dict[str, float]]:
        """Each model's values over these examples, its runs averaged: ``acr``, ``acr_variance`` (of
        correct × radius), certified accuracy at each radius (keyed ``"0.50"``), ``clean`` accuracy and
        ``abstain`` rate: what a leaderboard row aggregates over models."""
        values = []
        for runs in self.models:
            model = Outcomes(self.indices, [runs])
            values.append(
                {
                    "acr": float(model.values("acr").mean()),
                    "acr_variance": float(np.mean([np.maximum(run, 0.0).var() for run in runs])),
                    **{f"{r:.2f}": float(model.values(f"{r:.2f}").mean()) for r in radii},
                    "clean": float(np.mean([(run >= 0).mean() for run in runs])),
                    "abstain": float(np.mean([(run == ABSTAINED).mean() for run in runs])),
                }
            )
        return values


def load_outcomes(store: Store, model_runs: Sequence[Sequence[int]]) -> Outcomes:
    """The outcomes of a row's runs (grouped by model) on the examples every one of them evaluated."""
    run_ids = [run for runs in model_runs for run in runs]
    frame = store.results(run_ids, ["idx", "radius", "correct", "predict"])
    outcome = np.where(frame["predict"] == -1, ABSTAINED, np.where(frame["correct"] == 1, frame["radius"], WRONG))
    frame["radius"] = outcome.astype(float)
    radii = {int(run_id): group.set_index("idx")["radius"] for run_id, group in frame.groupby("run_id")}
    empty = pd.Series(dtype=float)
    indices = reduce(np.intersect1d, (radii.get(run, empty).index.to_numpy(dtype=int) for run in run_ids))
    return Outcomes(
        indices, [[radii.get(run, empty).loc[indices].to_numpy(dtype=float) for run in runs] for runs in model_runs]
    )


def common_indices(outcomes: Sequence[Outcomes]) -> np.ndarray:
    """The test indices every one of ``outcomes`` evaluated, sorted."""
    if not outcomes:
        return np.array([], dtype=int)
    return reduce(np.intersect1d, (o.indices for o in outcomes))


def compare(first: Outcomes, second: Outcomes, key: str, level: float = LEVEL) -> PairedComparison | None:
    """``first`` minus ``second`` at ``key`` (``"acr"`` or a radius such as ``"0.50"``) on the examples both
    evaluated: McNemar's exact test where both are single runs and ``key`` is a radius, else a paired
    bootstrap; None when they share no example."""
    shared = common_indices([first, second])
    if len(shared) == 0:
        return None
    first, second = first.on(shared), second.on(shared)
    a, b = first.values(key), second.values(key)
    if key != "acr" and first.single_run and second.single_run:
        return compare_binary(a, b, level)
    return compare_means(a, b, level)


def compare_runs(store: Store, first: int, second: int, radii: Sequence[float]) -> dict[str, Any]:
    """Run ``first`` against run ``second`` on the test examples both evaluated: certified accuracy at each
    of ``radii`` (McNemar's exact test, Bonett-Price interval of the difference) and ACR (paired bootstrap
    interval); the JSON of ``rsbench compare``. Differences are first minus second."""
    runs = {run_id: store.get_run(run_id) for run_id in (first, second)}
    if runs[first].dataset != runs[second].dataset:
        raise RsbenchError(
            f"run {first} is on {runs[first].dataset} and run {second} on {runs[second].dataset}",
            "compare runs of one dataset",
        )
    outcomes = {run_id: load_outcomes(store, [[run_id]]) for run_id in (first, second)}
    shared = common_indices(list(outcomes.values()))
    if len(shared) == 0:
        raise RsbenchError(f"runs {first} and {second} share no test example", "compare runs on one test subset")
    keys = [f"{radius:.2f}" for radius in radii]
    comparisons = {key: compare(outcomes[first], outcomes[second], key) for key in ["acr", *keys]}
    differs = [
        name
        for name in ("sigma", "n", "n0", "alpha", "certifier", "split")
        if getattr(runs[first], name) != getattr(runs[second], name)
    ]
    return {
        "runs": [first, second],
        "dataset": runs[first].dataset,
        "examples": len(shared),
        "examples_each": [len(outcomes[first].indices), len(outcomes[second].indices)],
        "protocol_differs": differs,
        "level": LEVEL,
        "comparisons": {
            key: {**dataclasses.asdict(c), "significant": c.significant} for key, c in comparisons.items() if c
        },
    }
