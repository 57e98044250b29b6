"""The adaptive certifier against Cohen's CERTIFY, per σ, from the runs a store holds.

    python benchmarks/adaptive_table.py --db /work/stores/issue10.db --out leaderboards/certifiers-adaptive-quick.md

For each checkpoint with both a ``cohen`` run at ``--n`` draws and an ``adaptive`` run (same checkpoint,
noise seed and α), it compares them on the test indices both have certified: mean draws per image, and
certified accuracy (correct and radius ≥ r) at each grid radius r. Cohen's radii are exact; the adaptive
certifier's are grid radii (lower bounds on CERTIFY's), so only certified accuracy at grid radii is
compared, never an ACR.

The ``oracle`` row is a reference point, not a certifier: for each image it takes Cohen's estimate p̂_A =
n_A/N as the truth and counts the fewest draws n at which a single one-sided Clopper-Pearson bound at the
whole α, from the expected n·p̂_A agreeing draws, certifies the largest grid radius Cohen's radius reaches.
It knows p_A and where to stop, so a real certifier, which must learn both from its draws, pays more.
The ``wald`` row is the sequential counterpart: log(1/α) / KL(p̂_A ‖ t) draws per image. By Wald's inequality
E_p[τ] · KL(p ‖ t) ≥ kl(1-β, α), no level-α test, sequential or not, that certifies t with probability 1-β ≈ 1
when p_A = p is known can stop after fewer draws on average; the sequential probability ratio test of t
against p nearly attains it (Wald & Wolfowitz 1948). A certifier that must learn p_A and stop on its own needs
more.

Writing ``--out`` over an existing file keeps whatever follows its ``## Reading the table`` heading: the
analysis written by hand survives a regeneration of the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta, norm

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
compared. Three reference rows take Cohen's estimate as p_A and know where to stop: `oracle`, the fewest draws
one Clopper-Pearson bound at α needs to certify each image's grid radius; `wald`, log(1/α) / KL(p_A ‖ t),
below which no level-α test, however sequential, certifies it with power ≈ 1 on average (Wald's inequality);
`wald, 1 point spent`, the same with 1% of the images per radius certified one grid step lower where that
saves the most: a bound on the saving of any certifier within 1 point of Cohen.
Regenerate with `python benchmarks/adaptive_table.py --db STORE --out leaderboards/certifiers-adaptive-quick.md`.

"""


def pairs(store: Store, n: int, most: int) -> list[tuple[pd.Series, pd.Series]]:
    """(cohen run at ``n`` draws, adaptive run of at most ``most``) per checkpoint, the latest of each with the
    same noise seed and α."""
    runs = store.runs(kind="certify")
    cohen = runs[(runs.certifier == "cohen") & (runs.n == n)]
    adaptive = runs[(runs.certifier == "adaptive") & (runs.n == most)]
    found = []
    for _, a in adaptive.groupby("checkpoint_sha256").tail(1).iterrows():
        same = cohen[
            (cohen.checkpoint_sha256 == a.checkpoint_sha256)
            & (cohen.noise_seed == a.noise_seed)
            & (cohen.alpha == a.alpha)
        ]
        if len(same):
            found.append((same.iloc[-1], a))
    return sorted(found, key=lambda pair: (pair[1].sigma, pair[1].id))


def adaptive_label(run: pd.Series) -> str:
    """``adaptive``, followed by the parameters the run set away from their defaults, e.g. ``adaptive
    (futility=0.01)``: rows of differently tuned runs are never mistaken for one another."""
    defaults = dataclasses.asdict(AdaptiveParams())
    changed = [f"{key}={value}" for key, value in run.certifier_params.items() if defaults.get(key) != value]
    return f"adaptive ({', '.join(changed)})" if changed else "adaptive"


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
        for name, reference, accuracies in (
            ("oracle", reference_draws(cohen_rows, sigma, fewest_draws), "Cohen's grid accuracies"),
            ("wald", reference_draws(cohen_rows, sigma, wald_bound), "Cohen's grid accuracies"),
            ("wald, 1 point spent", reference_draws(cohen_rows, sigma, wald_bound, 1.0), "Cohen's less ≤ 1 point"),
        ):
            saved = theirs["draws/image"] / reference
            lines.append(
                f"| {model} | {len(common)} | {name} | {reference:,.0f} | {accuracies}, {saved:.1f}× fewer draws "
                "than Cohen |" + " |" * (len(RADII) - 1)
            )
        saving = theirs["draws/image"] / ours["draws/image"]
        worst = max(abs(theirs[f"{r:.2f}"] - ours[f"{r:.2f}"]) for r in RADII)
        lines.append(
            f"| {model} | | **ratio / gap** | **{saving:.1f}× fewer** | largest gap in certified "
            f"accuracy: **{worst:.1f} points** |" + " |" * (len(RADII) - 1)
        )
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
    text = HEADER.format(n=args.n, most=most) + table(Store(store_url(args.db)), args.n, most) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(keep_analysis(text, args.out.read_text() if args.out.exists() else ""))


if __name__ == "__main__":
    main()
