"""SmoothMix's training step against the official one, written out again in plain torch.

The reference is ``train()`` and ``SmoothMix_PGD.attack`` of jh-jeong/smoothmix ``code/train.py``, step for
step (the m noise draws as m ``randn_like`` calls, the attack in eval mode with frozen parameters, the
clean side replaced by the ``mix_step`` point, the mixup ratio drawn after the attack, the target not
detached, the warm-up factor on the one-step radius and on η), run on each of the ⌊B/m⌋-example chunks of
a loader batch with an SGD step after each. rsbench's method runs the engine's loop (``split_batch``,
``loss``, SGD) from the same weights, batch and random state; losses, gradients, the attack's two points,
the final weights and batch-norm statistics, and the model's mode at every forward pass must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from step_nets import CLASSES, KINDS, assert_same_gradients, batch, requires_grad_, state, step_net, twin

import rsbench_plugins.smoothmix as smoothmix_module
from rsbench.plugins import get_dataset
from rsbench_plugins.smoothmix import SmoothMix, SmoothMixParams

SIGMA = 0.5
LR = 0.05


# --- the official step, written out --------------------------------------------------------------------------


def official_attack(model, inputs, labels, noises, steps, alpha, mix_step, maxnorm, maxnorm_s):
    def _batch_l2norm(x):
        return torch.norm(x.reshape(x.size(0), -1), dim=1)

    def _project(x, x0, maxnorm=None):
        if maxnorm is not None:
            eta = (x - x0).renorm(p=2, dim=0, maxnorm=maxnorm)
            x = x0 + eta
        return torch.clamp(x, 0, 1).detach()

    adv = inputs.detach()
    init = inputs.detach()
    for i in range(steps):
        if i == mix_step:
            init = adv.detach()
        adv.requires_grad_()
        softmax = [F.softmax(model(adv + noise), dim=1) for noise in noises]
        avg_softmax = sum(softmax) / len(noises)
        logsoftmax = torch.log(avg_softmax.clamp(min=1e-20))
        loss = F.nll_loss(logsoftmax, labels, reduction="sum")
        grad = torch.autograd.grad(loss, [adv])[0]
        grad = grad / (_batch_l2norm(grad).view(-1, 1, 1, 1) + 1e-8)
        adv = adv + alpha * grad
        adv = _project(adv, inputs, maxnorm)
    init = _project(init, inputs, maxnorm_s)
    return init, adv


def official_step(model, inputs, targets, m, p: SmoothMixParams, epoch: int):
    """One ``train()`` mini-batch of the official code; returns (loss, init, adv)."""
    warmup_v = np.min([1.0, (epoch + 1) / p.warmup])
    maxnorm_s = warmup_v * (p.alpha * p.mix_step)
    noises = [torch.randn_like(inputs) * SIGMA for _ in range(m)]
    requires_grad_(model, False)
    model.eval()
    init, adv = official_attack(
        model, inputs, targets, noises, p.steps, p.alpha, p.mix_step, p.maxnorm or None, maxnorm_s
    )
    model.train()
    requires_grad_(model, True)
    inputs = init
    logits_c = model(torch.cat([inputs + noise for noise in noises], dim=0))
    targets_c = targets.repeat(m)
    logits_c_chunk = torch.chunk(logits_c, m, dim=0)
    clean_avg_sm = sum(F.softmax(logit, dim=1) for logit in logits_c_chunk) / m
    loss_xent = F.cross_entropy(logits_c, targets_c, reduction="none")
    lam = torch.rand(inputs.size(0)) / 2
    in_mix = (1 - lam).view(-1, 1, 1, 1) * inputs + lam.view(-1, 1, 1, 1) * adv
    targets_mix = (1 - lam).view(-1, 1) * clean_avg_sm + lam.view(-1, 1) * torch.eye(CLASSES).mean(0, keepdim=True)
    in_mix_c = torch.cat([in_mix + noise for noise in noises], dim=0)
    logits_mix_c = F.log_softmax(model(in_mix_c), dim=1)
    _, top1_idx = torch.topk(clean_avg_sm, 1)
    ind_correct = (top1_idx[:, 0] == targets).float().repeat(m)
    loss_mixup = F.kl_div(logits_mix_c, targets_mix.repeat(m, 1), reduction="none").sum(1)
    loss = loss_xent.mean() + p.eta * warmup_v * (ind_correct * loss_mixup).mean()
    return loss, init, adv


def run_official(model, x, y, p: SmoothMixParams, epoch: int, seed: int):
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    steps = []
    size = len(x) // p.m
    for i in range(p.m):
        inputs, targets = x[i * size : (i + 1) * size], y[i * size : (i + 1) * size]
        if len(inputs) == 0:
            continue
        loss, init, adv = official_step(model, inputs, targets, p.m, p, epoch)
        optimizer.zero_grad()
        loss.backward()
        steps.append((loss.detach(), [q.grad.clone() for q in model.parameters()], init, adv))
        optimizer.step()
    return steps


# --- rsbench's method through the engine's loop ----------------------------------------------------------------


def run_rsbench(model, x, y, p: SmoothMixParams, epoch: int, seed: int, monkeypatch):
    points = []
    attack = smoothmix_module.smoothmix_attack

    def recording_attack(*args, **kwargs):
        points.append(attack(*args, **kwargs))
        return points[-1]

    monkeypatch.setattr(smoothmix_module, "smoothmix_attack", recording_attack)
    method = SmoothMix(p, SIGMA)
    method.start_epoch(epoch, get_dataset("mnist").schedule)
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    steps = []
    for chunk_x, chunk_y in method.split_batch(x, y):
        loss = method.loss(model, chunk_x, chunk_y)
        optimizer.zero_grad()
        loss.backward()
        steps.append((loss.detach(), [q.grad.clone() for q in model.parameters()], *points[len(steps)]))
        optimizer.step()
    return steps


def compare(model, x, y, p, epoch, monkeypatch, seed=3):
    reference_model, rsbench_model = twin(model), twin(model)
    expected = run_official(reference_model, x, y, p, epoch, seed)
    actual = run_rsbench(rsbench_model, x, y, p, epoch, seed, monkeypatch)
    assert len(actual) == len(expected) == (p.m if len(x) >= p.m else 0)
    for (loss, grads, init, adv), (ref_loss, ref_grads, ref_init, ref_adv) in zip(actual, expected, strict=True):
        torch.testing.assert_close(init, ref_init)
        torch.testing.assert_close(adv, ref_adv)
        torch.testing.assert_close(loss, ref_loss)
        assert_same_gradients(grads, ref_grads)
    after, ref_after = state(rsbench_model), state(reference_model)
    for key in ref_after:
        torch.testing.assert_close(after[key], ref_after[key], rtol=1e-4, atol=1e-5, msg=key)
    assert rsbench_model.modes == reference_model.modes  # eval for every attack pass, train for the loss
    return actual


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mix_step", [0, 1])
def test_one_step_matches_the_official_step(kind, mix_step, monkeypatch):
    x, y = batch(8)
    p = SmoothMixParams(m=2, steps=3, alpha=0.7, eta=5.0, mix_step=mix_step, warmup=10)
    steps = compare(step_net(kind), x, y, p, epoch=20, monkeypatch=monkeypatch)
    if kind == "plain":
        loss, _, init, adv = steps[0]
        assert (adv - init).abs().max() > 0.05  # the attack moved, so the comparison saw its output
    if kind == "all_wrong":  # no example is classified correctly: the mixup term is off, CE alone remains
        assert all(torch.isfinite(loss) for loss, *_ in steps)


def test_batch_not_divisible_by_m_drops_the_remainder(monkeypatch):
    x, y = batch(11)
    p = SmoothMixParams(m=4, steps=2, alpha=1.0, eta=1.0, mix_step=1)
    steps = compare(step_net("plain"), x, y, p, epoch=3, monkeypatch=monkeypatch)
    assert [len(init) for _, _, init, _ in steps] == [2, 2, 2, 2]
    compare(step_net("plain"), *batch(3), p, epoch=3, monkeypatch=monkeypatch)  # fewer than m: no step


@pytest.mark.parametrize("epoch", [0, 8, 9, 10])
def test_warmup_boundaries_match_the_official_schedule(epoch, monkeypatch):
    """w = min(1, (epoch+1)/10): 0.1, 0.9, 1, 1 scale η and the one-step adversary's radius α·mix_step."""
    p = SmoothMixParams(m=2, steps=3, alpha=1.5, eta=5.0, mix_step=1, warmup=10)
    steps = compare(step_net("plain"), *batch(6), p, epoch=epoch, monkeypatch=monkeypatch)
    x = batch(6)[0][:3]
    radius = min(1.0, (epoch + 1) / 10) * 1.5
    assert ((steps[0][2] - x).flatten(1).norm(dim=1) <= radius + 1e-5).all()


def test_bounded_attack_matches_the_official_maxnorm(monkeypatch):
    p = SmoothMixParams(m=2, steps=4, alpha=1.0, eta=1.0, mix_step=0, maxnorm=0.5)
    steps = compare(step_net("plain"), *batch(6), p, epoch=12, monkeypatch=monkeypatch)
    x = batch(6)[0][:3]
    assert ((steps[0][3] - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()


def test_presets_are_the_official_experiments():
    presets = {preset.name: preset for preset in SmoothMix.presets}
    assert presets["mnist-smoothmix-eta1-0.50"].params == {
        "m": 4, "steps": 4, "alpha": 1.0, "eta": 1.0, "mix_step": 0, "warmup": 10
    }  # fmt: skip
    assert presets["mnist-smoothmix-onestep-eta5-1.00"].params["steps"] == 8
    assert presets["mnist-smoothmix-eta5-0.25"].params["steps"] == 2
    assert presets["cifar10-smoothmix-0.25"].params == {
        "m": 2, "steps": 4, "alpha": 0.5, "eta": 5.0, "mix_step": 0, "warmup": 10
    }  # fmt: skip
    assert presets["cifar10-smoothmix-onestep-1.00"].params["alpha"] == 2.0
    assert {p.arch for p in presets.values() if p.dataset == "mnist"} == {"lenet"}
    assert {p.arch for p in presets.values() if p.dataset == "cifar10"} == {"cifar_resnet110"}
