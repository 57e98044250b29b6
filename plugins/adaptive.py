"""Adaptive certification at a grid of radii: CERTIFY's (1-α) guarantee, with draws spent only where they
can change the answer.

The question a leaderboard asks of input x at radii r_1 < … < r_k (ℓ2, [0,1] pixel units) is which of
the nulls H_j: p_A ≤ t_j = Φ(r_j/σ) are false, with p_A = P(f(x+δ) = ĉ_A), δ ~ N(0, σ²I); r_0 = 0 with
t_0 = ½ ("g(x) = ĉ_A") is always among them. The nulls are nested (H_j true ⇒ H_{j+1} true), so
declaring the largest rejected index J is wrong only if the first true null is rejected: every test may
spend the whole α (fixed-sequence testing), no Bonferroni split over radii is needed. A one-point grid
``--radii r`` (r > 0) asks the question papers headline, "is x certified at r?": its one null is tested
alone, with no draws spent on r_0, and an input not certified at r abstains (no claim).

Design, chosen from the statistics:

1. Selection as Cohen et al. (ICML 2019): ĉ_A = the most frequent class among N0 draws (the same draws,
   hence the same ĉ_A, as ``cohen`` with the same noise seed and ``--batch``).
2. Anytime-valid tests by betting (Waudby-Smith & Ramdas, JRSSB 2023; Voráček, NeurIPS 2024), level
   α_b: the wealth W_j(n) = Σ_m w_m Π_i (1 + λ_m (X_i - t_j)), λ_m = c_m / t_j, a mixture of constant
   bets, is a nonnegative supermartingale under H_j, so by Ville's inequality P(sup_n W_j(n) ≥ 1/α_b) ≤
   α_b: the counts may be looked at after every round and sampling stopped at any time, with no α spent
   per look. Constant bets make W_j a function of the counts (k of n) alone. When all draws agree (most
   MNIST inputs) the all-in bet c = 1 rejects H_j after log(1/(w_1 α_b)) / log(1/t_j) draws, against
   log(1/α) / log(1/t_j) for any valid test: the floor no certifier can beat (σ = 0.5, r = 1.75: 29,691).
   The prior w_m may come from the N0 selection draws (``prior``, ``selection_weights``): bet c_m is the
   likelihood ratio against p_m = t_j + c_m (1 - t_j), so it gets the Jeffreys posterior mass of the p
   nearest p_m, and the all-in bet nothing once a selection draw disagreed. The selection draws are
   independent of the estimation draws, so given them the mixture is still a test supermartingale: the
   test keeps its level (as per-input priors do in anytime-valid work), and each input's test depends on
   its own draws only.
3. One-sided Clopper-Pearson bounds, as CERTIFY's, at the predetermined sizes N/2^(S-1), …, N/2, N
   (Horváth et al., ICLR 2022's stages), level α_s each. Near a threshold a fixed-n bound is tighter than
   an anytime-valid one (z²_α against ≈ 2 log(1/α) per unit of information), so inputs whose p_A lies
   just above a t_j are certified at the first stage that resolves it, and inputs near a grid radius
   lose almost nothing against Cohen at the same N (the final stage holds most of the α).
   α_b + Σ α_s = α (union bound): the certificate holds with probability ≥ 1-α however sampling stops.
4. Stopping, which never affects validity (only the rejections above make claims): an input stops when
   the next radius is out of reach even if every remaining draw agreed (deterministic), when it is
   futile: with p_A at its (1-β) upper Clopper-Pearson bound no later test would reach it, or (``give_up``
   γ for inputs whose selection draws disagreed at least once, ``give_up_one_radius`` for those of a one-point
   grid, ``give_up_unanimous`` for the others) when
   the predictive probability that a later stage certifies the next radius, under the Jeffreys posterior of
   the draws so far, is below γ. Cohen's
   own power at a threshold p_A sits just above is about ½, so an input the predictive rule gives up on
   is one Cohen's CERTIFY would mostly not certify either (the matched-power ceiling of
   ``benchmarks/adaptive_table.py`` is the yardstick).

Result: radius = the largest certified grid radius (``radius_kind="grid"``, a lower bound on CERTIFY's),
prediction ĉ_A with radius 0 when only p_A > ½ is certified, abstain (-1) when not even that is (Cohen's
rule); ``draws`` = N0 + estimation draws used, at most N0 + N (Cohen's cost is the worst case).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import beta, betabinom, binom, norm

from rsbench import hookimpl
from rsbench.errors import RsbenchError
from rsbench.params import hyperparameter
from rsbench.smoothing import ABSTAIN, SmoothedClassifier, SpeedParams, speed_options
from rsbench.specs import Certificate, CertificationRequest, Certifier

BET_FRACTIONS = np.array([1.0, 0.99, 0.97, 0.9, 0.7, 0.5, 0.3, 0.1, 0.03, 0.01])
"""c_m of the mixture: λ_m = c_m / t bets that fraction of the largest bet keeping wealth nonnegative."""
BET_WEIGHTS = np.array([0.75] + [0.25 / 9] * 9)
"""w_m: most of the prior on the all-in bet, the best when every draw agrees (the common case; inputs
with failures are served as well by the Clopper-Pearson stages)."""
with np.errstate(divide="ignore"):
    LOG_LOSS = np.log1p(-BET_FRACTIONS)
    """log(1 - λ_m t): a failure's factor (-∞ for the all-in bet)."""
FIRST_LOOK, GROWTH = 100, 8
"""Round sizes: 100 draws, then one eighth of the draws so far (looks about every 12%), up to ``step``."""


PRIOR_FLOOR = 0.2
"""Share of the non-all-in weight spread evenly over the bets whatever the selection draws say (robustness)."""


def log_wealth(k: float, n: float, one_minus_t: float, weights: np.ndarray = BET_WEIGHTS) -> float:
    """log W(k, n) of the bet mixture with prior ``weights`` against H: p ≤ t after k successes in n draws
    (t = 1 - one_minus_t)."""
    t = 1.0 - one_minus_t
    if one_minus_t <= 0:
        return -math.inf
    win = k * np.log1p(BET_FRACTIONS * one_minus_t / t)
    loss = (n - k) * LOG_LOSS if n > k else 0.0
    with np.errstate(divide="ignore"):
        return float(logsumexp(np.log(weights) + np.where(weights > 0, win + loss, 0.0)))


def selection_weights(one_minus_t: float, count: int, n0: int) -> np.ndarray:
    """Bet weights w_m for the test of p ≤ t chosen from the N0 selection draws (``count`` of ĉ_A among ``n0``).

    The bet c_m is the likelihood ratio against the alternative p_m = t + c_m (1 - t) (1 + λ(X - t) with
    λ = c_m / t), so each bet gets the Jeffreys posterior Beta(count + ½, n0 - count + ½) mass of the p nearest
    its p_m, mixed with an even ``PRIOR_FLOOR``. A disagreeing selection draw proves p_A < 1: the all-in bet,
    which dies at the first disagreement, then gets nothing; unanimous selection draws keep its weight (¾).
    The selection draws are independent of the estimation draws, so weights chosen from them keep the mixture a
    test supermartingale given them, and the test its level."""
    ascending = BET_FRACTIONS[::-1]
    edges = np.concatenate(([0.0], (ascending[:-1] + ascending[1:]) / 2, [1.0]))
    tails = (1 - edges) * one_minus_t  # 1 - p at the cell edges, decreasing; 1 - p ~ Beta(n0 - count + ½, count + ½)
    mass = -np.diff(beta.cdf(tails, n0 - count + 0.5, count + 0.5))[::-1][1:]  # bets after the all-in one
    others = len(mass)
    shares = mass / mass.sum() if mass.sum() > 0 else np.full(others, 1 / others)
    shares = (1 - PRIOR_FLOOR) * shares + PRIOR_FLOOR / others
    all_in = BET_WEIGHTS[0] if count == n0 else 0.0
    return np.concatenate(([all_in], (1 - all_in) * shares))


def cp_lower(k: float, n: float, level: float) -> float:
    """One-sided (1-level) Clopper-Pearson lower bound from k successes in n (k may be fractional)."""
    return 0.0 if k <= 0 else float(beta.ppf(level, k, n - k + 1))


def cp_upper(k: float, n: float, level: float) -> float:
    """One-sided (1-level) Clopper-Pearson upper bound from k successes in n."""
    return 1.0 if k >= n else float(beta.ppf(1 - level, k + 1, n - k))


@dataclass(frozen=True)
class AdaptiveParams(SpeedParams):
    step: int = hyperparameter(2000, "most estimation draws per input between two looks at the counts", min=1)
    stages: int = hyperparameter(
        4, "Clopper-Pearson bounds at N/2^(S-1), …, N/2, N draws (Horváth et al. 2022's stages)", min=1, max=12
    )
    betting_share: float = hyperparameter(0.4, "share of α for the anytime-valid betting tests", min=0.01, max=0.98)
    final_share: float = hyperparameter(
        0.4, "share of α for the Clopper-Pearson bound at N (the earlier stages share the rest)", min=0.01, max=0.98
    )
    futility: float = hyperparameter(
        1e-4,
        "β: stop when the (1-β) upper bound on p_A cannot reach the next radius by N (power, not validity)",
        min=0.0,
        max=0.5,
    )
    give_up: float = hyperparameter(
        0.1,
        "γ: stop an input whose selection draws disagreed once the predictive probability that a later stage "
        "certifies the next radius is below γ (Jeffreys posterior of its draws; power, not validity; 0 = off)",
        min=0.0,
        max=0.5,
    )
    give_up_one_radius: float = hyperparameter(
        0.05,
        "γ of give_up for a one-point grid (--radii r): there each input given up is a certificate lost at the one "
        "radius asked, so it gives up less readily than a grid",
        min=0.0,
        max=0.5,
    )
    give_up_unanimous: float = hyperparameter(
        0.0,
        "γ for inputs whose N0 selection draws all agreed: p_A = 1 stays possible there, where a Jeffreys posterior "
        "of a few early disagreements is a poor guide (σ = 0.5, r = 1.75 loses power), so 0 = off by default",
        min=0.0,
        max=0.5,
    )
    prior: bool = hyperparameter(
        True, "weigh the bets by what the N0 selection draws say of p_A (independent of the estimation draws)"
    )


def stage_levels(alpha: float, n_max: int, params: AdaptiveParams) -> list[tuple[int, float]]:
    """(draws, α_s) of each Clopper-Pearson stage; with the betting tests' share they sum to at most α."""
    if params.betting_share + params.final_share > 1:
        raise RsbenchError("betting_share + final_share must be at most 1", "e.g. --param betting_share=0.2")
    sizes = sorted({math.ceil(n_max / 2 ** (params.stages - 1 - s)) for s in range(params.stages)})
    rest = alpha * (1 - params.betting_share - params.final_share)
    early = rest / (len(sizes) - 1) if len(sizes) > 1 else 0.0
    return [(size, early) for size in sizes[:-1]] + [(n_max, alpha * params.final_share + (rest if early == 0 else 0))]


class GridTest:
    """The tests of one input: thresholds of r_0 = 0 < r_1 < … and the state of its draws.

    Claims come from the betting tests (level α_b) and the Clopper-Pearson stages (α_s each); a wrong
    claim needs one of them to fail, so P(wrong) ≤ α_b + Σ α_s ≤ α whenever sampling stops."""

    def __init__(
        self,
        radii: Sequence[float],
        sigma: float,
        alpha: float,
        n_max: int,
        params: AdaptiveParams,
        selection: tuple[int, int] | None = None,
    ):
        # One positive radius alone asks "certified at r?": its test alone, no draws spent on r = 0 (p_A > ½).
        one_radius = len(radii) == 1 and radii[0] > 0
        self.radii = tuple(radii) if one_radius else (0.0, *[r for r in radii if r > 0])
        self.sigma, self.n_max, self.futility = sigma, n_max, params.futility
        unanimous = selection is not None and selection[0] == selection[1]
        self.give_up = (
            params.give_up_unanimous if unanimous else params.give_up_one_radius if one_radius else params.give_up
        )
        self.tails = [float(norm.sf(r / sigma)) for r in self.radii]  # 1 - t_j, precise near t_j = 1
        self.weights = [
            selection_weights(tail, *selection) if params.prior and selection is not None else BET_WEIGHTS
            for tail in self.tails
        ]
        self.stages = stage_levels(alpha, n_max, params)
        self.log_barrier = math.log(1 / (alpha * params.betting_share))
        self.k = self.n = 0
        self.certified = -1  # index of the largest radius certified so far
        self.bound = 0.0  # the largest lower confidence bound on p_A established so far
        self.done = False
        self.needed: dict[tuple[int, int], float] = {}  # (radius, stage): the count that stage needs to certify it

    def rejects(self, j: int, k: float, n: float) -> bool:
        return log_wealth(k, n, self.tails[j], self.weights[j]) >= self.log_barrier

    def stage_certifies(self, j: int, k: float, size: int, level: float) -> bool:
        bound = cp_lower(k, size, level)
        return bound >= 0.5 and self.sigma * float(norm.ppf(bound)) >= self.radii[j]

    def reachable(self, j: int, p: float) -> bool:
        """Could radius j be certified later if the remaining draws agreed at rate ``p``?"""
        later = [(size, level) for size, level in self.stages if size > self.n]
        return self.rejects(j, self.k + p * (self.n_max - self.n), self.n_max) or any(
            self.stage_certifies(j, self.k + p * (size - self.n), size, level) for size, level in later
        )

    def promising(self, j: int) -> bool:
        """Is the predictive probability that some later stage certifies radius j at least γ? The count a stage
        of s draws at level α_s needs is k* = (the (1-α_s) upper quantile of Binomial(s, t_j)) + 1, and the count
        it will see is k plus a Beta-binomial draw of the s - n draws to come under the Jeffreys posterior
        Beta(k + ½, n - k + ½) of the estimation draws so far."""
        for s, (size, level) in enumerate(self.stages):
            if size > self.n:
                if (j, s) not in self.needed:
                    self.needed[j, s] = float(binom.isf(level, size, 1 - self.tails[j])) + 1
                remaining = self.needed[j, s] - self.k
                if remaining <= 0:
                    return True
                chance = betabinom.sf(remaining - 1, size - self.n, self.k + 0.5, self.n - self.k + 0.5)
                if chance >= self.give_up:
                    return True
        return False

    def update(self, successes: int, draws: int) -> None:
        """Add a round's draws; certify what the tests reject; decide whether to stop."""
        self.k, self.n = self.k + successes, self.n + draws
        while self.certified + 1 < len(self.radii) and self.rejects(self.certified + 1, self.k, self.n):
            self.certified += 1
            self.bound = max(self.bound, 1 - self.tails[self.certified])
        for size, level in self.stages:
            if size == self.n:
                self.bound = max(self.bound, cp_lower(self.k, size, level))
                while self.certified + 1 < len(self.radii) and self.stage_certifies(
                    self.certified + 1, self.k, size, level
                ):
                    self.certified += 1
        following = self.certified + 1
        self.done = (
            self.n >= self.n_max
            or following == len(self.radii)
            or not self.reachable(following, 1.0)
            or (self.futility > 0 and not self.reachable(following, cp_upper(self.k, self.n, self.futility)))
            or (self.give_up > 0 and not self.promising(following))
        )

    def next_round(self, step: int) -> int:
        """Draws before the next look: about 12% more, landing exactly on every stage's size."""
        stage = min(size for size, _ in self.stages if size > self.n)
        return min(step, stage - self.n, max(FIRST_LOOK, self.n // GROWTH))

    def certificate(self, top: int, n0: int) -> Certificate:
        if self.certified < 0:
            return Certificate(ABSTAIN, 0.0, n0 + self.n, "grid", self.k, None)
        return Certificate(top, self.radii[self.certified], n0 + self.n, "grid", self.k, self.bound)


class AdaptiveSmoothedClassifier(SmoothedClassifier):
    """Cohen's selection, then betting tests and staged Clopper-Pearson bounds at the requested radii."""

    def __init__(self, base_classifier, num_classes: int, sigma: float, params: AdaptiveParams):
        super().__init__(base_classifier, num_classes, sigma, **speed_options(params))
        self.params = params

    def check_request(self, request: CertificationRequest) -> None:
        """Refuse, before any run is written, a request without the grid of radii this certifier decides."""
        if not request.radii:
            raise RsbenchError("the adaptive certifier decides a grid of radii", "pass e.g. --radii 0:2.5:0.25")

    def certify_batch(
        self, xs: torch.Tensor, request: CertificationRequest, generators: Sequence[torch.Generator | None]
    ) -> list[Certificate]:
        """One grid certificate per input of ``xs``; the inputs share forward passes while undecided. Each
        input's rounds depend on its own counts alone, so its certificate does not depend on the others."""
        self.check_request(request)
        self.base_classifier.eval()
        selection = self.sample_counts_many(xs, request.n0, request.batch_size, generators)
        tops = selection.argmax(1).tolist()
        tests = [
            GridTest(request.radii, self.sigma, request.alpha, request.n, self.params, (int(row.max()), request.n0))
            for row in selection
        ]
        active = list(range(len(xs)))
        while active:
            size = tests[active[0]].next_round(self.params.step)  # equal for all active inputs: same n so far
            counts = self.sample_counts_many(xs[active], size, size * len(active), [generators[i] for i in active])
            for row, i in enumerate(active):
                tests[i].update(int(counts[row, tops[i]]), size)
            active = [i for i in active if not tests[i].done]
        return [test.certificate(top, request.n0) for test, top in zip(tests, tops, strict=True)]


@hookimpl
def register_certifiers(register):
    register(
        Certifier(
            "adaptive",
            "Grid radii with anytime-valid betting tests and staged Clopper-Pearson bounds: "
            "CERTIFY's guarantee, draws spent only where they change an answer (--radii, --n = most draws)",
            lambda base_classifier, num_classes, sigma, params: AdaptiveSmoothedClassifier(
                base_classifier, num_classes, sigma, params
            ),
            AdaptiveParams,
        )
    )
