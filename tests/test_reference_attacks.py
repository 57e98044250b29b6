"""The SmoothAdv attacks against the official algorithms, step by step.

The references below are the official attacks written out again in plain torch, in the official code's
layout (inputs and noise repeated example-major, ``[B·m, ...]``), with the official optimizer and
scheduler objects: Salman et al.'s ``PGD_L2`` and ``DDN`` (``code/attacks.py`` of Hadisalman/
smoothing-adversarial, copied to ``third_party/smoothadv.py`` of jh-jeong/smoothing-consistency and used by
``train_salman.py``) and Jeong & Shin's ``SmoothAdv_PGD`` (``train_consistency.py``). rsbench's attacks
(copy-major noise) run on the same inputs, noise, labels and random seed; the adversarial examples must
agree to float32 round-off, on a plain LeNet, on a confident one (tiny and clamped-to-zero gradients)
and on a constant one (zero gradient everywhere: Salman's random full step).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim

from rsbench_plugins.lenet import LeNet
from rsbench_plugins.smoothadv import consistency_pgd, salman_ddn, salman_pgd

B = 6


def requires_grad_(model: nn.Module, flag: bool) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(flag)


# --- the official attacks, written out ----------------------------------------------------------------------


def ref_salman_pgd(model, inputs, labels, noise, m, max_norm, steps):
    """``PGD_L2._attack_mutlinoise`` (m > 1) / ``_attack`` (m = 1); ``inputs``, ``noise``: [B·m, ...]."""
    batch_size = labels.shape[0]
    delta = torch.zeros((len(labels), *inputs.shape[1:]), requires_grad=True)
    optimizer = optim.SGD([delta], lr=max_norm / steps * 2)
    for _ in range(steps):
        adv = inputs + delta.repeat(1, m, 1, 1).view_as(inputs) + noise
        logits = model(adv)
        if m == 1:
            ce_loss = F.cross_entropy(logits, labels, reduction="sum")
        else:
            average_softmax = F.softmax(logits, dim=1).reshape(-1, m, logits.shape[-1]).mean(1)
            ce_loss = F.nll_loss(torch.log(average_softmax.clamp(min=1e-20)), labels)
        optimizer.zero_grad()
        (-ce_loss).backward()
        grad_norms = delta.grad.view(batch_size, -1).norm(p=2, dim=1)
        delta.grad.div_(grad_norms.view(-1, 1, 1, 1))
        if (grad_norms == 0).any():
            delta.grad[grad_norms == 0] = torch.randn_like(delta.grad[grad_norms == 0])
        optimizer.step()
        delta.data.add_(inputs[::m])
        delta.data.clamp_(0, 1).sub_(inputs[::m])
        delta.data.renorm_(p=2, dim=0, maxnorm=max_norm)
    return (inputs + delta.repeat(1, m, 1, 1).view_as(inputs))[::m].detach()


def ref_consistency_pgd(model, inputs, labels, noises, max_norm, steps):
    """``SmoothAdv_PGD.attack`` of ``train_consistency.py``; ``noises``: a list of m [B, ...] draws."""
    adv = inputs.detach()
    alpha = max_norm / steps * 2
    for _ in range(steps):
        adv.requires_grad_()
        logits = [model(adv + noise) for noise in noises]
        avg_softmax = sum(F.softmax(logit, dim=1) for logit in logits) / len(noises)
        loss = F.nll_loss(torch.log(avg_softmax.clamp(min=1e-20)), labels)
        grad = torch.autograd.grad(loss, [adv])[0]
        grad_norm = torch.norm(grad.reshape(grad.size(0), -1), dim=1).view(-1, 1, 1, 1)
        adv = adv + alpha * (grad / (grad_norm + 1e-8))
        eta_x_adv = (adv - inputs).renorm(p=2, dim=0, maxnorm=max_norm)
        adv = torch.clamp(inputs + eta_x_adv, 0, 1).detach()
    return adv


def ref_salman_ddn(model, inputs, labels, noise, m, max_norm, steps, init_norm, gamma=0.05, levels=256):
    """``DDN._attack_mutlinoise`` (quantize=True); ``inputs``, ``noise``: [B·m, ...]."""
    batch_size = labels.shape[0]
    clean = inputs[::m]
    delta = torch.zeros((len(labels), *inputs.shape[1:]), requires_grad=True)
    norm = torch.full((batch_size,), init_norm, dtype=torch.float)
    worst_norm = torch.max(clean, 1 - clean).view(batch_size, -1).norm(p=2, dim=1)
    optimizer = optim.SGD([delta], lr=1)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.01)
    best_l2, best_delta = worst_norm.clone(), torch.zeros_like(clean)
    for _ in range(steps):
        with warnings.catch_warnings():  # the official order: scheduler.step() before optimizer.step()
            warnings.simplefilter("ignore")
            scheduler.step()
        l2 = delta.data.view(batch_size, -1).norm(p=2, dim=1)
        logits = model(inputs + delta.repeat(1, m, 1, 1).view_as(inputs) + noise)
        pred_labels = logits.argmax(1).reshape(-1, m).mode(1)[0]
        if m == 1:
            ce_loss = F.cross_entropy(logits, labels, reduction="sum")
        else:
            average_softmax = F.softmax(logits, dim=1).reshape(-1, m, logits.shape[-1]).mean(1)
            ce_loss = F.nll_loss(torch.log(average_softmax.clamp(min=1e-20)), labels)
        is_adv = pred_labels != labels
        is_both = is_adv * (l2 < best_l2)
        best_l2[is_both] = l2[is_both]
        best_delta[is_both] = delta.data[is_both]
        optimizer.zero_grad()
        (-ce_loss).backward()
        grad_norms = delta.grad.view(batch_size, -1).norm(p=2, dim=1)
        delta.grad.div_(grad_norms.view(-1, 1, 1, 1))
        if (grad_norms == 0).any():
            delta.grad[grad_norms == 0] = torch.randn_like(delta.grad[grad_norms == 0])
        optimizer.step()
        norm.mul_(1 - (2 * is_adv.float() - 1) * gamma)
        norm = torch.min(norm, worst_norm)
        delta.data.mul_((norm / delta.data.view(batch_size, -1).norm(2, 1)).view(-1, 1, 1, 1))
        delta.data.add_(clean)
        delta.data.mul_(levels - 1).round_().div_(levels - 1)
        delta.data.clamp_(0, 1).sub_(clean)
    best_delta.renorm_(p=2, dim=0, maxnorm=max_norm)
    best_delta.mul_(levels - 1).round_().div_(levels - 1)
    return clean + best_delta


# --- fixed inputs ------------------------------------------------------------------------------------------

CONFIDENT_LABELS = torch.tensor([0, 1, 0, 3, 0, 1])


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(11)
    model = LeNet()
    with torch.no_grad():
        if kind == "confident":  # class 0 at p ≈ 1 − 1e-7 (tiny gradients); class 1 at p̂ < 1e-20 (clamped: zero)
            model.fc2.bias[0] += 18.0
            model.fc2.bias[1] -= 60.0
        elif kind == "constant":  # the same logits for every input: the gradient is exactly zero
            for parameter in model.parameters():
                parameter.zero_()
    requires_grad_(model, False)
    return model.eval()


def make_batch(model: nn.Module, m: int, sigma: float = 0.5, confident: bool = False):
    generator = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (B, 1, 28, 28), generator=generator).float() / 255
    noise = sigma * torch.randn(m * B, 1, 28, 28, generator=generator)  # copy-major: row i·B + b
    with torch.no_grad():
        predicted = model(x).argmax(1)
    y = torch.where(torch.arange(B) % 2 == 0, predicted, (predicted + 1) % 10)  # half right, half wrong
    return x, (CONFIDENT_LABELS if confident else y), noise


def example_major(x: torch.Tensor, noise: torch.Tensor, m: int):
    """The official layout: ``inputs.repeat((1, m, 1, 1)).reshape(-1, ...)`` and the matching noise."""
    inputs = x.repeat((1, m, 1, 1)).reshape(-1, *x.shape[1:])
    noise = noise.view(m, B, *x.shape[1:]).transpose(0, 1).reshape(-1, *x.shape[1:])
    return inputs, noise


MODELS = ["plain", "confident", "constant"]


def assert_same_perturbation(ours, theirs, x, eps, slack=1e-4):
    assert ((ours - x).flatten(1).norm(dim=1) <= eps + slack).all()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize(("m", "eps", "steps"), [(4, 255 / 256, 10), (1, 0.5, 5), (2, 2.0, 4)])
def test_salman_pgd_matches_official_pgd_l2(kind, m, eps, steps):
    model = make_model(kind)
    x, y, noise = make_batch(model, m, confident=kind == "confident")
    inputs, official_noise = example_major(x, noise, m)
    torch.manual_seed(3)
    theirs = ref_salman_pgd(model, inputs, y, official_noise, m, eps, steps)
    torch.manual_seed(3)
    ours = salman_pgd(model, x, y, noise, eps, steps)
    assert_same_perturbation(ours, theirs, x, eps)
    if kind == "constant":  # the random full step: δ reaches the ε-ball's surface (clamping aside)
        assert ((ours - x).flatten(1).norm(dim=1) > 0.5 * eps).all()


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize(("m", "eps", "steps"), [(4, 255 / 256, 10), (2, 2.0, 4)])
def test_consistency_pgd_matches_official_smoothadv_pgd(kind, m, eps, steps):
    model = make_model(kind)
    x, y, noise = make_batch(model, m, confident=kind == "confident")
    theirs = ref_consistency_pgd(model, x, y, list(noise.view(m, B, 1, 28, 28)), eps, steps)
    ours = consistency_pgd(model, x, y, noise, eps, steps)
    assert_same_perturbation(ours, theirs, x, eps)
    if kind == "constant":  # a zero gradient does not move
        assert torch.equal(ours, x)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize(
    ("m", "eps", "steps", "init_norm"), [(4, 255 / 256, 10, 255 / 256), (1, 1.0, 6, 0.5), (2, 2.0, 8, 1.0)]
)
def test_salman_ddn_matches_official_ddn(kind, m, eps, steps, init_norm):
    model = make_model(kind)
    x, y, noise = make_batch(model, m, confident=kind == "confident")
    inputs, official_noise = example_major(x, noise, m)
    torch.manual_seed(4)
    theirs = ref_salman_ddn(model, inputs, y, official_noise, m, eps, steps, init_norm)
    torch.manual_seed(4)
    ours = salman_ddn(model, x, y, noise, eps, steps, init_norm=init_norm)
    assert_same_perturbation(ours, theirs, x, eps, slack=28 * 0.5 / 255)  # quantized after the projection


def test_ddn_returns_the_smallest_adversarial_perturbation_found():
    """Under the confident model the wrongly labelled inputs are adversarial at δ = 0 (the smallest δ seen)
    and the others are never made adversarial (δ = 0 too), whatever the last iterate is."""
    model = make_model("confident")
    x, y, noise = make_batch(model, 4, confident=True)
    assert torch.equal(salman_ddn(model, x, y, noise, 255 / 256, 10, init_norm=255 / 256), x)


def test_the_two_pgds_differ_where_the_issue_says():
    """Jeong & Shin's attack normalizes a batch-mean gradient with ‖g‖ + 1e-8, so confident inputs barely
    move and clamped ones not at all; Salman's moves every input by full steps (random where g = 0)."""
    model = make_model("confident")
    x, y, noise = make_batch(model, 4, confident=True)
    torch.manual_seed(0)
    salman = (salman_pgd(model, x, y, noise, 255 / 256, 10) - x).flatten(1).norm(dim=1)
    consistency = (consistency_pgd(model, x, y, noise, 255 / 256, 10) - x).flatten(1).norm(dim=1)
    assert (salman > 0.9).all()
    assert (consistency[y == 0] < 0.2).all() and (consistency[y == 1] == 0).all()
