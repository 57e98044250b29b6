"""MACER (Zhai et al., ICLR 2020): attack-free training that maximizes the certified radius of the soft
smoothed classifier.

With k = m Gaussian copies (σ in [0,1] pixel units): p̄ = mean softmax; classification loss −log p̄_y.
With p̃ = mean softmax(β·logits), on inputs whose top class under p̃ is y: robustness loss
σ/2 · max(0, γ − (Φ⁻¹(p̃₁) − Φ⁻¹(p̃₂))) (p̃₁ the true class, p̃₂ the best other), kept where the gap is
finite. Total = classification + λ·robustness, averaged over the batch. ``--deferred`` sets λ = 0 until the
first learning-rate drop, as the consistency paper's MNIST runs ("macer_deferred30").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rsbench import hookimpl
from rsbench.methods import Preset, TrainingMethod, noisy_copies
from rsbench.params import hyperparameter


def macer_loss(logits: torch.Tensor, y: torch.Tensor, sigma: float, lam: float, gamma: float, beta: float):
    """MACER's loss for copy-major ``logits`` [m, B, K]; returns (total, classification, robustness)."""
    batch = len(y)
    mean_probs = F.softmax(logits, dim=-1).mean(0)
    classification = F.nll_loss(torch.log(mean_probs + 1e-10), y, reduction="sum")
    tempered = F.softmax(beta * logits, dim=-1).mean(0)
    top2 = torch.topk(tempered, 2, dim=-1)
    correct = top2.indices[:, 0] == y
    gap = torch.special.ndtri(top2.values[correct, 0]) - torch.special.ndtri(top2.values[correct, 1])
    finite = torch.isfinite(gap)
    robustness = sigma / 2 * F.relu(gamma - gap[finite]).sum()
    return (classification + lam * robustness) / batch, classification / batch, robustness / batch


@dataclass(frozen=True)
class MacerParams:
    m: int = hyperparameter(16, "Gaussian copies k per input", min=1)
    lam: float = hyperparameter(16.0, "weight λ of the robustness loss", min=0.0)
    gamma: float = hyperparameter(8.0, "hinge margin γ on Φ⁻¹(p̃₁) − Φ⁻¹(p̃₂)", min=0.0)
    beta: float = hyperparameter(16.0, "inverse temperature β", min=0.0)
    deferred: bool = hyperparameter(False, "λ = 0 until the first learning-rate drop")


class Macer(TrainingMethod):
    name = "macer"
    description = "MACER (Zhai et al. 2020): CE of the soft smoothed classifier + λ·hinge on its certified radius"
    Params = MacerParams
    presets = tuple(
        Preset(f"mnist-macer-{s:.2f}", f"Table 2: MACER (λ={lam:g}, deferred), MNIST σ={s}", "mnist", s,
               {"m": 16, "lam": lam, "gamma": 8.0, "beta": 16.0, "deferred": True}, "lenet")
        for s, lam in ((0.25, 16.0), (0.5, 16.0), (1.0, 6.0))
    )

    def __init__(self, params, sigma):
        super().__init__(params, sigma)
        self.lam = params.lam

    @property
    def noisy_passes_per_example(self) -> int:
        return self.params.m

    def start_epoch(self, epoch, schedule):
        deferring = self.params.deferred and schedule.milestones and epoch < min(schedule.milestones)
        self.lam = 0.0 if deferring else self.params.lam

    def loss(self, model, x, y):
        m = self.params.m
        logits = model(noisy_copies(x, self.sigma, m)).view(m, len(y), -1)
        return macer_loss(logits, y, self.sigma, self.lam, self.params.gamma, self.params.beta)[0]


@hookimpl
def register_training_methods(register):
    register(Macer)
