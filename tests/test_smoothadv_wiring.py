"""SmoothAdv's wiring: one step through the method's own ``split_batch`` and ``loss`` against the official
training steps written out in plain torch, with the official attacks of ``test_reference_attacks``.

- λ = 0: ``train()`` of ``train_salman.py`` (Salman et al., as copied to jh-jeong/smoothing-consistency):
  inputs and noise example-major [B·m], ε and DDN's initial norm both warmed up to min(ε, (epoch+1)·ε/warmup),
  the attack (``PGD_L2`` or ``DDN``) in eval mode with frozen parameters, then the cross-entropy over the m
  noisy adversarial copies with the attack's noise.
- λ > 0: ``train()`` of ``train_consistency.py --adv-training``: m noise draws, ``SmoothAdv_PGD``, then
  cross-entropy + ``consistency_loss`` (its ``third_party/consistency.py``) on the adversarial copies.

rsbench draws its m·B noise vectors in one call, copy-major (row i·B + b); the official code draws the same
distribution in another layout, so the reference is handed those draws, re-laid out: the test asserts that the
loss uses exactly the attack's noise and nothing drawn after it. Loss, gradients, final weights, batch-norm
statistics and the model's mode at each forward pass must agree. Each test names the wrong wiring it catches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from step_nets import KINDS, assert_same_gradients, batch, requires_grad_, state, step_net, twin
from test_reference_attacks import ref_consistency_pgd, ref_salman_ddn, ref_salman_pgd

import rsbench_plugins.smoothadv as smoothadv_module
from rsbench.plugins import get_dataset
from rsbench_plugins.smoothadv import SmoothAdv, SmoothAdvParams

SIGMA = 0.5
LR = 0.05


def official_consistency_loss(logits, lbd, eta):
    m = len(logits)
    avg_softmax = sum(F.softmax(logit, dim=1) for logit in logits) / m
    loss_kl = sum(F.kl_div(F.log_softmax(logit, dim=1), avg_softmax, reduction="none").sum(1) for logit in logits) / m
    loss_ent = (-avg_softmax * torch.log(avg_softmax.clamp(min=1e-20))).sum(1)
    return (lbd * loss_kl + eta * loss_ent).mean()


def official_step(model, inputs, targets, p: SmoothAdvParams, epoch: int):
    """One mini-batch of ``train_salman.py`` (λ = 0) or ``train_consistency.py --adv-training`` (λ > 0); the
    noise is drawn as rsbench draws it (one copy-major [m·B] call) and re-laid out for the official code."""
    m, batch_size, shape = p.m, len(inputs), inputs.shape[1:]
    max_norm = np.min([p.eps, (epoch + 1) * p.eps / p.warmup])
    draws = SIGMA * torch.randn((m * batch_size, *shape))  # copy-major
    requires_grad_(model, False)
    model.eval()
    if p.lam == 0:
        repeated = inputs.repeat((1, m, 1, 1)).reshape(-1, *shape)
        noise = draws.view(m, batch_size, *shape).transpose(0, 1).reshape(-1, *shape)  # example-major
        if p.attack == "pgd":
            adversarial = ref_salman_pgd(model, repeated, targets, noise, m, max_norm, p.steps)
        else:
            adversarial = ref_salman_ddn(model, repeated, targets, noise, m, max_norm, p.steps, float(max_norm))
        model.train()
        requires_grad_(model, True)
        repeated = adversarial.repeat((1, m, 1, 1)).reshape(-1, *shape)
        outputs = model(repeated + noise)
        return F.cross_entropy(outputs, targets.unsqueeze(1).repeat(1, m).reshape(-1))
    noises = list(draws.view(m, batch_size, *shape).unbind(0))
    adversarial = ref_consistency_pgd(model, inputs, targets, noises, max_norm, p.steps)
    model.train()
    requires_grad_(model, True)
    logits = model(torch.cat([adversarial + noise for noise in noises], dim=0))
    loss_xent = F.cross_entropy(logits, targets.repeat(m))
    return loss_xent + official_consistency_loss(torch.chunk(logits, m, dim=0), p.lam, p.eta)


def run(model, x, y, p, epoch, seed, step):
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    losses = []
    for chunk_x, chunk_y in step.chunks(x, y):
        loss = step(model, chunk_x, chunk_y)
        optimizer.zero_grad()
        loss.backward()
        losses.append((loss.detach(), [q.grad.clone() for q in model.parameters()]))
        optimizer.step()
    return losses


class Official:
    def __init__(self, p, epoch):
        self.p, self.epoch = p, epoch

    def chunks(self, x, y):
        size = len(x) // self.p.m
        return [(x[i * size : (i + 1) * size], y[i * size : (i + 1) * size]) for i in range(self.p.m)] if size else []

    def __call__(self, model, x, y):
        return official_step(model, x, y, self.p, self.epoch)


class Rsbench:
    def __init__(self, p, epoch):
        self.method = SmoothAdv(p, SIGMA)
        self.method.start_epoch(epoch, get_dataset("mnist").schedule)

    def chunks(self, x, y):
        return self.method.split_batch(x, y)

    def __call__(self, model, x, y):
        return self.method.loss(model, x, y)


def compare(kind, p, epoch, size=8, seed=7, predicted_labels=False, model_seed=0):
    model = step_net(kind, model_seed)
    x, y = batch(size)
    if predicted_labels:  # labels the model gets right on clean inputs: DDN must search for adversarial points
        with torch.no_grad():
            y = twin(model).eval()(x).argmax(1)
    reference_model, rsbench_model = twin(model), twin(model)
    expected = run(reference_model, x, y, p, epoch, seed, Official(p, epoch))
    actual = run(rsbench_model, x, y, p, epoch, seed, Rsbench(p, epoch))
    assert len(actual) == len(expected)
    for (loss, grads), (ref_loss, ref_grads) in zip(actual, expected, strict=True):
        torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
        assert_same_gradients(grads, ref_grads)
    after, ref_after = state(rsbench_model), state(reference_model)
    for key in ref_after:  # batch-norm running statistics: an attack in train mode would move them
        torch.testing.assert_close(after[key], ref_after[key], rtol=1e-4, atol=1e-5, msg=key)
    assert rsbench_model.modes == reference_model.modes
    return actual


@pytest.mark.parametrize("kind", KINDS)
def test_smoothadv_pgd_step_matches_train_salman(kind):
    """Catches: training on the clean input; λ > 0's PGD at λ = 0; fresh noise in the loss; attack in train mode."""
    compare(kind, SmoothAdvParams(attack="pgd", eps=0.6, steps=3, m=2, warmup=10), epoch=12)


@pytest.mark.parametrize("kind", ["plain", "all_wrong"])
def test_smoothadv_consistency_step_matches_train_consistency(kind):
    """Catches: Salman's PGD at λ > 0; the attack's output or noise unused; attack in train mode. (Not on the
    saturated model: there the official ``F.kl_div`` to a p̂ with exact zeros has NaN gradients, where rsbench
    takes the limit 0·log 0 = 0; ``test_reference_losses`` checks that limit.)"""
    compare(kind, SmoothAdvParams(attack="pgd", eps=0.6, steps=3, m=2, warmup=10, lam=2.0, eta=0.5), epoch=12)


@pytest.mark.parametrize("epoch", [0, 1, 3, 4])
def test_ddn_step_starts_from_the_warmed_up_eps(epoch):
    """Catches: DDN started from norm 1 (or from the full ε) instead of the warmed-up ε: ε = 0.8·(epoch+1)/4,
    on labels the model first gets right, with a model whose predictions vary over the batch (else DDN stops at
    δ = 0, or finds nothing, whatever its start)."""
    p = SmoothAdvParams(attack="ddn", eps=0.8, steps=4, m=2, warmup=4)
    compare("plain", p, epoch=epoch, predicted_labels=True, model_seed=5)


@pytest.mark.parametrize("epoch", [0, 9])
def test_pgd_warmup_boundaries(epoch):
    compare("plain", SmoothAdvParams(attack="pgd", eps=1.0, steps=2, m=2, warmup=10), epoch=epoch)


def test_batch_not_divisible_by_m():
    assert len(compare("plain", SmoothAdvParams(attack="pgd", eps=0.5, steps=2, m=3), epoch=10, size=10)) == 3


def test_the_attack_runs_in_eval_mode_with_frozen_parameters(monkeypatch):
    """Catches an attack run in train mode (batch-norm statistics updated by the attack) or with live gradients."""
    seen = []
    attack = smoothadv_module.salman_pgd

    def spying_attack(model, *args, **kwargs):
        seen.append((model.training, any(p.requires_grad for p in model.parameters())))
        return attack(model, *args, **kwargs)

    monkeypatch.setattr(smoothadv_module, "salman_pgd", spying_attack)
    model = step_net("plain")
    method = SmoothAdv(SmoothAdvParams(eps=0.5, steps=2, m=2), SIGMA)
    model.train()
    method.loss(model, *batch(4))
    assert seen == [(False, False)]
    assert model.training and all(p.requires_grad for p in model.parameters())
