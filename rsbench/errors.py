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
