"""rsbench: train, certify and rank randomized-smoothing classifiers.

A plugin author's whole API is importable from here (loaded on first use, so ``import rsbench`` stays
light)::

    from rsbench import hookimpl, TrainingMethod, Preset, noisy_copies, hyperparameter
    from rsbench import Certifier, CertificationRequest, Certificate, SmoothedClassifier, SmoothedClassifierBase
    from rsbench import load_classifier   # a checkpoint file -> (base classifier, metadata)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rsbench.hookspecs import hookimpl

if TYPE_CHECKING:  # what the lazy exports resolve to, so that a plugin's code is type-checked against them
    from rsbench.checkpoint import load_classifier
    from rsbench.data import InMemoryDataset
    from rsbench.errors import RsbenchError
    from rsbench.methods import Preset, TrainingMethod, noisy_copies
    from rsbench.params import NoParams, hyperparameter
    from rsbench.protocol import CertificationProtocol
    from rsbench.smoothing import SmoothedClassifier, certify_from_counts, lower_confidence_bound
    from rsbench.specs import (
        Architecture,
        Certificate,
        CertificationRequest,
        Certifier,
        Dataset,
        Normalization,
        Schedule,
        SmoothedClassifierBase,
    )

__version__ = "0.1.0"

_EXPORTS = {
    "SmoothedClassifier": "rsbench.smoothing",
    "certify_from_counts": "rsbench.smoothing",
    "lower_confidence_bound": "rsbench.smoothing",
    "TrainingMethod": "rsbench.methods",
    "Preset": "rsbench.methods",
    "noisy_copies": "rsbench.methods",
    "hyperparameter": "rsbench.params",
    "NoParams": "rsbench.params",
    "Architecture": "rsbench.specs",
    "Certifier": "rsbench.specs",
    "CertificationRequest": "rsbench.specs",
    "Certificate": "rsbench.specs",
    "Dataset": "rsbench.specs",
    "Normalization": "rsbench.specs",
    "Schedule": "rsbench.specs",
    "SmoothedClassifierBase": "rsbench.specs",
    "InMemoryDataset": "rsbench.data",
    "RsbenchError": "rsbench.errors",
    "CertificationProtocol": "rsbench.protocol",
    "load_classifier": "rsbench.checkpoint",
}
__all__ = [
    "hookimpl",
    "__version__",
    "SmoothedClassifier",
    "certify_from_counts",
    "lower_confidence_bound",
    "TrainingMethod",
    "Preset",
    "noisy_copies",
    "hyperparameter",
    "NoParams",
    "Architecture",
    "Certifier",
    "CertificationRequest",
    "Certificate",
    "Dataset",
    "Normalization",
    "Schedule",
    "SmoothedClassifierBase",
    "InMemoryDataset",
    "RsbenchError",
    "CertificationProtocol",
    "load_classifier",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rsbench' has no attribute {name!r}")
