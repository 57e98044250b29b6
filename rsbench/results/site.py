"""``rsbench site OUT/``: a static website from a results store (HTML, CSS and JS; no server: it opens from
disk and serves from any static host). Templates (Jinja2) and assets are package data.

Pages: ``index.html`` (the datasets), ``<dataset>.html`` (per σ: a certified-accuracy-vs-radius plot and
one sortable table per certification protocol, so rows of different protocols are never ranked against
each other) and ``runs/<id>.html`` (a run's protocol, provenance, training configuration and a histogram
of its certified radii). Everything is read through the store's read-only calls and its per-run metrics.
File names come from :func:`page_name`, never from a raw name; the site is built in a temporary folder
beside ``OUT`` and swapped in whole, so a failed build leaves the previous site and no page of a run the
store no longer holds survives a rebuild.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.resources
import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from rsbench.atomic import atomic_write_text
from rsbench.errors import RsbenchError
from rsbench.protocol import DESCRIPTION_FIELDS, PROTOCOL_FIELDS
from rsbench.results import figures, render
from rsbench.results.board import DEFAULT_RADII, Board, Row, build, radius_key
from rsbench.results.records import model_info
from rsbench.store import RADIUS_STEP, Store

SITE_COLUMNS = ["method", "params", "arch", "origin", "seeds", "acr"]
TAIL_COLUMNS = ["clean", "abstain", "certifier", "draws", "n", "n0", "alpha", "examples", "budget"]
HISTOGRAM_BINS = 30


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("rsbench", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def page_name(name: str) -> str:
    """A file name for a page about ``name`` (a dataset): letters, digits, ``_ - .`` kept, anything else
    (slashes, ``..``, a ``javascript:`` scheme) replaced, plus a short hash of the raw name when it was not
    already safe, so two names never share a page and no name leaves the site's folder."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", name).strip(".-")[:64] or "page"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def protocol_text(row: Row) -> str:
    examples = "unknown number of" if row.num_examples is None else f"{row.num_examples:,}"
    text = (
        f"certifier {row.certifier}, N = {row.n:,}, N0 = {row.n0 if row.n0 is not None else 'n/a'}, "
        f"α = {row.alpha:g}, {examples} {row.split} examples, budget {row.budget}"
    )
    if row.certifier_params:
        text += ", " + render.params_text(row.certifier_params)
    return text + (", radii on a grid (ACR is a lower bound)" if row.acr_kind == "lower_bound" else "")


def table_context(board: Board, rows: list[Row]) -> dict[str, Any]:
    """One protocol's rows as header cells and body cells (text, sort value, bold) plus run links."""
    available = render.columns(list(board.radii))
    shown = [available[k] for k in SITE_COLUMNS + [radius_key(r) for r in board.radii] + TAIL_COLUMNS]
    texts, bold = render.cells(rows, shown, render.Detail(intervals=True))
    body = []
    for row, line, flags in zip(rows, texts, bold, strict=True):
        values = [c.value(row) for c in shown]
        body.append(
            {
                "cells": [
                    {"text": t, "value": "" if v is None else v, "bold": f}
                    for t, v, f in zip(line, values, flags, strict=True)
                ],
                "runs": row.runs,
            }
        )
    return {
        "protocol": protocol_text(rows[0]),
        "headers": [c.header for c in shown],
        "numeric": [c.numeric for c in shown],
        "rows": body,
    }


def sigma_sections(board: Board) -> list[dict[str, Any]]:
    """Per σ: one table per protocol (reported rows sit with the protocol they state)."""
    sections = []
    rows = board.rows
    for sigma in sorted({r.sigma for r in rows}):
        groups: dict[tuple, list[Row]] = {}
        for row in (r for r in rows if r.sigma == sigma):
            groups.setdefault(row.protocol(), []).append(row)
        tables = [table_context(board, members) for members in groups.values()]
        plotted = any(r.source == "reproduced" for r in rows if r.sigma == sigma)
        sections.append({"sigma": sigma, "key": f"{sigma:.2f}", "tables": tables, "plotted": plotted})
    return sections


def write_plots(store: Store, board: Board, folder: Path, sections: list[dict[str, Any]]) -> None:
    for section in (s for s in sections if s["plotted"]):
        path = folder / f"{page_name(board.dataset)}-sigma{section['key']}.svg"
        figures.save(figures.figure(store, board, [section["sigma"]]), [path])
        section["plot"] = f"plots/{path.name}"


def histogram(metrics: Any) -> dict[str, Any]:
    """Bars of the certified radii of correct, non-abstaining examples (ℓ2, [0,1] pixels), as fractions of
    all examples, from the run's certified counts every 0.01 of radius; abstentions and wrong predictions
    are counted apart."""
    counts = np.asarray(metrics.certified_counts, dtype=float)
    positive = np.nonzero(counts[1:] < counts[:-1])[0]  # the last step where the count still drops
    top = max(float((positive[-1] + 1) * RADIUS_STEP) if len(positive) else RADIUS_STEP, RADIUS_STEP)
    edges = np.unique(np.round(np.linspace(0.0, top, HISTOGRAM_BINS + 1) / RADIUS_STEP).astype(int))
    at = np.append(counts, 0.0)
    in_bin = [at[a] - at[b] if b < len(at) else at[a] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    total = max(int(metrics.num_examples), 1)
    height = max(max(in_bin, default=1.0), 1.0)
    bars = [
        {
            "left": a * RADIUS_STEP,
            "right": b * RADIUS_STEP,
            "count": int(c),
            "fraction": c / total,
            "height": c / height,
        }
        for a, b, c in zip(edges[:-1], edges[1:], in_bin, strict=True)
    ]
    return {
        "bars": bars,
        "top": top,
        "abstained": int(metrics.num_abstain),
        "wrong": int(metrics.num_examples - metrics.num_correct - metrics.num_abstain),
        "total": int(metrics.num_examples),
    }


def compact_indices(indices: Sequence[int]) -> str:
    """Indices as runs of arithmetic progressions, ``start:stop:step`` (stop excluded, as Python's range):
    every 20th of 10,000 images is ``0:10000:20 (500 indices)``."""
    ordered = sorted(indices)
    parts, start = [], 0
    while start < len(ordered):
        end = start + 1
        step = ordered[end] - ordered[start] if end < len(ordered) else 1
        while end < len(ordered) and ordered[end] - ordered[end - 1] == step:
            end += 1
        first, last = ordered[start], ordered[end - 1]
        parts.append(str(first) if end - start == 1 else f"{first}:{last + step}:{step}")
        start = end
    shown = ", ".join(parts[:20]) + (f", … ({len(parts) - 20} more runs)" if len(parts) > 20 else "")
    return f"{shown} ({len(ordered):,} {'index' if len(ordered) == 1 else 'indices'})"


def _fields(obj: Any, names: Sequence[str]) -> list[tuple[str, str]]:
    def text(value: Any) -> str:
        return str(value) if isinstance(value, str | int | float | datetime.datetime) else json.dumps(value)

    return [(name, text(getattr(obj, name))) for name in names if getattr(obj, name) not in (None, "", {}, [])]


RUN_FIELDS = (*(f for f in DESCRIPTION_FIELDS if f not in ("provenance", "checkpoint_path")), "status", "created_at")
TRAINING_FIELDS = (
    "method", "params", "arch", "sigma", "seed", "epochs", "test_accuracy", "checkpoint_sha256", "created_at",
)  # fmt: skip


def run_context(run: Any, training: Any, metrics: Any) -> dict[str, Any]:
    """A run page: protocol, run facts, provenance, model info, training configuration, radii histogram;
    ``metrics`` is the run's row of :meth:`Store.run_metrics`."""
    lower = bool(metrics.lower_bound)
    summary = [
        ("examples", f"{metrics.num_examples:,} of {run.num_planned:,} planned"),
        ("clean accuracy", f"{100 * metrics.num_correct / metrics.num_examples:.2f} %"),
        ("ACR" + (" (lower bound: grid radii)" if lower else ""), f"{'≥ ' if lower else ''}{metrics.acr:.4f}"),
        ("draws per image", f"{metrics.draws_sum / metrics.draws_count:,.0f}" if metrics.draws_count else "unknown"),
    ]
    protocol = _fields(run, (*PROTOCOL_FIELDS, "protocol_key"))
    facts = _fields(run, RUN_FIELDS)
    provenance = {k: v for k, v in (run.provenance or {}).items() if k != "model_info"}
    return {
        "run": run,
        "summary": summary,
        "protocol": protocol,
        "facts": facts,
        "indices": compact_indices(run.indices.get("planned", [])),
        "provenance": [
            (k, v if isinstance(v, str) else json.dumps(v, indent=1, default=str)) for k, v in provenance.items()
        ],
        "model_info": [(k, str(v)) for k, v in model_info(run).items() if v is not None],
        "training": None
        if training is None
        else {
            "facts": _fields(training, TRAINING_FIELDS),
            "config": json.dumps(training.config, indent=1, default=str),
            "provenance": json.dumps(training.provenance, indent=1, default=str),
        },
        "histogram": histogram(metrics),
    }


def write_run_pages(store: Store, env: jinja2.Environment, out: Path, board: Board, page: str) -> list[Path]:
    """One page per run of ``board``'s rows, with a link back to the dataset's ``page``."""
    template = env.get_template("run.html")
    metrics = {int(m.id): m for m in store.run_metrics(board.dataset).itertuples()}
    pages = []
    for run_id in sorted(i for row in board.rows for i in row.runs):
        run, training = store.run_with_training(run_id)
        context = run_context(run, training, metrics[run_id])
        path = out / "runs" / f"{run_id}.html"
        atomic_write_text(path, template.render(root="../", dataset_page=page, **context))
        pages.append(path)
    return pages


def copy_assets(out: Path) -> None:
    assets = importlib.resources.files("rsbench") / "templates" / "assets"
    (out / "assets").mkdir(exist_ok=True)
    for asset in assets.iterdir():
        with importlib.resources.as_file(asset) as source:
            shutil.copyfile(source, out / "assets" / asset.name)


def build_site(
    store: Store, out: str | Path, radii: tuple[float, ...] = DEFAULT_RADII, include_reported: bool = True
) -> list[Path]:
    """Render every dataset of ``store`` into ``out`` (built beside it, then swapped in whole); returns the
    pages written."""
    out = Path(out)
    datasets = sorted(store.run_metrics()["dataset"].unique())
    if not datasets:
        raise RsbenchError(f"no complete certification runs in {store.url}", "certify or import runs first")
    if out.exists() and not out.is_dir():
        raise RsbenchError(f"{out} is a file, not a folder", "give a folder for the site")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as error:
        raise RsbenchError(f"cannot write the site into {out}: {error.strerror or error}") from None
    try:
        pages = _render_site(store, building, datasets, radii, include_reported)
        _swap_in(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return [out / page.relative_to(building) for page in pages]


def _render_site(
    store: Store, out: Path, datasets: list[str], radii: tuple[float, ...], include_reported: bool
) -> list[Path]:
    for folder in (out / "runs", out / "plots"):
        folder.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    env = environment()
    pages, summaries = [], []
    for dataset in datasets:
        board = build(store, dataset, radii, include_reported)
        sections = sigma_sections(board)
        write_plots(store, board, out / "plots", sections)
        page = out / f"{page_name(dataset)}.html"
        atomic_write_text(
            page,
            env.get_template("dataset.html").render(root="", dataset=dataset, sections=sections, radii=board.radii),
        )
        pages.append(page)
        pages += write_run_pages(store, env, out, board, page.name)
        summaries.append(
            {
                "name": dataset,
                "page": page.name,
                "rows": len(board.rows),
                "runs": sum(len(r.runs) for r in board.rows),
                "sigmas": ", ".join(f"{s:g}" for s in sorted({r.sigma for r in board.rows})),
            }
        )
    index = out / "index.html"
    atomic_write_text(index, env.get_template("index.html").render(root="", datasets=summaries, store=store.url))
    return [index, *pages]


def _swap_in(built: Path, out: Path) -> None:
    """Replace ``out`` by ``built``: the old site is moved aside first, then removed."""
    old = None
    try:
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(old / "site")
        built.rename(out)
    except OSError as error:
        if old is not None and not out.exists():
            (old / "site").rename(out)
        raise RsbenchError(f"cannot write the site into {out}: {error.strerror or error}") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
