"""The terminal listings of ``rsbench runs``, ``rsbench plugins`` and ``rsbench reproduce --list`` (rich
tables). Every cell is plain :class:`rich.text.Text`, never markup, so a name from a record or a plugin prints
as it is."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.measure import Measurement
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

from rsbench.processes import activity
from rsbench.results.escape import printable
from rsbench.results.render import params_text

RUN_COLUMNS = ("id", "dataset", "method", "σ", "seed", "N", "examples", "budget", "origin")
NUMERIC_RUN_COLUMNS = ("id", "σ", "seed", "N", "examples")
FOLDED_RUN_COLUMNS = ("method", "origin")


def runs_table(runs: pd.DataFrame, counts: dict[int, int], store_url: str) -> Table:
    """One line per run (``runs``: the store's runs table): its model, σ, N, examples done of planned, budget,
    and its origin with notes: ``predict`` for a prediction, and for an unfinished run ``running``,
    ``incomplete`` or ``running on HOST?`` (:func:`rsbench.processes.activity`)."""
    table = Table(title=Text(printable(f"runs in {store_url}")), box=box.SIMPLE_HEAD, padding=0)
    for column in RUN_COLUMNS:  # method and origin wrap, folding a word where they must; the others never break
        table.add_column(
            column,
            no_wrap=column not in FOLDED_RUN_COLUMNS,
            overflow="fold",
            justify="right" if column in NUMERIC_RUN_COLUMNS else "left",
        )
    runs = runs.astype(object).where(runs.notna(), None)
    states: set[str] = set()
    for row in runs.itertuples():
        method = f"{row.method} ({params_text(row.params)})" if row.params else row.method
        state = activity(row.status, row.provenance)
        notes = [row.kind] * (row.kind != "certify") + [state] * (state != "complete")
        done = counts.get(row.id, 0)
        examples = f"{done:,}" if done == row.num_planned else f"{done:,}/{row.num_planned:,}"
        cells = [str(row.id), row.dataset, method, f"{row.sigma:g}", "-" if row.seed is None else str(row.seed)]
        cells += [f"{row.n:,}", examples, row.budget or "full", ", ".join([row.origin, *notes])]
        table.add_row(
            *(
                (FoldableText if column in FOLDED_RUN_COLUMNS else Text)(printable(cell))
                for column, cell in zip(RUN_COLUMNS, cells, strict=True)
            )
        )
        states.add(state)
    explained = []
    if "incomplete" in states:
        explained.append("incomplete: interrupted, no process certifies it; rerunning its command resumes it")
    if any(state.startswith("running on") for state in states):
        explained.append("running on HOST?: its processes ran on another machine, which cannot be checked here")
    table.caption = "\n".join(explained) or None
    return table


class FoldableText(Text):
    """Text its column may fold inside a word, so it asks for only 4 columns: on a narrow terminal
    :func:`print_whole` narrows it rather than cut a cell that must not break."""

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        measurement = super().__rich_measure__(console, options)
        return Measurement(min(measurement.minimum, 4), measurement.maximum)


def print_whole(console: Console, renderable: RenderableType) -> None:
    """Print ``renderable`` at the console's width, or wider where that cannot hold it: rich would otherwise
    cut cells that must not wrap (a number's digits, a name) to fit; a narrow terminal wraps the lines."""
    needed = console.measure(renderable, options=console.options.update(max_width=10_000)).minimum
    width = max(console.width, needed)
    console.print(Segments(console.render(renderable, console.options.update_width(width))), crop=False)


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


def comparison_table(result: dict[str, Any]) -> Table:
    """``rsbench compare``'s table (from :func:`rsbench.results.examples.compare_runs`): per radius and for
    the ACR, each run's value, the difference (first minus second) with its 95% interval and the test's
    p-value (McNemar's exact test, with its discordant counts: b certified by the first run only, c by the
    second only; the ACR's interval is a paired bootstrap, without a p-value); bold: significant at 5%."""
    first, second = result["runs"]
    title = (
        f"run {first} vs run {second} ({result['dataset']}): certified accuracy (%) at r and ACR on the "
        f"{result['examples']:,} test examples both evaluated (of {result['examples_each'][0]:,} and "
        f"{result['examples_each'][1]:,}); difference = {first} - {second}"
    )
    if result["protocol_differs"]:
        title += "; their protocols differ in " + ", ".join(result["protocol_differs"])
    table = Table(title=Text(printable(title)), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("r", f"#{first}", f"#{second}", "diff", "95% interval", "p", "b / c"):
        table.add_column(header, justify="right", no_wrap=True)
    for key, c in result["comparisons"].items():
        scale, digits, label = (1, 3, "ACR") if key == "acr" else (100, 1, key)
        low, high = c["interval"]
        cells = [
            label,
            f"{c['first'] * scale:.{digits}f}",
            f"{c['second'] * scale:.{digits}f}",
            f"{c['difference'] * scale:+.{digits}f}",
            f"{low * scale:+.{digits}f}..{high * scale:+.{digits}f}",
            "-" if c["p_value"] is None else f"{c['p_value']:.2g}",
            "-" if c["only_first"] is None else f"{c['only_first']} / {c['only_second']}",
        ]
        style = "bold" if c["significant"] else ""
        table.add_row(*(Text(printable(cell), style=style) for cell in cells))
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
