"""Randomized smoothing with Cohen et al.'s (2019) CERTIFY and PREDICT, interface kept::

    from rsbench import SmoothedClassifier
    g = SmoothedClassifier(base_classifier, num_classes, sigma)
    prediction, radius = g.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000)
    prediction = g.predict(x, n=1000, alpha=0.001, batch_size=1000)

``x`` is one input [C,H,W] in [0,1] pixel space; noise N(0, σ²I) is added in that space (normalization
is the base classifier's first layer); ``radius`` is an ℓ2 radius in the same units. Noise counts are
accumulated on the classifier's device; no Python loop runs over samples.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
from scipy.stats import binomtest, norm
from statsmodels.stats.proportion import proportion_confint
from torch import nn

ABSTAIN = -1


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1-α) Clopper-Pearson lower bound on a binomial proportion from ``n_a`` of ``n``."""
    return float(proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0])


def max_certified_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with ``n`` draws: σ·Φ⁻¹(α^{1/n}) (all draws agree).

    Negative when ``n`` is too small for α: then nothing can be certified.
    """
    return sigma * float(norm.ppf(alpha ** (1.0 / n)))


@dataclasses.dataclass(frozen=True)
class Certificate:
    """The outcome of CERTIFY: ``prediction`` (-1 = abstain), ℓ2 ``radius`` (0 when abstaining), the count
    ``n_a`` of the selected class among ``n`` estimation draws and its lower bound ``p_a_lower``."""

    prediction: int
    radius: float
    n_a: int
    n: int
    p_a_lower: float


class SmoothedClassifier:
    """A smoothed classifier g(x) = argmax_c P(f(x+δ) = c), δ ~ N(0, σ²I), σ in [0,1] pixel units."""

    ABSTAIN = ABSTAIN

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float):
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, not {sigma}")
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = sigma

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                generator: torch.Generator | None = None) -> tuple[int, float]:
        """CERTIFY: the prediction of g at ``x`` and an ℓ2 radius within which g is constant, both with
        probability at least 1-α over the noise; ``(-1, 0.0)`` when it abstains."""
        certificate = self.certify_detailed(x, n0, n, alpha, batch_size, generator)
        return certificate.prediction, certificate.radius

    def certify_detailed(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                         generator: torch.Generator | None = None) -> Certificate:
        """CERTIFY with its counts: N0 draws select the top class, N fresh draws bound its probability."""
        _check_sampling(n0, "n0")
        _check_sampling(n, "n")
        _check_alpha(alpha)
        if max_certified_radius(self.sigma, n, alpha) <= 0:
            warnings.warn(
                f"with n={n} and alpha={alpha} no radius can be certified: CERTIFY will always abstain",
                RuntimeWarning, stacklevel=2,
            )
        self.base_classifier.eval()
        selection = self.sample_counts(x, n0, batch_size, generator)
        top = int(selection.argmax())
        estimation = self.sample_counts(x, n, batch_size, generator)
        n_a = int(estimation[top])
        p_a = lower_confidence_bound(n_a, n, alpha)
        if p_a < 0.5:
            return Certificate(ABSTAIN, 0.0, n_a, n, p_a)
        return Certificate(top, self.sigma * float(norm.ppf(p_a)), n_a, n, p_a)

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int,
                generator: torch.Generator | None = None) -> int:
        """PREDICT: g's prediction at ``x``, or -1 when a two-sided binomial test cannot tell the top two
        classes apart at level α (the returned class is wrong with probability at most α)."""
        _check_sampling(n, "n")
        _check_alpha(alpha)
        self.base_classifier.eval()
        counts = self.sample_counts(x, n, batch_size, generator)
        top2 = torch.topk(counts, 2 if self.num_classes > 1 else 1)
        count1 = int(top2.values[0])
        count2 = int(top2.values[1]) if len(top2.values) > 1 else 0
        if binomtest(count1, count1 + count2, p=0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2.indices[0])

    @torch.no_grad()
    def sample_counts(self, x: torch.Tensor, num: int, batch_size: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Class counts of f(x + δ) over ``num`` draws, in batches of ``batch_size`` (on x's device)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        remaining = num
        while remaining > 0:
            size = min(batch_size, remaining)
            remaining -= size
            batch = x.unsqueeze(0).expand(size, *x.shape)
            noise = torch.randn(batch.shape, generator=generator, device=x.device, dtype=x.dtype)
            predictions = self.base_classifier(batch + noise * self.sigma).argmax(1)
            counts += torch.bincount(predictions, minlength=self.num_classes)
        return counts


def _check_sampling(value: int, name: str) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, not {value}")


def _check_alpha(alpha: float) -> None:
    if not (0 < alpha < 1) or math.isnan(alpha):
        raise ValueError(f"alpha must lie in (0, 1), not {alpha}")
