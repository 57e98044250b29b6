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
        return self.certify_many(x.unsqueeze(0), n0, n, alpha, batch_size, [generator])[0]

    def certify_many(self, xs: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                     generators: list[torch.Generator | None] | None = None) -> list[Certificate]:
        """CERTIFY for each input of ``xs`` [K,C,H,W], their noisy copies sharing forward passes of
        ``batch_size`` (a faster path where one input's copies do not fill the device). Each certificate has
        the guarantee of :meth:`certify`; ``generators`` gives each input its own noise stream."""
        _check_sampling(n0, "n0")
        _check_sampling(n, "n")
        _check_alpha(alpha)
        if max_certified_radius(self.sigma, n, alpha) <= 0:
            warnings.warn(
                f"with n={n} and alpha={alpha} no radius can be certified: CERTIFY will always abstain",
                RuntimeWarning, stacklevel=3,
            )
        self.base_classifier.eval()
        tops = self.sample_counts_many(xs, n0, batch_size, generators).argmax(1)
        estimation = self.sample_counts_many(xs, n, batch_size, generators)
        certificates = []
        for top, counts in zip(tops.tolist(), estimation, strict=True):
            n_a = int(counts[top])
            p_a = lower_confidence_bound(n_a, n, alpha)
            radius = self.sigma * float(norm.ppf(p_a)) if p_a >= 0.5 else 0.0
            certificates.append(Certificate(top if p_a >= 0.5 else ABSTAIN, radius, n_a, n, p_a))
        return certificates

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

    def sample_counts(self, x: torch.Tensor, num: int, batch_size: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Class counts of f(x + δ) over ``num`` draws, in batches of ``batch_size`` (on x's device)."""
        return self.sample_counts_many(x.unsqueeze(0), num, batch_size, [generator])[0]

    @torch.no_grad()
    def sample_counts_many(self, xs: torch.Tensor, num: int, batch_size: int,
                           generators: list[torch.Generator | None] | None = None) -> torch.Tensor:
        """[K, classes] counts of f(x_k + δ) over ``num`` fresh draws for each of the K inputs ``xs``; a
        forward pass holds ``batch_size // K`` draws of each input."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        inputs = len(xs)
        generators = generators or [None] * inputs
        per_input = max(1, batch_size // inputs)
        counts = torch.zeros(inputs * self.num_classes, dtype=torch.long, device=xs.device)
        remaining = num
        while remaining > 0:
            size = min(per_input, remaining)
            remaining -= size
            noise = torch.cat([torch.randn((size, *xs.shape[1:]), generator=g, device=xs.device, dtype=xs.dtype)
                               for g in generators])
            batch = xs.repeat_interleave(size, dim=0)  # input-major: rows k*size .. (k+1)*size-1 are input k
            predictions = self.base_classifier(batch + noise * self.sigma).argmax(1)
            offsets = torch.arange(inputs, device=xs.device).repeat_interleave(size) * self.num_classes
            counts += torch.bincount(predictions + offsets, minlength=inputs * self.num_classes)
        return counts.view(inputs, self.num_classes)


def _check_sampling(value: int, name: str) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, not {value}")


def _check_alpha(alpha: float) -> None:
    if not (0 < alpha < 1) or math.isnan(alpha):
        raise ValueError(f"alpha must lie in (0, 1), not {alpha}")
