"""The adaptive certifier against Cohen's CERTIFY, per σ, from the runs a store holds.

    python benchmarks/adaptive_table.py --db /work/stores/issue10.db --out leaderboards/certifiers-adaptive-quick.md

For each checkpoint with both a ``cohen`` run at ``--n`` draws and an ``adaptive`` run (same checkpoint,
noise seed and α), it compares them on the test indices both have certified: mean draws per image, and
certified accuracy (correct and radius ≥ r) at each grid radius r. Cohen's radii are exact; the adaptive
certifier's are grid radii (lower bounds on CERTIFY's), so only certified accuracy at grid radii is
compared, never an ACR.

Reference rows, all taking Cohen's estimate p̂_A = n_A/N as the truth:

- ``power-½ reference``: for each image, the fewest draws n at which one Clopper-Pearson bound at α from the
  expected count n·p̂_A certifies the largest grid radius Cohen's radius reaches. A bound at the expected count
  is above its threshold about half the time, so this is a reference with power about ½, not a bound.
- ``Wald, power 1``: log(1/α) / KL(p̂_A ‖ t) draws per image at the threshold t of that radius. By Wald's
  inequality E_p[τ] · KL(p ‖ t) ≥ kl(π, α) for any level-α test of p ≤ t, sequential or not, with power π at p;
  this row asks π ≈ 1, more than Cohen's own rerun delivers on images near a threshold (too strict a yardstick).
- ``matched-power ceiling``: the same inequality with Cohen's own power. For image i and grid threshold t_j,
  π_ij = P(Cohen's bound at N ≥ t_j) under Binomial(N, p̂_i); no level-α certifier that certifies every t_j with
  Cohen's power spends fewer than max_j kl(π_ij, α) / KL(p̂_i ‖ t_j) draws on average (the yardstick). ``1 point
  spent``: the same after giving up, per grid radius, at most 1% of the images' expected certificates (counted
  on every image with a prediction: a certifier cannot tell the correct ones), greedily where it saves the most
  draws per certificate given up.
- ``cohen at N = …``: Cohen's CERTIFY at the smallest fixed N whose expected certified accuracy (correct images,
  Binomial(N, p̂_i) counts) stays within 1 point of its expected accuracy at the run's N at every grid radius:
  the second baseline, "N was more than needed".

Writing ``--out`` over an existing file keeps whatever follows its ``## Reading the table`` heading: the
analysis written by hand survives a regeneration of the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta, binom, norm

from rsbench.store import Store, store_url
from rsbench_plugins.adaptive import AdaptiveParams

RADII = tuple(round(0.25 * i, 2) for i in range(11))
ANALYSIS = "## Reading the table"
HEADER = """# Adaptive certification against Cohen's CERTIFY (MNIST, LeNet, quick Gaussian models)

Both certifiers: N0 = 100, α = 0.001, noise seed 0, the same test images (every 50th; `images` counts those
both have certified); Cohen spends N = {n:,} estimation draws per image, the adaptive certifier at most
{most:,} (`--certifier adaptive --radii 0:2.5:0.25 --n {most}`). `model` is the checkpoint's sha256 prefix. Cells:
certified accuracy (%) at each ℓ2 radius; draws/image includes the N0 selection draws. Cohen's radii are
exact, the adaptive certifier's are grid radii (lower bounds), so only certified accuracy at grid radii is
compared. Reference rows take Cohen's estimate as p_A and know where to stop: `power-½ reference`, the fewest
draws one Clopper-Pearson bound at α from the expected count needs for each image's grid radius (power about ½:
a reference, not a bound); `Wald, power 1`, log(1/α) / KL(p_A ‖ t), below which no level-α test certifies it
with power ≈ 1 on average (Wald's inequality; `1 point spent`: 1% of the images per radius one grid step lower);
**`matched-power ceiling`**, the yardstick: Wald's inequality at Cohen's own power, max_j kl(π_ij, α) /
KL(p_A ‖ t_j) with π_ij = P(Cohen's bound at N ≥ t_j), and `1 point spent`, the same after giving up at most
1% of the expected certificates per radius; `cohen at N = …`, Cohen's CERTIFY at the smallest fixed N whose
expected certified accuracy stays within 1 point of its own at N (the second baseline). The ratio row gives
the adaptive certifier's saving against both baselines, and its largest gap in certified accuracy from Cohen's
run and from the mean of Cohen reruns (the expected certified accuracy of CERTIFY at N under Binomial(N, p̂_A)
counts: Σ_i π_ij over the images, with π_ij as above; one run on 200 images moves by 0.5 points per image).
Regenerate with `python benchmarks/adaptive_table.py --db STORE --out leaderboards/certifiers-adaptive-quick.md`.

"""


def pairs(store: Store, n: int, most: int) -> list[tuple[pd.Series, pd.Series]]:
    """(cohen run at ``n`` draws, adaptive run of at most ``most``): every adaptive grid run (each setting of
    it a row of its own), with the latest Cohen run of the same checkpoint, noise seed and α."""
    runs = store.runs(kind="certify")
    cohen = runs[(runs.certifier == "cohen") & (runs.n == n)]
    adaptive = runs[(runs.certifier == "adaptive") & (runs.n == most) & (runs.radii.map(len) > 1)]
    found = []
    for _, a in adaptive.iterrows():
        same = cohen[
            (cohen.checkpoint_sha256 == a.checkpoint_sha256)
            & (cohen.noise_seed == a.noise_seed)
            & (cohen.alpha == a.alpha)
        ]
        if len(same):
            found.append((same.iloc[-1], a))
    return sorted(found, key=lambda pair: (pair[1].sigma, pair[1].id))


def adaptive_label(run: pd.Series) -> str:
    """``adaptive @COMMIT``, the code that ran it (the same parameters may mean another rule in other code),
    followed by the parameters the run set away from today's defaults, e.g. ``adaptive @a308043 (futility=0.01)``,
    and those it predates (``without prior``: recorded before the parameter existed, so it ran without that
    feature): rows of differently tuned runs are never mistaken for one another."""
    defaults = dataclasses.asdict(AdaptiveParams())
    changed = [f"{key}={value}" for key, value in run.certifier_params.items() if defaults.get(key) != value]
    changed += [f"without {key}" for key in defaults if key not in run.certifier_params]
    provenance = run.provenance if isinstance(run.provenance, dict) else {}
    commit = str(provenance.get("git_commit") or "")
    commit = commit[:7] if re.fullmatch(r"[0-9a-f]{7,40}", commit) else ""  # an imported record's text: hex only
    name = f"adaptive @{commit}" if commit else "adaptive"
    return f"{name} ({', '.join(changed)})" if changed else name


def summarize(rows: pd.DataFrame) -> dict[str, float]:
    correct = rows["correct"].to_numpy() == 1
    radius = rows["radius"].to_numpy(dtype=float)
    summary = {"draws/image": float(rows["draws"].mean())}
    summary.update({f"{r:.2f}": 100 * float(np.mean(correct & (radius >= r))) for r in RADII})
    return summary


def fewest_draws(p_hat: float, threshold: float, alpha: float, most: int) -> int:
    """The fewest n ≤ ``most`` at which the one-sided Clopper-Pearson lower bound at level α from the expected
    count n·p̂ reaches ``threshold`` (bisection: the bound grows with n at fixed p̂; ``most`` itself certifies)."""
    low, high = 1, most
    while low < high:
        middle = (low + high) // 2
        certified = float(beta.ppf(alpha, p_hat * middle, middle - p_hat * middle + 1)) >= threshold
        low, high = (low, middle) if certified else (middle + 1, high)
    return low


def grid_threshold(level: int, sigma: float) -> float:
    """t = Φ(r/σ) of grid radius ``RADII[level]`` (½ for r = 0): what certifying it means of p_A."""
    return float(norm.cdf(RADII[level] / sigma)) if level > 0 else 0.5


def kl_bernoulli(p: float, t: float) -> float:
    """KL(Bernoulli(p) ‖ Bernoulli(t)) in nats, for 0 < t < 1 and 0 ≤ p ≤ 1."""
    divergence = p * math.log(p / t) if p > 0 else 0.0
    return divergence + ((1 - p) * math.log((1 - p) / (1 - t)) if p < 1 else 0.0)


def wald_bound(p_hat: float, threshold: float, alpha: float, most: int) -> float:
    """min(``most``, log(1/α) / KL(p̂ ‖ t)): by Wald's inequality, the fewest draws on average with which a
    level-α test can certify p_A > t with power ≈ 1 when p_A = p̂ > t is known."""
    return min(float(most), math.log(1 / alpha) / kl_bernoulli(p_hat, threshold))


def cohen_power(p_hat: float | np.ndarray, threshold: float, alpha: float, n: int) -> float | np.ndarray:
    """P(Cohen's one-sided Clopper-Pearson bound at level α from Binomial(n, p̂) ≥ ``threshold``). The bound from
    k of n reaches t exactly when P(Binomial(n, t) ≥ k) ≤ α, i.e. from k* = (the (1-α) upper quantile of
    Binomial(n, t)) + 1 on; so the power is P(Binomial(n, p̂) ≥ k*)."""
    k_star = binom.isf(alpha, n, threshold) + 1
    return binom.sf(k_star - 1, n, p_hat)


def matched_power_costs(p_hat: float, sigma: float, alpha: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(c_j, π_j) per grid radius j (r = 0 first): π_j = ``cohen_power`` at t_j and c_j = kl(π_j, α) / KL(p̂ ‖ t_j)
    estimation draws, Wald's bound on the mean draws of any level-α test that certifies t_j with Cohen's power
    π_j when p_A = p̂ (0 where π_j ≤ α or p̂ ≤ t_j: no test is asked to beat α there), capped at n."""
    costs, powers = np.zeros(len(RADII)), np.zeros(len(RADII))
    for j in range(len(RADII)):
        threshold = grid_threshold(j, sigma)
        powers[j] = cohen_power(p_hat, threshold, alpha, n)
        if powers[j] > alpha and p_hat > threshold:
            costs[j] = min(float(n), kl_bernoulli(float(powers[j]), alpha) / kl_bernoulli(p_hat, threshold))
    return costs, powers


def matched_power_ceiling(rows: pd.DataFrame, sigma: float, slack_points: float = 0.0) -> float:
    """Mean draws per image (N0 included) of the matched-power ceiling: N0 + max_j c_ij for each image Cohen did
    not abstain on (``matched_power_costs``), N0 alone where it did. With ``slack_points``, images give up grid
    radii (a radius and every one above it: the tests are nested) while the expected certificates given up at each
    radius, Σ π_ij over the images giving it up, stay within that percentage of the images; greedily, the step
    that saves the most draws per expected certificate given up first."""
    costs, powers = [], []
    for row in rows.itertuples():
        if row.predict >= 0:
            cost, power = matched_power_costs(row.n_a / row.n, sigma, float(row.alpha), int(row.n))
            costs.append(cost)
            powers.append(power)
    if not costs:
        return float(rows["n0"].mean())
    cost_matrix, power_matrix = np.array(costs), np.array(powers)
    kept = np.full(len(costs), len(RADII))  # image i keeps the radii below kept[i]
    budget = np.full(len(RADII), slack_points / 100 * len(rows))
    while slack_points > 0:
        best, best_rate = None, 0.0
        for i, top in enumerate(kept):
            if top == 0 or cost_matrix[i, :top].max() == 0:
                continue
            drop_from = int(np.argmax(cost_matrix[i, :top]))  # the radius that sets this image's cost
            lost = power_matrix[i, drop_from:top]
            if np.any(lost > budget[drop_from:top] + 1e-12):
                continue
            lower = cost_matrix[i, :drop_from].max() if drop_from > 0 else 0.0
            rate = (cost_matrix[i, :top].max() - lower) / max(float(lost.sum()), 1e-12)
            if rate > best_rate:
                best, best_rate = (i, drop_from), rate
        if best is None:
            break
        i, drop_from = best
        budget[drop_from : kept[i]] -= power_matrix[i, drop_from : kept[i]]
        kept[i] = drop_from
    spent = sum(cost_matrix[i, :top].max() if top > 0 else 0.0 for i, top in enumerate(kept))
    return float(rows["n0"].sum() + spent) / len(rows)


def one_threshold_ceiling(rows: pd.DataFrame, sigma: float, radius: float) -> float:
    """Mean draws per image (N0 included) below which no level-α certifier decides "certified at ``radius``?"
    with Cohen's power there: N0 + kl(π_i, α) / KL(p̂_i ‖ t) per image, t = Φ(radius/σ) and π_i = ``cohen_power``
    at t (N0 alone where π_i ≤ α or p̂_i ≤ t, or Cohen abstained)."""
    threshold = float(norm.cdf(radius / sigma))
    total = 0.0
    for row in rows.itertuples():
        total += row.n0
        p_hat, alpha = row.n_a / row.n, float(row.alpha)
        power = float(cohen_power(p_hat, threshold, alpha, int(row.n)))
        if row.predict >= 0 and power > alpha and p_hat > threshold:
            total += min(float(row.n), kl_bernoulli(power, alpha) / kl_bernoulli(p_hat, threshold))
    return total / len(rows)


def expected_accuracy(rows: pd.DataFrame, sigma: float, n: int) -> np.ndarray:
    """Expected certified accuracy (%) of Cohen's CERTIFY at n estimation draws at each grid radius, with
    Binomial(n, p̂_A) counts and p̂_A = n_A/N of ``rows`` (correct images only count)."""
    p_hat = (rows["n_a"] / rows["n"]).to_numpy()
    counted = ((rows["correct"] == 1) & (rows["predict"] >= 0)).to_numpy()
    alpha = float(rows["alpha"].iloc[0])
    return np.array(
        [100 * np.mean(counted * cohen_power(p_hat, grid_threshold(j, sigma), alpha, n)) for j in range(len(RADII))]
    )


def gap_from_reruns(cohen_rows: pd.DataFrame, accuracy: Sequence[float], sigma: float) -> float:
    """Largest gap (points) over the grid between a run's certified accuracy (%, at each radius of ``RADII``) and
    the mean of Cohen reruns at the N of ``cohen_rows`` (``expected_accuracy``): the goal's "within 1 point",
    judged against what Cohen's CERTIFY gives on average rather than against its one recorded run."""
    reruns = expected_accuracy(cohen_rows, sigma, int(cohen_rows["n"].iloc[0]))
    return float(np.abs(reruns - np.asarray(accuracy, dtype=float)).max())


def smallest_sufficient_n(rows: pd.DataFrame, sigma: float, points: float = 1.0, resolution: int = 100) -> int:
    """The smallest fixed N, on a grid of ``resolution`` draws, from which on every N of the grid up to the run's
    own keeps ``expected_accuracy`` within ``points`` of the expected accuracy at the run's N at every grid radius:
    Cohen's CERTIFY with no more draws than the 1-point allowance needs. (Expected accuracy grows with N only
    roughly, through the bound's integer steps, so a smaller N may pass alone; it is not counted.)"""
    most = int(rows["n"].iloc[0])
    reference = expected_accuracy(rows, sigma, most)
    smallest = most
    for n in range(most - resolution, 0, -resolution):
        if (reference - expected_accuracy(rows, sigma, n)).max() > points + 1e-9:
            break
        smallest = n
    return smallest


def reference_draws(rows: pd.DataFrame, sigma: float, estimation_draws, slack_points: float = 0.0) -> float:
    """Mean over Cohen's images of N0 + ``estimation_draws(p̂_A, t, α, N)``, p̂_A = n_A/N and t the threshold
    of the largest grid radius ≤ Cohen's radius (so p̂_A > t); where Cohen abstained, N0 alone. With
    ``slack_points``, up to that percentage of the images per grid radius are instead certified one grid step
    lower, those where this saves the most draws: certified accuracy drops by at most that many points."""
    allowed = int(slack_points / 100 * len(rows) + 1e-9)
    total, savings = 0.0, defaultdict(list)
    for row in rows.itertuples():
        total += row.n0
        if row.predict < 0:
            continue
        level = max(j for j, r in enumerate(RADII) if r <= row.radius + 1e-9)
        cost = (
            [
                estimation_draws(row.n_a / row.n, grid_threshold(j, sigma), row.alpha, int(row.n))
                for j in (level - 1, level)
            ]
            if level > 0
            else [0.0, estimation_draws(row.n_a / row.n, 0.5, row.alpha, int(row.n))]
        )
        total += cost[1]
        savings[level].append(max(0.0, cost[1] - cost[0]))
    total -= sum(sum(sorted(saved, reverse=True)[:allowed]) for saved in savings.values())
    return total / len(rows)


def table(store: Store, n: int, most: int) -> str:
    lines = []
    header = "| σ | model | images | certifier | draws/image | " + " | ".join(f"{r:.2f}" for r in RADII) + " |"
    lines += [header, "|" + "---|" * (5 + len(RADII))]
    for cohen, adaptive in pairs(store, n, most):
        model = f"{cohen.sigma:g} | `{str(cohen.checkpoint_sha256)[:8]}`"  # σ and the checkpoint's sha256 prefix
        every = store.results([int(cohen.id), int(adaptive.id)])
        common = set(every[every.run_id == cohen.id].idx) & set(every[every.run_id == adaptive.id].idx)
        rows = every[every.idx.isin(common)]
        theirs, ours = (summarize(rows[rows.run_id == run.id]) for run in (cohen, adaptive))
        for name, summary in (("cohen", theirs), (adaptive_label(adaptive), ours)):
            cells = " | ".join(f"{summary[f'{r:.2f}']:.1f}" for r in RADII)
            lines.append(f"| {model} | {len(common)} | {name} | {summary['draws/image']:,.0f} | {cells} |")
        alone = every[every.run_id == adaptive.id]
        if len(alone) > len(common):
            summary = summarize(alone)
            cells = " | ".join(f"{summary[f'{r:.2f}']:.1f}" for r in RADII)
            name = f"{adaptive_label(adaptive)}, all"
            lines.append(f"| {model} | {len(alone)} | {name} | {summary['draws/image']:,.0f} | {cells} |")
        cohen_rows = rows[rows.run_id == cohen.id]
        sigma = float(cohen.sigma)
        smallest = smallest_sufficient_n(cohen_rows, sigma)
        small_draws = float(cohen_rows["n0"].mean()) + smallest
        ceiling = matched_power_ceiling(cohen_rows, sigma)
        for name, reference, accuracies in (
            ("power-½ reference", reference_draws(cohen_rows, sigma, fewest_draws), "Cohen's grid accuracies"),
            ("Wald, power 1", reference_draws(cohen_rows, sigma, wald_bound), "Cohen's grid accuracies"),
            ("Wald, power 1, 1 point spent", reference_draws(cohen_rows, sigma, wald_bound, 1.0), "≤ 1 point less"),
            ("**matched-power ceiling**", ceiling, "Cohen's power at every radius"),
            ("matched-power ceiling, 1 point spent", matched_power_ceiling(cohen_rows, sigma, 1.0), "≤ 1 point less"),
            (f"cohen at N = {smallest:,}", small_draws, "expected ≤ 1 point less"),
        ):
            saved = theirs["draws/image"] / reference
            lines.append(
                f"| {model} | {len(common)} | {name} | {reference:,.0f} | {accuracies}, {saved:.1f}× fewer draws "
                "than Cohen |" + " |" * (len(RADII) - 1)
            )
        saving = theirs["draws/image"] / ours["draws/image"]
        worst = max(abs(theirs[f"{r:.2f}"] - ours[f"{r:.2f}"]) for r in RADII)
        from_reruns = gap_from_reruns(cohen_rows, [ours[f"{r:.2f}"] for r in RADII], sigma)
        lines.append(
            f"| {model} | | **ratio / gap** | **{saving:.1f}× fewer** | {small_draws / ours['draws/image']:.1f}× fewer "
            f"than Cohen at N = {smallest:,}; {ours['draws/image'] / ceiling:.2f}× the ceiling's draws; largest gap in "
            f"certified accuracy: **{worst:.1f} points** from Cohen's run, **{from_reruns:.1f}** from the mean of "
            "Cohen reruns |" + " |" * (len(RADII) - 1)
        )
    return "\n".join(lines)


def one_radius_table(store: Store, n: int) -> str:
    """One row per ``adaptive`` run with a one-point grid ``--radii r`` and a ``cohen`` run at ``n`` draws of the
    same checkpoint, noise seed and α: mean draws per image on the images both certified, the saving against
    N0 + N, the one-threshold ceiling's (``one_threshold_ceiling`` on Cohen's p̂_A), and certified accuracy at r
    of both (images, and %)."""
    runs = store.runs(kind="certify")
    cohen = runs[(runs.certifier == "cohen") & (runs.n == n)]
    lines = [
        "| σ | model | r | certifier | images | draws/image | fewer than Cohen | one-threshold ceiling | "
        "certified at r: adaptive / Cohen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, run in runs[(runs.certifier == "adaptive") & (runs.radii.map(len) == 1)].sort_values("sigma").iterrows():
        same = cohen[
            (cohen.checkpoint_sha256 == run.checkpoint_sha256)
            & (cohen.noise_seed == run.noise_seed)
            & (cohen.alpha == run.alpha)
        ]
        if not len(same):
            continue
        radius, theirs_run = float(run.radii[0]), same.iloc[-1]
        every = store.results([int(theirs_run.id), int(run.id)])
        common = set(every[every.run_id == theirs_run.id].idx) & set(every[every.run_id == run.id].idx)
        rows = every[every.idx.isin(common)]
        ours, theirs = rows[rows.run_id == run.id], rows[rows.run_id == theirs_run.id]
        cohen_draws = float(theirs["draws"].mean())
        ceiling = one_threshold_ceiling(theirs, float(run.sigma), radius)
        certified = [int(((r.correct == 1) & (r.radius >= radius - 1e-9)).sum()) for r in (ours, theirs)]
        lines.append(
            f"| {run.sigma:g} | `{str(run.checkpoint_sha256)[:8]}` | {radius:g} | {adaptive_label(run)} | "
            f"{len(common)} | "
            f"{ours['draws'].mean():,.0f} | {cohen_draws / ours['draws'].mean():.1f}× | {cohen_draws / ceiling:.1f}× | "
            f"{certified[0]} / {certified[1]} ({100 * certified[0] / len(common):.1f}% / "
            f"{100 * certified[1] / len(common):.1f}%) |"
        )
    if len(lines) == 2:
        return "No one-point-grid run in this store has a Cohen run of the same checkpoint to compare with."
    return "\n".join(lines)


def keep_analysis(table_text: str, previous: str) -> str:
    """``table_text`` followed by whatever ``previous`` holds from its ``## Reading the table`` heading on."""
    return table_text + ("\n" + previous[previous.index(ANALYSIS) :] if ANALYSIS in previous else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="results store (default $RSBENCH_DB or ./rsbench.db)")
    parser.add_argument("--n", type=int, default=100_000, help="N of both certifiers (adaptive: the most per image)")
    parser.add_argument("--most", type=int, help="the adaptive runs' N, the most per image (default: --n)")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    most = args.most or args.n
    store = Store(store_url(args.db))
    text = HEADER.format(n=args.n, most=most) + table(store, args.n, most) + "\n"
    text += "\n### One radius at a time (`--radii r`)\n\n" + one_radius_table(store, args.n) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(keep_analysis(text, args.out.read_text() if args.out.exists() else ""))


if __name__ == "__main__":
    main()
