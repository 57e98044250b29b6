"""rsbench: train, certify and rank randomized-smoothing classifiers.

A plugin author's whole API is importable from here (loaded on first use, so ``import rsbench`` stays
light)::

    from rsbench import hookimpl, TrainingMethod, Preset, noisy_copies, hyperparameter
    from rsbench import Certifier, CertificationRequest, Certificate, SmoothedClassifier
"""

from __future__ import annotations

import importlib
from typing import Any

from rsbench.hookspecs import hookimpl

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
}
__all__ = ["hookimpl", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rsbench' has no attribute {name!r}")
