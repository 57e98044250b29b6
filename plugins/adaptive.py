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
   lose little against Cohen at the same N (the final stage holds its share and all the other tests leave).
   α_b + Σ α_s = α: by the union bound alone, the certificate holds with probability ≥ 1-α however
   sampling stops.
4. The final bound at N is not held to its share α_f, which would waste what the other tests leave
   unspent: at p_A = t_j, the worst case of H_j since every test rejects on few failures, the
   chance that the betting test or an earlier stage rejects at some look is computed exactly (the looks are
   the same for every input and the failure count moves by Binomial steps between them: a group-sequential
   design's crossing probability, ``final_tolerance``), and the final bound certifies with as many failures
   as keeps the total at α. It gets α_f plus the slack of Ville's inequality, of the discrete stages and of
   paths two tests reject: near a threshold it tolerates Cohen's count or nearly (σ = 0.5, r = 1.75: 9
   failures in 100,000 as Cohen, where α_f alone allows 8).
5. Stopping, which never affects validity (only the rejections above make claims): an input stops when
   the next radius is out of reach even if every remaining draw agreed (deterministic); when it is futile:
   with p_A at its (1-β) upper Clopper-Pearson bound, no later look certifies it with probability β or more
   (the remaining draws' failures taken as Binomial, not at their mean: near a threshold the spread decides);
   or when the predictive probability that a later stage certifies the next radius, under the Jeffreys
   posterior of the draws so far, is below γ (``give_up`` for inputs whose selection draws disagreed at least
   once, ``give_up_one_radius`` for those of a one-point grid, ``give_up_unanimous`` for the others). Cohen's
   own power at a threshold p_A sits just above is about ½, so an input the predictive rule gives up on is
   one Cohen's CERTIFY would mostly not certify either (the matched-power ceiling of
   ``benchmarks/adaptive_table.py`` is the yardstick).

Result: radius = the largest certified grid radius (``radius_kind="grid"``, a lower bound on CERTIFY's),
prediction ĉ_A with radius 0 when only p_A > ½ is certified, abstain (-1) when not even that is (Cohen's
rule); ``draws`` = N0 + estimation draws used, at most N0 + N (Cohen's cost is the worst case).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import fftconvolve
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
GROWTH = 8
"""Round sizes after the first: one eighth of the draws so far (looks about every 12%), up to ``step``."""


PRIOR_FLOOR = 0.2
"""Share of the non-all-in weight spread evenly over the bets whatever the selection draws say (robustness)."""


def log_wealth(k, n, one_minus_t: float, weights: np.ndarray = BET_WEIGHTS):
    """log W(k, n) of the bet mixture with prior ``weights`` against H: p ≤ t after k successes in n draws
    (t = 1 - one_minus_t); k and n may be arrays (broadcast together)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    if one_minus_t <= 0:
        return -math.inf if np.ndim(k + n) == 0 else np.full(np.shape(k + n), -math.inf)
    win = k[..., None] * np.log1p(BET_FRACTIONS * one_minus_t / (1.0 - one_minus_t))
    failures = (n - k)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = np.where(failures > 0, failures * LOG_LOSS, 0.0)  # 0 · log 0 = 0: no failure, nothing lost
        terms = np.where(weights > 0, np.log(weights) + win + loss, -np.inf)
        wealth = logsumexp(terms, axis=-1)
    return float(wealth) if wealth.ndim == 0 else wealth


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
    first_look: int = hyperparameter(
        50,
        "estimation draws per input before the first look at the counts; later rounds are at least as long unless a "
        "stage or --step cuts them",
        min=1,
    )
    step: int = hyperparameter(2000, "most estimation draws per input between two looks at the counts", min=1)
    stages: int = hyperparameter(
        4, "Clopper-Pearson bounds at N/2^(S-1), …, N/2, N draws (Horváth et al. 2022's stages)", min=1, max=12
    )
    betting_share: float = hyperparameter(0.4, "share of α for the anytime-valid betting tests", min=0.01, max=0.98)
    final_share: float = hyperparameter(
        0.4,
        "least share of α for the Clopper-Pearson bound at N, which also takes all that the other tests leave "
        "unspent (computed exactly); the earlier stages share the rest",
        min=0.01,
        max=0.98,
    )
    futility: float = hyperparameter(
        0.05,
        "β: stop when, with p_A at its (1-β) upper bound, no later look certifies the next radius with probability "
        "β or more (power, not validity; 0 = off)",
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
    """(draws, α_s) of each Clopper-Pearson stage; with the betting tests' share they sum to at most α. The
    last stage's α_s is its floor: it also gets whatever the earlier tests leave unspent (``final_tolerance``)."""
    if params.betting_share + params.final_share > 1:
        raise RsbenchError("betting_share + final_share must be at most 1", "e.g. --param betting_share=0.2")
    sizes = sorted({math.ceil(n_max / 2 ** (params.stages - 1 - s)) for s in range(params.stages)})
    rest = alpha * (1 - params.betting_share - params.final_share)
    early = rest / (len(sizes) - 1) if len(sizes) > 1 else 0.0
    return [(size, early) for size in sizes[:-1]] + [(n_max, alpha * params.final_share + (rest if early == 0 else 0))]


def look_sizes(n_max: int, stage_sizes: Sequence[int], first: int, step: int) -> np.ndarray:
    """Estimation draws at each look at the counts: ``first``, then about one eighth more each time (at least
    ``first`` and at most ``step``, less where a round lands exactly on a stage's size). The same for every input,
    so the tests' joint law is computable."""
    looks, n = [], 0
    while n < n_max:
        stage = min(size for size in stage_sizes if size > n)
        n += min(step, stage - n, max(first, n // GROWTH))
        looks.append(n)
    return np.array(looks)


def largest_passing(passes, low: int, high: int) -> int:
    """The largest f in [low, high) with ``passes(f)``, for a ``passes`` true up to some f and false after
    (``low`` - 1 where none is); a binary search."""
    low -= 1
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if passes(middle) else (low, middle)
    return low


def betting_tolerance(looks: np.ndarray, one_minus_t: float, weights: np.ndarray, log_barrier: float) -> np.ndarray:
    """The most failures with which the betting test rejects H: p ≤ t at each look (W ≥ 1/α_b; -1: none can).
    W falls with every failure, so a binary search, run for all looks at once."""
    low, high = np.full(len(looks), -1), looks + 1  # rejects with `low` failures (none: -1), not with `high`
    while np.any(high - low > 1):
        middle = (low + high) // 2
        rejects = log_wealth(looks - middle, looks, one_minus_t, weights) >= log_barrier
        low, high = np.where(rejects, middle, low), np.where(rejects, high, middle)
    return low


def binomial_steps(mass: np.ndarray, low: int, draws: int, q: float, cut_at: float) -> tuple[np.ndarray, int, float]:
    """The law of the failure count after ``draws`` more draws, each a failure with probability q: ``mass[i]`` =
    P(f = low + i) convolved with Binomial(draws, q). Returns (mass, low, cut): the step's law is kept within 12
    standard deviations and the new law below ``cut_at``; ``cut`` is the probability left out (counted as spent by
    the caller: it only costs power)."""
    spread = 12 * math.sqrt(draws * q * (1 - q)) + 2
    first, last = max(0, math.floor(draws * q - spread)), min(draws, math.ceil(draws * q + spread))
    step = binom.pmf(np.arange(first, last + 1), draws, q)
    total = mass.sum()
    mass = fftconvolve(mass, step).clip(min=0.0)
    low += first
    cut = max(0.0, 1.0 - step.sum()) * total
    keep = max(1, min(len(mass), math.ceil(cut_at) - low + 1))
    cut += mass[keep:].sum()
    return mass[:keep], low, cut


def final_tolerance(one_minus_t: float, looks: np.ndarray, early: np.ndarray, alpha: float) -> int:
    """The most failures at the last look (N draws) with which the final bound certifies p > t, computed so that
    under p = t the chance that any look rejects stays at most α: a group-sequential design's exact crossing
    probability. Every test rejects on few failures, so that chance grows with p and p = t is the worst case of
    H: p ≤ t. The failure count moves by Binomial steps between looks; at each look the paths the earlier tests
    reject (``early[l]`` failures or fewer) are counted and removed. The final bound gets whatever they leave
    unspent: its own share, plus the slack of Ville's inequality, of the discrete Clopper-Pearson stages and of
    paths two tests reject. Probability cut off in the tails counts as spent, negative round-off is clipped to 0
    (both only add to what is counted), and a relative 1e-6 of α is kept back against rounding; the caller never
    goes below the tolerance of the share alone, valid by the union bound whatever the arithmetic (at α ≈ 1e-14
    the clipping slack alone can exceed the share)."""
    q = one_minus_t
    mass, low, spent, previous = np.ones(1), 0, 0.0, 0
    for n, tolerance in zip(looks, [*early, None], strict=True):
        horizon = n * q + 12 * math.sqrt(n * q * (1 - q)) + 2
        mass, low, cut = binomial_steps(mass, low, int(n - previous), q, horizon)
        spent, previous = spent + cut, n
        if tolerance is None:  # the last look: the largest b with P(f_N ≤ b, no earlier rejection) in what is left
            allowed = alpha * (1 - 1e-6) - spent
            return low - 1 + int(np.searchsorted(np.cumsum(mass), allowed, side="right"))
        rejected = int(min(len(mass), max(0, tolerance + 1 - low)))
        spent += mass[:rejected].sum()
        mass, low = mass[rejected:], low + rejected
        if len(mass) == 0:
            mass = np.zeros(1)
    raise AssertionError("looks end at N")


@functools.lru_cache(maxsize=4096)
def tolerances(
    radius: float, sigma: float, alpha: float, n_max: int, params: AdaptiveParams, selection: tuple[int, int] | None
) -> np.ndarray:
    """The most failures (estimation draws not of ĉ_A) with which the tests certify ``radius`` at each look of
    ``look_sizes`` (-1: they cannot): the betting test at every look, a Clopper-Pearson stage where one ends, and
    at N the exact final bound of ``final_tolerance``. A function of the selection draws through the bets'
    prior, computed once per setting and remembered."""
    one_minus_t = float(norm.sf(radius / sigma))  # 1 - t_j, precise near t_j = 1
    weights = selection_weights(one_minus_t, *selection) if params.prior and selection is not None else BET_WEIGHTS
    stages = stage_levels(alpha, n_max, params)
    looks = look_sizes(n_max, [size for size, _ in stages], params.first_look, params.step)
    log_barrier = math.log(1 / (alpha * params.betting_share))
    tolerance = betting_tolerance(looks, one_minus_t, weights, log_barrier)

    def stage_certifies(failures: int, size: int, level: float) -> bool:
        bound = cp_lower(size - failures, size, level)
        return bound >= 0.5 and sigma * float(norm.ppf(bound)) >= radius

    stage_tolerance = [
        largest_passing(functools.partial(stage_certifies, size=size, level=level), 0, size + 1)
        for size, level in stages
    ]
    for (size, _), tolerated in zip(stages[:-1], stage_tolerance, strict=False):
        at = int(np.searchsorted(looks, size))
        tolerance[at] = max(tolerance[at], tolerated)
    # At N: the exact bound, never below what the final stage's share alone allows (valid by the union bound).
    tolerance[-1] = max(stage_tolerance[-1], final_tolerance(one_minus_t, looks, tolerance[:-1], alpha))
    tolerance.setflags(write=False)
    return tolerance


class GridTest:
    """The tests of one input: thresholds of r_0 = 0 < r_1 < … and the state of its draws.

    Each threshold's tests (betting at every look, Clopper-Pearson stages, the exact final bound) together
    reject a true H_j with probability at most α (``final_tolerance``), whenever sampling stops."""

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
        self.sigma, self.alpha, self.n_max, self.params, self.selection = sigma, alpha, n_max, params, selection
        unanimous = selection is not None and selection[0] == selection[1]
        self.give_up = (
            params.give_up_unanimous if unanimous else params.give_up_one_radius if one_radius else params.give_up
        )
        self.stages = stage_levels(alpha, n_max, params)
        self.looks = look_sizes(n_max, [size for size, _ in self.stages], params.first_look, params.step)
        self.stage_looks = np.searchsorted(self.looks, [size for size, _ in self.stages])
        self.look = -1  # index of the last look taken
        self.k = self.n = 0
        self.certified = -1  # index of the largest radius certified so far
        self.done = False

    def tolerance(self, j: int) -> np.ndarray:
        """Failures with which radius j is certified at each look."""
        selection = self.selection if self.params.prior else None
        return tolerances(self.radii[j], self.sigma, self.alpha, self.n_max, self.params, selection)

    def chance_later(self, j: int, p: float) -> float:
        """The largest chance, over the later looks, that radius j is certified there if each remaining draw
        agrees with probability ``p`` (1 or 0 for p = 1: could it be certified if every remaining draw agreed?)."""
        later = self.looks[self.look + 1 :]
        room = self.tolerance(j)[self.look + 1 :] - (self.n - self.k)
        return float(np.max(binom.cdf(room, later - self.n, 1 - p), initial=0.0))

    def promising(self, j: int) -> bool:
        """Is the predictive probability that some later stage certifies radius j at least γ? A stage of s draws
        certifies with f* failures or fewer; the failures it will see are f plus a Beta-binomial draw of the
        s - n draws to come under the Jeffreys posterior Beta(f + ½, k + ½) of the estimation draws so far."""
        failures, tolerance = self.n - self.k, self.tolerance(j)
        for size, at in zip((size for size, _ in self.stages), self.stage_looks, strict=True):
            if size > self.n:
                room = tolerance[at] - failures
                if room >= 0 and betabinom.cdf(room, size - self.n, failures + 0.5, self.k + 0.5) >= self.give_up:
                    return True
        return False

    def update(self, successes: int, draws: int) -> None:
        """Add a round's draws (the next look is ``next_round`` draws on); certify what the tests reject; decide
        whether to stop."""
        if self.done or not 0 <= successes <= draws or draws != self.next_round():
            raise ValueError(
                f"{successes} of {draws} draws at n = {self.n}: the tests look next after {self.next_round()}"
            )
        self.k, self.n, self.look = self.k + successes, self.n + draws, self.look + 1
        failures = self.n - self.k
        while self.certified + 1 < len(self.radii) and failures <= self.tolerance(self.certified + 1)[self.look]:
            self.certified += 1
        following, futility = self.certified + 1, self.params.futility
        self.done = (
            self.n >= self.n_max
            or following == len(self.radii)
            or self.chance_later(following, 1.0) == 0
            or (futility > 0 and self.chance_later(following, cp_upper(self.k, self.n, futility)) < futility)
            or (self.give_up > 0 and not self.promising(following))
        )

    def next_round(self) -> int:
        """Draws before the next look (0 once N draws are spent)."""
        return int(self.looks[self.look + 1] - self.n) if self.look + 1 < len(self.looks) else 0

    def certificate(self, top: int, n0: int) -> Certificate:
        """The largest certified grid radius r_J, with p_a_lower = t_J = Φ(r_J/σ): p_A > t_J at level 1 - α."""
        if self.certified < 0:
            return Certificate(ABSTAIN, 0.0, n0 + self.n, "grid", self.k, None)
        radius = self.radii[self.certified]
        return Certificate(top, radius, n0 + self.n, "grid", self.k, float(norm.cdf(radius / self.sigma)))


class AdaptiveSmoothedClassifier(SmoothedClassifier):
    """Cohen's selection, then betting tests and staged Clopper-Pearson bounds at the requested radii."""

    def __init__(self, base_classifier, num_classes: int, sigma: float, params: AdaptiveParams):
        super().__init__(base_classifier, num_classes, sigma, **speed_options(params))
        self.params = params

    def check_request(self, request: CertificationRequest) -> None:
        """Refuse, before any run is written, a request without the grid of radii this certifier decides, or with
        shares of α (betting, final) that add up to more than α."""
        if not request.radii:
            raise RsbenchError("the adaptive certifier decides a grid of radii", "pass e.g. --radii 0:2.5:0.25")
        stage_levels(request.alpha, request.n, self.params)  # refuses shares of α that add up to more than α

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
            size = tests[active[0]].next_round()  # equal for all active inputs: same n so far
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
