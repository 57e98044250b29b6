"""Leaderboards as text, tables and figures: markdown and LaTeX for papers, CSV and JSON holding numbers,
a rich terminal table (compact, or ``wide`` with every column) and certified-accuracy-vs-radius plots.

Accuracies are shown in percent and ACR in ℓ2 [0,1]-pixel units, mean ± sample std over seeds. A radius
beyond what the protocol can certify (σ·Φ⁻¹(α^{1/N})) shows "–"; a lower-bound ACR (grid radii) shows
"≥ …". Bold marks a unique best among rows of one σ and protocol only.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import pandas as pd
from rich import box
from rich.table import Table
from rich.text import Text

from rsbench.atomic import json_text
from rsbench.errors import RsbenchError, did_you_mean
from rsbench.results.board import Board, Row, Stat, radius_key
from rsbench.results.escape import csv_cell, markdown_cell, printable, tex

FORMATS = ("rich", "markdown", "latex", "csv", "json")
UNCERTIFIABLE = "–"
MISSING = "n/a"
# protocol fields: stated once in the caption when every row agrees, else shown as columns
PROTOCOL_COLUMNS = ("certifier", "radii", "n", "n0", "alpha", "examples", "split", "budget", "seeds", "draws")


@dataclasses.dataclass(frozen=True)
class Column:
    """A table column: ``text`` shows a row's cell (``std`` adds ± std), ``value`` is its number or string
    for ranking; ``ranked`` columns get bold for a unique best; ``numeric`` ones are right-aligned."""

    key: str
    header: str
    text: Callable[[Row, bool], str]
    value: Callable[[Row], Any]
    ranked: bool = False
    numeric: bool = True


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def sigma_text(row: Row) -> str:
    """σ of the certification, and the training σ where it differs (a marked row of its own)."""
    text = f"{row.sigma:.2f}"
    return f"{text} (trained at {row.train_sigma:g})" if row.sigma_mismatch else text


def seeds_text(row: Row) -> str:
    """Distinct models (training seeds; an imported log without one counts as its own model), and reruns of a
    model (other noise seeds), which are not seeds."""
    text = str(len(row.model_runs) or len(row.seeds) or "-")
    return f"{text} (+{row.reruns} rerun{'s' * (row.reruns > 1)})" if row.reruns else text


def radii_text(radii: list[float]) -> str:
    """A grid certifier's radii compactly (``0:2.5:0.25`` when evenly spaced); ``exact`` for none."""
    if not radii:
        return "exact"
    steps = {round(b - a, 9) for a, b in zip(radii, radii[1:], strict=False)}
    if len(radii) > 2 and len(steps) == 1:
        return f"{radii[0]:g}:{radii[-1]:g}:{steps.pop():g}"
    return ",".join(f"{r:g}" for r in radii)


def origin_text(row: Row) -> str:
    """``rsbench`` (evaluated here), ``imported`` (a certification log) or the paper's table."""
    return f"reported ({row.reference})" if row.source == "reported" else row.origin


def _stat_text(stat: Stat | None, scale: float, digits: int, std: bool) -> str:
    if stat is None or stat.mean is None:
        return MISSING
    text = f"{stat.mean * scale:.{digits}f}"
    if std and stat.std is not None:
        text += f" ± {stat.std * scale:.{digits}f}"
    return text


def acr_text(row: Row, std: bool = True) -> str:
    """The ACR, prefixed "≥ " where it is a lower bound (grid radii)."""
    text = _stat_text(row.acr, 1, 4 if std else 3, std)
    return f"≥ {text}" if row.acr_kind == "lower_bound" and text != MISSING else text


def accuracy_text(row: Row, radius: float, std: bool = True) -> str:
    """Certified accuracy in percent at ``radius``; "–" beyond the protocol's certifiable radius."""
    if radius > row.certifiable_radius + 1e-12:
        return UNCERTIFIABLE
    return _stat_text(row.certified_accuracy.get(radius_key(radius)), 100, 1, std)


def _optional(value: Any, fmt: str = "{}") -> str:
    return MISSING if value is None else fmt.format(value)


def _radius_column(radius: float) -> Column:
    key = radius_key(radius)

    def value(row: Row) -> float | None:
        stat = row.certified_accuracy[key]
        if stat is None or stat.mean is None or accuracy_text(row, radius, False) in (UNCERTIFIABLE, MISSING):
            return None
        return round(100 * stat.mean, 1)

    return Column(key, key, lambda r, s: accuracy_text(r, radius, s), value, ranked=True)


def columns(radii: list[float]) -> dict[str, Column]:
    """Every column a table can show, by key (``--columns`` takes these keys)."""
    found = [
        Column("sigma", "σ", lambda r, s: sigma_text(r), lambda r: r.sigma),
        Column("method", "method", lambda r, s: r.method, lambda r: r.method, numeric=False),
        Column("params", "params", lambda r, s: params_text(r.params), lambda r: params_text(r.params), numeric=False),
        Column("arch", "arch", lambda r, s: r.arch or "-", lambda r: r.arch or "", numeric=False),
        Column("origin", "origin", lambda r, s: origin_text(r), origin_text, numeric=False),
        Column("seeds", "seeds", lambda r, s: seeds_text(r), lambda r: len(r.model_runs) or len(r.seeds)),
        Column("acr", "ACR", acr_text, lambda r: None if r.acr.mean is None else round(r.acr.mean, 4), ranked=True),
        *(_radius_column(radius) for radius in radii),
        Column(
            "clean",
            "clean %",
            lambda r, s: _optional(r.clean_accuracy and 100 * r.clean_accuracy, "{:.1f}"),
            lambda r: r.clean_accuracy,
        ),
        Column(
            "abstain",
            "abstain %",
            lambda r, s: _optional(r.abstain_rate and 100 * r.abstain_rate, "{:.1f}"),
            lambda r: r.abstain_rate,
        ),
        Column("certifier", "certifier", lambda r, s: r.certifier, lambda r: r.certifier, numeric=False),
        Column(
            "draws", "draws/image", lambda r, s: _optional(r.draws_per_image, "{:,.0f}"), lambda r: r.draws_per_image
        ),
        Column("radii", "radii", lambda r, s: radii_text(r.radii), lambda r: radii_text(r.radii), numeric=False),
        Column("n", "N", lambda r, s: f"{r.n:,}", lambda r: r.n),
        Column("n0", "N0", lambda r, s: _optional(r.n0), lambda r: r.n0),
        Column("alpha", "α", lambda r, s: f"{r.alpha:g}", lambda r: r.alpha),
        Column("examples", "examples", lambda r, s: _optional(r.num_examples, "{:,}"), lambda r: r.num_examples),
        Column("split", "split", lambda r, s: r.split, lambda r: r.split, numeric=False),
        Column("budget", "budget", lambda r, s: r.budget, lambda r: r.budget, numeric=False),
    ]
    return {c.key: c for c in found}


def choose_columns(board: Board, rows: list[Row], wanted: list[str] | None, wide: bool) -> list[Column]:
    """``wanted`` keys in order; by default the identity, ACR and radius columns plus every protocol field
    that differs between rows (the others go in the caption); ``wide``: every column."""
    available = columns(list(board.radii))
    if wanted:
        unknown = [k for k in wanted if k not in available]
        if unknown:
            raise RsbenchError(f"unknown column {unknown[0]!r}", did_you_mean(unknown[0], available))
        return [available[k] for k in wanted]
    if wide:
        return list(available.values())
    keys = ["sigma", "method", "params", "arch", "origin", "acr", *(radius_key(r) for r in list(board.radii))]
    varying = [k for k in PROTOCOL_COLUMNS if len({available[k].text(r, False) for r in rows}) > 1]
    return [available[k] for k in keys + varying]


def best_cells(rows: list[Row], shown: list[Column]) -> set[tuple[int, str]]:
    """(row index, column key) of each unique best positive value (at the precision shown) among rows of
    the same σ and protocol (a paper's rows included); a tie marks nothing."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.protocol(), []).append(i)
    best = set()
    for members in (m for m in groups.values() if len(m) > 1):
        for column in (c for c in shown if c.ranked):
            values = {i: column.value(rows[i]) for i in members}
            present = [v for v in values.values() if v is not None]
            if present and max(present) > 0 and present.count(max(present)) == 1:
                best.add(next((i, column.key) for i, v in values.items() if v == max(present)))
    return best


def caption(board: Board, rows: list[Row], shown: list[Column]) -> str:
    """One line: what the table shows and the protocol fields every row shares."""
    available = columns(list(board.radii))
    keys = {c.key for c in shown}
    shared = [
        f"{available[k].header} {available[k].text(rows[0], False)}"
        for k in PROTOCOL_COLUMNS
        if rows and k not in keys and len({available[k].text(r, False) for r in rows}) == 1
    ]
    text = (
        f"{board.dataset}: certified accuracy (%) at ℓ2 radius r ([0,1] pixel units) and ACR, mean ± sample "
        "std over distinct training seeds (reruns of one model are averaged, not seeds); rows ranked by "
        f"{'ACR' if board.sort_by == 'acr' else 'certified accuracy at r = ' + board.sort_by} within one σ and "
        'protocol; bold: unique best among them. "–": r beyond what the protocol can certify (σ·Φ⁻¹(α^(1/N))); '
        '"≥": a lower bound (grid certifier).'
    )
    if shared:
        text += " Protocol: " + ", ".join(shared) + "."
    if len({r.protocol() for r in rows}) > len({r.sigma for r in rows}):
        text += " Rows of different protocols are shown together but not ranked against each other."
    return text


def cells(rows: list[Row], shown: list[Column], std: bool = True) -> tuple[list[list[str]], list[list[bool]]]:
    best = best_cells(rows, shown)
    texts = [[c.text(row, std) for c in shown] for row in rows]
    bold = [[(i, c.key) in best for c in shown] for i in range(len(rows))]
    return texts, bold


def markdown(board: Board, wanted: list[str] | None = None) -> str:
    rows = board.rows
    shown = choose_columns(board, rows, wanted, wide=False)
    texts, bold = cells(rows, shown)
    lines = [
        markdown_cell(caption(board, rows, shown)),
        "",
        "| " + " | ".join(markdown_cell(c.header) for c in shown) + " |",
        "|" + "|".join("---:" if c.numeric else "---" for c in shown) + "|",
    ]
    for line, flags in zip(texts, bold, strict=True):
        cells_text = (markdown_cell(t) for t in line)
        lines.append("| " + " | ".join(f"**{t}**" if f else t for t, f in zip(cells_text, flags, strict=True)) + " |")
    return "\n".join(lines) + "\n"


def latex(board: Board, wanted: list[str] | None = None) -> str:
    """A ``table`` float with a booktabs ``tabular`` and the caption line (needs ``\\usepackage{booktabs}``)."""
    rows = board.rows
    shown = choose_columns(board, rows, wanted, wide=False)
    texts, bold = cells(rows, shown)
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\caption{{{tex(caption(board, rows, shown))}}}",
        "\\begin{tabular}{" + "".join("r" if c.numeric else "l" for c in shown) + "}",
        "\\toprule",
        " & ".join(tex(c.header) for c in shown) + " \\\\",
        "\\midrule",
    ]
    for line, flags in zip(texts, bold, strict=True):
        lines.append(
            " & ".join(f"\\textbf{{{tex(t)}}}" if f else tex(t) for t, f in zip(line, flags, strict=True)) + " \\\\"
        )
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def numeric_frame(board: Board) -> pd.DataFrame:
    """One row per leaderboard row, numbers only (fractions, counts), never display strings."""
    records = []
    for row in board.rows:
        record = {
            "sigma": row.sigma,
            "train_sigma": row.train_sigma,
            "method": row.method,
            "params": json.dumps(row.params, sort_keys=True),
            "arch": row.arch,
            "source": row.source,
            "origin": row.origin,
            "reference": row.reference,
            "num_seeds": len(row.seeds),
            "seeds": " ".join(map(str, row.seeds)),
            "reruns": row.reruns,
            "acr_mean": row.acr.mean,
            "acr_std": row.acr.std,
            "acr_kind": row.acr_kind,
        }
        for key, stat in row.certified_accuracy.items():
            record[f"ca_{key}_mean"] = stat.mean if stat else None
            record[f"ca_{key}_std"] = stat.std if stat else None
        record.update(
            clean_accuracy=row.clean_accuracy,
            abstain_rate=row.abstain_rate,
            certifier=row.certifier,
            certifier_params=json.dumps(row.certifier_params, sort_keys=True),
            radii=radii_text(row.radii),
            draws_per_image=row.draws_per_image,
            n=row.n,
            n0=row.n0,
            alpha=row.alpha,
            num_examples=row.num_examples,
            split=row.split,
            budget=row.budget,
            certifiable_radius=row.certifiable_radius,
            runs=" ".join(map(str, row.runs)),
        )
        records.append(record)
    return pd.DataFrame(records).astype({"n0": "Int64", "num_examples": "Int64"}) if records else pd.DataFrame()


def to_json(board: Board) -> str:
    """Strict JSON (NaN and infinities become null)."""
    return json_text(board.to_json(), indent=2)


def render(board: Board, fmt: str, wanted: list[str] | None = None) -> str:
    """``board`` (from :func:`rsbench.results.board.build`) as markdown, latex, csv or json text."""
    if fmt == "json":
        return to_json(board)
    if fmt == "csv":
        return numeric_frame(board).map(csv_cell).to_csv(index=False)
    if fmt == "markdown":
        return markdown(board, wanted)
    if fmt == "latex":
        return latex(board, wanted)
    raise RsbenchError(f"unknown format {fmt!r}", "choose " + ", ".join(FORMATS))


def compact_radii(radii: list[float], width: int) -> list[float]:
    """The radii a compact table of ``width`` columns has room for: all of them on 100 columns (11 radii),
    else every k-th (a radius column takes 6 characters; σ, method and ACR about 33)."""
    fit = max(1, (width - 33) // 6)
    return radii[:: math.ceil(len(radii) / fit)]


def rich_table(board: Board, wide: bool = False, wanted: list[str] | None = None, width: int = 100) -> Table:
    """The terminal table. Compact (the default) fits ``width`` columns (every radius on 100): method and
    its parameters in one wrapped cell, means without std; ``wide`` shows every column with ± std."""
    rows = board.rows
    if wide or wanted:
        shown = choose_columns(board, rows, wanted, wide=wide)
    else:
        available = columns(list(board.radii))
        radii = compact_radii(list(board.radii), width)
        shown = [available[k] for k in ("sigma", "method", "acr", *(radius_key(r) for r in radii))]
    texts, bold = cells(rows, shown, std=wide)
    shown_cells = [
        [Text(printable(text), style="bold green" if best else "") for text, best in zip(line, flags, strict=True)]
        for line, flags in zip(texts, bold, strict=True)
    ]
    if not (wide or wanted):
        for line, row in zip(shown_cells, rows, strict=True):
            where = ", ".join(filter(None, [origin_text(row), row.arch]))
            params = f" ({params_text(row.params)})" if row.params else ""
            line[1] = Text.assemble(printable(row.method + params + " "), (printable(where), "dim"))
    table = Table(
        title=Text(printable(caption(board, rows, shown))),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    for column in shown:
        wrap = not column.numeric
        table.add_column(
            column.header,
            justify="right" if column.numeric else "left",
            overflow="fold",
            no_wrap=not wrap,
            min_width=12 if wrap else None,
        )
    for line in shown_cells:
        table.add_row(*line)
    return table


def print_table(board: Board, wide: bool = False, wanted: list[str] | None = None) -> None:
    """Print the terminal table to stdout; ``wide`` uses as many columns as the table needs."""
    from rich.console import Console

    console = Console()
    table = rich_table(board, wide, wanted, console.width)
    if wide:
        needed = console.measure(table, options=console.options.update(max_width=10_000)).maximum
        console = Console(width=max(console.width, needed))
    console.print(table)
