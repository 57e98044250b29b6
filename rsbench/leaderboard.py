"""Leaderboards: one row per method + hyperparameters + σ + certification protocol, seeds aggregated
as mean ± sample standard deviation (ddof=1, as the paper's Table 3).

Per run: certified accuracy at r = share of evaluated examples with correct = 1 and radius >= r;
ACR = mean of correct × radius (abstentions and errors count 0); clean accuracy = share correct;
abstention rate = share with prediction -1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsbench.errors import RsbenchError
from rsbench.store import Store

DEFAULT_RADII = tuple(round(0.25 * i, 2) for i in range(11))
GROUP_KEYS = ["origin", "method", "params_key", "arch", "sigma", "n0", "n", "alpha", "num_examples", "split", "budget"]
REPORTED_FILE = Path(__file__).resolve().parent.parent / "leaderboards" / "paper_reported.json"


def parse_radii(text: str | None) -> tuple[float, ...]:
    """``"0:2.5:0.25"`` (start:stop:step, stop included) or ``"0,0.5,1"``."""
    if not text:
        return DEFAULT_RADII
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            return tuple(round(start + i * step, 10) for i in range(count))
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise RsbenchError(f"bad --radii {text!r}", "use start:stop:step (0:2.5:0.25) or a list (0,0.5,1)") from None


def radius_key(radius: float) -> str:
    return f"{radius:.2f}"


def run_metrics(rows: pd.DataFrame, radii: tuple[float, ...]) -> dict[str, Any]:
    correct = rows["correct"].to_numpy() == 1
    radius = rows["radius"].to_numpy(dtype=float)
    return {
        "acr": float(np.mean(correct * radius)),
        "certified_accuracy": {radius_key(r): float(np.mean(correct & (radius >= r))) for r in radii},
        "clean_accuracy": float(np.mean(correct)),
        "abstain_rate": float(np.mean(rows["predict"].to_numpy() == -1)),
    }


def _mean_std(values: list[float]) -> dict[str, float | None]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else None}


def reproduced_rows(store: Store, dataset: str, radii: tuple[float, ...]) -> list[dict[str, Any]]:
    runs = store.runs(dataset, kind="certify", complete_only=True)
    if runs.empty:
        return []
    by_run = store.results(runs["id"].tolist()).groupby("run_id")
    per_run = {run_id: run_metrics(rows, radii) for run_id, rows in by_run}
    runs = runs[runs["id"].isin(per_run)].copy()
    runs["num_examples"] = runs["id"].map(by_run.size())
    runs["params_key"] = runs["params"].map(lambda p: json.dumps(p, sort_keys=True))
    runs["budget"] = runs["budget"].fillna("")
    runs["arch"] = runs["arch"].fillna("")
    rows = []
    for _, group in runs.groupby(GROUP_KEYS, dropna=False, sort=True):
        first = group.iloc[0]
        metrics = [per_run[i] for i in group["id"]]
        rows.append({
            "method": first["method"],
            "params": first["params"],
            "arch": first["arch"] or None,
            "sigma": float(first["sigma"]),
            "seeds": sorted(int(s) for s in group["seed"].dropna()),
            "num_examples": int(first["num_examples"]),
            "n": int(first["n"]),
            "n0": None if pd.isna(first["n0"]) else int(first["n0"]),
            "alpha": float(first["alpha"]),
            "split": first["split"],
            "budget": first["budget"] or "full",
            "runs": [int(i) for i in group["id"]],
            "acr": _mean_std([m["acr"] for m in metrics]),
            "certified_accuracy": {
                radius_key(r): _mean_std([m["certified_accuracy"][radius_key(r)] for m in metrics]) for r in radii
            },
            "clean_accuracy": float(np.mean([m["clean_accuracy"] for m in metrics])),
            "abstain_rate": float(np.mean([m["abstain_rate"] for m in metrics])),
            "source": "reproduced",
            "origin": first["origin"],
        })
    return rows


def reported_rows(dataset: str, radii: tuple[float, ...], path: Path = REPORTED_FILE) -> list[dict[str, Any]]:
    """The paper's numbers (``leaderboards/paper_reported.json``) for ``dataset`` at the requested radii
    (a radius the paper does not report is null)."""
    if not path.is_file():
        raise RsbenchError(f"the paper's reported numbers are not at {path}", "run from an rsbench source checkout")
    rows = []
    for entry in json.loads(path.read_text())["rows"]:
        if entry["dataset"] != dataset:
            continue
        reported = entry.get("certified_accuracy", {})
        rows.append({
            "method": entry["method"], "params": entry["params"], "arch": entry.get("arch"), "sigma": entry["sigma"],
            "seeds": entry.get("seeds", []), "num_examples": entry.get("num_examples"),
            "n": entry.get("n", 100_000), "n0": entry.get("n0", 100), "alpha": entry.get("alpha", 0.001),
            "split": "test", "budget": "full", "runs": [], "reference": entry["reference"],
            "acr": {"mean": entry["acr"], "std": entry.get("acr_std")},
            "certified_accuracy": {
                radius_key(r): ({"mean": reported[radius_key(r)], "std": None} if radius_key(r) in reported else None)
                for r in radii
            },
            "clean_accuracy": entry.get("clean_accuracy"), "abstain_rate": None, "source": "reported",
        })
    return rows


def build(store: Store, dataset: str, radii: tuple[float, ...] = DEFAULT_RADII,
          include_reported: bool = False) -> dict[str, Any]:
    """The leaderboard of ``dataset`` as the JSON object of DESIGN.md."""
    rows = reproduced_rows(store, dataset, radii)
    if include_reported:
        rows += reported_rows(dataset, radii)
    rows.sort(key=lambda r: (r["sigma"], r["budget"], r["method"], json.dumps(r["params"], sort_keys=True),
                             r["source"]))
    return {"dataset": dataset, "radii": list(radii), "rows": rows}


# ------------------------------------------------------------------------------------------ rendering


def _mean_of(row: dict[str, Any], column: str) -> float | None:
    """The mean ACR (``column`` = "acr") or certified accuracy at a radius key, None where not reported."""
    cell = row["acr"] if column == "acr" else row["certified_accuracy"].get(column)
    return cell["mean"] if cell else None


def _best_flags(board: dict[str, Any]) -> dict[tuple[int, str], bool]:
    """(row index, column) -> whether it is the best positive value among rows of the same σ, budget and
    source kind (with at least two rows to compare)."""
    flags: dict[tuple[int, str], bool] = {}
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(board["rows"]):
        groups.setdefault((row["sigma"], row["budget"], row["source"]), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        for column in ["acr"] + [radius_key(r) for r in board["radii"]]:
            values = {i: _mean_of(board["rows"][i], column) for i in members}
            present = [v for v in values.values() if v is not None]
            if not present or max(present) <= 0:
                continue
            best = max(present)
            for i, value in values.items():
                flags[(i, column)] = value is not None and math.isclose(value, best)
    return flags


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def _cell(stat: dict[str, Any] | None, scale: float, digits: int) -> str:
    if stat is None or stat.get("mean") is None:
        return "-"
    text = f"{stat['mean'] * scale:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std'] * scale:.{digits}f}"
    return text


def table(board: dict[str, Any]) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, text cells and best-value flags; accuracies in percent, ACR in ℓ2 [0,1]-pixel units. The
    source column says ``rsbench`` (certified here), ``imported`` (a Cohen-format log) or the paper's table."""
    radii = [radius_key(r) for r in board["radii"]]
    header = ["σ", "method", "params", "arch", "source", "seeds", "ACR", *radii, "clean %", "abstain %",
              "N", "N0", "α", "examples", "budget"]
    flags = _best_flags(board)
    cells, bold = [], []
    for i, row in enumerate(board["rows"]):
        seeds = len(row["seeds"]) or "-"
        line = [f"{row['sigma']:.2f}", row["method"], _params_text(row["params"]), row.get("arch") or "-",
                row["reference"] if row["source"] == "reported" else row["origin"], str(seeds),
                _cell(row["acr"], 1, 4)]
        line += [_cell(row["certified_accuracy"].get(r), 100, 1) for r in radii]
        line += [
            "-" if row["clean_accuracy"] is None else f"{100 * row['clean_accuracy']:.1f}",
            "-" if row["abstain_rate"] is None else f"{100 * row['abstain_rate']:.1f}",
            f"{row['n']:,}", "-" if row["n0"] is None else str(row["n0"]), f"{row['alpha']:g}",
            "-" if row["num_examples"] is None else str(row["num_examples"]), row["budget"],
        ]
        cells.append(line)
        bold.append([False] * 6 + [flags.get((i, "acr"), False)] + [flags.get((i, r), False) for r in radii]
                    + [False] * 7)
    return header, cells, bold


def protocol_note(board: dict[str, Any]) -> str:
    return (f"Leaderboard for {board['dataset']}: certified accuracy (%) at ℓ2 radius r, ACR, mean ± sample std "
            "over seeds; best per σ in bold. Each row states its certification protocol (N, N0, α, number of "
            "test examples, budget); rows of different protocols are not comparable.")


def render(board: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(board, indent=2)
    header, cells, bold = table(board)
    if fmt == "csv":
        return pd.DataFrame(cells, columns=header).to_csv(index=False)
    if fmt == "markdown":
        lines = [protocol_note(board), "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        for line, flags in zip(cells, bold, strict=True):
            lines.append("| " + " | ".join(f"**{c}**" if f else c for c, f in zip(line, flags, strict=True)) + " |")
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        def tex(text: str) -> str:
            return (text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%")
                    .replace("±", "$\\pm$").replace("σ", "$\\sigma$").replace("α", "$\\alpha$")
                    .replace("&", "\\&"))

        lines = ["\\begin{tabular}{" + "l" * 6 + "r" * (len(header) - 6) + "}", "\\toprule",
                 " & ".join(tex(h) for h in header) + " \\\\", "\\midrule"]
        for line, flags in zip(cells, bold, strict=True):
            lines.append(" & ".join(f"\\textbf{{{tex(c)}}}" if f else tex(c)
                                    for c, f in zip(line, flags, strict=True)) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"
    raise RsbenchError(f"unknown format {fmt!r}", "choose rich, markdown, latex, csv or json")


def plot(store: Store, board: dict[str, Any], path: Path) -> list[Path]:
    """Certified accuracy against radius, one panel per σ, one curve per reproduced row (as the paper's
    Figure 1); written as PNG and PDF next to each other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in board["rows"] if r["source"] == "reproduced"]
    if not rows:
        raise RsbenchError(f"no reproduced runs for {board['dataset']} to plot")
    sigmas = sorted({r["sigma"] for r in rows})
    figure, axes = plt.subplots(1, len(sigmas), figsize=(4.5 * len(sigmas), 3.6), squeeze=False)
    results = store.results([i for r in rows for i in r["runs"]])
    for axis, sigma in zip(axes[0], sigmas, strict=True):
        for row in (r for r in rows if r["sigma"] == sigma):
            runs = results[results.run_id.isin(row["runs"])]
            top = max(float(runs.radius.max()), 0.01)
            grid = np.linspace(0, top * 1.05, 200)
            curves = [[np.mean((g.correct == 1) & (g.radius >= r)) for r in grid] for _, g in runs.groupby("run_id")]
            label = f"{row['method']} ({_params_text(row['params'])})"
            if row["budget"] != "full":
                label += f" [{row['budget']}]"
            axis.plot(grid, np.mean(curves, axis=0), label=label)
        axis.set_title(f"{board['dataset']}, σ = {sigma:.2f}")
        axis.set_xlabel("ℓ2 radius")
        axis.set_ylabel("certified accuracy")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6)
    figure.tight_layout()
    written = []
    for suffix in (".png", ".pdf"):
        target = Path(path).with_suffix(suffix)
        figure.savefig(target, dpi=150)
        written.append(target)
    plt.close(figure)
    return written
