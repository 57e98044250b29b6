"""The terminal listings of ``rsbench runs``, ``rsbench plugins`` and ``rsbench reproduce --list`` (rich
tables). Every cell is plain :class:`rich.text.Text`, never markup, so a name from a record or a plugin prints
as it is."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from rsbench.results.escape import printable
from rsbench.results.render import params_text

RUN_COLUMNS = ("id", "dataset", "method", "σ", "seed", "N", "examples", "budget", "origin")


def runs_table(runs: pd.DataFrame, counts: dict[int, int], store_url: str) -> Table:
    """One line per run (``runs``: the store's runs table): its model, σ, N, examples done of planned, budget,
    and its origin with notes (``predict`` for a prediction, ``running`` for an unfinished run)."""
    table = Table(
        title=Text(printable(f"runs in {store_url}")),
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
    )
    runs = runs.astype(object).where(runs.notna(), None)
    lines = []
    for row in runs.itertuples():
        method = f"{row.method} ({params_text(row.params)})" if row.params else row.method
        notes = [row.kind] * (row.kind != "certify") + [row.status] * (row.status != "complete")
        done = counts.get(row.id, 0)
        examples = f"{done:,}" if done == row.num_planned else f"{done:,}/{row.num_planned:,}"
        cells = [str(row.id), row.dataset, method, f"{row.sigma:g}", "-" if row.seed is None else str(row.seed)]
        lines.append([*cells, f"{row.n:,}", examples, row.budget or "full", ", ".join([row.origin, *notes])])
    for index, column in enumerate(RUN_COLUMNS):
        if column == "method":  # the one column that wraps (between parameters), the others keep their width
            table.add_column(column, min_width=12, overflow="fold")
        else:
            width = max([len(column), *(len(line[index]) for line in lines)])
            table.add_column(column, no_wrap=True, min_width=width)
    for line in lines:
        table.add_row(*(Text(printable(cell)) for cell in line))
    return table


def plugins_table(listing: list[dict[str, Any]]) -> Table:
    """Every plugin (from :func:`rsbench.plugins.describe_plugins`): its source and what it registers, with
    hyperparameters as the flags they become and presets."""
    table = Table(title="rsbench plugins", show_lines=True)
    for column in ("plugin", "source", "registers"):
        table.add_column(column)
    for entry in listing:
        lines = Text()
        for kind, items in entry["registers"].items():
            for item in items:
                lines.append(kind, style="bold")
                lines.append(printable(f" {item['name']}: {item['description']}") + "\n")
                for p in item.get("params", []):
                    extra = f" [{p['constraint']}]" if p["constraint"] else ""
                    flag = "--" + p["name"].replace("_", "-")
                    lines.append(printable(f"    {flag} {p['type']} = {p['default']}{extra}: {p['help']}") + "\n")
                if item.get("presets"):
                    lines.append(printable("    presets: " + ", ".join(p["name"] for p in item["presets"])) + "\n")
        lines.rstrip()
        source = printable(f"{entry['source']} {entry['version']}".strip())
        table.add_row(Text(printable(entry["name"])), Text(source), lines)
    return table


def experiments_table(listing: list[dict[str, Any]], budgets: dict[str, str]) -> Group:
    """Every experiment (from :func:`rsbench.reproduce.experiment_costs`) with its rows and description;
    per budget, the training images and certification draws of a reproduction from scratch; what each budget
    does per row (``budgets``: name -> description)."""
    experiments = Table(title="experiments: rsbench reproduce NAME --budget BUDGET", box=box.SIMPLE_HEAD)
    experiments.add_column("name", no_wrap=True)
    experiments.add_column("rows", justify="right", no_wrap=True)
    experiments.add_column("description")
    costs = Table(
        title="cost from scratch: training images (epochs × images per epoch), certification draws; all rows",
        box=box.SIMPLE_HEAD,
        show_lines=True,
    )
    costs.add_column("name", no_wrap=True)
    for budget in budgets:
        costs.add_column(budget, justify="right", no_wrap=True)
    for entry in listing:
        experiment = Text(printable(entry["name"]))
        experiments.add_row(experiment, Text(str(entry["rows"])), Text(printable(entry["description"])))
        cells = [f"{amount(c['training_images'])} img\n{amount(c['draws'])} draws" for c in entry["costs"].values()]
        costs.add_row(experiment, *(Text(cell) for cell in cells))
    each = Table(title="budgets, per row", box=box.SIMPLE_HEAD)
    each.add_column("budget", no_wrap=True)
    each.add_column("training and certification")
    for budget, text in budgets.items():
        each.add_row(Text(printable(budget)), Text(printable(text)))
    return Group(experiments, costs, each)


def amount(count: float | None) -> str:
    """A count in three significant digits: ``8.08M``, ``404k``, ``1,020``; ``?`` when unknown."""
    if count is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            value = count / size
            return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}{unit}"
    return f"{count:,.0f}"
