import io
import json
import sqlite3
import tarfile

import pandas as pd
import pytest
from typer.testing import CliRunner

from helpers import REFERENCE_LOGS, need
from rsbench.cli import app
from rsbench.errors import RsbenchError
from rsbench.results.board import build, parse_radii
from rsbench.results.cohen_tsv import export_tsv, import_tsv, read_tsv
from rsbench.results.render import render
from rsbench.store import open_store

runner = CliRunner()


@pytest.fixture(scope="module")
def official_logs(tmp_path_factory):
    """The consistency paper's official certification logs (Cohen's TSV), unpacked."""
    root = tmp_path_factory.mktemp("logs")
    with tarfile.open(need(REFERENCE_LOGS)) as archive:
        archive.extractall(root, filter="data")
    return root


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_official_mnist_gaussian_logs_give_table3_acrs(official_logs, tmp_path):
    db = tmp_path / "store.db"
    for sigma in ("0.25", "0.50", "1.00"):
        files = sorted((official_logs / "mnist" / "cohen").glob(f"noise_{sigma}_*"))
        assert len(files) == 5
        result = cli("import", *files, "--dataset", "mnist", "--method", "gaussian", "--sigma", sigma, "--db", db)
        assert result.exit_code == 0, result.output
    result = cli("leaderboard", "--dataset", "mnist", "--format", "json", "--db", db)
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    assert board["radii"] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5]
    acrs = {row["sigma"]: row["acr"] for row in board["rows"]}
    # the paper's Table 3: mean ± std over 5 seeds
    for sigma, (mean, std) in {0.25: (0.9108, 0.0003), 0.5: (1.5581, 0.0016), 1.0: (1.6184, 0.0021)}.items():
        assert round(acrs[sigma]["mean"], 4) == mean
        assert round(acrs[sigma]["std"], 4) == std
    row = next(r for r in board["rows"] if r["sigma"] == 0.5)
    assert row["seeds"] == [0, 1, 2, 3, 4] and row["num_examples"] == 10_000 and row["source"] == "reproduced"
    assert row["origin"] == "imported"
    assert (row["n"], row["n0"], row["alpha"]) == (100_000, 100, 0.001)
    # Table 2 (one seed there) reads 89.7% at r = 1.0 for σ = 0.5; the 5-seed mean is close
    assert row["certified_accuracy"]["1.00"]["mean"] == pytest.approx(0.897, abs=0.005)
    assert 0 <= row["abstain_rate"] <= 1 and row["clean_accuracy"] == pytest.approx(0.992, abs=0.003)

    # the same data in every format, and the paper's rows beside it
    for fmt in ("markdown", "latex"):
        text = cli("leaderboard", "--dataset", "mnist", "--format", fmt, "--db", db, "--reported").stdout
        assert ("1.5581 ± 0.0016" in text or "1.5581 $\\pm$ 0.0016" in text) and "Table 2" in text
    table = pd.read_csv(
        io.StringIO(cli("leaderboard", "--dataset", "mnist", "--format", "csv", "--db", db, "--reported").stdout)
    )  # numbers, never display strings
    imported = table[(table.sigma == 0.5) & (table.origin == "imported")].iloc[0]
    assert round(imported.acr_mean, 4) == 1.5581 and round(imported.acr_std, 4) == 0.0016
    assert "Table 2" in set(table.reference.dropna())
    latex = cli("leaderboard", "--dataset", "mnist", "--format", "latex", "--db", db).stdout
    assert "\\toprule" in latex and "\\textbf{1.6184 $\\pm$ 0.0021}" not in latex  # one row per σ: no bold
    with_reported = json.loads(
        cli("leaderboard", "--dataset", "mnist", "--format", "json", "--db", db, "--reported").stdout
    )
    sources = {r["source"] for r in with_reported["rows"]}
    assert sources == {"reproduced", "reported"}
    plot = tmp_path / "figure.png"
    assert cli("leaderboard", "--dataset", "mnist", "--db", db, "--plot", plot).exit_code == 0
    assert plot.stat().st_size > 10_000 and plot.with_suffix(".pdf").exists()


def test_tsv_time_formats_and_export_roundtrip(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text(
        "idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t7\t7\t0.953\t1\t0:00:00.591566\n1\t2\t-1\t0.0\t0\t0:01:02.5\n"
    )
    rows = read_tsv(log)
    assert rows.seconds.tolist() == pytest.approx([0.591566, 62.5])
    store = open_store(str(tmp_path / "s.db"))
    run_id = import_tsv(store, log, dataset="mnist", method="gaussian", sigma=0.25)
    exported = tmp_path / "out.tsv"
    assert export_tsv(store, run_id, exported) == 2
    again = read_tsv(exported)
    pd.testing.assert_frame_equal(rows, again)
    seconds = tmp_path / "seconds.tsv"
    seconds.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t7\t7\t0.5\t1\t1.25\n")
    assert read_tsv(seconds).seconds.tolist() == [1.25]


def table_counts(path):
    with sqlite3.connect(path) as connection:
        return {
            t: connection.execute(f"select count(*) from {t}").fetchone()[0] for t in ("certification_runs", "results")
        }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("idx\tlabel\tpredict\tradius\n0\t1\t1\t0.5\n", "lacks columns correct, time"),
        ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\tabc\t1\t0.1\n", "malformed value"),
        ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t2\t0.5\t1\t0.1\n", "correct must equal"),
        ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t-0.5\t1\t0.1\n", "radius must be finite"),
        ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n", "has no rows"),
    ],
)
def test_malformed_tsv_is_one_line_and_leaves_the_store_unchanged(tmp_path, content, message):
    db = tmp_path / "s.db"
    good = tmp_path / "good.tsv"
    good.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0.1\n")
    assert cli("import", good, "--dataset", "mnist", "--method", "gaussian", "--sigma", 0.5, "--db", db).exit_code == 0
    before = table_counts(db)
    bad = tmp_path / "bad.tsv"
    bad.write_text(content)
    result = cli("import", bad, "--dataset", "mnist", "--method", "gaussian", "--sigma", 0.5, "--db", db)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert table_counts(db) == before
    again = cli("import", good, "--dataset", "mnist", "--method", "gaussian", "--sigma", 0.5, "--db", db)
    assert again.exit_code == 2 and "already imported" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sigma", "0"], "sigma must be positive"),
        (["--sigma", "0.5", "--alpha", "1.5"], "alpha must lie strictly between 0 and 1"),
        (["--sigma", "0.5", "--n", "0"], "n0 and n must be at least 1"),
    ],
)
def test_import_rejects_bad_protocol(tmp_path, args, message):
    good = tmp_path / "good.tsv"
    good.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0.1\n")
    result = cli("import", good, "--dataset", "mnist", "--method", "gaussian", *args, "--db", tmp_path / "s.db")
    assert result.exit_code == 2 and message in result.stderr


def test_newer_schema_is_refused_and_left_alone(tmp_path):
    db = tmp_path / "s.db"
    open_store(str(db))
    with sqlite3.connect(db) as connection:
        connection.execute("update rsbench_meta set value = '99' where key = 'schema_version'")
    before = db.read_bytes()
    result = cli("leaderboard", "--dataset", "mnist", "--db", db)
    assert result.exit_code == 2 and "schema version 99, newer than" in result.stderr
    assert db.read_bytes() == before


def test_locked_store_is_a_clear_error(tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    store = open_store(str(db))
    holder = sqlite3.connect(db, timeout=0)
    holder.execute("begin exclusive")
    monkeypatch.setattr("rsbench.store.store.SQLITE_BUSY_TIMEOUT_MS", 200)
    fast = open_store(str(db))
    log = tmp_path / "l.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0.1\n")
    with pytest.raises(RsbenchError, match="locked"):
        import_tsv(fast, log, dataset="mnist", method="gaussian", sigma=0.5)
    holder.rollback()
    holder.close()
    assert len(store.runs()) == 0


def test_radii_grid_parsing():
    assert parse_radii("0:1:0.25") == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert parse_radii("0,0.5") == (0.0, 0.5)
    with pytest.raises(RsbenchError):
        parse_radii("1:0:0.5")


def test_best_value_per_sigma_is_marked(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    for method, radius in (("gaussian", 0.4), ("stability", 0.6)):
        log = tmp_path / f"{method}.tsv"
        lines = "".join(f"{i}\t1\t1\t{radius}\t1\t0.1\n" for i in range(8))
        log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n" + lines + "8\t2\t-1\t0\t0\t0.1\n")
        import_tsv(store, log, dataset="mnist", method=method, sigma=0.5)
    board = build(store, "mnist", (0.0, 0.5))
    assert [r.acr.mean for r in board.rows] == [pytest.approx(4.8 / 9), pytest.approx(3.2 / 9)]  # ranked by ACR
    markdown = render(board, "markdown")
    # ACR: every paired difference is 0.2 (or 0), so the bootstrap interval excludes 0; at r = 0.5 McNemar's
    # b = 8, c = 0: p = 2/2^8; at r = 0 both certify the same 8 examples: tied
    assert "**0.5333**" in markdown and "**0.3556**" not in markdown
    assert "| **88.9** |" in markdown and "| 88.9 ≈ |" in markdown and "| **0.0** |" not in markdown
    assert "\\textbf{0.5333}" in render(board, "latex")
