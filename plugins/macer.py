"""MACER (Zhai et al., ICLR 2020): attack-free training that maximizes the certified radius of the soft
smoothed classifier, as the official ``macer_train`` (used unchanged by Jeong & Shin's ``train_macer.py``).

With k = m Gaussian copies (σ in [0,1] pixel units): p̄ = mean softmax; classification loss −log(p̄_y + 1e-10).
With p̃ = mean softmax(β·logits), on inputs whose top class under p̃ is y, the robustness loss is
σ/2 · (γ − (Φ⁻¹(p̃₁) − Φ⁻¹(p̃₂))) (p̃₁ the true class, p̃₂ the best other) on the inputs whose gap
Φ⁻¹(p̃₁) − Φ⁻¹(p̃₂) is finite and at most γ. Φ⁻¹ is evaluated (and differentiated) on those inputs only,
so a saturated p̃₁ = 1 (Φ⁻¹ = ∞) never reaches backprop. Total = (classification + λ·robustness) summed
over the batch / B. ``--deferred`` sets λ = 0 until the first learning-rate drop: with the official
``--lr_step_size 30``, its ``epoch <= 30`` makes 31 deferred epochs (0-based 0…30; "macer_deferred30"),
which is rsbench's MNIST milestone 31.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rsbench import hookimpl
from rsbench.methods import Preset, TrainingMethod, noisy_copies
from rsbench.params import hyperparameter


def certified_radius_hinge(tempered: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """Σ over kept inputs of γ − (Φ⁻¹(p̃₁) − Φ⁻¹(p̃₂)) for tempered mean probabilities ``tempered`` [B, K]:
    inputs whose top class is y and whose gap is finite and ≤ γ (Φ⁻¹ taken on the kept entries only)."""
    top2 = torch.topk(tempered, 2, dim=-1)
    with torch.no_grad():
        gap = torch.special.ndtri(top2.values[:, 0]) - torch.special.ndtri(top2.values[:, 1])
        keep = (top2.indices[:, 0] == y) & torch.isfinite(gap) & (gap.abs() <= gamma)
    kept = top2.values[keep]
    return (torch.special.ndtri(kept[:, 1]) - torch.special.ndtri(kept[:, 0]) + gamma).sum()


def macer_loss(logits: torch.Tensor, y: torch.Tensor, sigma: float, lam: float, gamma: float, beta: float):
    """MACER's loss for copy-major ``logits`` [m, B, K]; returns (total, classification, robustness), each
    divided by the batch size. With λ = 0 the robustness term is not computed (it is 0), as officially."""
    batch = len(y)
    mean_probs = F.softmax(logits, dim=-1).mean(0)
    classification = F.nll_loss(torch.log(mean_probs + 1e-10), y, reduction="sum")
    if lam == 0:
        robustness = torch.zeros((), device=logits.device)
    else:
        tempered = F.softmax(beta * logits, dim=-1).mean(0)
        robustness = sigma / 2 * certified_radius_hinge(tempered, y, gamma)
    return (classification + lam * robustness) / batch, classification / batch, robustness / batch


@dataclass(frozen=True)
class MacerParams:
    m: int = hyperparameter(16, "Gaussian copies k per input", min=1)
    lam: float = hyperparameter(16.0, "weight λ of the robustness loss", min=0.0)
    gamma: float = hyperparameter(8.0, "hinge margin γ on Φ⁻¹(p̃₁) − Φ⁻¹(p̃₂)", min=0.0)
    beta: float = hyperparameter(16.0, "inverse temperature β", min=0.0)
    deferred: bool = hyperparameter(False, "λ = 0 until the first learning-rate drop (MNIST: 31 epochs)")


class Macer(TrainingMethod):
    name = "macer"
    description = "MACER (Zhai et al. 2020): CE of the soft smoothed classifier + λ·hinge on its certified radius"
    Params = MacerParams
    presets = tuple(
        Preset(
            f"mnist-macer-{s:.2f}",
            f"Table 2: MACER (k=16, λ={lam:g}, γ=8, β=16, deferred 31 epochs), MNIST σ={s}",
            "mnist",
            s,
            {"m": 16, "lam": lam, "gamma": 8.0, "beta": 16.0, "deferred": True},
            "lenet",
        )
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
