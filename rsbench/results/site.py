"""``rsbench site OUT/``: a static website from a results store (HTML, CSS and JS; no server: it opens from
disk and serves from any static host). Templates (Jinja2) and assets are package data.

Pages: ``index.html`` (the datasets), ``submit.html`` (how to submit a run record), ``<dataset>.html``
(per σ: a certified-accuracy-vs-radius plot and one sortable table per certification protocol, so rows of
different protocols are never ranked against each other, with 95% intervals and paper links) and
``runs/<id>.html`` (a run's protocol, implementation knobs, source of an imported log, provenance,
training configuration and a histogram of its certified radii). Everything is read through the store's
read-only calls and its per-run metrics. File names come from :func:`page_name`, never from a raw name;
the site is built in a temporary folder beside ``OUT`` and swapped in whole, so a failed build leaves the
previous site and no page of a run the store no longer holds survives a rebuild.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.resources
import json
import math
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
from rsbench.results.escape import http_url
from rsbench.results.records import model_info
from rsbench.smoothing import IMPLEMENTATION_PARAMS
from rsbench.store import RADIUS_STEP, Store

SITE_COLUMNS = ["method", "params", "arch", "origin", "paper", "seeds", "acr"]
TAIL_COLUMNS = ["clean", "abstain", "certifier", "draws", "n", "n0", "alpha", "examples", "budget"]
HISTOGRAM_BINS = 30
PAGES = ("index.html", "submit.html")  # pages of the whole site (the header links to them)
IMPORTER_PROVENANCE = ("command", "host")  # an imported log's: the importer's machine, not the log's origin
IMPLEMENTATION_PROVENANCE = ("device", "images_per_batch")


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


def protocol_params(certifier_params: dict[str, Any]) -> dict[str, Any]:
    """A certifier's parameters less its implementation knobs (forward batch, compile), which change how the
    certificates are computed, not what they are."""
    return {k: v for k, v in certifier_params.items() if k not in IMPLEMENTATION_PARAMS}


def paper_links(row: Row) -> list[dict[str, str]]:
    """The paper cell's links: venue and year to the paper, "code" to its code, each only where the recorded
    URL is http(s) (a record's URL is untrusted: ``javascript:`` never becomes a link)."""
    links = [{"text": render.paper_text(row), "url": http_url(row.paper.get("paper_url")) or ""}]
    code = http_url(row.paper.get("code_url"))
    return links + ([{"text": "code", "url": code}] if code else [])


def protocol_text(row: Row) -> str:
    examples = "unknown number of" if row.num_examples is None else f"{row.num_examples:,}"
    text = (
        f"certifier {row.certifier}, N = {row.n:,}, N0 = {row.n0 if row.n0 is not None else 'n/a'}, "
        f"α = {row.alpha:g}, {examples} {row.split} examples, budget {row.budget}"
    )
    certifier_params = protocol_params(row.certifier_params)
    if certifier_params:
        text += ", " + render.params_text(certifier_params)
    return text + (", radii on a grid (ACR is a lower bound)" if row.acr_kind == "lower_bound" else "")


def table_context(board: Board, rows: list[Row]) -> dict[str, Any]:
    """One protocol's rows as header cells and body cells (text, its 95% interval as a second line, numeric
    sort value, bold, links) plus run links."""
    available = render.columns(list(board.radii))
    shown = [available[k] for k in SITE_COLUMNS + [radius_key(r) for r in board.radii] + TAIL_COLUMNS]
    texts, bold = render.cells(rows, shown)
    body = []
    for row, line, flags in zip(rows, texts, bold, strict=True):
        cells = []
        for column, text, flag in zip(shown, line, flags, strict=True):
            value = column.value(row)
            cells.append(
                {
                    "text": text,
                    "interval": render.interval_text(row, column.key) if column.ranked else "",
                    "value": "" if value is None else value,
                    "bold": flag,
                    "links": paper_links(row) if column.key == "paper" else [],
                }
            )
        body.append({"cells": cells, "runs": row.runs})
    return {
        "protocol": protocol_text(rows[0]),
        "headers": [c.header for c in shown],
        "numeric": [c.numeric for c in shown],
        "rows": body,
    }


def protocol_differences(tables: list[list[Row]]) -> str:
    """The protocol fields that tell a σ's tables apart (``N, examples``), for the note above them."""
    available = render.columns([])
    differing = [
        available[key].header
        for key in render.PROTOCOL_COLUMNS
        if key not in ("seeds", "draws") and len({available[key].text(rows[0], render.PLAIN) for rows in tables}) > 1
    ]
    if len({json.dumps(protocol_params(rows[0].certifier_params), sort_keys=True) for rows in tables}) > 1:
        differing.append("certifier parameters")
    if len({rows[0].acr_kind for rows in tables}) > 1:
        differing.append("radius kind")
    return ", ".join(differing) or "implementation knobs only"


def sigma_sections(board: Board) -> list[dict[str, Any]]:
    """Per σ: one table per protocol (reported rows sit with the protocol they state) and, where there are
    several, the fields they differ in."""
    sections = []
    for sigma in sorted({r.sigma for r in board.rows}):
        groups: dict[tuple, list[Row]] = {}
        for row in (r for r in board.rows if r.sigma == sigma):
            groups.setdefault(row.protocol(), []).append(row)
        tables = [table_context(board, members) for members in groups.values()]
        differences = protocol_differences(list(groups.values())) if len(groups) > 1 else ""
        sections.append({"sigma": sigma, "key": f"{sigma:.2f}", "tables": tables, "differences": differences})
    return sections


def write_plots(store: Store, board: Board, folder: Path, sections: list[dict[str, Any]]) -> None:
    for section in sections:
        path = folder / f"{page_name(board.dataset)}-sigma{section['key']}.svg"
        figures.save(figures.figure(store, board, [section["sigma"]]), [path])
        section["plot"] = f"plots/{path.name}"


def histogram(metrics: Any) -> dict[str, Any]:
    """Bars counting the correct, non-abstaining examples whose certified radius (ℓ2, [0,1] pixels) falls in
    each bin (``height``: the count over the tallest bar's), from the run's certified counts every 0.01 of
    radius, with axis ticks (``at``: the fraction of the axis); abstentions and wrong predictions are counted
    apart."""
    counts = np.asarray(metrics.certified_counts, dtype=float)
    positive = np.nonzero(counts[1:] < counts[:-1])[0]  # the last step where the count still drops
    top = max(float((positive[-1] + 1) * RADIUS_STEP) if len(positive) else RADIUS_STEP, RADIUS_STEP)
    edges = np.unique(np.round(np.linspace(0.0, top, HISTOGRAM_BINS + 1) / RADIUS_STEP).astype(int))
    at = np.append(counts, 0.0)
    in_bin = [at[a] - at[b] if b < len(at) else at[a] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    total = max(int(metrics.num_examples), 1)
    height = max(max(in_bin, default=1.0), 1.0)
    magnitude = 10 ** math.floor(math.log10(height / 4)) if height >= 4 else 1
    y_step = next(int(m * magnitude) for m in (1, 2, 5, 10) if m * magnitude >= height / 4)  # 1, 2, 5 × 10^k
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
        "x_ticks": [{"at": k / 4, "text": f"{top * k / 4:.2f}"} for k in range(5)],
        "y_ticks": [{"at": count / height, "text": f"{count:,}"} for count in range(0, int(height) + 1, y_step)],
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


def source_of(run: Any) -> list[dict[str, str]]:
    """Where an imported log comes from (repository, commit, path, hash, notes: ``provenance["source"]``), each
    value as text and, for the log's URL and the repository, an http(s) link; empty for other runs."""
    source = (run.provenance or {}).get("source")
    if not isinstance(source, dict):
        return []
    facts = []
    for key, value in source.items():
        if value in (None, "", [], {}):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        url = http_url(value) if key == "url" else None
        if key == "repo" and isinstance(value, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", value):
            url = f"https://github.com/{value}"
        facts.append({"key": key, "text": text, "url": url or ""})
    return facts


def implementation_of(run: Any) -> list[tuple[str, str]]:
    """How the certification was computed, apart from its protocol: the certifier's knobs (forward batch,
    compile), noisy copies per batch, images per batch, device (with CPU threads)."""
    provenance = run.provenance or {}
    knobs = [(k, json.dumps(v)) for k, v in (run.certifier_params or {}).items() if k in IMPLEMENTATION_PARAMS]
    recorded = [("batch_size", str(run.batch_size))] if run.batch_size is not None else []
    recorded += [(k, str(provenance[k])) for k in IMPLEMENTATION_PROVENANCE if provenance.get(k) is not None]
    return knobs + recorded


def run_context(run: Any, training: Any, metrics: Any) -> dict[str, Any]:
    """A run page: protocol, implementation, run facts, source (an imported log), provenance, model info,
    training configuration, radii histogram; ``metrics`` is the run's row of :meth:`Store.run_metrics`."""
    lower = bool(metrics.lower_bound)
    summary = [
        ("examples", f"{metrics.num_examples:,} of {run.num_planned:,} planned"),
        ("clean accuracy", f"{100 * metrics.num_correct / metrics.num_examples:.2f} %"),
        ("ACR" + (" (lower bound: grid radii)" if lower else ""), f"{'≥ ' if lower else ''}{metrics.acr:.4f}"),
        ("draws per image", f"{metrics.draws_sum / metrics.draws_count:,.0f}" if metrics.draws_count else "unknown"),
    ]
    protocol = [
        (name, json.dumps(protocol_params(run.certifier_params)) if name == "certifier_params" else text)
        for name, text in _fields(run, (*PROTOCOL_FIELDS, "protocol_key"))
    ]
    facts = [(name, text) for name, text in _fields(run, RUN_FIELDS) if name != "batch_size"]
    source = source_of(run)
    hidden = {"model_info", "source", *IMPLEMENTATION_PROVENANCE, *(IMPORTER_PROVENANCE if source else ())}
    provenance = {k: v for k, v in (run.provenance or {}).items() if k not in hidden}
    return {
        "run": run,
        "summary": summary,
        "protocol": protocol,
        "implementation": implementation_of(run),
        "facts": facts,
        "indices": compact_indices(run.indices.get("planned", [])),
        "source": source,
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
    index, submit = (out / name for name in PAGES)
    atomic_write_text(index, env.get_template("index.html").render(root="", datasets=summaries, store=store.url))
    atomic_write_text(submit, env.get_template("submit.html").render(root=""))
    return [index, submit, *pages]


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
