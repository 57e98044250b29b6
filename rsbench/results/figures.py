"""Certified accuracy against ℓ2 radius (as the paper's Figure 1): one panel per σ, one curve per row of
the store, one fixed colour per method across all panels (line styles tell a method's variants apart),
a band of ± one sample standard deviation over seeds where a row has several. Curves come from the store's
per-run metrics (certified counts every 0.01 of radius), never from per-example rows. PDFs embed TrueType
fonts.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from rsbench.atomic import atomic_write
from rsbench.errors import RsbenchError
from rsbench.results.board import Board, Row
from rsbench.results.escape import plot_label
from rsbench.results.render import params_text
from rsbench.store import RADIUS_STEP, Store

STYLE = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "path"}
LINESTYLES = ("-", "--", "-.", ":")
GRID_POINTS = 200


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_colours(rows: list[Row]) -> dict[str, Any]:
    """A fixed colour per method name (tab10, in sorted name order)."""
    plt = _pyplot()
    palette = plt.get_cmap("tab10").colors
    return {m: palette[i % len(palette)] for i, m in enumerate(sorted({r.method for r in rows}))}


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


def draw_panel(axis, rows: list[Row], curves: dict[int, np.ndarray], colours: dict[str, Any], title: str) -> None:
    """One σ: a curve per row (mean over seeds) with a ± 1 std band where there are several seeds."""
    steps = max((len(curves[i]) for r in rows for i in r.runs), default=1)
    grid = np.arange(steps) * RADIUS_STEP
    styles: dict[str, itertools.cycle] = {}
    for row in rows:
        values = model_curves(row, curves, steps)
        style = next(styles.setdefault(row.method, itertools.cycle(LINESTYLES)))
        label = f"{row.method} ({params_text(row.params)})" + ("" if row.budget == "full" else f" [{row.budget}]")
        mean = values.mean(axis=0)
        axis.plot(grid, mean, color=colours[row.method], linestyle=style, label=plot_label(label))
        if len(values) > 1:
            std = values.std(axis=0, ddof=1)
            axis.fill_between(grid, mean - std, mean + std, color=colours[row.method], alpha=0.2, linewidth=0)
    axis.set_title(plot_label(title))
    axis.set_xlabel("ℓ2 radius r ([0,1] pixel units)")
    axis.set_ylabel("certified accuracy (fraction)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=1, frameon=False)


def figure(store: Store, board: Board, sigmas: list[float] | None = None):
    """A matplotlib figure: one panel per σ (all σ of the board's reproduced rows by default)."""
    plt = _pyplot()
    rows = [r for r in board.rows if r.source == "reproduced"]
    if not rows:
        raise RsbenchError(f"no runs of {board.dataset} in the store to plot")
    colours = method_colours(rows)  # from every row: a method keeps its colour in every figure of the board
    sigmas = sigmas or sorted({r.sigma for r in rows})
    rows = [r for r in rows if r.sigma in sigmas]
    curves = run_curves(store, board.dataset)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(sigmas), figsize=(4.8 * len(sigmas), 3.8), squeeze=False, layout="constrained")
        for axis, sigma in zip(axes[0], sigmas, strict=True):
            members = [r for r in rows if r.sigma == sigma]
            draw_panel(axis, members, curves, colours, f"{board.dataset}, σ = {sigma:.2f}")
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
