"""The adaptive grid certifier against classifiers whose smoothed probability is known in closed form."""

import math
import sqlite3

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, norm
from test_smoothing import Linear2, point_at_distance, problem
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.specs import CertificationRequest
from rsbench_plugins.adaptive import (
    BET_WEIGHTS,
    AdaptiveParams,
    AdaptiveSmoothedClassifier,
    log_wealth,
    look_sizes,
    stage_levels,
    tolerances,
)

GRID = tuple(0.25 * i for i in range(11))  # 0, 0.25, …, 2.5


def certifier(sigma, seed=8, **params):
    w, b = problem(seed=seed)
    return AdaptiveSmoothedClassifier(Linear2(w, b), 2, sigma, AdaptiveParams(**params)), w, b


def generators(count, offset=0):
    return [torch.Generator().manual_seed(offset + i) for i in range(count)]


def test_betting_test_rejects_a_true_null_at_most_alpha_of_the_time():
    """Ville: under p = t, sup_n W(n) ≥ 1/a with probability ≤ a, however often one looks."""
    rng = np.random.default_rng(0)
    t, a, paths, length = 0.9, 0.1, 1000, 3000
    looks = np.unique(np.geomspace(10, length, 20).astype(int))
    successes = np.cumsum(rng.random((paths, length)) < t, axis=1)[:, looks - 1]
    crossed = sum(
        any(log_wealth(k, n, 1 - t) >= math.log(1 / a) for k, n in zip(row, looks, strict=True)) for row in successes
    )
    assert crossed <= a * paths + 3 * math.sqrt(a * (1 - a) * paths)


def test_agreeing_draws_reject_after_the_analytic_number():
    """All n draws agree: W(n) lies between w_1·(1/t)^n (the all-in bet alone) and (1/t)^n (every bet's
    most), so H: p ≤ t is rejected at level a from log(1/(w_1 a))/log(1/t) draws, never before log(1/a)/log(1/t)."""
    t, a = norm.cdf(2.5), 0.0005
    enough = math.ceil(math.log(1 / (BET_WEIGHTS[0] * a)) / math.log(1 / t))
    too_few = math.floor(math.log(1 / a) / math.log(1 / t))
    assert log_wealth(enough, enough, 1 - t) >= math.log(1 / a)
    assert log_wealth(too_few, too_few, 1 - t) < math.log(1 / a)
    assert log_wealth(enough - 1, enough, 1 - t) < math.log(1 / a)  # one failure kills the all-in bet


@pytest.mark.parametrize("sigma, grid_radius, n", [(0.5, 0.5, 3000), (1.0, 0.25, 2000)])
def test_certifies_an_unsupported_radius_at_most_alpha_of_the_time(sigma, grid_radius, n):
    """The worst case: p_A at a grid threshold, Φ(r_j/σ) (minus 1e-6 of the radius), so certifying r_j is
    a violation of the truth. Over many repetitions the violation rate stays at or below α."""
    alpha, trials = 0.1, 400
    g, w, b = certifier(sigma)
    true_radius = grid_radius * (1 - 1e-6)  # P[f(x+δ)=1] = Φ(true_radius/σ), just below the threshold
    xs = point_at_distance(w, b, true_radius).expand(trials, 1, 4, 4)
    request = CertificationRequest(20, n, alpha, 20 * trials, GRID)
    certificates = g.certify_batch(xs, request, generators(trials))
    violations = sum(c.prediction == 1 and c.radius >= grid_radius for c in certificates)
    assert violations <= alpha * trials + 3 * math.sqrt(alpha * (1 - alpha) * trials)
    below = sum(c.prediction == 1 and c.radius == grid_radius - 0.25 for c in certificates)
    assert below > trials / 2  # and it does certify the supported radius below most of the time


def test_stops_early_on_clear_inputs_and_spends_the_budget_only_near_a_threshold():
    g, w, b = certifier(1.0)
    request = CertificationRequest(100, 100_000, 0.001, 1000, GRID)
    far, between, boundary = (point_at_distance(w, b, d) for d in (5.0, 1.1, 0.0))
    far_c, between_c, boundary_c = g.certify_batch(torch.stack([far, between, boundary]), request, generators(3))
    assert (far_c.prediction, far_c.radius, far_c.radius_kind) == (1, 2.5, "grid")
    # every draw agrees: the all-in bet rejects p ≤ Φ(2.5) after log(1/(¾·0.4α))/log(1/Φ(2.5)) ≈ 1,302 draws
    assert far_c.draws < 100 + 2 * 1302
    assert (between_c.prediction, between_c.radius) == (1, 1.0)  # true radius 1.1: the grid's 1.0 below it
    assert between_c.draws < 100 + 100_000 / 2
    assert boundary_c.prediction == -1 and boundary_c.radius == 0.0 and boundary_c.draws <= 100 + 100_000


def test_radius_zero_when_only_the_prediction_is_certified():
    g, w, b = certifier(0.5)
    x = point_at_distance(w, b, 0.15)  # true radius 0.15 < 0.25: only p_A > ½
    certificate = g.certify_batch(x[None], CertificationRequest(100, 20_000, 0.001, 1000, (0.25, 0.5)), generators(1))[
        0
    ]
    assert (certificate.prediction, certificate.radius, certificate.radius_kind) == (1, 0.0, "grid")
    assert certificate.p_a_lower >= 0.5  # the claim: p_A > ½


def test_shared_passes_keep_each_inputs_certificate():
    g, w, b = certifier(0.5)
    xs = torch.stack([point_at_distance(w, b, d) for d in (-0.4, 0.0, 0.3, 0.8)])
    request = CertificationRequest(50, 5000, 0.001, 400, GRID)
    together = g.certify_batch(xs, request, generators(4))
    alone = [
        g.certify_batch(x[None], CertificationRequest(50, 5000, 0.001, 100, GRID), [gen])[0]
        for x, gen in zip(xs, generators(4), strict=True)
    ]
    assert together == alone  # 400 // 4 = 100 selection draws per pass, rounds depend on own counts only


def test_needs_radii():
    g, w, b = certifier(0.5)
    with pytest.raises(Exception, match="grid of radii"):
        g.certify_batch(torch.zeros(1, 1, 4, 4), CertificationRequest(10, 100, 0.01, 10), generators(1))


def test_cli_certify_with_the_adaptive_certifier_records_draws_and_grid_radii(toy_checkpoint, toy_mnist_root, tmp_path):
    db = tmp_path / "a.db"
    result = CliRunner().invoke(
        app,
        [
            "certify",
            str(toy_checkpoint),
            "--certifier",
            "adaptive",
            "--radii",
            "0:1:0.25",
            "--n",
            "3000",
            "--n0",
            "50",
            "--limit",
            "8",
            "--data-dir",
            str(toy_mnist_root),
            "--db",
            str(db),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as connection:
        rows = connection.execute("select predict, radius, radius_kind, draws from results").fetchall()
    assert len(rows) == 8
    assert all(
        kind == "grid" and radius in (0.0, 0.25, 0.5, 0.75, 1.0) and 50 < draws <= 3050
        for _, radius, kind, draws in rows
    )


@pytest.mark.parametrize("extra", [[], ["--radii", "0:1:0.25", "--betting-share", "0.7", "--final-share", "0.5"]])
def test_cli_refuses_a_request_the_adaptive_certifier_cannot_answer_before_writing_a_run(
    extra, toy_checkpoint, toy_mnist_root, tmp_path
):
    """No grid of radii, or shares of α adding up to 1.2 α: one line, exit code 2, and the store holds no run."""
    db = tmp_path / "a.db"
    command = ["certify", str(toy_checkpoint), "--certifier", "adaptive", "--n", "1000", "--limit", "2"]
    result = CliRunner().invoke(app, [*command, *extra, "--data-dir", str(toy_mnist_root), "--db", str(db)])
    assert result.exit_code == 2
    assert "must be at most 1" in result.output if extra else "grid of radii" in result.output
    if db.exists():
        with sqlite3.connect(db) as connection:
            assert connection.execute("select count(*) from runs").fetchone() == (0,)


def load_benchmark(name: str):
    """A script of ``benchmarks/`` (not a package) as a module."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = str(Path(__file__).parents[1] / "benchmarks")
    spec = importlib.util.spec_from_file_location(name, f"{folder}/{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, folder)  # as when run as a script: the scripts import one another
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def test_oracle_reference_matches_the_closed_form():
    """benchmarks/adaptive_table.py's oracle: when all draws agree the one-sided Clopper-Pearson bound from n
    of n is α^(1/n), so certifying threshold t takes n = ⌈log α / log t⌉ draws; an abstention costs N0."""
    import pandas as pd

    adaptive_table = load_benchmark("adaptive_table")
    sigma, alpha, n = 0.5, 0.001, 100_000
    rows = pd.DataFrame(
        {
            "predict": [3, 3, -1],
            "radius": [1.8, 1.1, 0.0],  # grid radii 1.75 and 1.0
            "n_a": [n, n, 40_000],
            "n": [n] * 3,
            "n0": [100] * 3,
            "alpha": [alpha] * 3,
        }
    )
    expected = [100 + math.ceil(math.log(alpha) / math.log(norm.cdf(r / sigma))) for r in (1.75, 1.0)] + [100]
    assert expected[0] == 100 + 29_691  # the floor quoted for σ = 0.5, r = 1.75
    oracle = adaptive_table.reference_draws(rows, sigma, adaptive_table.fewest_draws)
    assert oracle == pytest.approx(np.mean(expected), abs=1 / 3)
    # Wald's bound when every draw agrees: KL(1 ‖ t) = log(1/t), so log(1/α)/log(1/t), the oracle's n unrounded.
    wald = adaptive_table.reference_draws(rows, sigma, adaptive_table.wald_bound)
    assert wald == pytest.approx(np.mean(expected), abs=1)


def test_one_point_of_slack_certifies_one_image_in_a_hundred_one_grid_step_lower():
    """``wald, 1 point spent``: of 100 unanimous images at r = 1.75 (σ = 0.5), one may be certified at 1.5
    instead (1% per radius), saving log(1/α)/log(1/Φ(3.5)) - log(1/α)/log(1/Φ(3)) draws; no more."""
    import pandas as pd

    adaptive_table = load_benchmark("adaptive_table")
    sigma, alpha, n = 0.5, 0.001, 100_000
    rows = pd.DataFrame({"predict": [1] * 100, "radius": [1.8] * 100, "n_a": [n] * 100, "n": [n] * 100})
    rows["n0"], rows["alpha"] = 100, alpha
    at = {r: math.log(1 / alpha) / -math.log(norm.cdf(r / sigma)) for r in (1.5, 1.75)}
    expected = 100 + at[1.75] - (at[1.75] - at[1.5]) / 100
    assert adaptive_table.reference_draws(rows, sigma, adaptive_table.wald_bound, 1.0) == pytest.approx(expected)
    assert adaptive_table.reference_draws(rows, sigma, adaptive_table.wald_bound) == pytest.approx(100 + at[1.75])


def test_regenerating_the_table_keeps_the_analysis_written_below_it():
    adaptive_table = load_benchmark("adaptive_table")
    previous = "# old header\n| old | table |\n\n## Reading the table\n\nWhy the numbers are what they are.\n"
    regenerated = adaptive_table.keep_analysis("# header\n| new | table |\n", previous)
    assert regenerated == "# header\n| new | table |\n\n## Reading the table\n\nWhy the numbers are what they are.\n"
    assert adaptive_table.keep_analysis("# header\n", "# a file without analysis\n") == "# header\n"


def test_wald_bound_is_what_the_sequential_probability_ratio_test_spends():
    """benchmarks/adaptive_table.py's ``wald`` row against Wald's test run draw by draw: testing p_A = 0.9 against
    the true p_A = 0.95 at α = 0.001 (log-likelihood ratio steps log(0.95/0.9) and log(0.05/0.1), rejection at
    log(1/α)), the mean stopping time is the bound plus the overshoot, within 10% of it."""
    adaptive_table = load_benchmark("adaptive_table")
    p, t, alpha = 0.95, 0.9, 0.001
    divergence = 0.95 * math.log(0.95 / 0.9) + 0.05 * math.log(0.05 / 0.1)  # written out: 0.016706 nats
    bound = adaptive_table.wald_bound(p, t, alpha, 100_000)
    assert bound == pytest.approx(math.log(1000) / divergence)
    draws = np.random.default_rng(0).random((2000, 2000)) < p
    walk = np.cumsum(np.where(draws, math.log(p / t), math.log((1 - p) / (1 - t))), axis=1)
    rejected = walk >= math.log(1 / alpha)
    assert rejected.any(axis=1).mean() > 0.99  # the test (almost) always certifies within 2,000 draws
    stopping = rejected.argmax(axis=1)[rejected.any(axis=1)] + 1
    assert bound <= stopping.mean() <= 1.1 * bound


def test_simulation_certifies_unanimous_inputs_and_never_a_minority_class():
    """benchmarks/adaptive_simulate.py on known p_A: an input whose draws all agree is certified at the largest
    grid radius a level-α test can reach within N (Φ(r/σ)^N ≤ α), one with p_A = 0.3 never; draws stay
    within N0 + N."""
    import pandas as pd

    simulate = load_benchmark("adaptive_simulate")
    sigma, alpha, n = 0.25, 0.001, 100_000
    rows = pd.DataFrame(
        {"n_a": [n, n, 30_000], "n": [n] * 3, "n0": [100] * 3, "alpha": [alpha] * 3, "predict": [1, 1, 2]}
    )
    rows["correct"] = 1
    draws, accuracy = simulate.simulate(rows, sigma, AdaptiveParams(), np.random.default_rng(0))
    reachable = max(r for r in simulate.RADII if norm.cdf(r / sigma) ** n <= alpha)
    expected = [100 * (2 / 3 if r <= reachable else 0.0) for r in (0.0, *simulate.RADII)]
    assert reachable == 0.75
    assert accuracy == pytest.approx(expected)
    assert 100 < draws < 100 + n
    # Cohen's CERTIFY at N' = 1,000 on the same inputs: n of n agreeing gives the bound α^(1/N'), radius
    # σ Φ⁻¹(α^(1/1000)) = 0.615, so grid radii up to 0.5; p_A = 0.3 abstains.
    cohen = simulate.simulate_cohen(rows, sigma, 1000, np.random.default_rng(0))
    assert sigma * norm.ppf(alpha ** (1 / 1000)) == pytest.approx(0.615, abs=1e-3)
    assert cohen == pytest.approx([100 * (2 / 3 if r <= 0.5 else 0.0) for r in (0.0, *simulate.RADII)])


def test_told_where_to_stop_spends_what_the_all_in_bet_needs():
    """benchmarks/adaptive_simulate.py's ``--told`` reference on draws that all agree (σ = 0.5, r = 1.75, so
    t = Φ(3.5)): the bet mixture's wealth lies between the all-in bet's share w_1 t^-n and t^-n, so the tests
    reject at the first look after n = [log(1/α_b), log(1/(w_1 α_b))] / log(1/t) (looks are at most ``step``
    apart; no Clopper-Pearson stage certifies earlier: α_s^(1/25,000) < t); the prediction alone (t = ½) is
    certified at the first look, 50 draws."""
    simulate = load_benchmark("adaptive_simulate")
    sigma, alpha, params = 0.5, 0.001, AdaptiveParams()
    told = simulate.told_draws(sigma, params, seed=0, reps=20)
    t = norm.cdf(1.75 / sigma)
    barrier = math.log(1 / (alpha * params.betting_share))
    fastest, slowest = barrier / -math.log(t), (barrier + math.log(1 / BET_WEIGHTS[0])) / -math.log(t)
    assert (fastest, slowest) == pytest.approx((33_629, 34_866), abs=1)
    assert fastest <= told(1.0, t, alpha, 100_000) <= slowest + params.step
    assert told(1.0, 0.5, alpha, 100_000) == params.first_look == 50
    # Two disagreeing draws in a thousand put t out of reach: once f disagree, not even N - f agreeing of N
    # certify at N, so the tests stop at about the f-th failure, f / 0.002 draws (the futility rule, which is off
    # here, would stop near 2,000). The final bound tolerates Cohen's own 9 failures at N (P(Binomial(N, 1-t) ≤ 9)
    # = 0.68 α): its floor, level 0.4 α, allows 8, and the earlier tests leave more than 0.28 α unspent here.
    tolerated = tolerances(1.75, sigma, alpha, 100_000, params, None)[-1]
    within = [f for f in range(30) if binom.cdf(f, 100_000, 1 - t) <= alpha * params.final_share]
    cohen = [f for f in range(30) if binom.cdf(f, 100_000, 1 - t) <= alpha]
    assert (max(within), tolerated, max(cohen)) == (8, 9, 9)
    f = tolerated + 1
    assert 0.8 * f / 0.002 < told(0.998, t, alpha, 100_000) < 1.25 * f / 0.002


def test_cohen_against_itself_strays_by_the_flips_of_images_on_a_threshold():
    """benchmarks/adaptive_simulate.py's noise floor (``--cohen-n 100000``): an image whose count k* is the
    fewest that certifies r = 0.25 (σ = 0.25) keeps it in a rerun with probability P(Binomial(N, k*/N) ≥ k*) ≈ ½.
    With three such images among 200 unanimous ones, a rerun strays by more than 1 point (all three lose
    r = 0.25, 1.5 points) in 1/8 of the runs, and never at another radius."""
    import pandas as pd

    simulate = load_benchmark("adaptive_simulate")
    sigma, alpha, n = 0.25, 0.001, 100_000
    t = norm.cdf(0.25 / sigma)
    # k*: the Clopper-Pearson lower bound from k of n reaches t exactly when P(Binomial(n, t) ≥ k) ≤ α.
    k_star = next(k for k in range(int(t * n), n) if binom.sf(k - 1, n, t) <= alpha)

    class Counts:  # a generator that draws the given counts, to check the bound at k* and k* - 1 exactly
        def __init__(self, counts):
            self.counts = np.array(counts)

        def binomial(self, n, p):
            return self.counts

    one = pd.DataFrame({"n_a": [k_star], "n": n, "n0": 100, "alpha": alpha, "predict": 1, "correct": 1})
    assert simulate.simulate_cohen(one, sigma, n, Counts([k_star]))[1] == 100  # certifies r = 0.25
    assert simulate.simulate_cohen(one, sigma, n, Counts([k_star - 1]))[1] == 0
    counts = [n] * 197 + [k_star] * 3
    lower = [beta.ppf(alpha, k, n - k + 1) for k in counts]
    rows = pd.DataFrame({"n_a": counts, "n": n, "n0": 100, "alpha": alpha, "predict": 1, "correct": 1})
    rows["radius"] = sigma * norm.ppf(lower)  # Cohen's run: the three images just certify r = 0.25
    cohen = simulate.certified_accuracy(rows.radius.to_numpy(), rows.correct.to_numpy() == 1)
    rng = np.random.default_rng(0)
    reruns = [simulate.simulate_cohen(rows, sigma, n, rng) for _ in range(800)]
    lost = [round((cohen - rerun)[1] / 0.5) for rerun in reruns]  # images that lost r = 0.25
    assert all(np.abs(cohen - rerun)[[0, *range(2, 11)]].max() == 0 for rerun in reruns)
    assert np.mean(lost) == pytest.approx(3 * 0.5, abs=0.15)
    assert np.mean(np.array(lost) == 3) == pytest.approx(1 / 8, abs=0.04)
    assert simulate.gap_summary(cohen, reruns) == (
        f"largest gap {0.5 * np.mean(lost):.1f} points (mean of 800 runs); per run {0.5 * np.mean(lost):.1f}, "
        f"over 1 point in {np.mean(np.array(lost) == 3):.0%}"
    )


def test_cohen_power_is_the_chance_that_the_clopper_pearson_bound_reaches_the_threshold():
    """benchmarks/adaptive_table.py's π = P(Cohen's bound ≥ t) against the bound itself: k* found by scanning k for
    the first one-sided Clopper-Pearson bound (Beta quantile) at or above t, the power summed from the pmf. At
    p̂ = t a valid bound reaches t with probability at most α; all draws agreeing, it reaches t iff α^(1/n) ≥ t."""
    adaptive_table = load_benchmark("adaptive_table")
    n, alpha, t = 2000, 0.001, 0.95
    k_star = next(k for k in range(n + 1) if beta.ppf(alpha, k, n - k + 1) >= t)
    for p in (0.955, 0.97, 0.99):
        expected = sum(binom.pmf(k, n, p) for k in range(k_star, n + 1))
        assert adaptive_table.cohen_power(p, t, alpha, n) == pytest.approx(expected, rel=1e-9)
    assert 0.5 * alpha < adaptive_table.cohen_power(t, t, alpha, n) <= alpha
    assert adaptive_table.cohen_power(1.0, alpha ** (1 / n) - 1e-9, alpha, n) == 1.0
    assert adaptive_table.cohen_power(1.0, alpha ** (1 / n) + 1e-9, alpha, n) == 0.0


def test_matched_power_ceiling_of_unanimous_images_is_walds_bound_at_their_largest_radius():
    """All N = 100,000 draws agree (σ = 0.5): Cohen's bound α^(1/N) = 0.99993 reaches Φ(1.75/0.5) = 0.99977 but
    not Φ(2/0.5) = 0.99997, so π = 1 up to r = 1.75 and 0 above; kl(1, α) = log(1/α), KL(1 ‖ t) = log(1/t): the
    ceiling is log(1/α)/log(1/Φ(3.5)) = 29,691 draws. With 1 point to spend on 100 such images, one certificate
    per radius may go: the most saved is one image giving up every radius (it then costs the selection draws
    alone), not one step down as ``Wald, power 1, 1 point spent`` allows."""
    import pandas as pd

    adaptive_table = load_benchmark("adaptive_table")
    sigma, alpha, n = 0.5, 0.001, 100_000
    rows = pd.DataFrame({"predict": [1] * 100, "radius": [1.8] * 100, "n_a": [n] * 100, "n": [n] * 100})
    rows["n0"], rows["alpha"], rows["correct"] = 100, alpha, 1
    at = {1.75: math.log(1 / alpha) / -math.log(norm.cdf(1.75 / sigma))}
    assert at[1.75] == pytest.approx(29_690.8, abs=0.1)
    assert adaptive_table.matched_power_ceiling(rows, sigma) == pytest.approx(100 + at[1.75])
    assert adaptive_table.matched_power_ceiling(rows, sigma, 1.0) == pytest.approx(100 + 0.99 * at[1.75])
    # an abstention costs the selection draws alone; with 0.5 points, no whole certificate may go
    rows.loc[0, "predict"] = -1
    assert adaptive_table.matched_power_ceiling(rows, sigma) == pytest.approx(100 + 0.99 * at[1.75])
    assert adaptive_table.matched_power_ceiling(rows, sigma, 0.5) == pytest.approx(100 + 0.99 * at[1.75])


def test_matched_power_ceiling_at_cohens_power_one_half():
    """One image whose p̂ makes Cohen's count land on k* half the time (π ≈ ½ at the top radius it reaches):
    the ceiling there is kl(π, α)/KL(p̂ ‖ t), written out, below Wald's power-1 bound log(1/α)/KL(p̂ ‖ t)."""
    import pandas as pd

    adaptive_table = load_benchmark("adaptive_table")
    sigma, alpha, n = 1.0, 0.001, 100_000
    t = norm.cdf(1.0)
    k_star = next(k for k in range(int(t * n), n) if binom.sf(k - 1, n, t) <= alpha)
    p = k_star / n  # the median of Binomial(n, k*/n) is k*: π = P(K ≥ k*) ≈ ½
    power = binom.sf(k_star - 1, n, p)
    assert 0.45 < power < 0.55
    rows = pd.DataFrame({"predict": [1], "radius": [1.0], "n_a": [k_star], "n": [n], "n0": [100], "alpha": [alpha]})
    divergence = p * math.log(p / t) + (1 - p) * math.log((1 - p) / (1 - t))
    small = power * math.log(power / alpha) + (1 - power) * math.log((1 - power) / (1 - alpha))
    costs = [adaptive_table.matched_power_costs(p, sigma, alpha, n)[0][j] for j in range(len(adaptive_table.RADII))]
    assert costs[4] == pytest.approx(small / divergence)  # r = 1.0 is the fifth grid radius
    assert max(costs) == costs[4]  # lower radii are cheaper, higher ones out of Cohen's reach (π ≤ α)
    assert adaptive_table.matched_power_ceiling(rows, sigma) == pytest.approx(100 + small / divergence)
    assert small / divergence < math.log(1 / alpha) / divergence


def test_smallest_sufficient_n_of_unanimous_images_is_where_the_bound_reaches_their_radius():
    """200 correct images, all N draws agreeing, certified by Cohen at r = 1.75 (σ = 0.5): at N' draws the bound
    α^(1/N') reaches Φ(3.5) iff N' ≥ log α / log Φ(3.5) = 29,690.8; fewer loses all of them (100 points). On the
    grid of 100 draws the smallest sufficient N is 29,700."""
    import pandas as pd

    adaptive_table = load_benchmark("adaptive_table")
    sigma, alpha, n = 0.5, 0.001, 100_000
    rows = pd.DataFrame({"predict": 1, "n_a": [n] * 200, "n": n, "n0": 100, "alpha": alpha, "correct": 1})
    assert adaptive_table.smallest_sufficient_n(rows, sigma) == 29_700
    # two images in 200 (1 point) that N' certifies only at 1.5 are allowed; three are not
    assert adaptive_table.expected_accuracy(rows, sigma, 29_700)[7] == pytest.approx(100.0)
    assert adaptive_table.expected_accuracy(rows, sigma, 29_600)[7] == pytest.approx(0.0)


def test_gap_from_reruns_lines_the_grid_up_with_cohens_expected_accuracy():
    """Two images at σ = 0.25, N = 100,000, α = 0.001: one correct with all N draws agreeing (Cohen's bound
    α^(1/N) = Φ(3.81), radius 0.95: every rerun certifies it at grid radii 0 … 0.75), one wrong. Reruns' mean
    certified accuracy: 50% up to 0.75, 0 beyond. A run that certifies the first only up to 0.5 is 50 points off
    at 0.75 alone; one that matches the reruns is 0 off."""
    import pandas as pd

    adaptive_table = load_benchmark("adaptive_table")
    sigma, alpha, n = 0.25, 0.001, 100_000
    assert sigma * norm.ppf(alpha ** (1 / n)) == pytest.approx(0.953, abs=1e-3)
    rows = pd.DataFrame({"predict": [1, 1], "n_a": [n, n], "n": n, "n0": 100, "alpha": alpha, "correct": [1, 0]})
    radii = adaptive_table.RADII
    short = [50.0 if r <= 0.5 else 0.0 for r in radii]
    assert adaptive_table.gap_from_reruns(rows, short, sigma) == pytest.approx(50.0)
    matching = [50.0 if r <= 0.75 else 0.0 for r in radii]
    assert adaptive_table.gap_from_reruns(rows, matching, sigma) == pytest.approx(0.0, abs=1e-9)


def test_selection_weights_are_the_jeffreys_posterior_mass_nearest_each_bet():
    """Bet c is the likelihood ratio against p_c = t + c(1 - t). Re-derived in p-space: with 90 of 100 selection
    draws for ĉ_A, each bet but the all-in one gets (1 - floor) × the Beta(90.5, 10.5) mass of the p nearest its
    p_c (cells split halfway between neighbouring p_c) over the mass of all cells, plus floor/9; the all-in bet
    gets nothing (a disagreeing draw proves p_A < 1). Unanimous draws keep ¾ on the all-in bet."""
    from rsbench_plugins.adaptive import BET_FRACTIONS, PRIOR_FLOOR, selection_weights

    t = 0.8
    weights = selection_weights(1 - t, 90, 100)
    alternatives = t + np.sort(BET_FRACTIONS) * (1 - t)  # ascending p_c, the all-in bet's p = 1 last
    cuts = np.concatenate(([t], (alternatives[:-1] + alternatives[1:]) / 2, [1.0]))
    mass = np.diff(beta.cdf(cuts, 90.5, 10.5))[:-1]  # all but the all-in bet's cell
    expected = (1 - PRIOR_FLOOR) * mass / mass.sum() + PRIOR_FLOOR / 9
    assert weights[0] == 0.0
    assert weights[1:] == pytest.approx(expected[::-1])  # weights follow BET_FRACTIONS' descending order
    assert weights.sum() == pytest.approx(1.0)
    unanimous = selection_weights(1 - t, 100, 100)
    assert unanimous[0] == BET_WEIGHTS[0] and unanimous.sum() == pytest.approx(1.0)


def test_a_mixture_keeps_its_level_and_the_best_bet_chosen_afterwards_does_not():
    """Ville's inequality holds for the mixture whatever fixed weights the selection draws gave it (here the ones
    for 70 of 100 agreeing draws, concentrated on p near 0.7 while the truth is p = t = 0.7): sup_n W(n) ≥ 1/a at
    most a of the time. The invalid variant that takes the best single bet after seeing the draws (the maximum
    over bets instead of their average) crosses far more often: the check has the power to catch it."""
    from rsbench_plugins.adaptive import BET_FRACTIONS, LOG_LOSS, selection_weights

    rng = np.random.default_rng(1)
    t, a, paths, length = 0.7, 0.05, 1000, 2000
    looks = np.unique(np.geomspace(10, length, 25).astype(int))
    successes = np.cumsum(rng.random((paths, length)) < t, axis=1)[:, looks - 1]
    weights = selection_weights(1 - t, 70, 100)
    mixture = sum(
        any(log_wealth(k, n, 1 - t, weights) >= math.log(1 / a) for k, n in zip(row, looks, strict=True))
        for row in successes
    )
    win = np.log1p(BET_FRACTIONS * (1 - t) / t)

    def best_bet(k, n):
        with np.errstate(invalid="ignore"):
            return float(np.max(np.nan_to_num(k * win + (n - k) * LOG_LOSS, nan=-np.inf)))

    snooping = sum(any(best_bet(k, n) >= math.log(1 / a) for k, n in zip(row, looks, strict=True)) for row in successes)
    assert mixture <= a * paths + 3 * math.sqrt(a * (1 - a) * paths)
    assert snooping > 1.5 * a * paths


@pytest.mark.parametrize("sigma, radius, n", [(0.25, 0.5, 3000), (1.0, 1.0, 2000)])
def test_one_radius_certifies_an_unsupported_radius_at_most_alpha_of_the_time(sigma, radius, n):
    """The one-point grid ``--radii r`` tests p_A > Φ(r/σ) alone. With p_A just below that threshold, certifying
    r is a violation; over many repetitions it happens at most α of the time (selection draws set the bets, the
    predictive rule stops), and an input just past the threshold's reach is certified most of the time."""
    alpha, trials = 0.1, 400
    g, w, b = certifier(sigma)
    request = CertificationRequest(20, n, alpha, 20 * trials, (radius,))
    below = g.certify_batch(
        point_at_distance(w, b, radius * (1 - 1e-6)).expand(trials, 1, 4, 4), request, generators(trials)
    )
    violations = sum(c.prediction == 1 and c.radius >= radius for c in below)
    assert violations <= alpha * trials + 3 * math.sqrt(alpha * (1 - alpha) * trials)
    assert all(c.radius in (0.0, radius) for c in below)
    above = g.certify_batch(point_at_distance(w, b, 2 * radius).expand(50, 1, 4, 4), request, generators(50, 10**6))
    assert sum(c.prediction == 1 and c.radius == radius for c in above) > 40


def test_one_radius_spends_no_draws_on_radius_zero():
    """σ = 0.25, r = 0.5 (t = Φ(2)): a far input, every draw agreeing, is certified at r once the bet mixture's
    wealth, between its all-in share ¾·t^-n and t^-n, has grown past 1/α_b: between log(1/α_b) / log(1/t) and
    log(1/(¾·α_b)) / log(1/t) draws, at the first look past it (looks every 50 draws there); an input with
    p_A ≈ Φ(0.2) = 0.58 (true radius 0.05, certified at 0 by a grid with r = 0 in a few hundred draws) has no
    business with r: it abstains and gives up long before N."""
    g, w, b = certifier(0.25)
    params = g.params
    request = CertificationRequest(100, 100_000, 0.001, 1000, (0.5,))
    far, near_zero = (point_at_distance(w, b, d) for d in (5.0, 0.05))
    far_c, zero_c = g.certify_batch(torch.stack([far, near_zero]), request, generators(2))
    t = norm.cdf(2.0)
    fastest = math.log(1 / (0.001 * params.betting_share)) / math.log(1 / t)
    enough = math.log(1 / (BET_WEIGHTS[0] * 0.001 * params.betting_share)) / math.log(1 / t)
    assert (fastest, enough) == pytest.approx((340.0, 352.5), abs=0.1)
    assert (far_c.prediction, far_c.radius) == (1, 0.5)
    assert 100 + fastest <= far_c.draws <= 100 + enough + params.first_look
    assert zero_c.prediction == -1 and zero_c.draws < 100 + 1000


def test_each_kind_of_input_gets_its_own_give_up_level():
    """γ for a grid input whose selection draws disagreed (``give_up``), for one of a one-point grid
    (``give_up_one_radius``), and for one whose selection draws all agreed (``give_up_unanimous``, either grid)."""
    from rsbench_plugins.adaptive import GridTest

    params = AdaptiveParams(give_up=0.3, give_up_one_radius=0.02, give_up_unanimous=0.001)
    assert GridTest(GRID, 1.0, 0.001, 100_000, params, (90, 100)).give_up == 0.3
    assert GridTest((1.0,), 1.0, 0.001, 100_000, params, (90, 100)).give_up == 0.02
    assert GridTest(GRID, 1.0, 0.001, 100_000, params, (100, 100)).give_up == 0.001
    assert GridTest((1.0,), 1.0, 0.001, 100_000, params, (100, 100)).give_up == 0.001
    assert GridTest((0.0, 1.0), 1.0, 0.001, 100_000, params, (90, 100)).give_up == 0.3  # r = 0 makes it a grid


@pytest.mark.parametrize(
    "radius, selection, alpha, n_max, stages",
    [
        (0.75, (100, 100), 0.01, 3000, 4),
        (0.5, (90, 100), 0.01, 3000, 4),
        (0.0, (60, 100), 0.01, 3000, 4),
        (0.25, (97, 100), 0.05, 100, 1),  # one stage, N = 100: looks at 50 and 100
        (0.5, None, 0.05, 1000, 12),  # more stages than looks can hold apart
    ],
)
def test_final_bound_spends_exactly_what_the_earlier_looks_leave(radius, selection, alpha, n_max, stages):
    """Each threshold's tests, as failures tolerated at each look, reject p ≤ t at p = t (the worst case) with
    probability at most α, and one more failure tolerated at N would exceed α: the final bound takes all that the
    betting tests and the earlier stages leave. The reference is a plain forward recursion over the whole range of
    the failure count (no FFT, no tail cut). With the grid's defaults the final bound tolerates more than its share
    (level 0.4 α alone) allows."""
    sigma, params = 0.5, AdaptiveParams(stages=stages)
    tolerance = tolerances(radius, sigma, alpha, n_max, params, selection)
    looks = look_sizes(n_max, [size for size, _ in stage_levels(alpha, n_max, params)], params.first_look, params.step)
    q = norm.sf(radius / sigma)

    def rejection_chance(final: int) -> float:
        alive, rejected, previous = np.eye(1, n_max + 1)[0], 0.0, 0
        for n, tolerated in zip(looks, [*tolerance[:-1], final], strict=True):
            alive = np.convolve(alive, binom.pmf(np.arange(n - previous + 1), n - previous, q))[: n_max + 1]
            rejected += alive[: tolerated + 1].sum()
            alive[: tolerated + 1], previous = 0.0, n
        return rejected

    assert rejection_chance(tolerance[-1]) <= alpha < rejection_chance(tolerance[-1] + 1)
    if stages == 4:
        floor = binom.ppf(alpha * params.final_share, n_max, q) - 1  # Binomial cdf ≤ 0.4 α up to here (or one more)
        assert tolerance[-1] > floor + (binom.cdf(floor + 1, n_max, q) <= alpha * params.final_share)


def test_a_radius_out_of_any_reach_is_never_certified():
    """σ = 0.25, r = 2.5: t = Φ(10), 1 - t = 7.6e-24. Even 100 agreeing draws of 100 leave P(all agree) ≈ 1 > α,
    so no look may tolerate anything, the final bound included."""
    tolerance = tolerances(2.5, 0.25, 0.05, 100, AdaptiveParams(stages=1), None)
    assert list(tolerance) == [-1] * len(tolerance)


@pytest.mark.parametrize("radii, selection", [(GRID, (100, 100)), (GRID, (93, 100)), ((1.0,), (100, 100))])
def test_the_certifier_certifies_exactly_where_a_look_is_within_its_tolerance(radii, selection):
    """The wiring between the tests' tolerances and ``GridTest.update``: on random draws, with every power-only
    stopping rule off, a radius is certified exactly when at some look of its path the failures so far are within
    that radius's tolerance there (the event whose chance ``final_tolerance`` bounds). The paths are drawn in full
    beforehand, at p_A spread around the grid's thresholds."""
    from rsbench_plugins.adaptive import GridTest

    sigma, alpha, n_max = 0.5, 0.05, 2000
    params = AdaptiveParams(futility=0.0, give_up=0.0, give_up_one_radius=0.0, give_up_unanimous=0.0)
    looks = look_sizes(n_max, [size for size, _ in stage_levels(alpha, n_max, params)], params.first_look, params.step)
    rng = np.random.default_rng(1)
    for p in norm.cdf(rng.uniform(0.0, 3.5, 150) / 1.0):
        test = GridTest(radii, sigma, alpha, n_max, params, selection)
        failures = np.cumsum(rng.binomial(np.diff(looks, prepend=0), 1 - p))
        expected = -1
        for j, radius in enumerate(test.radii):
            if np.any(failures <= tolerances(radius, sigma, alpha, n_max, params, selection)):
                expected = j
        previous = 0
        while not test.done:
            size = test.next_round()
            test.update(size - int(failures[test.look + 1] - previous), size)
            previous = int(failures[test.look])
        assert test.certified == expected


def test_update_refuses_a_round_that_is_not_the_next_look_and_keeps_its_state():
    from rsbench_plugins.adaptive import GridTest

    test = GridTest((0.0, 0.5), 0.5, 0.001, 1000, AdaptiveParams(), (100, 100))
    for successes, draws in [(40, 40), (51, 50), (-1, 50)]:
        with pytest.raises(ValueError):
            test.update(successes, draws)
        assert (test.k, test.n, test.look, test.next_round()) == (0, 0, -1, 50)


def test_betting_tolerance_is_where_the_wealth_crosses_the_barrier():
    """At every look the tolerated failures f reach the barrier 1/α_b and f + 1 do not (log_wealth, scalar)."""
    sigma, alpha, n_max, params = 1.0, 0.001, 100_000, AdaptiveParams(stages=1)  # one stage: N alone
    looks = look_sizes(n_max, [n_max], params.first_look, params.step)
    barrier = math.log(1 / (alpha * params.betting_share))
    tolerance = tolerances(0.5, sigma, alpha, n_max, params, None)
    t = norm.cdf(0.5 / sigma)
    for n, f in list(zip(looks, tolerance, strict=True))[:-1:7]:
        assert f == -1 or log_wealth(n - f, n, 1 - t) >= barrier
        assert log_wealth(n - f - 1, n, 1 - t) < barrier
    assert tolerance[5] >= 0 and tolerance[-2] > 0.65 * looks[-2] * (1 - t)


@pytest.mark.parametrize("failures, stops", [(8, False), (9, True)])
def test_futility_stops_where_even_an_optimistic_p_a_rarely_certifies(failures, stops):
    """σ = 0.5, r = 1.75, N = 100,000: the final bound tolerates 9 failures. After 50,000 draws with f failures,
    p_A at its 95% upper bound leaves the other 50,000 draws a chance of P(Binomial(50,000, 1 - p_up) ≤ 9 - f) to
    certify: 0.09 with 8 failures (it keeps sampling; the mean of those draws' failures, 4, would count it out)
    and 0.009 with 9 (it stops: below β = 0.05)."""
    from rsbench_plugins.adaptive import GridTest

    test = GridTest((1.75,), 0.5, 0.001, 100_000, AdaptiveParams(), (100, 100))
    at = int(np.searchsorted(test.looks, 50_000))
    test.look, test.n = at - 1, int(test.looks[at - 1])
    test.k = test.n - failures
    test.update(50_000 - test.n, 50_000 - test.n)  # the draws up to 50,000 all agree
    p_up = beta.ppf(0.95, test.k + 1, 50_000 - test.k)
    chance = binom.cdf(9 - failures, 50_000, 1 - p_up)
    assert chance == pytest.approx(0.09 if failures == 8 else 0.009, abs=0.005)
    assert (test.certified, test.done) == (-1, stops)


def test_adaptive_table_labels_each_run_with_its_code_and_its_settings():
    """The same parameters may mean another rule in another commit: a row names both."""
    import dataclasses

    import pandas as pd

    table = load_benchmark("adaptive_table")
    settings = dataclasses.asdict(AdaptiveParams(futility=0.01))
    older = {key: value for key, value in settings.items() if key != "first_look"}
    run = pd.Series({"certifier_params": older, "provenance": {"git_commit": "a308043" + "0" * 33}})
    assert table.adaptive_label(run) == "adaptive @a308043 (futility=0.01, without first_look)"
    unknown = pd.Series({"certifier_params": dataclasses.asdict(AdaptiveParams()), "provenance": None})
    assert table.adaptive_label(unknown) == "adaptive"
    hostile = pd.Series(
        {"certifier_params": dataclasses.asdict(AdaptiveParams()), "provenance": {"git_commit": "|a|b\x1b[2J"}}
    )
    assert table.adaptive_label(hostile) == "adaptive"  # a record's text never reaches the table as markup
