"""Certified accuracy against ℓ2 radius (as the paper's Figure 1): one panel per σ, stacked, one curve per
row of the board with its own colour (tab10; beyond 10 rows of a panel the line style and marker change
too), a band of ± one sample standard deviation over seeds where a row has several, and a paper's reported
rows as markers at the radii it reports. Each panel's legend sits to its right, outside the axes. Curves
come from the store's per-run metrics (certified counts every 0.01 of radius), never from per-example rows.
PDFs embed TrueType fonts.
"""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from rsbench.atomic import atomic_write
from rsbench.errors import RsbenchError
from rsbench.results.board import Board, Row, column_value
from rsbench.results.escape import plot_label
from rsbench.results.render import params_text
from rsbench.store import RADIUS_STEP, Store

STYLE = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "path"}
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D")
LEGEND_WIDTH = 70  # characters per legend line
GRID_POINTS = 200


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def row_style(position: int) -> dict[str, Any]:
    """The colour, line style and marker of the ``position``-th row of a panel: ten colours (tab10), then the
    next line style and marker for the next ten rows."""
    palette = _pyplot().get_cmap("tab10").colors
    cycle = position // len(palette)
    return {
        "color": palette[position % len(palette)],
        "linestyle": LINESTYLES[cycle % len(LINESTYLES)],
        "marker": MARKERS[cycle % len(MARKERS)],
    }


def row_label(row: Row) -> str:
    """Method, hyperparameters, architecture and where the numbers come from (wrapped to a legend's width)."""
    where = f"reported, {row.reference}" if row.source == "reported" else row.origin
    budget = "" if row.budget == "full" else f", {row.budget}"
    text = f"{row.method} ({params_text(row.params)}) {row.arch or ''} [{where}{budget}]"
    return "\n".join(textwrap.wrap(text, LEGEND_WIDTH))


def run_curves(store: Store, dataset: str) -> dict[int, np.ndarray]:
    """Each complete run's certified accuracy at radius k·0.01 (k = 0, 1, ...), from the store's metrics."""
    metrics = store.run_metrics(dataset)
    return {
        int(run.id): np.asarray(run.certified_counts, dtype=float) / run.num_examples for run in metrics.itertuples()
    }


def model_curves(row: Row, curves: dict[int, np.ndarray], steps: int) -> np.ndarray:
    """Certified accuracy on the 0.01 radius grid of each model of ``row`` (its reruns averaged): shape
    (models, steps)."""
    padded = {i: np.pad(curves[i], (0, max(0, steps - len(curves[i]))))[:steps] for i in row.runs}
    return np.array([np.mean([padded[i] for i in runs], axis=0) for runs in row.model_runs])


def draw_panel(axis, rows: list[Row], curves: dict[int, np.ndarray], title: str) -> None:
    """One σ: a curve per reproduced row (mean over seeds) with a ± 1 std band where there are several seeds,
    markers at a reported row's radii; the legend to the right of the axes."""
    steps = max((len(curves[i]) for r in rows for i in r.runs), default=1)
    grid = np.arange(steps) * RADIUS_STEP
    for position, row in enumerate(rows):
        style = row_style(position)
        label = plot_label(row_label(row))
        if row.source == "reported":
            reported = {float(key): column_value(row, key) for key in row.certified_accuracy}
            radii = sorted(r for r, value in reported.items() if value is not None)  # none beyond what N, α allow
            accuracy = [reported[r] for r in radii]
            axis.plot(radii, accuracy, color=style["color"], marker=style["marker"], linestyle="none", label=label)
            continue
        values = model_curves(row, curves, steps)
        mean = values.mean(axis=0)
        axis.plot(grid, mean, color=style["color"], linestyle=style["linestyle"], label=label)
        if len(values) > 1:
            std = values.std(axis=0, ddof=1)
            axis.fill_between(grid, mean - std, mean + std, color=style["color"], alpha=0.2, linewidth=0)
    axis.set_title(plot_label(title))
    axis.set_xlabel("ℓ2 radius r ([0,1] pixel units)")
    axis.set_ylabel("certified accuracy (fraction)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def figure(store: Store, board: Board, sigmas: list[float] | None = None):
    """A matplotlib figure: one panel per σ, stacked (every σ of the board by default), its rows in the
    board's order, reported rows included where the board has them."""
    plt = _pyplot()
    if not any(r.source == "reproduced" for r in board.rows):
        raise RsbenchError(f"no runs of {board.dataset} in the store to plot")
    sigmas = sigmas or sorted({r.sigma for r in board.rows})
    curves = run_curves(store, board.dataset)
    panels = [[r for r in board.rows if r.sigma == sigma] for sigma in sigmas]
    heights = [max(3.2, 0.5 + sum(row_label(r).count("\n") + 1 for r in rows) * 0.12) for rows in panels]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            len(sigmas), 1, figsize=(9.5, sum(heights)), height_ratios=heights, squeeze=False, layout="constrained"
        )
        for axis, sigma, rows in zip(axes[:, 0], sigmas, panels, strict=True):
            draw_panel(axis, rows, curves, f"{board.dataset}, σ = {sigma:.2f}")
    return fig


def save(fig, paths: list[Path]) -> list[Path]:
    """Write ``fig`` to each path (format from its suffix), each atomically."""
    plt = _pyplot()
    try:
        with plt.rc_context(STYLE):
            for path in paths:
                draw = functools.partial(fig.savefig, format=path.suffix[1:], dpi=150, bbox_inches="tight")
                atomic_write(path, draw, make_folder=True)
    finally:
        plt.close(fig)
    return paths


def plot_paths(path: Path) -> list[Path]:
    """The PNG and PDF files :func:`plot` writes for ``path`` (``''``: none, an error when written)."""
    path = Path(path)
    return [path.with_suffix(suffix) for suffix in (".png", ".pdf")] if path.name not in ("", "..") else [path]


def plot(store: Store, board: Board, path: Path) -> list[Path]:
    """The board's figure written as PNG and PDF next to each other (TrueType fonts in the PDF)."""
    return save(figure(store, board), plot_paths(path))
