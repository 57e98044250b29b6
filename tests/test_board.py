"""Leaderboard rows that mean what they say: a row's seeds are distinct checkpoints, never noise reseeds of
one; certifying off the training σ is a marked row of its own; radii grids never merge; rows are ranked by
score. Numbers are worked out by hand from the rows given."""

import json

import pytest
from test_leaderboard import add_run, make_rows
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.errors import RsbenchError
from rsbench.results.board import build
from rsbench.results.render import render
from rsbench.store import open_store

runner = CliRunner()
RADII = (0.0, 0.25, 0.5)


def one_run(store, certified, method="gaussian", seed=0, **protocol):
    """Four examples, all correct, with the ``certified`` radii: ACR = mean(certified)."""
    rows = make_rows([1, 2, 3, 4], [1, 2, 3, 4], certified, [110] * 4)
    return add_run(store, rows, method, {}, seed, **protocol)


def test_noise_reseeds_of_one_checkpoint_are_never_seeds(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    one_run(store, [0.1, 0.3, 0.5, 0.7], noise_seed=0, checkpoint_sha256="ck-a")  # ACR 0.4
    one_run(store, [0.2, 0.4, 0.6, 0.8], noise_seed=1, checkpoint_sha256="ck-a")  # ACR 0.5, same model
    one_run(store, [0.0, 0.0, 0.0, 0.4], seed=1, noise_seed=0, checkpoint_sha256="ck-b")  # ACR 0.1, another model
    (row,) = build(store, "mnist", RADII).rows
    assert row.seeds == [0, 1] and row.reruns == 1 and len(row.runs) == 3
    assert sorted(map(sorted, row.model_runs)) == [[1, 2], [3]]
    # model a: its two certifications averaged (0.45); model b: 0.1; over the two models, ddof = 1
    assert row.acr.mean == pytest.approx((0.45 + 0.1) / 2)
    assert row.acr.std == pytest.approx(abs(0.45 - 0.1) / 2**0.5)
    # certified accuracy at 0.5: model a (2/4 + 2/4)/2 = 0.5, model b 0
    assert row.certified_accuracy["0.50"].mean == pytest.approx(0.25)
    text = render(build(store, "mnist", RADII), "markdown")
    assert "2 (+1 rerun)" in text


def test_one_checkpoint_certified_twice_alone_has_one_seed_and_no_spread(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    one_run(store, [0.1, 0.3, 0.5, 0.7], noise_seed=0, checkpoint_sha256="ck-a")
    one_run(store, [0.2, 0.4, 0.6, 0.8], noise_seed=1, checkpoint_sha256="ck-a")
    (row,) = build(store, "mnist", RADII).rows
    assert row.seeds == [0] and row.reruns == 1 and row.acr.std is None
    assert row.acr.mean == pytest.approx(0.45)


def test_certifying_off_the_training_sigma_is_its_own_marked_row(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    one_run(store, [0.1, 0.1, 0.1, 0.1], sigma=0.25, train_sigma=0.25)
    one_run(store, [0.2, 0.2, 0.2, 0.2], seed=1, sigma=0.25, train_sigma=0.5, checkpoint_sha256="trained-at-0.5")
    board = build(store, "mnist", RADII)
    assert len(board.rows) == 2 and {r.train_sigma for r in board.rows} == {0.25, 0.5}
    mismatched = next(r for r in board.rows if r.train_sigma == 0.5)
    assert mismatched.sigma_mismatch and mismatched.seeds == [1]
    text = render(board, "markdown")
    assert "0.25 (trained at 0.5)" in text and text.count("(trained at") == 1


def test_two_radii_grids_are_two_rows(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    grid = dict(certifier="adaptive", checkpoint_sha256="ck-a")
    one_run(store, [0.25, 0.25, 0.5, 0.5], radii=(0.0, 0.25, 0.5), **grid)
    one_run(store, [0.5, 0.5, 0.5, 0.5], seed=1, radii=(0.0, 0.5), **{**grid, "checkpoint_sha256": "ck-b"})
    board = build(store, "mnist", RADII)
    assert len(board.rows) == 2 and sorted(r.radii for r in board.rows) == [[0.0, 0.25, 0.5], [0.0, 0.5]]
    assert all(r.seeds == [r.seeds[0]] for r in board.rows)
    assert "0:0.5:0.25" in render(board, "markdown")  # the grid, written compactly, tells them apart


def test_rows_are_ranked_by_acr_or_by_certified_accuracy_at_a_radius(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    one_run(store, [0.1, 0.1, 0.1, 1.2], method="gaussian")  # ACR 0.375, 1/4 certified at 0.5
    one_run(store, [0.6, 0.6, 0.1, 0.1], method="stability")  # ACR 0.35, 2/4 certified at 0.5
    one_run(store, [0.2, 0.2, 0.2, 0.2], method="macer")  # ACR 0.2, none at 0.5
    assert [r.method for r in build(store, "mnist", RADII).rows] == ["gaussian", "stability", "macer"]
    assert [r.method for r in build(store, "mnist", RADII, sort_by="0.5").rows] == ["stability", "gaussian", "macer"]
    with pytest.raises(RsbenchError, match="cannot sort by '0.75'"):
        build(store, "mnist", RADII, sort_by="0.75")
    cli = runner.invoke(
        app,
        ["leaderboard", "--dataset", "mnist", "--format", "json", "--sort-by", "0.50", "--db", str(tmp_path / "s.db")],
    )
    assert cli.exit_code == 0, cli.output
    board = json.loads(cli.stdout)
    assert board["sort_by"] == "0.50" and [r["method"] for r in board["rows"]][0] == "stability"
    assert "ranked by certified accuracy at r = 0.50" in render(build(store, "mnist", RADII, sort_by="0.5"), "markdown")


def test_certify_says_on_stderr_when_it_certifies_off_the_training_sigma(toy_checkpoint, toy_mnist_root, tmp_path):
    args = ["certify", str(toy_checkpoint), "--n0", "10", "--n", "100", "--limit", "2", "--skip", "50"]
    args += ["--data-dir", str(toy_mnist_root), "--db", str(tmp_path / "s.db"), "--no-progress"]
    matched = runner.invoke(app, args)
    assert matched.exit_code == 0, matched.output
    assert "trained at" not in matched.stderr
    off = runner.invoke(app, [*args, "--sigma", "0.5"])
    assert off.exit_code == 0, off.output
    assert "certifying at σ = 0.5, but the model was trained at σ = 0.25" in off.stderr
    rows = build(open_store(str(tmp_path / "s.db")), "mnist", RADII).rows
    assert sorted((r.sigma, r.train_sigma) for r in rows) == [(0.25, 0.25), (0.5, 0.25)]
