"""CAT-RS's training step against the official one, written out again in plain torch, and its reference
soft labels against the official smoothed prediction's definition.

The reference step is ``train()`` and ``KL_PGD.attack`` of alinlab/smoothing-catrs ``code/train_catrs.py``,
step for step: m ``randn_like`` noise draws, a train-mode forward pass on the clean noisy copies, the attack
on the noise in eval mode with frozen parameters (normalized per copy, projected, renormalized to the draws'
mean and root mean square), a train-mode pass on the shifted noise, the sorted per-copy cross-entropies of
the first pass masked by the official ``_tril`` row of K ~ Binomial(m, w) (at least 1, drawn after the
attack) and divided by m, and λ·max KL when K = m; the ε doubling from epoch ``--warmup``. It runs on every
⌊B/m⌋-example chunk with an SGD step after each; rsbench's method runs the engine's loop from the same
weights, batch, soft labels and random state. Losses, gradients, the shifted noise, final weights and
batch-norm statistics and the model's mode at each forward pass must agree.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from step_nets import CLASSES, KINDS, SIDE, assert_same_gradients, batch, requires_grad_, state, step_net, twin
from torch import nn
from torch.distributions.binomial import Binomial

import rsbench_plugins.catrs as catrs_module
from rsbench.checkpoint import atomic_save
from rsbench.data import InMemoryDataset
from rsbench.errors import RsbenchError
from rsbench.plugins import get_dataset
from rsbench_plugins.catrs import Catrs, CatrsParams, reference_soft_labels

SIGMA = 0.5
LR = 0.05


def soft_labels_for(size: int, seed: int = 2) -> torch.Tensor:
    """Rows of a smoothed prediction over ``CLASSES`` (shares of 100 draws), some with exact zeros."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 40, (size, CLASSES), generator=generator).float()
    counts[::2, 1] = 0.0
    counts[::3, 0] = 300.0
    return counts / counts.sum(1, keepdim=True)


# --- the official step, written out --------------------------------------------------------------------------


def official_attack(model, inputs, labels, noises, steps, max_norm):
    def _batch_l2norm(x):
        return torch.norm(x.reshape(x.size(0), -1), dim=1)

    m = len(noises)
    inputs_r = inputs.repeat(m, 1, 1, 1)
    noise0 = torch.cat(noises, dim=0)
    noise = noise0.detach()
    batch_size = inputs_r.size(0)
    mu0 = noise0.view(batch_size, -1).mean(1).view(-1, 1, 1, 1)
    sigma0 = (noise0**2).view(batch_size, -1).mean(1).sqrt().view(-1, 1, 1, 1)
    alpha = max_norm / steps * 2
    for _ in range(steps):
        noise.requires_grad_()
        logits_chunk = torch.chunk(model(inputs_r + noise), m, dim=0)
        loss_kls = [F.kl_div(F.log_softmax(logit, dim=1), labels, reduction="none").sum(1) for logit in logits_chunk]
        loss = (sum(loss_kls) / m).sum()
        grad = torch.autograd.grad(loss, [noise])[0]
        grad = grad / (_batch_l2norm(grad).view(-1, 1, 1, 1) + 1e-8)
        noise = noise + alpha * grad
        eta = (noise - noise0).renorm(p=2, dim=0, maxnorm=max_norm)
        noise = noise0 + eta
        mu = noise.view(batch_size, -1).mean(1).view(-1, 1, 1, 1)
        sigma = (noise**2).view(inputs_r.size(0), -1).mean(1).sqrt().view(-1, 1, 1, 1)
        noise = (noise - mu) / sigma
        noise = (mu0 + noise * sigma0).detach()
    return torch.chunk(noise, m, dim=0)


def official_step(model, inputs, targets, pb, p: CatrsParams, epoch: int):
    m = p.m
    max_norm = p.eps * 2.0 if epoch >= p.warmup else p.eps
    tril = torch.ones(m + 1, m).tril(-1)
    noises = [torch.randn_like(inputs) * SIGMA for _ in range(m)]
    logits0_c = model(torch.cat([inputs + noise0 for noise0 in noises], dim=0))
    logits0_chunk = torch.chunk(logits0_c, m, dim=0)
    n_classes = logits0_c.size(1)
    t_sm = sum(F.one_hot(torch.argmax(logit, dim=1), n_classes) for logit in logits0_chunk) / m
    requires_grad_(model, False)
    model.eval()
    shifted = official_attack(model, inputs, pb, noises, p.steps, max_norm)
    model.train()
    requires_grad_(model, True)
    logits_c = model(torch.cat([inputs + noise for noise in shifted], dim=0))
    loss_xent = torch.cat([F.cross_entropy(logit, targets, reduction="none").view(-1, 1) for logit in logits0_chunk], 1)
    loss_xent, _ = loss_xent.sort()
    w = -F.nll_loss(pb if p.confidence_mask else t_sm, targets, reduction="none")
    accept = Binomial(m, w).sample().long().clamp(min=1)
    mask_fa = accept == m
    loss_xent = (loss_xent * tril[accept]).mean(1)
    loss_kl = [
        F.kl_div(F.log_softmax(logit, dim=1), pb, reduction="none").sum(1, keepdim=True)
        for logit in torch.chunk(logits_c, m, dim=0)
    ]
    loss_klw, _ = torch.cat(loss_kl, dim=1).max(1)
    loss = (loss_xent + p.lam * loss_klw * mask_fa).mean()
    return loss, torch.cat(shifted), accept


def run_official(model, x, y, pb, p, epoch, seed):
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    steps = []
    size = len(x) // p.m
    for i in range(p.m):
        part = slice(i * size, (i + 1) * size)
        if size == 0:
            continue
        loss, shifted, accept = official_step(model, x[part], y[part], pb[part], p, epoch)
        optimizer.zero_grad()
        loss.backward()
        steps.append((loss.detach(), [q.grad.clone() for q in model.parameters()], shifted, accept))
        optimizer.step()
    return steps


# --- rsbench's method through the engine's loop ----------------------------------------------------------------


def run_rsbench(model, x, y, pb, p, epoch, seed, monkeypatch):
    shifted_noise, accepted = [], []
    attack, binomial = catrs_module.catrs_attack, torch.distributions.Binomial

    def recording_attack(*args, **kwargs):
        shifted_noise.append(torch.cat(attack(*args, **kwargs)))
        return list(torch.chunk(shifted_noise[-1], p.m, dim=0))

    class RecordingBinomial(binomial):  # type: ignore[misc, valid-type]
        def sample(self, *args, **kwargs):
            accepted.append(super().sample(*args, **kwargs))
            return accepted[-1]

    monkeypatch.setattr(catrs_module, "catrs_attack", recording_attack)
    monkeypatch.setattr(torch.distributions, "Binomial", RecordingBinomial)
    method = Catrs(p, SIGMA)
    method.soft_labels = pb
    method.start_epoch(epoch, get_dataset("mnist").schedule)
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    steps = []
    indexed = torch.stack([y, torch.arange(len(y))], dim=1)  # what the engine passes: (label, index)
    for chunk_x, chunk_y in method.split_batch(x, indexed):
        loss = method.loss(model, chunk_x, chunk_y)
        optimizer.zero_grad()
        loss.backward()
        i = len(steps)
        steps.append((loss.detach(), [q.grad.clone() for q in model.parameters()], shifted_noise[i], accepted[i]))
        optimizer.step()
    return steps


def compare(model, x, y, p, epoch, monkeypatch, pb=None, seed=5):
    pb = soft_labels_for(len(x)) if pb is None else pb
    reference_model, rsbench_model = twin(model), twin(model)
    expected = run_official(reference_model, x, y, pb, p, epoch, seed)
    actual = run_rsbench(rsbench_model, x, y, pb, p, epoch, seed, monkeypatch)
    assert len(actual) == len(expected) == (p.m if len(x) >= p.m else 0)
    for (loss, grads, shifted, accept), (ref_loss, ref_grads, ref_shifted, ref_accept) in zip(
        actual, expected, strict=True
    ):
        torch.testing.assert_close(shifted, ref_shifted, rtol=1e-4, atol=1e-5)
        assert torch.equal(accept.long().clamp(min=1), ref_accept)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
        assert_same_gradients(grads, ref_grads)
    after, ref_after = state(rsbench_model), state(reference_model)
    for key in ref_after:
        torch.testing.assert_close(after[key], ref_after[key], rtol=1e-4, atol=1e-5, msg=key)
    assert rsbench_model.modes == reference_model.modes
    return actual


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("confidence_mask", [False, True])
def test_one_step_matches_the_official_step(kind, confidence_mask, monkeypatch):
    x, y = batch(12)
    p = CatrsParams(m=3, eps=0.8, steps=3, lam=2.0, confidence_mask=confidence_mask)
    steps = compare(step_net(kind), x, y, p, epoch=0, monkeypatch=monkeypatch)
    accepted = torch.cat([accept for *_, accept in steps])
    if kind == "all_wrong" and not confidence_mask:
        assert (accepted == 0).all()  # confidence 0: one copy kept (K raised to 1), no KL term


def test_the_kl_term_is_on_where_all_copies_are_kept(monkeypatch):
    """A model right on every copy keeps K = m: the worst-case KL term enters (and the attack matters)."""
    model = step_net("plain")
    with torch.no_grad():
        model.head.bias[0] = 50.0
    x, y = batch(8)
    y = torch.zeros_like(y)
    steps = compare(model, x, y, CatrsParams(m=2, eps=1.0, steps=2, lam=1.0), epoch=0, monkeypatch=monkeypatch)
    assert all((accept == 2).all() for *_, accept in steps)


def test_batch_not_divisible_by_m_drops_the_remainder(monkeypatch):
    p = CatrsParams(m=4, eps=1.0, steps=2, lam=1.0)
    steps = compare(step_net("plain"), *batch(11), p, epoch=0, monkeypatch=monkeypatch)
    assert [len(shifted) for _, _, shifted, _ in steps] == [4 * 2] * 4


@pytest.mark.parametrize("epoch", [4, 5])
def test_eps_doubles_from_the_warmup_epoch(epoch, monkeypatch):
    p = CatrsParams(m=2, eps=0.3, steps=2, lam=1.0, warmup=5)
    compare(step_net("plain"), *batch(6), p, epoch=epoch, monkeypatch=monkeypatch)
    method = Catrs(p, SIGMA)
    method.start_epoch(epoch, get_dataset("mnist").schedule)
    assert method.eps == (0.6 if epoch >= 5 else 0.3)


# --- reference soft labels -------------------------------------------------------------------------------------


class ThresholdNet(nn.Module):
    """Class 1 where pixel (0, 0) exceeds 0.5, else class 0: on an image whose pixel is 0.5 + d, the share of
    noisy copies (σ) labelled 1 is Φ(d/σ)."""

    def forward(self, x):
        logits = torch.zeros(len(x), CLASSES)
        logits[:, 1] = (x[:, 0, 0, 0] > 0.5).float()
        logits[:, 0] = 0.5
        return logits


def test_soft_labels_are_the_share_of_noisy_votes(tmp_path, monkeypatch):
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(catrs_module, "classifier_from_checkpoint", lambda checkpoint, dataset: (ThresholdNet(), {}))
    checkpoint = tmp_path / "reference.pth.tar"
    atomic_save({"arch": "none", "state_dict": {}}, checkpoint)
    images = torch.full((3, 1, SIDE, SIDE), 128, dtype=torch.uint8)
    images[1, 0, 0, 0], images[2, 0, 0, 0] = 255, 0
    train_set = InMemoryDataset(images, torch.zeros(3, dtype=torch.long))
    labels, sha256, path = reference_soft_labels(checkpoint, "mnist", train_set, 0.25, 4000, torch.device("cpu"))
    normal = torch.distributions.Normal(0.0, 1.0)
    shares = [normal.cdf(torch.tensor((v / 255 - 0.5) / 0.25)).item() for v in (128, 255, 0)]
    for row, share in zip(labels, shares, strict=True):
        assert row.sum().item() == pytest.approx(1.0)
        assert row[1].item() == pytest.approx(share, abs=4 * (share * (1 - share) / 4000) ** 0.5 + 1e-9)
        assert row[2:].sum() == 0
    assert path.parent == tmp_path / "cache" / "soft-labels" and sha256 in path.name
    monkeypatch.setattr(catrs_module, "classifier_from_checkpoint", None)  # a second call must read the cache
    again, _, _ = reference_soft_labels(checkpoint, "mnist", train_set, 0.25, 4000, torch.device("cpu"))
    assert torch.equal(again, labels)


def test_catrs_without_a_reference_is_a_one_line_error():
    method = Catrs(CatrsParams(), 0.5)
    with pytest.raises(RsbenchError, match="reference"):
        method.prepare("mnist", lambda: None, torch.device("cpu"))
    with pytest.raises(RsbenchError, match="does not exist"):
        Catrs(CatrsParams(reference="/nonexistent.pth.tar"), 0.5).prepare("mnist", lambda: [], torch.device("cpu"))
