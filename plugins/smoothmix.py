"""SmoothMix (Jeong et al., NeurIPS 2021), as the official ``code/train.py`` of ``jh-jeong/smoothmix``.

Each loader batch is split into m chunks of ⌊B/m⌋ examples (remainder dropped), each one SGD step. For a
chunk x (pixels in [0,1]) with labels y, m noise draws δ_i ~ N(0, σ²I) (σ in [0,1] pixels) are fixed and:

1. Attack (model in eval mode, parameters frozen): starting from x, T steps
   x ← clamp(Π_maxnorm(x + α·g/(‖g‖₂ + 1e-8)), 0, 1), g the gradient of the summed
   −log max(p̂_y, 1e-20), p̂ = (1/m) Σ_i softmax(f(x + δ_i)). α is an ℓ2 step in [0,1] pixels (not divided by
   T); Π_maxnorm projects onto the ℓ2 ball of radius ``maxnorm`` around x (0: no ball, only the clamp). The
   point after ``mix_step`` steps, projected onto the ball of radius α·mix_step·w (w the warm-up factor
   below), is the clean side x₀ (x itself with ``mix_step`` 0); the point after T steps is x_adv.
2. Gaussian loss on x₀ (model in train mode): (1/(mB)) Σ CE(f(x₀ + δ_i), y); p̂₀ = (1/m) Σ softmax(f(x₀ + δ_i))
   (not detached: the mixup target below carries its gradient).
3. Mixup: per example λ ~ U[0, 1/2); x_mix = (1−λ)x₀ + λ·x_adv, target (1−λ)p̂₀ + λ·(1/K); loss
   η·w·(1/(mB)) Σ 1[argmax p̂₀ = y]·KL(target ‖ softmax(f(x_mix + δ_i))), with the same draws δ_i.

Warm-up: w = min(1, (epoch+1)/warmup) for 0-based epochs scales the one-step adversary's radius and η.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rsbench import hookimpl
from rsbench.methods import Preset, TrainingMethod, attacking, equal_chunks
from rsbench.params import hyperparameter


def _batch_shape(x: torch.Tensor) -> tuple[int, ...]:
    return (-1, *([1] * (x.dim() - 1)))


def _project(points: torch.Tensor, center: torch.Tensor, radius: float | None) -> torch.Tensor:
    """Onto the ℓ2 ball of ``radius`` around ``center`` (per example; None: no ball), then into [0,1]."""
    if radius is not None:
        points = center + (points - center).renorm(p=2, dim=0, maxnorm=radius)
    return points.clamp(0, 1).detach()


def mean_softmax(logits: list[torch.Tensor]) -> torch.Tensor:
    """(1/m) Σ_i softmax(logits_i), summed in order as the official ``_avg_softmax``."""
    return sum(F.softmax(logit, dim=1) for logit in logits) / len(logits)  # type: ignore[return-value]


def smoothmix_attack(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    noises: list[torch.Tensor],
    steps: int,
    step_size: float,
    mix_step: int,
    maxnorm: float | None,
    mix_radius: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ``SmoothMix_PGD.attack``: (x₀, x_adv), x₀ the point after ``mix_step`` steps projected
    onto the ball of ``mix_radius`` (x itself for ``mix_step`` 0), x_adv the point after ``steps`` steps."""
    adversarial = x.detach()
    mix_start = x.detach()
    for step in range(steps):
        if step == mix_step:
            mix_start = adversarial.detach()
        adversarial.requires_grad_()
        mean_probs = mean_softmax([model(adversarial + noise) for noise in noises])
        loss = F.nll_loss(torch.log(mean_probs.clamp(min=1e-20)), y, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, [adversarial])
        norms = gradient.reshape(len(x), -1).norm(dim=1).view(_batch_shape(x))
        adversarial = _project(adversarial + step_size * (gradient / (norms + 1e-8)), x, maxnorm)
    return _project(mix_start, x, mix_radius), adversarial


def smoothmix_loss(
    model,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    y: torch.Tensor,
    noises: list[torch.Tensor],
    mixup_weight: float,
) -> torch.Tensor:
    """Steps 2 and 3 of the module docstring for the attack's (x₀, x_adv); ``mixup_weight`` = η·w; draws
    λ ~ U[0, 1/2) per example from the global generator (after the noise and the attack, as officially)."""
    m = len(noises)
    logits_clean = model(torch.cat([clean + noise for noise in noises], dim=0))
    cross_entropy = F.cross_entropy(logits_clean, y.repeat(m), reduction="none")
    smoothed = mean_softmax(list(torch.chunk(logits_clean, m, dim=0)))
    ratio = torch.rand(len(clean), device=clean.device) / 2
    mixed = (1 - ratio).view(_batch_shape(clean)) * clean + ratio.view(_batch_shape(clean)) * adversarial
    uniform = torch.eye(smoothed.shape[1], device=clean.device).mean(0, keepdim=True)
    target = (1 - ratio).view(-1, 1) * smoothed + ratio.view(-1, 1) * uniform
    log_probs_mixed = F.log_softmax(model(torch.cat([mixed + noise for noise in noises], dim=0)), dim=1)
    correct = (torch.topk(smoothed, 1)[1][:, 0] == y).float().repeat(m)
    mixup = F.kl_div(log_probs_mixed, target.repeat(m, 1), reduction="none").sum(1)
    return cross_entropy.mean() + mixup_weight * (correct * mixup).mean()


@dataclass(frozen=True)
class SmoothMixParams:
    m: int = hyperparameter(4, "noise draws per input, shared by attack, Gaussian and mixup terms", min=1)
    steps: int = hyperparameter(4, "attack steps T", min=1)
    alpha: float = hyperparameter(1.0, "ℓ2 attack step α in [0,1] pixels (each step, not divided by T)", min=0.0)
    eta: float = hyperparameter(1.0, "weight η of the mixup term", min=0.0)
    mix_step: int = hyperparameter(
        0, "clean side of the mixup: 0 the input, k the point after k attack steps (1: one-step adversary)", min=0
    )
    maxnorm: float = hyperparameter(
        0.0, "ℓ2 radius in [0,1] pixels bounding the attack around the input (0: unbounded, official default)", min=0.0
    )
    warmup: int = hyperparameter(10, "epochs over which η and the one-step radius grow linearly to full", min=1)


def _presets():
    presets = []
    mnist = {0.25: ((3, 1.0), (2, 5.0)), 0.5: ((4, 1.0), (4, 5.0)), 1.0: ((8, 1.0), (8, 5.0))}
    for s, rows in mnist.items():
        for steps, eta in rows:
            for mix_step, kind, suffix in ((0, "SmoothMix", ""), (1, "SmoothMix + one-step adversary", "-onestep")):
                presets.append(
                    Preset(
                        f"mnist-smoothmix{suffix}-eta{eta:g}-{s:.2f}",
                        f"EXPERIMENTS.MD '{kind} (MNIST)': train.py --num-noise-vec 4 --num-steps {steps} "
                        f"--alpha 1.0 --mix_step {mix_step} --eta {eta:g}, MNIST σ={s}",
                        "mnist",
                        s,
                        {"m": 4, "steps": steps, "alpha": 1.0, "eta": eta, "mix_step": mix_step, "warmup": 10},
                        "lenet",
                    )
                )
    for s, alpha in ((0.25, 0.5), (0.5, 1.0), (1.0, 2.0)):
        for mix_step, kind, suffix in ((0, "SmoothMix", ""), (1, "SmoothMix + one-step adversary", "-onestep")):
            presets.append(
                Preset(
                    f"cifar10-smoothmix{suffix}-{s:.2f}",
                    f"EXPERIMENTS.MD '{kind} (CIFAR-10)': train.py --num-noise-vec 2 --num-steps 4 "
                    f"--alpha {alpha} --mix_step {mix_step} --eta 5.0, CIFAR-10 σ={s} (official schedule: lr 0.1, "
                    "step 50, 150 epochs)",
                    "cifar10",
                    s,
                    {"m": 2, "steps": 4, "alpha": alpha, "eta": 5.0, "mix_step": mix_step, "warmup": 10},
                    "cifar_resnet110",
                )
            )
    return tuple(presets)


class SmoothMix(TrainingMethod):
    name = "smoothmix"
    description = (
        "SmoothMix (Jeong et al. 2021): CE on m noisy copies + η·mixup towards a normalized-gradient adversary "
        "of the soft smoothed classifier, on the examples it classifies correctly"
    )
    Params = SmoothMixParams
    presets = _presets()

    def __init__(self, params, sigma):
        super().__init__(params, sigma)
        self.warmup_factor = 1.0

    @property
    def noisy_passes_per_example(self) -> int:
        return self.params.m * (self.params.steps + 2)

    def start_epoch(self, epoch, schedule):
        self.warmup_factor = min(1.0, (epoch + 1) / self.params.warmup)

    def split_batch(self, x, y):
        return equal_chunks(x, y, self.params.m)

    def loss(self, model, x, y):
        p = self.params
        noises = [torch.randn_like(x) * self.sigma for _ in range(p.m)]
        with attacking(model) as attacked:
            clean, adversarial = smoothmix_attack(
                attacked,
                x,
                y,
                noises,
                p.steps,
                p.alpha,
                p.mix_step,
                p.maxnorm or None,
                self.warmup_factor * p.alpha * p.mix_step,
            )
        return smoothmix_loss(model, clean, adversarial, y, noises, p.eta * self.warmup_factor)


@hookimpl
def register_training_methods(register):
    register(SmoothMix)
