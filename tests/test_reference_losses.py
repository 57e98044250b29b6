"""Every training loss against an independent reference.

Each reference below is the official training code's computation written out again in plain torch
(jh-jeong/smoothing-consistency: ``consistency.py``, ``train_consistency.py``, ``train_salman.py``,
``train_stab.py``; RuntianZ/macer: ``macer_train``), in float64 and in the official code's own layout
(a list of per-copy logit batches, or example-major ``[B, m, K]``). rsbench's method objects are run on the
same fixed logits through a model that returns them, so the test covers the whole loss a method trains
on; values and gradients with respect to the logits must agree to float32 round-off. Where the official
code itself is not finite (``F.kl_div`` on p̂ with exact zeros) the reference takes the limit 0·log 0 = 0.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rsbench_plugins.consistency import Consistency, ConsistencyParams
from rsbench_plugins.gaussian import Gaussian
from rsbench_plugins.macer import Macer, MacerParams
from rsbench_plugins.smoothadv import SmoothAdv, SmoothAdvParams
from rsbench_plugins.stability import Stability, StabilityParams

B, K = 5, 10


class FixedLogits(nn.Module):
    """A 'model' that returns the same logits [rows, K] whatever the input (rows = copies × B)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone().float())
        self.calls = 0

    def forward(self, x):
        assert x.shape[0] == self.logits.shape[0]
        self.calls += 1
        return self.logits


def logit_cases(m: int) -> dict[str, torch.Tensor]:
    """Copy-major logits [m·B, K]: moderate, saturated (p̂ with exact zeros) and a margin of 1.2 on every copy."""
    generator = torch.Generator().manual_seed(m)
    moderate = 2 * torch.randn(m * B, K, generator=generator)
    saturated = torch.full((m * B, K), -60.0)
    saturated[:, 0] = 60.0
    saturated[::3, 1] = 70.0  # some copies confidently wrong
    margin = torch.zeros(m * B, K)
    margin[:, 0] = 1.2  # β = 16 makes p̃₁ = 1 in float32: Φ⁻¹(p̃₁) = ∞ (MACER's divergence)
    margin[-m:, 0] = 0.05  # ... and a few kept, finite gaps
    return {"moderate": moderate, "saturated": saturated, "margin": margin}


LABELS = torch.tensor([0, 0, 1, 2, 0])


def official_copies(logits: torch.Tensor, m: int) -> list[torch.Tensor]:
    """The official ``torch.chunk(logits, m)``: one [B, K] float64 batch per noise draw."""
    return list(logits.double().view(m, B, K))


# --- the official computations, written out -------------------------------------------------------------


def ref_cross_entropy(chunks, y):
    """``criterion(logits, targets.repeat(m))``: mean CE over the concatenated copies."""
    logits = torch.cat(chunks)
    return -F.log_softmax(logits, 1).gather(1, y.repeat(len(chunks)).unsqueeze(1)).mean()


def ref_consistency(chunks, lbd, eta, loss):
    """``consistency.consistency_loss(logits, lbd, eta, loss)``."""
    m = len(chunks)
    softmax = [F.softmax(c, dim=1) for c in chunks]
    avg = sum(softmax) / m
    kl = sum(torch.xlogy(avg, avg).sum(1) - (avg * F.log_softmax(c, dim=1)).sum(1) for c in chunks) / m
    entropy = -torch.xlogy(avg, avg).sum(1)
    if loss == "default":
        value = lbd * kl + eta * entropy
    elif loss == "xent":
        value = lbd * (kl + entropy)
    elif loss == "kl":
        value = lbd * kl
    else:  # mse: first two copies
        value = lbd * ((softmax[1] - softmax[0]) ** 2).sum(1)
    return value.mean()


def ref_macer(example_major, y, sigma, lbd, gamma, beta):
    """``macer_train``'s loss for ``outputs.reshape(B, gauss_num, K)``."""
    zero = torch.zeros(1, dtype=example_major.dtype)
    normal = torch.distributions.Normal(zero, zero + 1)
    classification = F.nll_loss(torch.log(F.softmax(example_major, 2).mean(1) + 1e-10), y, reduction="sum")
    if lbd == 0:
        return classification / len(y)
    beta_softmax = F.softmax(example_major * beta, 2).mean(1)
    top_score, top_idx = torch.topk(beta_softmax, 2)
    correct = top_idx[:, 0] == y
    out0, out1 = top_score[correct, 0], top_score[correct, 1]
    gap = normal.icdf(out1) - normal.icdf(out0)
    keep = ~torch.isnan(gap) & ~torch.isinf(gap) & (torch.abs(gap) <= gamma)
    out0, out1 = out0[keep], out1[keep]
    robustness = (normal.icdf(out1) - normal.icdf(out0) + gamma).sum() * sigma / 2
    return (classification + lbd * robustness) / len(y)


def ref_stability(clean, noisy, y, lbd):
    """``train_stab``: CE(f(x), y) + λ·``_cross_entropy(logits_n, logits)``."""
    stab = (-F.softmax(clean, 1) * F.log_softmax(noisy, 1)).sum(1).mean()
    return F.cross_entropy(clean, y) + lbd * stab


# --- comparison -------------------------------------------------------------------------------------------


def rsbench_loss_and_grad(method, logits):
    model = FixedLogits(logits)
    loss = method.loss(model, torch.rand(B, 1, 4, 4), LABELS)
    loss.backward()
    return loss.detach().double(), model.logits.grad.double()


def ref_loss_and_grad(reference, logits):
    leaf = logits.double().clone().requires_grad_(True)
    loss = reference(leaf)
    loss.backward()
    return loss.detach(), leaf.grad


def assert_agree(method, reference, logits):
    ours, our_grad = rsbench_loss_and_grad(method, logits)
    theirs, their_grad = ref_loss_and_grad(reference, logits)
    assert torch.isfinite(ours) and torch.isfinite(our_grad).all()
    assert ours.item() == pytest.approx(theirs.item(), rel=2e-5, abs=1e-6)
    torch.testing.assert_close(our_grad, their_grad, rtol=2e-4, atol=2e-6)


CASES = ["moderate", "saturated", "margin"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    ("form", "lam", "m"),
    [("default", 5.0, 2), ("default", 20.0, 4), ("kl", 5.0, 2), ("mse", 5.0, 2), ("mse", 20.0, 3), ("xent", 5.0, 2)],
)
def test_consistency_matches_official_consistency_loss(case, form, lam, m):
    method = Consistency(ConsistencyParams(lam=lam, eta=0.5, m=m, loss=form), sigma=0.5)
    eta = 0.5 if form == "default" else 0.0  # the official code reads η in 'default' only

    def reference(logits):
        chunks = official_copies(logits, m)
        return ref_cross_entropy(chunks, LABELS) + ref_consistency(chunks, lam, eta, form)

    assert_agree(method, reference, logit_cases(m)[case])


def test_forms_are_the_rows_of_table4():
    """Table 4's MSE row has no entropy and the full weight on ‖p₂ − p₁‖²; its KL row no entropy."""
    logits = logit_cases(2)["moderate"]
    chunks = official_copies(logits, 2)
    p1, p2 = F.softmax(chunks[0], 1), F.softmax(chunks[1], 1)
    mse = Consistency(ConsistencyParams(lam=5.0, eta=0.5, m=2, loss="mse"), sigma=0.5)
    expected = ref_cross_entropy(chunks, LABELS) + 5.0 * ((p2 - p1) ** 2).sum(1).mean()
    assert rsbench_loss_and_grad(mse, logits)[0].item() == pytest.approx(expected.item(), rel=2e-5)
    assert ConsistencyParams(loss="kl", eta=0.5).eta == 0.0 and ConsistencyParams(loss="mse").eta == 0.0
    assert ConsistencyParams().loss == "default" and ConsistencyParams().eta == 0.5


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("m", [1, 4])
def test_smoothadv_without_consistency_is_cross_entropy_only(case, m):
    """``train_salman.py``: criterion(model(x̂ + noise), targets) and nothing else (λ = 0, any η)."""
    method = SmoothAdv(SmoothAdvParams(m=m, lam=0.0, eta=0.5), sigma=0.5)
    method.eps = 0.0  # the attack is tested in test_reference_attacks.py
    assert method.params.eta == 0.0
    assert_agree(method, lambda logits: ref_cross_entropy(official_copies(logits, m), LABELS), logit_cases(m)[case])


@pytest.mark.parametrize("case", CASES)
def test_smoothadv_with_consistency_is_the_official_default_form(case):
    """``train_consistency.py --adv-training``: CE + consistency_loss(logits, lbd, eta) ('default')."""
    method = SmoothAdv(SmoothAdvParams(m=4, lam=1.0, eta=0.5), sigma=0.5)
    method.eps = 0.0

    def reference(logits):
        chunks = official_copies(logits, 4)
        return ref_cross_entropy(chunks, LABELS) + ref_consistency(chunks, 1.0, 0.5, "default")

    assert_agree(method, reference, logit_cases(4)[case])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    ("lam", "beta", "gamma"), [(16.0, 16.0, 8.0), (0.0, 16.0, 8.0), (6.0, 1.0, 8.0), (16.0, 2.0, 0.5)]
)
def test_macer_matches_official_macer_train(case, lam, beta, gamma):
    m, sigma = 4, 0.5
    method = Macer(MacerParams(m=m, lam=lam, gamma=gamma, beta=beta), sigma=sigma)

    def reference(logits):  # the official layout [B, m, K], in float32 as the official runs (p̃₁ = 1 or not)
        example_major = logits.float().view(m, B, K).transpose(0, 1)
        return ref_macer(example_major, LABELS, sigma, lam, gamma, beta)

    assert_agree(method, reference, logit_cases(m)[case])


def test_macer_keeps_finite_gaps_below_the_margin():
    """The margin case must exercise the robustness term (else the comparison above proves little)."""
    logits = logit_cases(4)["margin"].view(4, B, K).transpose(0, 1)
    with_term = ref_macer(logits, LABELS, 0.5, 16.0, 8.0, 16.0)
    without = ref_macer(logits, LABELS, 0.5, 0.0, 8.0, 16.0)
    assert with_term > without


class TwoPassLogits(nn.Module):
    """Stability training calls the model twice (clean, then noisy): return fixed logits in turn."""

    def __init__(self, clean, noisy):
        super().__init__()
        self.clean, self.noisy = nn.Parameter(clean.clone()), nn.Parameter(noisy.clone())
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.clean if self.calls % 2 == 1 else self.noisy


@pytest.mark.parametrize("case", CASES)
def test_stability_matches_official_train_stab(case):
    logits = logit_cases(2)[case]
    clean, noisy = logits[:B], logits[B:]
    model = TwoPassLogits(clean, noisy)
    loss = Stability(StabilityParams(lam=2.0), sigma=0.5).loss(model, torch.rand(B, 1, 4, 4), LABELS)
    loss.backward()
    leaves = [t.double().clone().requires_grad_(True) for t in (clean, noisy)]
    expected = ref_stability(*leaves, LABELS, 2.0)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=2e-5, abs=1e-6)
    for ours, theirs in zip((model.clean.grad, model.noisy.grad), leaves, strict=True):
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours.double(), theirs.grad, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("case", CASES)
def test_gaussian_is_cross_entropy_on_one_noisy_copy(case):
    assert_agree(Gaussian(None, sigma=0.5), lambda logits: ref_cross_entropy([logits], LABELS), logit_cases(1)[case])


@pytest.mark.parametrize(
    "method",
    [
        Gaussian(None, 0.5),
        Stability(StabilityParams(), 0.5),
        Macer(MacerParams(m=4), 0.5),
        Macer(MacerParams(m=4, lam=0.0), 0.5),
        SmoothAdv(SmoothAdvParams(m=4), 0.5),
        SmoothAdv(SmoothAdvParams(m=4, lam=1.0), 0.5),
    ]
    + [Consistency(ConsistencyParams(m=2, loss=form), 0.5) for form in ("default", "kl", "mse", "xent")],
    ids=lambda method: f"{method.name}-{getattr(method.params, 'loss', '')}-{getattr(method.params, 'lam', '')}",
)
def test_every_loss_has_finite_gradients_on_saturated_logits(method):
    """Logits of ±1000 (every softmax exactly one-hot in float32, so p̂ has exact zeros and MACER's
    Φ⁻¹(p̃₁) = ∞): the loss may be large but its gradient must be finite."""
    m = getattr(method.params, "m", 1) if method.name != "stability" else 2
    if method.name == "smoothadv":
        method.eps = 0.0
    logits = torch.full((m * B, K), -1000.0)
    logits[:, 0] = 1000.0
    logits.view(m, B, K)[1::2, 2:, 3] = 1000.0 + 1.0  # examples 0, 1: one-hot p̂; the others: copies disagree
    if method.name == "stability":
        model = TwoPassLogits(logits[:B], logits[B:])
        method.loss(model, torch.rand(B, 1, 4, 4), LABELS).backward()
        grads = [model.clean.grad, model.noisy.grad]
    else:
        model = FixedLogits(logits)
        method.loss(model, torch.rand(B, 1, 4, 4), LABELS).backward()
        grads = [model.logits.grad]
    assert all(torch.isfinite(g).all() for g in grads)


def test_saturated_macer_margin_is_what_broke_training():
    """With β = 16 a margin of 1.2 on every copy gives p̃₁ = 1 in float32: the official code drops the
    input before Φ⁻¹ reaches backprop; evaluating Φ⁻¹ on it first yields ∞ (and 0·∞ = NaN gradients)."""
    logits = torch.zeros(K)
    logits[0] = 1.2
    tempered = F.softmax(16 * logits, 0)
    assert tempered[0].item() == 1.0 and math.isinf(torch.special.ndtri(tempered[0]).item())
