"""rsbench: train, certify and rank randomized-smoothing classifiers."""

from rsbench.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["SmoothedClassifier", "hookimpl", "__version__"]


def __getattr__(name):
    # ``from rsbench import SmoothedClassifier`` imports torch and scipy only when it is asked for.
    if name == "SmoothedClassifier":
        from rsbench.smoothing import SmoothedClassifier

        return SmoothedClassifier
    raise AttributeError(name)
