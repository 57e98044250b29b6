"""Cohen et al.'s (2019) CERTIFY and PREDICT: Monte Carlo with Clopper-Pearson bounds."""

from __future__ import annotations

from rsbench import hookimpl
from rsbench.smoothing import SmoothedClassifier, SpeedParams, speed_options
from rsbench.specs import Certifier


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
