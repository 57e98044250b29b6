"""Intervals and paired tests against independent references: a binomial interval found by inverting the
binomial tails (not Beta quantiles), McNemar's p-value summed by hand, a published Bonett-Price example, a
bootstrap against the normal theory it must approach, and hand-made runs compared through the board and the
CLI."""

import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import binom
from test_leaderboard import add_run, make_rows
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.results import stats
from rsbench.results.board import build
from rsbench.store import open_store

runner = CliRunner()
Z = 1.959963984540054  # the standard normal's 97.5% quantile


def clopper_pearson_by_tails(successes: int, trials: int) -> tuple[float, float]:
    """The exact interval from its definition: the p at which the observed count is just in a 2.5% tail."""
    low = 0.0 if successes == 0 else brentq(lambda p: binom.sf(successes - 1, trials, p) - 0.025, 1e-12, 1 - 1e-12)
    high = 1.0 if successes == trials else brentq(lambda p: binom.cdf(successes, trials, p) - 0.025, 1e-12, 1 - 1e-12)
    return low, high


@pytest.mark.parametrize(("successes", "trials"), [(7, 20), (1, 50), (499, 500), (0, 30), (30, 30)])
def test_binomial_interval_inverts_the_binomial_tails(successes, trials):
    assert stats.binomial_interval(successes, trials) == pytest.approx(clopper_pearson_by_tails(successes, trials))


def test_binomial_interval_at_zero_has_the_closed_form_upper_end():
    assert stats.binomial_interval(0, 30) == (0.0, pytest.approx(1 - 0.025 ** (1 / 30)))


def test_mean_interval_is_the_normal_one_from_the_sample_std():
    values = np.array([0.0, 0.5, 1.0, 0.5])  # mean 0.5, sample variance (0.25 + 0 + 0.25 + 0)/3 = 1/6
    low, high = stats.mean_interval(values.mean(), (values**2).mean(), len(values))
    half = Z * math.sqrt(1 / 6) / 2
    assert (low, high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))


def test_mcnemar_exact_sums_the_binomial_half_tail_by_hand():
    # b = 6, c = 1: 2·P(Bin(7, ½) ≤ 1) = 2·(1 + 7)/128 = 0.125
    assert stats.mcnemar_exact(6, 1) == pytest.approx(0.125)
    assert stats.mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert stats.mcnemar_exact(4, 4) == 1.0 and stats.mcnemar_exact(0, 0) == 1.0


def test_bonett_price_interval_matches_the_published_example():
    # statpsych's ci.prop.ps(.05, f00=12, f01=4, f10=26, f11=6): estimate 0.44, [0.2548067, 0.6251933]
    assert stats.paired_difference_interval(26, 4, 48) == (
        pytest.approx(0.2548067, abs=1e-7),
        pytest.approx(0.6251933, abs=1e-7),
    )


def test_paired_bootstrap_has_a_known_answer_and_approaches_the_normal_interval():
    assert stats.paired_bootstrap_interval(np.full(50, 0.3)) == (pytest.approx(0.3), pytest.approx(0.3))
    differences = np.random.default_rng(1).normal(0.3, 1.0, 4000)
    low, high = stats.paired_bootstrap_interval(differences)
    half = Z * differences.std(ddof=1) / math.sqrt(len(differences))
    assert low == pytest.approx(differences.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(differences.mean() + half, abs=0.1 * half)


def test_board_intervals_are_the_binomial_and_normal_ones_of_a_run(tmp_path):
    store = open_store(str(tmp_path / "i.db"))
    # five examples: certified radii 0.6, 0.2, 0.7 (correct), one wrong, one abstention
    add_run(
        store, make_rows([1, 2, 3, 4, 5], [1, 2, 3, 0, -1], [0.6, 0.2, 0.7, 0.0, 0.0], [110] * 5), "gaussian", {}, 0
    )
    row = build(store, "mnist", (0.0, 0.5)).rows[0]
    assert row.certified_accuracy_interval["0.00"] == pytest.approx(clopper_pearson_by_tails(3, 5))
    assert row.certified_accuracy_interval["0.50"] == pytest.approx(clopper_pearson_by_tails(2, 5))
    scores = np.array([0.6, 0.2, 0.7, 0.0, 0.0])
    half = Z * scores.std(ddof=1) / math.sqrt(5)
    assert row.acr_interval == pytest.approx([scores.mean() - half, scores.mean() + half])


def pair_of_runs(tmp_path):
    """Run 1 certifies examples 0–19 at radius 0.6; run 2 the same but 0–5 only at 0.3 and 6–7 wrong, on
    examples 0–23 (the last four only it has)."""
    store = open_store(str(tmp_path / "pair.db"))
    labels = [1] * 20
    add_run(store, make_rows(labels, labels, [0.6] * 20, [110] * 20), "gaussian", {}, 0)
    second = make_rows([1] * 24, [1] * 6 + [0, 0] + [1] * 16, [0.3] * 6 + [0.0] * 2 + [0.6] * 16, [110] * 24)
    add_run(store, second, "stability", {}, 0)
    return store


def test_compare_reports_mcnemar_and_the_paired_intervals_on_shared_examples(tmp_path):
    pair_of_runs(tmp_path)
    result = runner.invoke(
        app,
        [
            "compare",
            "1",
            "2",
            "--radius",
            "0.5",
            "--radius",
            "0.25",
            "--format",
            "json",
            "--db",
            str(tmp_path / "pair.db"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["examples"] == 20 and report["examples_each"] == [20, 24]
    at_half = report["comparisons"]["0.50"]
    # at 0.5: run 1 certifies all 20, run 2 the 12 at 0.6: b = 8, c = 0, p = 2·(1/2)^8
    assert (at_half["only_first"], at_half["only_second"]) == (8, 0)
    assert at_half["p_value"] == pytest.approx(2 * 0.5**8) and at_half["significant"]
    assert at_half["difference"] == pytest.approx(8 / 20)
    assert at_half["interval"] == pytest.approx(list(stats.paired_difference_interval(8, 0, 20)))
    at_quarter = report["comparisons"]["0.25"]  # only the two wrong examples differ: b = 2, p = 0.5
    assert (at_quarter["only_first"], at_quarter["p_value"]) == (2, pytest.approx(0.5))
    assert not at_quarter["significant"]
    acr = report["comparisons"]["acr"]  # per-example differences: 0.3 (six), 0.6 (two), 0 (twelve)
    assert acr["difference"] == pytest.approx((6 * 0.3 + 2 * 0.6) / 20) and acr["test"] == "paired_bootstrap"
    assert acr["interval"][0] > 0


def test_compare_refuses_runs_without_shared_examples_in_one_line(tmp_path):
    store = open_store(str(tmp_path / "apart.db"))
    add_run(store, make_rows([1], [1], [0.6], [110]), "gaussian", {}, 0)
    rows = make_rows([1], [1], [0.6], [110])
    rows["idx"] = [7]
    add_run(store, rows, "stability", {}, 0)
    result = runner.invoke(app, ["compare", "1", "2", "--db", str(tmp_path / "apart.db")])
    assert result.exit_code == 2 and "share no test example" in result.output


def test_common_examples_recomputes_rows_on_the_examples_all_evaluated(tmp_path):
    pair_of_runs(tmp_path)
    board = build(open_store(str(tmp_path / "pair.db")), "mnist", (0.5,), common_examples=True)
    assert board.common_examples == 20
    second = next(row for row in board.rows if row.method == "stability")
    # on examples 0–19 only: 12 certified at 0.6 (the extra four at 0.6 are dropped)
    assert second.num_examples == 20 and second.certified_accuracy["0.50"].mean == pytest.approx(12 / 20)
    assert second.acr.mean == pytest.approx((6 * 0.3 + 12 * 0.6) / 20)
    first = next(row for row in board.rows if row.method == "gaussian")
    assert first.comparisons["0.50"]["examples"] == 20 and "0.50" in first.best
    whole = build(open_store(str(tmp_path / "pair.db")), "mnist", (0.5,))
    assert next(r for r in whole.rows if r.method == "stability").acr.mean == pytest.approx((1.8 + 16 * 0.6) / 24)
