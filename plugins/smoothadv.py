"""SmoothAdv (Salman et al., NeurIPS 2019), and "SmoothAdv + consistency" (Jeong & Shin 2020) when
``--lam`` > 0, each as the code that produced its published numbers.

For each input, m noise draws δ_i ~ N(0, σ²I) are fixed (σ in [0,1] pixels); an attack on the soft
smoothed classifier p̂(x) = (1/m) Σ_i softmax(f(x + δ_i)) (model in eval mode) finds x̂ with ‖x̂ − x‖₂ ≤ ε
(ε an ℓ2 radius in [0,1] pixels), and the model is trained on (x̂ + δ_i, y) with the same draws:

- λ = 0 (SmoothAdv, the official ``train_salman.py``): the loss is the cross-entropy averaged over the m
  noisy adversarial copies, nothing else. The attack is Salman et al.'s ``PGD_L2`` (``--attack pgd``) or
  ``DDN`` (``--attack ddn``), see :func:`salman_pgd` and :func:`salman_ddn`.
- λ > 0 (SmoothAdv + consistency, the official ``train_consistency.py --adv-training``): cross-entropy
  plus the consistency term (``--loss``, default λ·KL + η·H as ``rsbench_plugins.consistency``), and the
  attack is that repository's ``SmoothAdv_PGD`` (:func:`consistency_pgd`); ``--attack ddn`` uses
  :func:`salman_ddn` (no official counterpart).

The official code states ε in units of 1/256 of the pixel range (its ``255`` is ε = 255/256 ≈ 0.996, its
``512`` is ε = 2.0); divide its value by 256. ε warm-up as there: ε_epoch = min(ε, (epoch+1)·ε/warmup)
for 0-based epochs (DDN also starts its norm at ε_epoch). As there, each loader batch is split into m
chunks of ⌊B/m⌋ examples (remainder dropped), each one SGD step on m noisy copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rsbench import hookimpl
from rsbench.errors import RsbenchError
from rsbench.losses import (
    DISAGREEMENT_FORMS,
    clamped_log_mean_probabilities,
    cross_entropy_of_copies,
    disagreement_penalty,
)
from rsbench.methods import Preset, TrainingMethod, attacking, equal_chunks, repeat_copies
from rsbench.params import hyperparameter


def _batch_shape(x: torch.Tensor) -> tuple[int, ...]:
    return (-1, *([1] * (x.dim() - 1)))


def _copy_logits(model, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """f(x + δ_i) as [m, B, K] for copy-major ``noise`` [m·B, ...]."""
    m = noise.shape[0] // x.shape[0]
    return model(repeat_copies(x, m) + noise).view(m, x.shape[0], -1)


def salman_objective(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The cross-entropy Salman et al.'s attacks ascend: for m = 1 the summed CE of the one noisy copy
    (``_attack``), for m > 1 the batch mean of −log max(p̂_y, 1e-20) (``_attack_mutlinoise``)."""
    if logits.shape[0] == 1:
        return F.cross_entropy(logits[0], y, reduction="sum")
    return F.nll_loss(clamped_log_mean_probabilities(logits), y)


def _unit_or_random(gradient: torch.Tensor) -> torch.Tensor:
    """g/‖g‖₂ per example; a standard normal draw (not normalized) where ‖g‖₂ = 0, as Salman et al."""
    norms = gradient.flatten(1).norm(p=2, dim=1)
    direction = gradient / norms.view(_batch_shape(gradient))
    zero = norms == 0
    if zero.any():
        direction[zero] = torch.randn_like(direction[zero])
    return direction


def salman_pgd(model, x, y, noise, eps: float, steps: int) -> torch.Tensor:
    """Salman et al.'s ``PGD_L2`` on the soft smoothed classifier: T steps of size 2ε/T along the normalized
    gradient of :func:`salman_objective` (a random full step where that gradient is zero), each followed by
    clamping x + δ to [0,1] and then projecting δ onto the ℓ2 ball of radius ε. No random start."""
    delta = torch.zeros_like(x)
    step_size = eps / steps * 2
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = -salman_objective(_copy_logits(model, x + delta, noise), y)
        (gradient,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta - step_size * _unit_or_random(gradient)
            delta = ((delta + x).clamp(0, 1) - x).renorm(p=2, dim=0, maxnorm=eps)
    return (x + delta).detach()


def consistency_pgd(model, x, y, noise, eps: float, steps: int) -> torch.Tensor:
    """Jeong & Shin's ``SmoothAdv_PGD``: T steps of size 2ε/T along g/(‖g‖₂ + 1e-8), g the gradient of the
    batch-mean −log max(p̂_y, 1e-20) (so examples with tiny gradients barely move, and a zero gradient does
    not move), each followed by projecting onto the ℓ2 ball of radius ε and then clamping to [0,1]. The
    normalization amplifies float32 round-off on confident inputs, so p̂ is formed in the official order."""
    draws = noise.view(-1, *x.shape)  # [m, B, ...]: one forward pass per draw, summed in order, as officially
    adversarial = x.detach()
    step_size = eps / steps * 2
    for _ in range(steps):
        adversarial.requires_grad_(True)
        mean_probs = torch.stack([F.softmax(model(adversarial + draw), dim=1) for draw in draws]).mean(0)
        loss = F.nll_loss(mean_probs.clamp(min=1e-20).log(), y)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            norms = gradient.flatten(1).norm(p=2, dim=1).view(_batch_shape(x))
            adversarial = adversarial + step_size * (gradient / (norms + 1e-8))
            delta = (adversarial - x).renorm(p=2, dim=0, maxnorm=eps)
            adversarial = (x + delta).clamp(0, 1)
    return adversarial.detach()


def _quantize(values: torch.Tensor, levels: int) -> torch.Tensor:
    return (values * (levels - 1)).round() / (levels - 1)


def salman_ddn(
    model, x, y, noise, eps: float, steps: int, gamma: float = 0.05, init_norm: float = 1.0, levels: int = 256
) -> torch.Tensor:
    """Salman et al.'s ``DDN`` (Rony et al. 2019) on the soft smoothed classifier. Step i (0-based) moves δ
    by lr_i = 0.01 + 0.99·(1 + cos(π(i+1)/T))/2 along the normalized gradient of :func:`salman_objective`,
    rescales it to a norm that shrinks by (1 − γ) while the majority vote of the m hard predictions is
    wrong and grows by (1 + γ) otherwise (at most ‖max(x, 1 − x)‖₂), and quantizes x + δ to ``levels``.
    Returns x + the smallest adversarial δ seen (zero where none was found), projected onto the ε-ball
    and quantized."""
    delta = torch.zeros_like(x)
    norm = torch.full((len(x),), float(init_norm), device=x.device)
    worst_norm = torch.maximum(x, 1 - x).flatten(1).norm(p=2, dim=1)
    best_norm, best_delta = worst_norm.clone(), torch.zeros_like(x)
    for i in range(steps):
        lr = 0.01 + (1 - 0.01) * (1 + math.cos(math.pi * (i + 1) / steps)) / 2
        size = delta.flatten(1).norm(p=2, dim=1)
        delta.requires_grad_(True)
        logits = _copy_logits(model, x + delta, noise)
        is_adversarial = logits.argmax(-1).t().mode(1).values != y
        (gradient,) = torch.autograd.grad(-salman_objective(logits, y), delta)
        with torch.no_grad():
            better = is_adversarial & (size < best_norm)
            best_norm[better] = size[better]
            best_delta[better] = delta[better]
            delta = delta - lr * _unit_or_random(gradient)
            norm = torch.minimum(norm * (1 - (2 * is_adversarial.float() - 1) * gamma), worst_norm)
            delta = delta * (norm / delta.flatten(1).norm(p=2, dim=1)).view(_batch_shape(x))
            delta = _quantize(delta + x, levels).clamp(0, 1) - x
    return (x + _quantize(best_delta.renorm(p=2, dim=0, maxnorm=eps), levels)).detach()


def warmed_up_eps(eps: float, warmup: int, epoch: int) -> float:
    """ε at 0-based ``epoch``: linear from ε/warmup to ε over ``warmup`` epochs, then ε."""
    return eps if warmup == 0 else min(eps, (epoch + 1) * eps / warmup)


@dataclass(frozen=True)
class SmoothAdvParams:
    attack: str = hyperparameter(
        "pgd",
        "attack on the soft smoothed classifier: pgd (λ=0: Salman's PGD_L2; "
        "λ>0: Jeong & Shin's SmoothAdv_PGD) or ddn (Salman's DDN)",
        choices=("pgd", "ddn"),
    )
    eps: float = hyperparameter(255 / 256, "ℓ2 attack radius ε in [0,1] pixels (official 255 -> 255/256)", min=0.0)
    steps: int = hyperparameter(10, "attack steps T", min=1)
    m: int = hyperparameter(4, "noise draws per input, shared by attack and loss", min=1)
    warmup: int = hyperparameter(10, "epochs of linear ε warm-up", min=0)
    lam: float = hyperparameter(0.0, "consistency weight λ (0: plain SmoothAdv, cross-entropy only)", min=0.0)
    eta: float = hyperparameter(0.5, "entropy weight η, with λ>0 and loss=default only (else recorded 0)", min=0.0)
    loss: str = hyperparameter(
        "default", "form of the consistency term when λ>0 (see method consistency)", choices=tuple(DISAGREEMENT_FORMS)
    )

    def __post_init__(self):
        # terms that are off are recorded at one value, so that equal trainings share one leaderboard row
        if self.lam == 0:
            object.__setattr__(self, "loss", "default")
        if self.lam == 0 or self.loss != "default":
            object.__setattr__(self, "eta", 0.0)


def _presets():
    mnist = {"attack": "pgd", "eps": 255 / 256, "steps": 10, "m": 4, "warmup": 10}
    presets = []
    for s in (0.25, 0.5, 1.0):
        presets.append(
            Preset(
                f"mnist-smoothadv-{s:.2f}",
                f"Table 2: SmoothAdv (PGD 10 steps, ε=255/256, m=4), MNIST σ={s}",
                "mnist",
                s,
                mnist,
                "lenet",
            )
        )
        presets.append(
            Preset(
                f"mnist-smoothadv-consistency-{s:.2f}",
                f"Table 2: SmoothAdv + consistency (λ=1, η=0.5, PGD 10 steps, ε=255/256, m=4), MNIST σ={s}",
                "mnist",
                s,
                {**mnist, "lam": 1.0, "eta": 0.5},
                "lenet",
            )
        )
    table1 = {0.25: (255 / 256, 4), 0.5: (2.0, 2), 1.0: (2.0, 2)}
    for s, (eps, m) in table1.items():
        presets.append(
            Preset(
                f"cifar10-smoothadv-{s:.2f}",
                f"Table 1: SmoothAdv (PGD 10 steps, ε={eps:.3f}, m={m}), CIFAR-10 σ={s}",
                "cifar10",
                s,
                {"attack": "pgd", "eps": eps, "steps": 10, "m": m, "warmup": 10},
                "cifar_resnet110",
            )
        )
    return tuple(presets)


class SmoothAdv(TrainingMethod):
    name = "smoothadv"
    description = (
        "SmoothAdv (Salman et al. 2019): CE on m noisy copies of a PGD/DDN attack on the soft smoothed "
        "classifier; λ>0: SmoothAdv + consistency (Jeong & Shin 2020)"
    )
    Params = SmoothAdvParams
    presets = _presets()

    def __init__(self, params, sigma):
        super().__init__(params, sigma)
        if params.lam > 0 and params.m < 2:
            raise RsbenchError("smoothadv with consistency (lam > 0) needs m >= 2 noise draws")
        self.eps = params.eps

    @property
    def noisy_passes_per_example(self) -> int:
        return self.params.m * (self.params.steps + 1)

    def start_epoch(self, epoch, schedule):
        self.eps = warmed_up_eps(self.params.eps, self.params.warmup, epoch)

    def split_batch(self, x, y):
        return equal_chunks(x, y, self.params.m)

    def attack(self, model, x, y, noise):
        """x̂ for the current (warmed-up) ε with the attack of the method's official code."""
        if self.params.attack == "ddn":
            return salman_ddn(model, x, y, noise, self.eps, self.params.steps, init_norm=self.eps)
        attack = consistency_pgd if self.params.lam > 0 else salman_pgd
        return attack(model, x, y, noise, self.eps, self.params.steps)

    def loss(self, model, x, y):
        m = self.params.m
        noise = self.sigma * torch.randn((m * len(x), *x.shape[1:]), device=x.device, dtype=x.dtype)
        if self.eps > 0:
            with attacking(model) as attacked:
                x = self.attack(attacked, x, y, noise)
        logits = _copy_logits(model, x, noise)
        loss = cross_entropy_of_copies(logits, y)
        if self.params.lam > 0:
            loss = loss + disagreement_penalty(logits, self.params.lam, self.params.eta, self.params.loss)
        return loss


@hookimpl
def register_training_methods(register):
    register(SmoothAdv)
