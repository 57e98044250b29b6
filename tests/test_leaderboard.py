"""Leaderboard aggregation and rendering on a small hand-made store whose numbers are worked out here."""

import hashlib
import io
import json
import math
import re
import shutil
import subprocess

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.protocol import CertificationProtocol, RunDescription
from rsbench.results.board import build, parse_radii
from rsbench.results.figures import figure, plot
from rsbench.results.render import render, rich_table
from rsbench.store import frame_rows, open_store

runner = CliRunner()
RADII = (0.0, 0.5, 0.7, 0.8)
# σ = 0.5, N = 100, α = 0.001: the largest certifiable radius is 0.5·Φ⁻¹(0.001^(1/100)) = 0.5·Φ⁻¹(0.93325)
# = 0.5 · 1.5005 = 0.7502, so r = 0.8 can never be certified and shows "–".
PROTOCOL = {"n0": 10, "n": 100, "alpha": 0.001}


def make_rows(labels, predicts, radii, draws, kind="exact"):
    return pd.DataFrame(
        {
            "idx": range(len(labels)),
            "label": labels,
            "predict": predicts,
            "radius": radii,
            "radius_kind": kind,
            "correct": [int(p == y) for p, y in zip(predicts, labels, strict=True)],
            "n_a": None,
            "n": PROTOCOL["n"],
            "n0": PROTOCOL["n0"],
            "alpha": PROTOCOL["alpha"],
            "draws": draws,
            "seconds": 0.5,
        }
    )


def checkpoint_hash(method, seed):
    """A stand-in checkpoint's SHA-256, one per (method, seed)."""
    return hashlib.sha256(f"{method}-{seed}".encode()).hexdigest()


def add_run(
    store, rows, method, params, seed, certifier="cohen", origin="rsbench", certifier_params=None, training=None,
    selection=None, **protocol_fields,
):  # fmt: skip
    """A complete run of ``rows`` certified under PROTOCOL at σ = 0.5 (``protocol_fields`` override), its
    model identified by (method, seed) unless ``checkpoint_sha256`` is given; ``training`` links a training
    run, ``selection`` states how its indices were chosen (default: every index of ``rows``)."""
    fields = dict(
        kind="certify", dataset="mnist", split="test", sigma=0.5, train_sigma=0.5, certifier=certifier,
        certifier_params=certifier_params or {}, noise_seed=0, budget="custom",
        checkpoint_sha256=checkpoint_hash(method, seed),
        **PROTOCOL,
    )  # fmt: skip
    protocol = CertificationProtocol(**{**fields, **protocol_fields})
    description = RunDescription(
        origin=origin, method=method, params=params, arch="lenet", seed=seed, batch_size=100,
        provenance={"versions": {"rsbench": "0.1.0"}, "git_commit": "abc123", "device": "cpu", "command": "test"},
    )  # fmt: skip
    selection = selection or {"skip": 1, "limit": len(rows)}
    indices = {"selections": [selection], "planned": [int(i) for i in rows["idx"]]}
    return store.import_run(protocol, description, [frame_rows(rows)], indices, training=training)[0]


def make_store(path):
    """gaussian (seeds 0 and 1): ACR 0.7/4 = 0.175 and 1.1/4 = 0.275 (mean 0.225, std 0.1/√2 = 0.0707);
    consistency (seed 0, grid certifier): ACR 1.7/4 = 0.425, a lower bound; draws per image 82.5."""
    store = open_store(str(path))
    add_run(store, make_rows([1, 2, 3, 4], [1, 2, -1, 5], [0.1, 0.6, 0.0, 0.3], [110] * 4), "gaussian", {}, 0)
    add_run(store, make_rows([1, 2, 3, 4], [1, 2, 3, -1], [0.2, 0.4, 0.5, 0.0], [110] * 4), "gaussian", {}, 1)
    add_run(
        store,
        make_rows([1, 2, 3, 4], [1, 2, 3, 4], [0.7, 0.7, 0.2, 0.1], [50, 60, 110, 110], "grid"),
        "consistency",
        {"lam": 5.0},
        0,
        certifier="grid",
    )
    return store


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "s.db")


def rows_by_method(board):
    return {row["method"]: row for row in board["rows"]}


def test_aggregation_matches_hand_computed_numbers(store):
    board = json.loads(render(build(store, "mnist", RADII), "json"))
    rows = rows_by_method(board)
    gaussian, consistency = rows["gaussian"], rows["consistency"]
    assert gaussian["seeds"] == [0, 1] and len(board["rows"]) == 2
    assert gaussian["acr"]["mean"] == pytest.approx(0.225)
    assert gaussian["acr"]["std"] == pytest.approx(0.1 / math.sqrt(2))
    assert gaussian["certified_accuracy"]["0.50"] == pytest.approx({"mean": 0.25, "std": 0.0})
    assert gaussian["clean_accuracy"] == pytest.approx((0.5 + 0.75) / 2)
    assert gaussian["abstain_rate"] == pytest.approx(0.25)
    assert gaussian["acr_kind"] == "exact" and gaussian["draws_per_image"] == 110
    assert consistency["acr"] == {"mean": pytest.approx(0.425), "std": None}
    assert consistency["acr_kind"] == "lower_bound" and consistency["certifier"] == "grid"
    assert consistency["draws_per_image"] == pytest.approx(82.5)
    assert consistency["certifiable_radius"] == pytest.approx(0.7502, abs=1e-3)
    assert {"dataset", "radii", "rows"} <= set(board) and gaussian["source"] == "reproduced"


def test_markdown_caption_dashes_and_lower_bound(store):
    text = render(build(store, "mnist", RADII), "markdown")
    caption, _, header, _, *lines = text.splitlines()
    assert "N 100" in caption and "N0 10" in caption and "α 0.001" in caption and "examples 4" in caption
    assert header.split("|")[1:-1] == [
        " σ ",
        " method ",
        " params ",
        " arch ",
        " origin ",
        " ACR ",
        " 0.00 ",
        " 0.50 ",
        " 0.70 ",
        " 0.80 ",
        " certifier ",
        " seeds ",
        " draws/image ",
    ]
    consistency = next(line for line in lines if "consistency" in line).split(" | ")
    gaussian = next(line for line in lines if "gaussian" in line).split(" | ")
    assert consistency[5] == "≥ 0.4250" and consistency[9] == "–" and gaussian[9] == "–"
    assert gaussian[5] == "0.2250 ± 0.0707" and gaussian[7] == "25.0 ± 0.0"
    assert gaussian[8] == "0.0 ± 0.0"  # r = 0.7 is certifiable under this protocol: a true 0, not "–"
    # the two rows differ in certifier and ACR kind: different protocols, never ranked, so nothing bold
    assert "**" not in text and "not ranked against each other" in caption
    assert "3 significant digits" not in caption  # every row is rsbench's: no precision mix to warn of


def test_a_best_too_close_to_tell_apart_is_marked_tied_not_bold(tmp_path):
    store = open_store(str(tmp_path / "b.db"))
    add_run(store, make_rows([1, 2], [1, 2], [0.6, 0.2], [110] * 2), "gaussian", {}, 0)
    add_run(store, make_rows([1, 2], [1, 2], [0.6, 0.1], [110] * 2), "stability", {}, 0)
    text = render(build(store, "mnist", (0.0, 0.5)), "markdown", ["method", "acr", "0.00", "0.50"])
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # ACR (0.6 + 0.2)/2 = 0.4 against (0.6 + 0.1)/2 = 0.35 on two examples: no test tells them apart; at
    # r = 0 and 0.5 the rows certify the same examples (McNemar: b = c = 0, p = 1)
    assert lines["gaussian"] == "| gaussian | 0.4000 ≈ | 100.0 ≈ | 50.0 ≈ |"
    assert lines["stability"] == "| stability | 0.3500 ≈ | 100.0 ≈ | 50.0 ≈ |"


@pytest.mark.parametrize(("only_first", "bold"), [(5, False), (6, True)])
def test_bold_needs_mcnemar_p_below_five_percent(tmp_path, only_first, bold):
    """Exact McNemar with no example the other way: p = 2·(1/2)^b, 0.0625 for b = 5 and 0.03125 for b = 6."""
    store = open_store(str(tmp_path / "m.db"))
    count = 20
    labels = [1] * count
    both = [0.6] * (count - only_first)
    add_run(store, make_rows(labels, labels, both + [0.6] * only_first, [110] * count), "gaussian", {}, 0)
    add_run(store, make_rows(labels, labels, both + [0.3] * only_first, [110] * count), "stability", {}, 0)
    board = build(store, "mnist", (0.5,))
    best = next(row for row in board.rows if row.method == "gaussian")
    assert best.comparisons["0.50"]["p_value"] == pytest.approx(2 * 0.5**only_first)
    assert best.comparisons["0.50"]["test"] == "mcnemar_exact"
    assert ("0.50" in best.best) is bold and ("0.50" in best.tied) is not bold
    text = render(board, "markdown", ["method", "0.50"])
    assert ("| **100.0** |" in text) is bold


def test_csv_and_json_hold_numbers(store):
    board = build(store, "mnist", RADII)
    frame = pd.read_csv(io.StringIO(render(board, "csv")))
    assert "±" not in render(board, "csv")
    gaussian = frame[frame.method == "gaussian"].iloc[0]
    assert gaussian.acr_mean == pytest.approx(0.225) and gaussian.n == 100 and gaussian.num_examples == 4
    assert gaussian["ca_0.50_mean"] == pytest.approx(0.25) and gaussian.num_seeds == 2
    board.rows[0].clean_accuracy = float("nan")
    board.rows[0].sigma = float("inf")
    parsed = json.loads(render(board, "json"), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert parsed["rows"][0]["clean_accuracy"] is None and parsed["rows"][0]["sigma"] is None


def test_latex_uses_booktabs_and_the_papers_sigma_blocks(store, tmp_path):
    text = render(build(store, "mnist", RADII), "latex")
    assert "\\toprule" in text and "\\midrule" in text and "\\bottomrule" in text and "\\caption{" in text
    assert "$\\geq$ 0.4250" in text and "0.2250 $\\pm$ 0.0707" in text and " -- " in text
    body = text.split("\\midrule\n", 1)[1].split("\\bottomrule")[0].splitlines()
    # both rows are at σ = 0.5: one block, σ written on its first row only, no rule inside it
    assert body[0].startswith("0.50 & ") and body[1].startswith(" & ") and "\\midrule" not in body


def latex_can_compile() -> str | None:
    """Why a LaTeX table cannot be compiled here (None where pdflatex and booktabs.sty are installed)."""
    if shutil.which("pdflatex") is None or shutil.which("kpsewhich") is None:
        return "pdflatex is absent (apt-get install texlive-latex-base)"
    found = subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True, text=True).stdout.strip()
    return None if found else "booktabs.sty is absent (apt-get install texlive-latex-recommended)"


@pytest.mark.skipif(latex_can_compile() is not None, reason=str(latex_can_compile()))
def test_latex_compiles_with_booktabs(store, tmp_path):
    text = render(build(store, "mnist", RADII), "latex", intervals=True)
    document = tmp_path / "t.tex"
    document.write_text(
        "\\documentclass{article}\\usepackage[utf8]{inputenc}\\usepackage{booktabs}"
        "\\begin{document}" + text + "\\end{document}\n"
    )
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", document.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]


def test_terminal_table_fits_100_columns_and_wide_shows_everything(store):
    board = build(store, "mnist", parse_radii(None))
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(rich_table(board))
    compact = console.export_text()
    assert max(len(line) for line in compact.splitlines()) <= 100
    gaussian = next(line for line in compact.splitlines() if "gaussian" in line)
    assert re.search(r"gaussian .*0\.225 ", gaussian) and "±" not in gaussian
    assert " 2.50" in compact and " 2.25" in compact  # all 11 radii on 100 columns
    narrow = Console(width=80, record=True, file=io.StringIO())
    narrow.print(rich_table(board, width=80))
    text = narrow.export_text()  # room for 7 radius columns: every second radius of the 11
    assert "gaussian" in text and " 2.50" in text and " 2.25" not in text and " 0.25" not in text
    wide = Console(width=400, record=True, file=io.StringIO())
    wide.print(rich_table(board, wide=True))
    text = wide.export_text()
    # with its 95% interval after it (the interval itself: tests/test_uncertainty.py)
    assert "0.2250 ± 0.0707 [" in text and "draws/image" in text


def test_cli_columns_reported_and_errors(store, tmp_path):
    db = str(tmp_path / "s.db")
    result = runner.invoke(
        app,
        [
            "leaderboard",
            "--dataset",
            "mnist",
            "--db",
            db,
            "--format",
            "markdown",
            "--columns",
            "method,acr",
            "--reported",
        ],
    )
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[2]
    assert header == "| method | ACR |" and "reported" not in header
    board = json.loads(
        runner.invoke(app, ["leaderboard", "--dataset", "mnist", "--db", db, "--format", "json", "--reported"]).stdout
    )
    reported = [r for r in board["rows"] if r["source"] == "reported"]
    # Table 3 of the paper: Gaussian at σ = 0.5 on MNIST has ACR 1.5581 ± 0.0016 over 5 seeds
    assert any(
        r["method"] == "gaussian" and r["sigma"] == 0.5 and r["acr"]["mean"] == pytest.approx(1.5581) for r in reported
    )
    bad = runner.invoke(app, ["leaderboard", "--dataset", "mnist", "--db", db, "--columns", "acrr"])
    assert bad.exit_code == 2 and "unknown column 'acrr'" in bad.stderr and "acr" in bad.stderr


def test_plot_embeds_truetype_a_colour_per_row_and_a_std_band(store, tmp_path):
    board = build(store, "mnist", RADII)
    written = plot(store, board, tmp_path / "fig.png")
    pdf = (tmp_path / "fig.pdf").read_bytes()
    assert [p.suffix for p in written] == [".png", ".pdf"] and b"/FontFile2" in pdf and b"/Type3" not in pdf
    fig = figure(store, board)
    axis = fig.axes[0]
    colours = {line.get_label().split(" ")[0]: line.get_color() for line in axis.get_lines()}
    assert len(set(map(str, colours.values()))) == 2  # gaussian and consistency differ
    assert len(axis.collections) == 1  # one ± std band: only gaussian has several seeds
    assert "radius" in axis.get_xlabel() and "pixel" in axis.get_xlabel() and "accuracy" in axis.get_ylabel()


def test_plot_tells_variants_apart_draws_reported_rows_and_keeps_legends_apart(store):
    """Twelve variants of one method at σ = 0.5 (more than tab10's colours) and σ = 1.0 beside it, with the
    paper's reported rows (σ = 0.25 too): no two curves of a panel look alike, reported rows are markers at
    their reported radii, and no legend overlaps another legend or a panel."""
    for lam in range(12):
        rows = make_rows([1, 2, 3, 4], [1, 2, 3, 4], [0.05 * (lam + 1)] * 4, [110] * 4)
        add_run(store, rows, "consistency", {"lam": float(lam)}, 10 + lam)
    add_run(store, make_rows([1, 2], [1, 2], [0.9, 0.3], [110] * 2), "gaussian", {}, 0, sigma=1.0, train_sigma=1.0)
    board = build(store, "mnist", RADII, include_reported=True)
    fig = figure(store, board)
    fig.canvas.draw()
    panels = fig.axes
    assert [p.get_title() for p in panels] == [f"mnist, σ = {s}" for s in ("0.25", "0.50", "1.00")]
    half = panels[1]
    curves = [line for line in half.get_lines() if line.get_linestyle() != "None"]
    looks = {(str(line.get_color()), line.get_linestyle()) for line in curves}
    assert len(curves) == 14 and len(looks) == 14  # 12 consistency + 2 others, each its own colour/style
    reported = [line for line in half.get_lines() if line.get_linestyle() == "None"]
    assert reported and all("reported" in line.get_label() for line in reported)
    gaussian = next(
        line for line in reported if line.get_label().startswith("gaussian") and "Table 2" in line.get_label()
    )
    assert list(gaussian.get_xdata()) == [0.0, 0.5]  # the board's radii Table 2 reports
    assert gaussian.get_marker() not in ("", "None", None)
    renderer = fig.canvas.get_renderer()
    boxes = [p.get_legend().get_window_extent(renderer) for p in panels] + [
        p.get_window_extent(renderer) for p in panels
    ]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)


def test_runs_lists_imported_runs(tmp_path):
    db = str(tmp_path / "r.db")
    log = tmp_path / "log.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t7\t7\t0.5\t1\t0:00:00.5\n")
    assert (
        runner.invoke(
            app, ["import", str(log), "--dataset", "mnist", "--method", "gaussian", "--sigma", "0.5", "--db", db]
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["runs", "--db", db])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stderr.splitlines() if "gaussian" in line).split()
    assert line == ["1", "mnist", "gaussian", "0.5", "-", "100,000", "1", "full", "imported"]
    infinite = runner.invoke(
        app, ["import", str(log), "--dataset", "mnist", "--method", "gaussian", "--sigma", "inf", "--db", db]
    )
    assert infinite.exit_code == 2 and "finite" in infinite.stderr


def test_reported_smoothadv_rows_carry_the_official_mnist_epsilon():
    """The paper's MNIST SmoothAdv numbers come from the official code's ε = 255/256 (its text says 1.0): the
    reported rows must say so, as the presets that reproduce them do, or the two never share a configuration."""
    from rsbench.config import preset_settings
    from rsbench.results.board import reported_entries

    rows = [e for e in reported_entries() if e["dataset"] == "mnist" and e["method"] == "smoothadv"]
    assert rows
    for row in rows:
        preset = preset_settings(f"mnist-smoothadv-{row['sigma']:.2f}")["params"]
        assert row["params"]["eps"] == preset["eps"] == 255 / 256


def test_runs_recorded_without_certifier_parameters_rank_with_runs_spelling_out_the_defaults(tmp_path):
    """An imported log (no certifier parameters), a run certified here (cohen's defaults written out) and a
    compiled run (an implementation knob) are one protocol, ranked together; another precision is not."""
    store = open_store(str(tmp_path / "s.db"))
    defaults = {"forward_batch": 0, "compile": False, "precision": "float32"}
    add_run(store, make_rows([1, 1], [1, 1], [0.3, 0.3], 110), "gaussian", {}, 0, origin="imported")
    add_run(
        store, make_rows([1, 1], [1, 1], [0.6, 0.6], 110), "consistency", {"lam": 5.0}, 0, certifier_params=defaults
    )
    compiled = {**defaults, "compile": True}
    add_run(store, make_rows([1, 1], [1, 1], [0.7, 0.7], 110), "stability", {"lam": 2.0}, 0, certifier_params=compiled)
    half = {**defaults, "precision": "bfloat16"}
    add_run(store, make_rows([1, 1], [1, 1], [0.9, 0.9], 110), "macer", {}, 0, certifier_params=half)
    rows = build(store, "mnist", RADII).to_json()["rows"]
    protocols = {row["method"]: json.dumps(row["certifier_params"], sort_keys=True) for row in rows}
    assert protocols["gaussian"] == protocols["consistency"] == protocols["stability"] == '{"precision": "float32"}'
    assert protocols["macer"] == '{"precision": "bfloat16"}'
    text = render(build(store, "mnist", RADII), "markdown")
    line = {m: next(x for x in text.splitlines() if f"| {m} |" in x) for m in ("consistency", "stability", "macer")}
    # ACR 0.7 against the runner-up's 0.6 on both examples: every paired difference is 0.1, so the bootstrap
    # interval is [0.1, 0.1] and stability is the best of its protocol; macer is alone in its own
    assert "**0.7000**" in line["stability"] and "**" not in line["consistency"] and "**" not in line["macer"]
    # an imported log's radii (3 significant digits) beside rsbench's exact ones: the caption says what that means
    assert "Imported logs carry radii at the precision their code wrote" in text.splitlines()[0]


def test_a_reproduced_row_is_paired_with_the_papers_row_of_its_configuration(tmp_path):
    """The paper's consistency row at σ = 0.5 states lam, m and eta only; a run that records every parameter
    (loss at its default too) is the same configuration. Gaussian has its own reported rows; stability with
    lam = 3 has none."""
    store = open_store(str(tmp_path / "paired.db"))
    rows = make_rows([1, 2, 3, 4], [1, 2, 3, 4], [0.7, 0.7, 0.2, 0.1], [110] * 4)
    add_run(store, rows, "consistency", {"lam": 5.0, "m": 2, "eta": 0.5, "loss": "default"}, 0)
    add_run(store, rows, "stability", {"lam": 3.0}, 0)
    board = build(store, "mnist", RADII, include_reported=True, sigma=0.5)
    consistency = next(r for r in board.rows if r.method == "consistency" and r.source == "reproduced")
    # ACR 1.7/4 = 0.425; Table 2 reports 1.657 at r = 0, 0.25, …, Table 3 the ACR over runs, 1.6549
    assert [paper["reference"] for paper in consistency.reported] == ["Table 2", "Table 3"]
    assert consistency.reported[0]["acr_difference"] == pytest.approx(0.425 - 1.657)
    assert consistency.reported[1]["acr_difference"] == pytest.approx(0.425 - 1.6549)
    assert next(r for r in board.rows if r.method == "stability" and r.source == "reproduced").reported == []
    text = render(board, "markdown", ["method", "acr", "vs_paper"])
    # (the stability row certifies the same examples: the two are tied, ≈)
    assert "| consistency | 0.4250 ≈ | -1.232 (Table 2: 1.657); -1.230 (Table 3: 1.655) |" in text


def test_runs_apart_only_in_implementation_knobs_share_a_row(tmp_path):
    """forward_batch and compile change how the draws are fed to the model, never a certificate: one
    checkpoint certified with two forward batches is one model certified twice (a rerun), not two rows."""
    store = open_store(str(tmp_path / "knobs.db"))
    rows = make_rows([1, 2], [1, 2], [0.6, 0.2], [110] * 2)
    add_run(store, rows, "gaussian", {}, 0, certifier_params={"forward_batch": 100})
    add_run(store, rows, "gaussian", {}, 0, certifier_params={"forward_batch": 1000, "compile": True})
    add_run(store, rows, "gaussian", {}, 0, certifier_params={"precision": "bfloat16"})
    board = build(store, "mnist", RADII)
    assert sorted((len(row.runs), row.reruns) for row in board.rows) == [(1, 0), (2, 1)]
    shared = next(row for row in board.rows if len(row.runs) == 2)
    assert "forward_batch" not in shared.certifier_params and shared.certifier_params["precision"] == "float32"
