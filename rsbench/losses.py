"""Loss pieces shared by training methods, named by what they compute.

Every function takes copy-major ``logits`` of shape [m, B, K]: ``logits[i, b]`` is the base classifier's
output on the i-th noisy copy x_b + δ_i of example b (δ_i ~ N(0, σ²I), σ in [0,1] pixel units). With
p_i = softmax(logits[i]) and the mean prediction p̂ = (1/m) Σ_i p_i (the Monte-Carlo soft smoothed
classifier), the per-example terms are returned as [B] tensors; methods average them over the batch.

The divergence and entropy terms work in log space (log p̂ = logsumexp_i log p_i − log m), so their values
and gradients stay finite on saturated logits where p̂ has exact zeros (0·log 0 = 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_CLAMP = 1e-20  # the official attacks' floor on p̂ before the log


def log_mean_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """log p̂ [B, K] with p̂ = (1/m) Σ_i softmax(logits[i]), computed as logsumexp_i log p_i − log m."""
    return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])


def mean_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """p̂ [B, K] = (1/m) Σ_i softmax(logits[i])."""
    return F.softmax(logits, dim=-1).mean(0)


def entropy_of_mean(logits: torch.Tensor) -> torch.Tensor:
    """H(p̂) = −Σ_k p̂_k log p̂_k per example (nats)."""
    log_mean = log_mean_probabilities(logits)
    return -(log_mean.exp() * log_mean).sum(-1)


def divergence_from_mean(logits: torch.Tensor) -> torch.Tensor:
    """(1/m) Σ_i KL(p̂ ‖ p_i) = (1/m) Σ_i Σ_k p̂_k (log p̂_k − log p_ik) per example; gradients flow through p̂."""
    log_mean = log_mean_probabilities(logits)
    log_probs = F.log_softmax(logits, dim=-1)
    return (log_mean.exp().unsqueeze(0) * (log_mean.unsqueeze(0) - log_probs)).sum(-1).mean(0)


def squared_distance_of_first_two(logits: torch.Tensor) -> torch.Tensor:
    """‖p₂ − p₁‖² per example: the squared ℓ2 distance between the first two copies' predictions."""
    probs = F.softmax(logits[:2], dim=-1)
    return ((probs[1] - probs[0]) ** 2).sum(-1)


def cross_entropy_of_copies(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/(mB)) Σ_i Σ_b CE(logits[i, b], y_b): cross-entropy averaged over every noisy copy (a scalar)."""
    m, batch, classes = logits.shape
    return F.cross_entropy(logits.reshape(m * batch, classes), y.repeat(m))


DISAGREEMENT_FORMS = {
    "default": "λ·(1/m)Σ KL(p̂‖p_i) + η·H(p̂): the paper's loss (Table 2; Table 4's 'Cross-entropy' rows, η=0.5)",
    "kl": "λ·(1/m)Σ KL(p̂‖p_i), no entropy term (Table 4's 'KL-divergence' rows; η unused)",
    "mse": "λ·‖p₂ − p₁‖² on the first two copies, no entropy term (Table 4's 'MSE' rows; η unused)",
    "xent": "λ·(1/m)Σ CE(p̂, p_i) = λ·(KL + H): the official code's 'xent' (default with η = λ; η unused)",
}


def disagreement_penalty(logits: torch.Tensor, lam: float, eta: float, form: str = "default") -> torch.Tensor:
    """A penalty on the disagreement of the m copies' predictions in one of :data:`DISAGREEMENT_FORMS` (the
    official ``consistency_loss(..., loss=form)`` of Jeong & Shin 2020), averaged over the batch; ``eta``
    is read by ``default`` only."""
    if form == "default":
        per_example = lam * divergence_from_mean(logits) + eta * entropy_of_mean(logits)
    elif form == "kl":
        per_example = lam * divergence_from_mean(logits)
    elif form == "mse":
        per_example = lam * squared_distance_of_first_two(logits)
    elif form == "xent":
        per_example = lam * (divergence_from_mean(logits) + entropy_of_mean(logits))
    else:
        raise ValueError(f"unknown consistency form {form!r}; choose one of {', '.join(DISAGREEMENT_FORMS)}")
    return per_example.mean()


def clamped_log_mean_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """log max(p̂, 1e-20) [B, K]: the soft smoothed classifier's log-probabilities as the official attacks on
    it form them (flat, with a zero gradient, wherever p̂_k < 1e-20)."""
    return mean_probabilities(logits).clamp(min=LOG_CLAMP).log()
