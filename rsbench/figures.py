"""Certified accuracy against ℓ2 radius (as the paper's Figure 1): one panel per σ, one curve per row of
the store, one fixed colour per method across all panels (line styles tell a method's variants apart),
a band of ± one sample standard deviation over seeds where a row has several. PDFs embed TrueType fonts.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsbench.atomic import atomic_write
from rsbench.errors import RsbenchError
from rsbench.leaderboard import Row, board_rows
from rsbench.render import params_text
from rsbench.store import Store

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


def curves(results: pd.DataFrame, row: Row, grid: np.ndarray) -> np.ndarray:
    """Certified accuracy on ``grid`` for each run of ``row``: shape (runs, len(grid))."""
    runs = results[results["run_id"].isin(row.runs)]
    return np.array(
        [
            [np.mean((g["correct"].to_numpy() == 1) & (g["radius"].to_numpy() >= r)) for r in grid]
            for _, g in runs.groupby("run_id")
        ]
    )


def draw_panel(axis, results: pd.DataFrame, rows: list[Row], colours: dict[str, Any], title: str) -> None:
    """One σ: a curve per row (mean over seeds) with a ± 1 std band where there are several seeds."""
    top = max(float(results["radius"].max()) if len(results) else 0.0, 0.01) * 1.05
    grid = np.linspace(0, top, GRID_POINTS)
    styles: dict[str, itertools.cycle] = {}
    for row in rows:
        values = curves(results, row, grid)
        style = next(styles.setdefault(row.method, itertools.cycle(LINESTYLES)))
        label = f"{row.method} ({params_text(row.params)})" + ("" if row.budget == "full" else f" [{row.budget}]")
        mean = values.mean(axis=0)
        axis.plot(grid, mean, color=colours[row.method], linestyle=style, label=label)
        if len(values) > 1:
            std = values.std(axis=0, ddof=1)
            axis.fill_between(grid, mean - std, mean + std, color=colours[row.method], alpha=0.2, linewidth=0)
    axis.set_title(title)
    axis.set_xlabel("ℓ2 radius r ([0,1] pixel units)")
    axis.set_ylabel("certified accuracy (fraction)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=1, frameon=False)


def figure(store: Store, board: dict[str, Any], sigmas: list[float] | None = None):
    """A matplotlib figure: one panel per σ (all σ of the board's reproduced rows by default)."""
    plt = _pyplot()
    rows = [r for r in board_rows(board) if r.source == "reproduced"]
    if not rows:
        raise RsbenchError(f"no runs of {board['dataset']} in the store to plot")
    colours = method_colours(rows)  # from every row: a method keeps its colour in every figure of the board
    sigmas = sigmas or sorted({r.sigma for r in rows})
    rows = [r for r in rows if r.sigma in sigmas]
    results = store.results([i for r in rows for i in r.runs])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(sigmas), figsize=(4.8 * len(sigmas), 3.8), squeeze=False, layout="constrained")
        for axis, sigma in zip(axes[0], sigmas, strict=True):
            members = [r for r in rows if r.sigma == sigma]
            panel = results[results["run_id"].isin([i for r in members for i in r.runs])]
            draw_panel(axis, panel, members, colours, f"{board['dataset']}, σ = {sigma:.2f}")
    return fig


def save(fig, paths: list[Path]) -> list[Path]:
    plt = _pyplot()
    with plt.rc_context(STYLE):
        for path in paths:
            draw = functools.partial(fig.savefig, format=path.suffix[1:], dpi=150, bbox_inches="tight")
            atomic_write(path, draw, make_folder=True)
    plt.close(fig)
    return paths


def plot_paths(path: Path) -> list[Path]:
    """The PNG and PDF files :func:`plot` writes for ``path`` (``''``: none, an error when written)."""
    path = Path(path)
    return [path.with_suffix(suffix) for suffix in (".png", ".pdf")] if path.name not in ("", "..") else [path]


def plot(store: Store, board: dict[str, Any], path: Path) -> list[Path]:
    """The board's figure written as PNG and PDF next to each other (TrueType fonts in the PDF)."""
    return save(figure(store, board), plot_paths(path))
