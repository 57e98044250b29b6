"""Cohen et al.'s (2019) CERTIFY and PREDICT: Monte Carlo with Clopper-Pearson bounds."""

from __future__ import annotations

from dataclasses import dataclass

from rsbench import hookimpl
from rsbench.params import hyperparameter
from rsbench.smoothing import PRECISIONS, SmoothedClassifier
from rsbench.specs import Certifier


@dataclass(frozen=True)
class SpeedParams:
    """How the base classifier is run; none of these changes the noise drawn."""

    forward_batch: int = hyperparameter(
        0, "noisy copies per forward pass; 0 = what suits the device (128 on a CPU, the whole --batch on a GPU)", min=0
    )
    compile: bool = hyperparameter(False, "run the model through torch.compile (opt-in; first batches compile)")
    precision: str = hyperparameter(
        "float32",
        "forward-pass precision; bfloat16/float16 (CUDA autocast) certify the reduced-precision classifier, "
        "which may predict differently from float32: sound for that classifier only",
        choices=PRECISIONS,
    )


def speed_options(params: SpeedParams) -> dict:
    """The keyword arguments of :class:`SmoothedClassifier` that ``params`` sets."""
    return {"forward_batch": params.forward_batch or None, "compile": params.compile, "precision": params.precision}


@hookimpl
def register_certifiers(register):
    register(
        Certifier(
            "cohen",
            "Cohen et al. 2019: N0 selection draws, N estimation draws, one-sided Clopper-Pearson bound",
            lambda base_classifier, num_classes, sigma, params: SmoothedClassifier(
                base_classifier, num_classes, sigma, **speed_options(params)
            ),
            SpeedParams,
        )
    )
