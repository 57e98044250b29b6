"""The one exception type the CLI turns into a single line on stderr (exit code 2)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RsbenchError(Exception):
    """A user-facing error: ``message`` says what is wrong, ``hint`` how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A hint naming the closest matches of ``name`` among ``choices``, or listing them all."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "choose one of: " + ", ".join(choices) if choices else "none is registered"


MAX_SEED = 2**32 - 1  # seeds derive per-epoch and per-example streams (seed * 1_000_003 + i) within torch's 64 bits


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int in [0, 2^32 - 1]: every stream derived from it fits ``torch.manual_seed`` and a
    64-bit database integer."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RsbenchError(f"{what} must be a whole number from 0 to {MAX_SEED}, not {seed!r}", "e.g. --seed 0")
    return seed


MAX_SIGMA = 100.0  # σ in [0,1] pixel units: beyond 100 the noise is 100 times the whole pixel range


def check_sigma(sigma: object, what: str = "sigma", hint: str = "e.g. --sigma 0.5") -> float:
    """``sigma`` as a float in (0, MAX_SIGMA]: NaN, infinities, 0, negatives, 1e308 and non-numbers are refused."""
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not 0 < sigma <= MAX_SIGMA:
        raise RsbenchError(f"{what} must be a positive number at most {MAX_SIGMA:g}, not {sigma!r}", hint)
    return float(sigma)
