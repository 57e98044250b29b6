"""CERTIFY and PREDICT against a base classifier whose smoothed probabilities are known in closed form."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import beta, norm
from torch import nn

from rsbench import SmoothedClassifier
from rsbench.smoothing import lower_confidence_bound, max_certified_radius
from rsbench.specs import CertificationRequest


class Linear2(nn.Module):
    """f(x) = 1 if w·x + b > 0 else 0, as two logits; P[f(x+δ)=1] = Φ((w·x+b) / (σ‖w‖))."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        margin = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([torch.zeros_like(margin), margin], 1)


def problem(seed=0, shape=(1, 4, 4)):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=generator)
    return w, 0.3


def point_at_distance(w, b, distance):
    """x with signed distance (w·x+b)/‖w‖ = distance from the decision boundary."""
    return (distance - b / w.norm()) * w / w.norm()


def test_lower_bound_is_one_sided_clopper_pearson():
    assert lower_confidence_bound(90, 100, 0.001) == pytest.approx(beta.ppf(0.001, 90, 11))
    assert lower_confidence_bound(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100))
    assert max_certified_radius(0.5, 100_000, 0.001) == pytest.approx(0.5 * norm.ppf(0.001**1e-5))


def test_certified_radius_never_exceeds_the_true_radius_beyond_alpha():
    sigma, alpha, n, trials = 0.5, 0.05, 200, 400
    w, b = problem()
    g = SmoothedClassifier(Linear2(w, b), 2, sigma)
    true_radius = 0.3  # P[class 1] = Φ(0.6) = 0.73: the bound is often close to it
    x = point_at_distance(w, b, true_radius)
    generator = torch.Generator().manual_seed(1)
    radii = np.array([g.certify(x, 50, n, alpha, 100, generator=generator)[1] for _ in range(trials)])
    violations = int((radii > true_radius).sum())
    # P[violation] <= α; allow a 3-sigma binomial excess over α·trials
    assert violations <= alpha * trials + 3 * math.sqrt(alpha * (1 - alpha) * trials)
    assert (radii > 0).mean() > 0.5  # and it does certify most of the time


@pytest.mark.parametrize("distance", [0.25, 0.6])
def test_certified_radius_approaches_the_true_radius_for_large_n(distance):
    sigma = 0.5
    w, b = problem(seed=2)
    g = SmoothedClassifier(Linear2(w, b), 2, sigma)
    x = point_at_distance(w, b, distance)
    prediction, radius = g.certify(x, 100, 1_000_000, 0.001, 100_000, generator=torch.Generator().manual_seed(3))
    assert prediction == 1
    assert distance * 0.97 <= radius <= distance


def test_abstains_at_the_boundary_and_certifies_class_zero_on_the_other_side():
    w, b = problem(seed=4)
    g = SmoothedClassifier(Linear2(w, b), 2, 0.25)
    assert g.certify(point_at_distance(w, b, 0.0), 100, 10_000, 0.001, 1000) == (-1, 0.0)
    prediction, radius = g.certify(point_at_distance(w, b, -0.3), 100, 10_000, 0.001, 1000)
    assert prediction == 0 and 0.2 < radius <= 0.3


def test_predict_abstains_only_when_top_two_are_close():
    w, b = problem(seed=5)
    g = SmoothedClassifier(Linear2(w, b), 2, 0.25)
    assert g.predict(point_at_distance(w, b, 0.5), 1000, 0.001, 500) == 1
    assert g.predict(point_at_distance(w, b, -0.5), 1000, 0.001, 500) == 0
    abstained = sum(g.predict(point_at_distance(w, b, 0.0), 1000, 0.001, 500) == -1 for _ in range(20))
    assert abstained >= 18  # at the boundary PREDICT errs with probability <= α


def test_noise_is_fresh_for_every_draw_and_counts_are_complete():
    w, b = problem(seed=6)
    g = SmoothedClassifier(Linear2(w, b), 2, 1.0)
    counts = g.sample_counts(point_at_distance(w, b, 0.0), 10_001, 1000)
    assert int(counts.sum()) == 10_001
    assert 4500 < int(counts[1]) < 5500  # Φ(0) = 0.5: independent draws, not one repeated


def test_warns_when_n_is_too_small_to_certify():
    w, b = problem()
    g = SmoothedClassifier(Linear2(w, b), 2, 0.5)
    with pytest.warns(RuntimeWarning, match="no radius can be certified"):
        assert g.certify(point_at_distance(w, b, 2.0), 10, 5, 0.001, 10) == (-1, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g.certify(point_at_distance(w, b, 2.0), 10, 100, 0.001, 100)


def test_invalid_arguments():
    g = SmoothedClassifier(Linear2(*problem()), 2, 0.5)
    x = torch.zeros(1, 4, 4)
    for kwargs in ({"n0": 0}, {"n": 0}, {"alpha": 0.0}, {"alpha": 1.0}):
        args = {"n0": 10, "n": 100, "alpha": 0.01, "batch_size": 10, **kwargs}
        with pytest.raises(ValueError):
            g.certify(x, **args)
    with pytest.raises(ValueError):
        SmoothedClassifier(Linear2(*problem()), 2, 0.0)


def test_certify_batch_shares_passes_and_keeps_each_inputs_certificate():
    w, b = problem(seed=8)
    g = SmoothedClassifier(Linear2(w, b), 2, 0.5)
    xs = torch.stack([point_at_distance(w, b, d) for d in (-0.4, 0.0, 0.3, 0.8)])

    def generators():
        return [torch.Generator().manual_seed(100 + i) for i in range(len(xs))]

    together = g.certify_batch(xs, CertificationRequest(50, 2000, 0.001, 4 * 250), generators())
    alone = [
        g.certify_batch(x[None], CertificationRequest(50, 2000, 0.001, 250), [gen])[0]
        for x, gen in zip(xs, generators(), strict=True)
    ]
    assert together == alone  # same per-input noise streams, same chunks: identical certificates
    assert together[1].prediction == -1 and together[3].prediction == 1 and together[0].prediction == 0
    counts = g.sample_counts_many(xs, 1001, 300)
    assert counts.shape == (4, 2) and counts.sum(1).tolist() == [1001] * 4


def test_noise_drawn_in_place_is_the_stream_torch_randn_gives():
    """The reused buffer keeps each input's stream: counts equal those of a loop written with torch.randn
    per chunk (Cohen's way), for any forward-pass size."""
    w, b = problem(seed=9)
    model, sigma = Linear2(w, b), 0.5
    xs = torch.stack([point_at_distance(w, b, d) for d in (0.0, 0.1, -0.2)])
    expected = torch.zeros(3, 2, dtype=torch.long)
    for k, x in enumerate(xs):
        generator = torch.Generator().manual_seed(40 + k)
        for size in (100, 100, 100, 33):  # 300 // 3 = 100 draws of each input per chunk, 333 in all
            noise = torch.randn((size, *x.shape), generator=generator)
            expected[k] += torch.bincount(model(x + noise * sigma).argmax(1), minlength=2)
    for forward_batch in (None, 7, 1000):
        g = SmoothedClassifier(model, 2, sigma, forward_batch=forward_batch)
        counts = g.sample_counts_many(xs, 333, 300, [torch.Generator().manual_seed(40 + k) for k in range(3)])
        assert torch.equal(counts, expected)


def test_speed_options_are_validated():
    model = Linear2(*problem())
    for kwargs in ({"precision": "int8"}, {"forward_batch": 0}):
        with pytest.raises(ValueError):
            SmoothedClassifier(model, 2, 0.5, **kwargs)
