"""``rsbench site OUT/``: a static website from a results store (HTML, CSS and JS; no server: it opens from
disk and serves from any static host). Templates (Jinja2) and assets are package data.

Pages: ``index.html`` (the datasets), ``<dataset>.html`` (per σ: a certified-accuracy-vs-radius plot and
one sortable table per certification protocol, so rows of different protocols are never ranked against
each other) and ``runs/<id>.html`` (a run's protocol, provenance, training configuration and a histogram
of its certified radii).
"""

from __future__ import annotations

import datetime
import importlib.resources
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from sqlalchemy.engine import make_url

from rsbench import figures, render
from rsbench.errors import RsbenchError
from rsbench.leaderboard import DEFAULT_RADII, Row, board_rows, build, radius_key
from rsbench.records import model_info
from rsbench.store import Store
from rsbench.store.models import CertificationRun, TrainingRun

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


def safe_url(url: str) -> str:
    """A store URL with any password masked."""
    return make_url(url).render_as_string(hide_password=True)


def protocol_text(row: Row) -> str:
    examples = "unknown number of" if row.num_examples is None else f"{row.num_examples:,}"
    text = (
        f"certifier {row.certifier}, N = {row.n:,}, N0 = {row.n0 if row.n0 is not None else 'n/a'}, "
        f"α = {row.alpha:g}, {examples} {row.split} examples, budget {row.budget}"
    )
    if row.certifier_params:
        text += ", " + render.params_text(row.certifier_params)
    return text + (", radii on a grid (ACR is a lower bound)" if row.acr_kind == "lower_bound" else "")


def table_context(board: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    """One protocol's rows as header cells and body cells (text, sort value, bold) plus run links."""
    available = render.columns(board["radii"])
    shown = [available[k] for k in SITE_COLUMNS + [radius_key(r) for r in board["radii"]] + TAIL_COLUMNS]
    texts, bold = render.cells(rows, shown)
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


def sigma_sections(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Per σ: one table per protocol (reported rows sit with the protocol they state)."""
    sections = []
    rows = board_rows(board)
    for sigma in sorted({r.sigma for r in rows}):
        groups: dict[tuple, list[Row]] = {}
        for row in (r for r in rows if r.sigma == sigma):
            groups.setdefault(row.protocol(), []).append(row)
        tables = [table_context(board, members) for members in groups.values()]
        plotted = any(r.source == "reproduced" for r in rows if r.sigma == sigma)
        sections.append({"sigma": sigma, "key": f"{sigma:.2f}", "tables": tables, "plotted": plotted})
    return sections


def write_plots(store: Store, board: dict[str, Any], folder: Path, sections: list[dict[str, Any]]) -> None:
    for section in (s for s in sections if s["plotted"]):
        path = folder / f"{board['dataset']}-sigma{section['key']}.svg"
        figures.save(figures.figure(store, board, [section["sigma"]]), [path])
        section["plot"] = f"plots/{path.name}"


def histogram(results: pd.DataFrame) -> dict[str, Any]:
    """Bars of the certified radii of correct, non-abstaining examples (ℓ2, [0,1] pixels), as fractions of
    all examples; abstentions and wrong predictions are counted apart."""
    certified = results[(results["correct"] == 1)]["radius"].to_numpy(dtype=float)
    top = max(float(certified.max()) if len(certified) else 0.0, 1e-6)
    counts, edges = np.histogram(certified, bins=HISTOGRAM_BINS, range=(0.0, top))
    total = max(len(results), 1)
    height = max(counts.max() if len(counts) else 1, 1)
    bars = [
        {"left": float(a), "right": float(b), "count": int(c), "fraction": c / total, "height": c / height}
        for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)
    ]
    return {
        "bars": bars,
        "top": top,
        "abstained": int((results["predict"] == -1).sum()),
        "wrong": int(((results["correct"] == 0) & (results["predict"] != -1)).sum()),
        "total": len(results),
    }


def _fields(obj: Any, names: Sequence[str]) -> list[tuple[str, str]]:
    def text(value: Any) -> str:
        return str(value) if isinstance(value, str | int | float | datetime.datetime) else json.dumps(value)

    return [(name, text(getattr(obj, name))) for name in names if getattr(obj, name) not in (None, "", {}, [])]


PROTOCOL_FIELDS = (
    "kind", "dataset", "split", "sigma", "certifier", "certifier_params", "n0", "n", "alpha", "noise_seed", "budget",
    "protocol_key",
)  # fmt: skip
RUN_FIELDS = (
    "status", "origin", "method", "params", "arch", "train_sigma", "seed", "batch_size", "experiment",
    "checkpoint_sha256", "created_at",
)  # fmt: skip
TRAINING_FIELDS = (
    "method", "params", "arch", "sigma", "seed", "epochs", "test_accuracy", "checkpoint_sha256", "created_at",
)  # fmt: skip


def run_context(run: CertificationRun, training: TrainingRun | None, results: pd.DataFrame) -> dict[str, Any]:
    """A run page: protocol, run facts, provenance, model info, training configuration, radii histogram."""
    correct = results["correct"].to_numpy() == 1
    radius = results["radius"].to_numpy(dtype=float)
    lower = bool((results["radius_kind"] == "grid").any())
    draws = pd.to_numeric(results["draws"], errors="coerce").dropna()
    summary = [
        ("examples", f"{len(results):,} of {run.num_planned:,} planned"),
        ("clean accuracy", f"{100 * correct.mean():.2f} %" if len(results) else "n/a"),
        (
            "ACR" + (" (lower bound: grid radii)" if lower else ""),
            f"{'≥ ' if lower else ''}{np.mean(correct * radius):.4f}" if len(results) else "n/a",
        ),
        ("draws per image", f"{draws.mean():,.0f}" if len(draws) else "unknown"),
    ]
    protocol = _fields(run, PROTOCOL_FIELDS)
    facts = _fields(run, RUN_FIELDS)
    provenance = {k: v for k, v in (run.provenance or {}).items() if k != "model_info"}
    return {
        "run": run,
        "summary": summary,
        "protocol": protocol,
        "facts": facts,
        "indices": json.dumps(run.indices.get("selections", [])),
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
        "histogram": histogram(results),
    }


def write_run_pages(store: Store, env: jinja2.Environment, out: Path, run_ids: list[int]) -> None:
    template = env.get_template("run.html")
    results = store.results(run_ids)
    by_run = dict(tuple(results.groupby("run_id"))) if len(results) else {}
    for run_id in run_ids:
        with store.session() as session:
            run = session.get_one(CertificationRun, run_id)
            training = session.get(TrainingRun, run.training_run_id) if run.training_run_id else None
            context = run_context(run, training, by_run.get(run_id, results.iloc[:0]))
        (out / "runs" / f"{run_id}.html").write_text(template.render(root="../", **context), encoding="utf-8")


def copy_assets(out: Path) -> None:
    assets = importlib.resources.files("rsbench") / "templates" / "assets"
    (out / "assets").mkdir(exist_ok=True)
    for asset in assets.iterdir():
        with importlib.resources.as_file(asset) as source:
            shutil.copyfile(source, out / "assets" / asset.name)


def build_site(
    store: Store, out: str | Path, radii: tuple[float, ...] = DEFAULT_RADII, include_reported: bool = True
) -> list[Path]:
    """Render every dataset of ``store`` into ``out``; returns the pages written."""
    out = Path(out)
    datasets = sorted(store.runs(kind="certify", complete_only=True)["dataset"].unique())
    if not datasets:
        raise RsbenchError(f"no complete certification runs in {safe_url(store.url)}", "certify or import runs first")
    for folder in (out, out / "runs", out / "plots"):
        folder.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    env = environment()
    pages, summaries, run_ids = [], [], []
    for dataset in datasets:
        board = build(store, dataset, radii, include_reported)
        sections = sigma_sections(board)
        write_plots(store, board, out / "plots", sections)
        page = out / f"{dataset}.html"
        page.write_text(
            env.get_template("dataset.html").render(root="", dataset=dataset, sections=sections, radii=board["radii"]),
            encoding="utf-8",
        )
        pages.append(page)
        rows = board_rows(board)
        run_ids += [i for r in rows for i in r.runs]
        summaries.append(
            {
                "name": dataset,
                "page": page.name,
                "rows": len(rows),
                "runs": sum(len(r.runs) for r in rows),
                "sigmas": ", ".join(f"{s:g}" for s in sorted({r.sigma for r in rows})),
            }
        )
    write_run_pages(store, env, out, sorted(run_ids))
    index = out / "index.html"
    index.write_text(
        env.get_template("index.html").render(root="", datasets=summaries, store=safe_url(store.url)), encoding="utf-8"
    )
    return [index, *pages, *(out / "runs" / f"{i}.html" for i in sorted(run_ids))]
