"""Consistency regularization (Jeong & Shin, NeurIPS 2020).

For each input, m noisy copies x + δ_i (δ_i ~ N(0, σ²I), σ in [0,1] pixel units) go through one forward
pass; p_i = softmax(f(x + δ_i)) and p̂ = (1/m) Σ_i p_i (gradients flow through p̂). The loss is

    (1/m) Σ_i CE(f(x + δ_i), y)  +  λ · (1/m) Σ_i KL(p̂ ‖ p_i)  +  η · H(p̂)        (``--loss kl``)

``--loss mse`` replaces the KL term by (1/m) Σ_i ‖p_i − p̂‖²; ``--loss xent`` uses λ · (1/m) Σ_i CE(p̂, p_i)
= λ · (KL + H), whose entropy weight is λ (η is then unused), as compared in the supplement's Table 4.

As in the official code, each loader batch (256) is split into m chunks and each chunk, replicated m
times, is one SGD step: an epoch makes m times more, smaller steps and m noisy passes per example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rsbench import hookimpl
from rsbench.methods import Preset, TrainingMethod, noisy_copies
from rsbench.params import hyperparameter

LOSS_FORMS = ("kl", "mse", "xent")


def consistency_regularizer(logits: torch.Tensor, lam: float, eta: float, form: str = "kl") -> torch.Tensor:
    """λ·consistency + η·entropy for copy-major ``logits`` [m, B, K], averaged over the batch."""
    log_probs = F.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    mean = probs.mean(0)
    log_mean = mean.clamp_min(1e-20).log()
    entropy = -(mean * log_mean).sum(-1)
    if form == "kl":
        divergence = (mean.unsqueeze(0) * (log_mean.unsqueeze(0) - log_probs)).sum(-1).mean(0)
        return (lam * divergence + eta * entropy).mean()
    if form == "mse":
        squared = ((probs - mean.unsqueeze(0)) ** 2).sum(-1).mean(0)
        return (lam * squared + eta * entropy).mean()
    if form == "xent":
        cross = -(mean.unsqueeze(0) * log_probs).sum(-1).mean(0)
        return (lam * cross).mean()
    raise ValueError(f"unknown consistency loss form {form!r}")


def consistency_loss(logits: torch.Tensor, y: torch.Tensor, lam: float, eta: float, form: str) -> torch.Tensor:
    """Mean cross-entropy over the m noisy copies plus :func:`consistency_regularizer`."""
    m, batch, classes = logits.shape
    classification = F.cross_entropy(logits.reshape(m * batch, classes), y.repeat(m))
    if lam == 0 and eta == 0:
        return classification
    return classification + consistency_regularizer(logits, lam, eta, form)


def split_into_chunks(x: torch.Tensor, y: torch.Tensor, chunks: int):
    """The official convention: one loader batch gives ``chunks`` SGD steps."""
    yield from zip(x.chunk(chunks), y.chunk(chunks), strict=True)


@dataclass(frozen=True)
class ConsistencyParams:
    lam: float = hyperparameter(10.0, "weight λ of the consistency term", min=0.0)
    eta: float = hyperparameter(0.5, "weight η of the entropy term H(p̂)", min=0.0)
    m: int = hyperparameter(2, "noisy copies per input (at least 2)", min=2)
    loss: str = hyperparameter("kl", "form of the consistency term", choices=LOSS_FORMS)


def _presets():
    table2 = {0.25: 10.0, 0.5: 5.0, 1.0: 5.0}
    table7 = {0.25: 20.0, 0.5: 10.0, 1.0: 10.0}
    presets = [Preset(f"mnist-consistency-{s:.2f}", f"Table 2: Gaussian + consistency (λ={lam:g}), MNIST σ={s}",
                      "mnist", s, {"lam": lam, "m": 2, "eta": 0.5}, "lenet") for s, lam in table2.items()]
    presets += [Preset(f"cifar10-consistency-{s:.2f}", f"Table 7: Gaussian + consistency (λ={lam:g}), CIFAR-10 σ={s}",
                       "cifar10", s, {"lam": lam, "m": 2, "eta": 0.5}, "cifar_resnet110") for s, lam in table7.items()]
    return tuple(presets)


class Consistency(TrainingMethod):
    name = "consistency"
    description = "Consistency regularization (Jeong & Shin 2020): CE on m noisy copies + λ·KL(p̂‖p_i) + η·H(p̂)"
    Params = ConsistencyParams
    presets = _presets()

    @property
    def noisy_passes_per_example(self) -> int:
        return self.params.m

    def split_batch(self, x, y):
        return split_into_chunks(x, y, self.params.m)

    def loss(self, model, x, y):
        m = self.params.m
        logits = model(noisy_copies(x, self.sigma, m)).view(m, len(y), -1)
        return consistency_loss(logits, y, self.params.lam, self.params.eta, self.params.loss)


@hookimpl
def register_training_methods(register):
    register(Consistency)
