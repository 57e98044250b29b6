"""Leaderboards as text, tables and figures: markdown and LaTeX for papers, CSV and JSON holding numbers,
a rich terminal table (compact, or ``wide`` with every column) and certified-accuracy-vs-radius plots.

Accuracies are shown in percent and ACR in ℓ2 [0,1]-pixel units, mean ± sample std over seeds, and (with
``intervals``) the 95% interval over test examples in brackets. A radius beyond what the protocol can
certify (σ·Φ⁻¹(α^{1/N})) shows "–"; a lower-bound ACR (grid radii) shows "≥ …". Bold marks a column's best
among rows of one σ and protocol only where a paired test tells it from the runner-up; "≈" marks the two
where it does not (:func:`rsbench.results.board.mark_best`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pandas as pd
from rich import box
from rich.table import Table
from rich.text import Text

from rsbench.atomic import json_text
from rsbench.errors import RsbenchError, did_you_mean
from rsbench.results.board import Board, Row, Stat, column_value, method_defaults, radius_key
from rsbench.results.escape import csv_cell, http_url, markdown_cell, printable, tex

FORMATS = ("rich", "markdown", "latex", "csv", "json")
UNCERTIFIABLE = "–"
MISSING = "n/a"
TIED = "≈"
PARAMS_WIDTH = 60
URL_SAFE = ":/?#&=%@+,;~-._"  # kept as they are in a link's URL; everything else percent-encoded
# protocol fields: stated once in the caption when every row agrees, else shown as columns
PROTOCOL_COLUMNS = ("certifier", "radii", "n", "n0", "alpha", "examples", "split", "budget", "seeds", "draws")


@dataclasses.dataclass(frozen=True)
class Detail:
    """What a cell shows beside a mean: ``std`` (± sample std over seeds), ``intervals`` (95% over examples)."""

    std: bool = True
    intervals: bool = False


PLAIN = Detail(std=False)


@dataclasses.dataclass(frozen=True)
class Column:
    """A table column: ``text`` shows a row's cell at a :class:`Detail`, ``value`` is its number or string
    for sorting; ``ranked`` columns carry best and tied marks; ``numeric`` ones are right-aligned."""

    key: str
    header: str
    text: Callable[[Row, Detail], str]
    value: Callable[[Row], Any]
    ranked: bool = False
    numeric: bool = True


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def short_params_text(method: str, params: dict[str, Any]) -> str:
    """A table's parameter cell: only the values that differ from the method's defaults (all of them on the
    run page and in JSON/CSV), cut at :data:`PARAMS_WIDTH` characters."""
    defaults = method_defaults(method)
    text = params_text({k: v for k, v in params.items() if k not in defaults or defaults[k] != v})
    return text if len(text) <= PARAMS_WIDTH else text[: PARAMS_WIDTH - 1] + "…"


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


def _bracket(interval: list[float], scale: float, digits: int) -> str:
    low, high = (max(value, 0.0) * scale for value in interval)
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _stat_text(stat: Stat | None, scale: float, digits: int, std: bool, interval: list[float] | None) -> str:
    if stat is None or stat.mean is None:
        return MISSING
    text = f"{stat.mean * scale:.{digits}f}"
    if std and stat.std is not None:
        text += f" ± {stat.std * scale:.{digits}f}"
    if interval is not None:
        text += " " + _bracket(interval, scale, digits)
    return text


def acr_text(row: Row, detail: Detail = Detail()) -> str:
    """The ACR, prefixed "≥ " where it is a lower bound (grid radii)."""
    interval = row.acr_interval if detail.intervals else None
    text = _stat_text(row.acr, 1, 4 if detail.std else 3, detail.std, interval)
    return f"≥ {text}" if row.acr_kind == "lower_bound" and text != MISSING else text


def accuracy_text(row: Row, radius: float, detail: Detail = Detail()) -> str:
    """Certified accuracy in percent at ``radius``; "–" beyond the protocol's certifiable radius."""
    if radius > row.certifiable_radius + 1e-12:
        return UNCERTIFIABLE
    key = radius_key(radius)
    interval = row.certified_accuracy_interval.get(key) if detail.intervals else None
    return _stat_text(row.certified_accuracy.get(key), 100, 1, detail.std, interval)


def versus_paper_text(row: Row) -> str:
    """A reproduced row's ACR minus the paper's reported ACR for its configuration, per table reporting it;
    "-" where the paper reports no such row."""
    texts = [
        f"{paper['acr_difference']:+.3f} ({paper['reference']}: {paper['acr']:.3f})"
        for paper in row.reported
        if paper["acr_difference"] is not None
    ]
    return "; ".join(texts) or "-"


def interval_text(row: Row, key: str) -> str:
    """The 95% interval over test examples of a ranked column (``acr`` or a radius key) as "[low, high]", in
    the units and digits of the cell with std (ACR; certified accuracy in percent); "" where there is none or
    the radius is beyond what the protocol can certify."""
    if key == "acr":
        return "" if row.acr_interval is None else _bracket(row.acr_interval, 1, 4)
    interval = row.certified_accuracy_interval.get(key)
    return "" if interval is None or column_value(row, key) is None else _bracket(interval, 100, 1)


def paper_text(row: Row) -> str:
    """The row's venue and year (or its paper's name), "-" where unknown."""
    paper = row.paper
    text = " ".join(str(paper[k]) for k in ("venue", "year") if paper.get(k)) or paper.get("paper") or ""
    return text or (row.reference or "-")


def _optional(value: Any, fmt: str = "{}") -> str:
    return MISSING if value is None else fmt.format(value)


def _radius_column(radius: float) -> Column:
    key = radius_key(radius)

    def value(row: Row) -> float | None:
        mean = column_value(row, key)
        return None if mean is None else round(100 * mean, 1)

    return Column(key, key, lambda r, d: accuracy_text(r, radius, d), value, ranked=True)


def columns(radii: list[float]) -> dict[str, Column]:
    """Every column a table can show, by key (``--columns`` takes these keys)."""
    found = [
        Column("sigma", "σ", lambda r, d: sigma_text(r), lambda r: r.sigma),
        Column("method", "method", lambda r, d: r.method, lambda r: r.method, numeric=False),
        Column(
            "params",
            "params",
            lambda r, d: short_params_text(r.method, r.params),
            lambda r: params_text(r.params),
            numeric=False,
        ),
        Column("arch", "arch", lambda r, d: r.arch or "-", lambda r: r.arch or "", numeric=False),
        Column("origin", "origin", lambda r, d: origin_text(r), origin_text, numeric=False),
        Column("paper", "paper", lambda r, d: paper_text(r), paper_text, numeric=False),
        Column(
            "vs_paper",
            "ACR − reported",
            lambda r, d: versus_paper_text(r),
            lambda r: r.reported[0]["acr_difference"] if r.reported else None,
        ),
        Column("seeds", "seeds", lambda r, d: seeds_text(r), lambda r: len(r.model_runs) or len(r.seeds)),
        Column("acr", "ACR", acr_text, lambda r: None if r.acr.mean is None else round(r.acr.mean, 4), ranked=True),
        *(_radius_column(radius) for radius in radii),
        Column(
            "clean",
            "clean %",
            lambda r, d: _optional(r.clean_accuracy and 100 * r.clean_accuracy, "{:.1f}"),
            lambda r: r.clean_accuracy,
        ),
        Column(
            "abstain",
            "abstain %",
            lambda r, d: _optional(r.abstain_rate and 100 * r.abstain_rate, "{:.1f}"),
            lambda r: r.abstain_rate,
        ),
        Column("certifier", "certifier", lambda r, d: r.certifier, lambda r: r.certifier, numeric=False),
        Column(
            "draws", "draws/image", lambda r, d: _optional(r.draws_per_image, "{:,.0f}"), lambda r: r.draws_per_image
        ),
        Column("radii", "radii", lambda r, d: radii_text(r.radii), lambda r: radii_text(r.radii), numeric=False),
        Column("n", "N", lambda r, d: f"{r.n:,}", lambda r: r.n),
        Column("n0", "N0", lambda r, d: _optional(r.n0), lambda r: r.n0),
        Column("alpha", "α", lambda r, d: f"{r.alpha:g}", lambda r: r.alpha),
        Column("examples", "examples", lambda r, d: _optional(r.num_examples, "{:,}"), lambda r: r.num_examples),
        Column("split", "split", lambda r, d: r.split, lambda r: r.split, numeric=False),
        Column("budget", "budget", lambda r, d: r.budget, lambda r: r.budget, numeric=False),
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
    papers = ["paper"] if any(r.paper for r in rows) else []
    versus = ["vs_paper"] if any(r.reported for r in rows) else []
    radius_keys = [radius_key(r) for r in board.radii]
    keys = ["sigma", "method", "params", "arch", "origin", *papers, "acr", *versus, *radius_keys]
    varying = [k for k in PROTOCOL_COLUMNS if len({available[k].text(r, PLAIN) for r in rows}) > 1]
    return [available[k] for k in keys + varying]


def marks(rows: list[Row], shown: list[Column]) -> tuple[set[tuple[int, str]], set[tuple[int, str]]]:
    """(row index, column key) of the best cells a paired test supports, and of the tied ones."""
    ranked = {c.key for c in shown if c.ranked}
    best = {(i, key) for i, row in enumerate(rows) for key in row.best if key in ranked}
    tied = {(i, key) for i, row in enumerate(rows) for key in row.tied if key in ranked}
    return best, tied


def caption(board: Board, rows: list[Row], shown: list[Column], intervals: bool = False) -> str:
    """One line: what the table shows, how its uncertainty is computed, and the protocol fields every row
    shares."""
    available = columns(list(board.radii))
    keys = {c.key for c in shown}
    shared = [
        f"{available[k].header} {available[k].text(rows[0], PLAIN)}"
        for k in PROTOCOL_COLUMNS
        if rows and k not in keys and len({available[k].text(r, PLAIN) for r in rows}) == 1
    ]
    text = (
        f"{board.dataset}: certified accuracy (%) at ℓ2 radius r ([0,1] pixel units) and ACR, mean ± sample "
        "std over distinct training seeds (reruns of one model are averaged, not seeds)"
    )
    if intervals:
        text += (
            "; [brackets]: 95% interval over test examples (Clopper-Pearson on the certified count; ACR: normal "
            "approximation)"
        )
    text += (
        f". Rows ranked by {'ACR' if board.sort_by == 'acr' else 'certified accuracy at r = ' + board.sort_by} "
        "within one σ and protocol; bold: a column's best where a paired test on the examples both rows "
        f"evaluated tells it from the runner-up at 5% (McNemar exact, else paired bootstrap); {TIED}: best and "
        'runner-up not told apart. "–": r beyond what the protocol can certify (σ·Φ⁻¹(α^(1/N))); "≥": a lower '
        "bound (grid certifier)."
    )
    if "params" in keys:
        text += " Params: those that differ from the method's defaults."
    if board.common_examples is not None:
        text += f" Every row restricted to the {board.common_examples:,} test examples all rows evaluated."
    if shared:
        text += " Protocol: " + ", ".join(shared) + "."
    if len({r.protocol() for r in rows}) > len({r.sigma for r in rows}):
        text += " Rows of different protocols are shown together but not ranked against each other."
    if {"imported", "rsbench"} <= {r.origin for r in rows}:
        text += (
            " Imported logs carry radii at the precision their code wrote (Cohen's certify.py: 3 significant "
            "digits, so a radius up to 0.5% below r counts at r); rsbench's are exact, so at a radius an imported "
            "row can read slightly higher than the same model certified by rsbench."
        )
    return text


def cells(rows: list[Row], shown: list[Column], detail: Detail = Detail()) -> tuple[list[list[str]], list[list[bool]]]:
    """Each row's cell texts (a tied cell suffixed with ≈) and which are bold."""
    best, tied = marks(rows, shown)
    texts = [
        [column.text(row, detail) + (f" {TIED}" if (i, column.key) in tied else "") for column in shown]
        for i, row in enumerate(rows)
    ]
    bold = [[(i, c.key) in best for c in shown] for i in range(len(rows))]
    return texts, bold


def markdown_link(text: str, url: str | None) -> str:
    """``text`` (markdown-escaped) linked to ``url`` where it is an http(s) URL; the URL percent-encoded
    so that no character of it can end the link or start markup."""
    link = http_url(url)
    return markdown_cell(text) if link is None else f"[{markdown_cell(text)}]({quote(link, safe=URL_SAFE)})"


def _markdown_paper(row: Row) -> str:
    links = [markdown_link(paper_text(row), row.paper.get("paper_url"))]
    if row.paper.get("code_url"):
        links.append(markdown_link("code", row.paper["code_url"]))
    return " · ".join(links)


def markdown(board: Board, wanted: list[str] | None = None, intervals: bool = False) -> str:
    """A pipe table under its caption; the paper column links to the paper and its code."""
    rows = board.rows
    shown = choose_columns(board, rows, wanted, wide=False)
    texts, bold = cells(rows, shown, Detail(intervals=intervals))
    lines = [
        markdown_cell(caption(board, rows, shown, intervals)),
        "",
        "| " + " | ".join(markdown_cell(c.header) for c in shown) + " |",
        "|" + "|".join("---:" if c.numeric else "---" for c in shown) + "|",
    ]
    for row, line, flags in zip(rows, texts, bold, strict=True):
        cells_text = [
            _markdown_paper(row) if column.key == "paper" else markdown_cell(text)
            for column, text in zip(shown, line, strict=True)
        ]
        lines.append("| " + " | ".join(f"**{t}**" if f else t for t, f in zip(cells_text, flags, strict=True)) + " |")
    return "\n".join(lines) + "\n"


def latex(board: Board, wanted: list[str] | None = None, intervals: bool = False) -> str:
    """A ``table`` float with a booktabs ``tabular`` and the caption line (needs ``\\usepackage{booktabs}``),
    laid out as the papers' tables: one block per σ (σ on its first row), blocks apart by a rule."""
    rows = board.rows
    shown = choose_columns(board, rows, wanted, wide=False)
    texts, bold = cells(rows, shown, Detail(intervals=intervals))
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\caption{{{tex(caption(board, rows, shown, intervals))}}}",
        "\\begin{tabular}{" + "".join("r" if c.numeric else "l" for c in shown) + "}",
        "\\toprule",
        " & ".join(tex(c.header) for c in shown) + " \\\\",
        "\\midrule",
    ]
    sigma_at = next((i for i, c in enumerate(shown) if c.key == "sigma"), None)
    for index, (row, line, flags) in enumerate(zip(rows, texts, bold, strict=True)):
        if sigma_at is not None and index and rows[index - 1].sigma == row.sigma:
            line = [*line[:sigma_at], "", *line[sigma_at + 1 :]]  # the paper's layout: σ once per block
        elif index:
            lines.append("\\midrule")
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
            "acr_low": row.acr_interval[0] if row.acr_interval else None,
            "acr_high": row.acr_interval[1] if row.acr_interval else None,
            "acr_kind": row.acr_kind,
            "best": " ".join(row.best),
            "tied": " ".join(row.tied),
            **{f"paper_{key}": row.paper.get(key) for key in ("venue", "year", "paper_url", "code_url")},
        }
        for key, stat in row.certified_accuracy.items():
            interval = row.certified_accuracy_interval.get(key)
            record[f"ca_{key}_mean"] = stat.mean if stat else None
            record[f"ca_{key}_std"] = stat.std if stat else None
            record[f"ca_{key}_low"] = interval[0] if interval else None
            record[f"ca_{key}_high"] = interval[1] if interval else None
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


def render(board: Board, fmt: str, wanted: list[str] | None = None, intervals: bool = False) -> str:
    """``board`` (from :func:`rsbench.results.board.build`) as markdown, latex, csv or json text; markdown and
    LaTeX cells show 95% intervals with ``intervals`` (CSV and JSON always hold them)."""
    if fmt == "json":
        return to_json(board)
    if fmt == "csv":
        return numeric_frame(board).map(csv_cell).to_csv(index=False)
    if fmt == "markdown":
        return markdown(board, wanted, intervals)
    if fmt == "latex":
        return latex(board, wanted, intervals)
    raise RsbenchError(f"unknown format {fmt!r}", "choose " + ", ".join(FORMATS))


def compact_radii(radii: list[float], width: int) -> list[float]:
    """The radii a compact table of ``width`` columns has room for: all of them on 100 columns (11 radii),
    else every k-th (a radius column takes 6 characters; σ, method and ACR about 33)."""
    fit = max(1, (width - 33) // 6)
    return radii[:: math.ceil(len(radii) / fit)]


def rich_table(board: Board, wide: bool = False, wanted: list[str] | None = None, width: int = 100) -> Table:
    """The terminal table. Compact (the default) fits ``width`` columns (every radius on 100): method and
    its parameters in one wrapped cell, means without std; ``wide`` shows every column with ± std and the
    95% intervals."""
    rows = board.rows
    if wide or wanted:
        shown = choose_columns(board, rows, wanted, wide=wide)
    else:
        available = columns(list(board.radii))
        radii = compact_radii(list(board.radii), width)
        shown = [available[k] for k in ("sigma", "method", "acr", *(radius_key(r) for r in radii))]
    texts, bold = cells(rows, shown, Detail(std=wide, intervals=wide))
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
        title=Text(printable(caption(board, rows, shown, intervals=wide))),
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
