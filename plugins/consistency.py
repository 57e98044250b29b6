"""Consistency regularization (Jeong & Shin, NeurIPS 2020), as the official ``train_consistency.py``.

For each input, m noisy copies x + δ_i (δ_i ~ N(0, σ²I), σ in [0,1] pixel units) go through one forward
pass; p_i = softmax(f(x + δ_i)) and p̂ = (1/m) Σ_i p_i (gradients flow through p̂). The loss is

    (1/m) Σ_i CE(f(x + δ_i), y)  +  consistency term

with the consistency term in one of the official code's forms (``--loss``), which are the rows of the
supplement's Table 4:

- ``default``: λ·(1/m) Σ_i KL(p̂ ‖ p_i) + η·H(p̂) — the paper's loss (Table 2, and Table 4's "Cross-entropy"
  rows, η = 0.5);
- ``kl``: λ·(1/m) Σ_i KL(p̂ ‖ p_i), no entropy term — Table 4's "KL-divergence" rows;
- ``mse``: λ·‖p₂ − p₁‖² on the first two copies, no entropy term — Table 4's "MSE" rows;
- ``xent``: λ·(1/m) Σ_i CE(p̂, p_i) = λ·(KL + H) — the official ``xent`` (``default`` with η = λ).

η is read by ``default`` only and is recorded as 0 for the other forms. (Earlier rsbench named
``default`` "kl": a stored run with ``loss=kl`` and η > 0 was trained with ``default``.) As in the
official code, each loader batch (256) is split into m chunks of ⌊256/m⌋ examples (the remainder is
dropped) and each chunk, replicated m times, is one SGD step.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsbench import hookimpl
from rsbench.losses import DISAGREEMENT_FORMS, cross_entropy_of_copies, disagreement_penalty
from rsbench.methods import Preset, TrainingMethod, equal_chunks, noisy_copies
from rsbench.params import hyperparameter

FORMS_HELP = "; ".join(f"{name}: {text}" for name, text in DISAGREEMENT_FORMS.items())


@dataclass(frozen=True)
class ConsistencyParams:
    lam: float = hyperparameter(10.0, "weight λ of the consistency term", min=0.0)
    eta: float = hyperparameter(0.5, "weight η of the entropy term H(p̂), loss=default only (else recorded 0)", min=0.0)
    m: int = hyperparameter(2, "noisy copies per input (at least 2)", min=2)
    loss: str = hyperparameter(
        "default", f"form of the consistency term — {FORMS_HELP}", choices=tuple(DISAGREEMENT_FORMS)
    )

    def __post_init__(self):
        if self.loss != "default":  # η is unused: record one value, so equal trainings share one row
            object.__setattr__(self, "eta", 0.0)


def _presets():
    tables = (  # (dataset, shown as, table, architecture, λ per σ)
        ("mnist", "MNIST", "Table 2", "lenet", {0.25: 10.0, 0.5: 5.0, 1.0: 5.0}),
        ("cifar10", "CIFAR-10", "Table 7", "cifar_resnet110", {0.25: 20.0, 0.5: 10.0, 1.0: 10.0}),
    )
    return tuple(
        Preset(
            f"{dataset}-consistency-{s:.2f}",
            f"{table}: Gaussian + consistency (λ={lam:g}, η=0.5, m=2), {shown} σ={s}",
            dataset,
            s,
            {"lam": lam, "m": 2, "eta": 0.5},
            arch,
        )
        for dataset, shown, table, arch, lams in tables
        for s, lam in lams.items()
    )


class Consistency(TrainingMethod):
    name = "consistency"
    description = (
        "Consistency regularization (Jeong & Shin 2020): CE on m noisy copies + consistency term "
        "(--loss default: λ·KL(p̂‖p_i) + η·H(p̂), the paper's; kl, mse: Table 4's rows)"
    )
    Params = ConsistencyParams
    presets = _presets()

    @property
    def noisy_passes_per_example(self) -> int:
        return self.params.m

    def split_batch(self, x, y):
        return equal_chunks(x, y, self.params.m)

    def loss(self, model, x, y):
        m = self.params.m
        logits = model(noisy_copies(x, self.sigma, m)).view(m, len(y), -1)
        regularizer = disagreement_penalty(logits, self.params.lam, self.params.eta, self.params.loss)
        return cross_entropy_of_copies(logits, y) + regularizer


@hookimpl
def register_training_methods(register):
    register(Consistency)
