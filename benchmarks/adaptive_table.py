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
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta, norm

from rsbench.store import Store, store_url

RADII = tuple(round(0.25 * i, 2) for i in range(11))
HEADER = """# Adaptive certification against Cohen's CERTIFY (MNIST, LeNet, quick Gaussian models)

Both certifiers: N0 = 100, α = 0.001, noise seed 0, the same test images (every 50th; `images` counts those
both have certified); Cohen spends N = {n:,} estimation draws per image, the adaptive certifier at most that
many (`--certifier adaptive --radii 0:2.5:0.25 --n {n}`). Cells: certified accuracy (%) at each ℓ2 radius;
draws/image includes the N0 selection draws. Cohen's radii are exact, the adaptive certifier's are grid radii
(lower bounds), so only certified accuracy at grid radii is compared. The `oracle` row knows p_A (Cohen's
estimate) and where to stop: the fewest draws one Clopper-Pearson bound at α needs to certify each image's
grid radius, a reference for what any certifier can hope for. Regenerate with
`python benchmarks/adaptive_table.py --db STORE --out leaderboards/certifiers-adaptive-quick.md`.

"""


def pairs(store: Store, n: int) -> list[tuple[pd.Series, pd.Series]]:
    """(cohen run, adaptive run) per checkpoint, the latest of each at ``n`` draws with the same seed and α."""
    runs = store.runs(kind="certify")
    cohen = runs[(runs.certifier == "cohen") & (runs.n == n)]
    adaptive = runs[(runs.certifier == "adaptive") & (runs.n == n)]
    found = []
    for _, a in adaptive.groupby("checkpoint_sha256").tail(1).iterrows():
        same = cohen[
            (cohen.checkpoint_sha256 == a.checkpoint_sha256)
            & (cohen.noise_seed == a.noise_seed)
            & (cohen.alpha == a.alpha)
        ]
        if len(same):
            found.append((same.iloc[-1], a))
    return sorted(found, key=lambda pair: pair[1].sigma)


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


def oracle_draws(rows: pd.DataFrame, sigma: float) -> float:
    """Mean over images of N0 + the fewest draws a one-sided Clopper-Pearson bound at α, fed the expected
    count n·p̂_A (p̂_A = n_A/N from Cohen's run), needs to certify the largest grid radius ≤ Cohen's radius."""
    draws = []
    for row in rows.itertuples():
        if row.predict < 0:  # Cohen abstained: the N0 selection draws decide nothing more
            draws.append(row.n0)
            continue
        grid_radius = max(r for r in RADII if r <= row.radius + 1e-9)
        threshold = float(norm.cdf(grid_radius / sigma)) if grid_radius > 0 else 0.5
        draws.append(row.n0 + fewest_draws(row.n_a / row.n, threshold, row.alpha, int(row.n)))
    return float(np.mean(draws))


def table(store: Store, n: int) -> str:
    lines = []
    header = "| σ | images | certifier | draws/image | " + " | ".join(f"{r:.2f}" for r in RADII) + " |"
    lines += [header, "|" + "---|" * (4 + len(RADII))]
    for cohen, adaptive in pairs(store, n):
        every = store.results([int(cohen.id), int(adaptive.id)])
        common = set(every[every.run_id == cohen.id].idx) & set(every[every.run_id == adaptive.id].idx)
        rows = every[every.idx.isin(common)]
        summaries = {
            name: summarize(rows[rows.run_id == run.id]) for name, run in (("cohen", cohen), ("adaptive", adaptive))
        }
        for name, summary in summaries.items():
            cells = " | ".join(f"{summary[f'{r:.2f}']:.1f}" for r in RADII)
            lines.append(f"| {cohen.sigma:g} | {len(common)} | {name} | {summary['draws/image']:,.0f} | {cells} |")
        alone = every[every.run_id == adaptive.id]
        if len(alone) > len(common):
            summary = summarize(alone)
            cells = " | ".join(f"{summary[f'{r:.2f}']:.1f}" for r in RADII)
            lines.append(
                f"| {cohen.sigma:g} | {len(alone)} | adaptive (all) | {summary['draws/image']:,.0f} | {cells} |"
            )
        oracle = oracle_draws(rows[rows.run_id == cohen.id], float(cohen.sigma))
        lines.append(
            f"| {cohen.sigma:g} | {len(common)} | oracle | {oracle:,.0f} | Cohen's grid accuracies, "
            f"{summaries['cohen']['draws/image'] / oracle:.1f}× fewer draws than Cohen |" + " |" * (len(RADII) - 1)
        )
        saving = summaries["cohen"]["draws/image"] / summaries["adaptive"]["draws/image"]
        worst = max(abs(summaries["cohen"][f"{r:.2f}"] - summaries["adaptive"][f"{r:.2f}"]) for r in RADII)
        lines.append(
            f"| {cohen.sigma:g} | | **ratio / gap** | **{saving:.1f}× fewer** | largest gap in certified "
            f"accuracy: **{worst:.1f} points** |" + " |" * (len(RADII) - 1)
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="results store (default $RSBENCH_DB or ./rsbench.db)")
    parser.add_argument("--n", type=int, default=100_000, help="N of both certifiers (adaptive: the most per image)")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    text = HEADER.format(n=args.n) + table(Store(store_url(args.db)), args.n)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
