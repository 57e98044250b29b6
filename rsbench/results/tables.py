"""The terminal listings of ``rsbench runs`` and ``rsbench plugins`` (rich tables). Every cell is plain
:class:`rich.text.Text`, never markup, so a name from a record or a plugin prints as it is."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich import box
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
