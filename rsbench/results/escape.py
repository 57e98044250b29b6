"""One escaping helper per output format, applied at that output's boundary. Names in a board (methods,
parameters, architectures, datasets, papers) may come from a stranger's run record: each format gets them
as literal text, never as markup, a formula, a command or a control sequence.

- :func:`tex`: LaTeX text mode (all ten specials, ``^^`` included, and control characters);
- :func:`markdown_cell`: a GitHub-flavoured markdown table cell (no ``|`` or newline can forge a cell or a
  row; emphasis, links and HTML are shown literally);
- :func:`csv_cell`: a spreadsheet cell that is never a formula (OWASP: a leading ``= + - @`` or tab/CR is
  quoted with ``'``);
- :func:`printable`: terminal text without escape sequences, NUL or other control characters;
- :func:`plot_label`: matplotlib text that is never mathtext;
- :func:`http_url`: a recorded URL that may become a link (http or https only, never ``javascript:``).
HTML is escaped by Jinja2's autoescape; page file names come from ``site.page_name``.
"""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1 controls (ESC, NUL, BEL, CSI ...), not \t \n
REPLACEMENT = "\ufffd"
TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "^": r"\textasciicircum{}",
    "_": r"\_",
    "%": r"\%",
    "~": r"\textasciitilde{}",
}
TEX_SYMBOLS = [  # rsbench's own symbols, as math (applied after the specials are escaped)
    ("±", r"$\pm$"),
    ("≥", r"$\geq$"),
    ("≈", r"$\approx$"),
    ("σ", r"$\sigma$"),
    ("α", r"$\alpha$"),
    ("Φ⁻¹", r"$\Phi^{-1}$"),
    ("ℓ2", r"$\ell_2$"),
    ("·", r"$\cdot$"),
    ("–", "--"),
    (r"\textasciicircum{}(1/N)", r"$^{1/N}$"),
    ('"', "''"),
]
MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]<>|#!~])")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """``text`` with every control character (ESC, NUL, BEL, C1 ...) replaced by U+FFFD and newlines as spaces."""
    return CONTROL.sub(REPLACEMENT, text).replace("\r", " ").replace("\n", " ").replace("\t", " ")


def tex(text: str) -> str:
    """``text`` for LaTeX's text mode: each special character (``\\ { } $ & # ^ _ % ~``) escaped in one pass, so
    that no escape is escaped again and ``^^5c`` cannot become a backslash; control characters replaced."""
    escaped = "".join(TEX_SPECIALS.get(character, character) for character in printable(text))
    for plain, replacement in TEX_SYMBOLS:
        escaped = escaped.replace(plain, replacement)
    return escaped.replace(REPLACEMENT, "?")


def markdown_cell(text: str) -> str:
    """``text`` as one markdown table cell, shown literally: ``|``, emphasis, code, links and HTML escaped
    with a backslash, newlines and controls flattened."""
    return MARKDOWN_SPECIALS.sub(r"\\\1", printable(text))


def csv_cell(value: object) -> object:
    """A string that a spreadsheet would read as a formula gets a leading ``'``; numbers pass unchanged."""
    if isinstance(value, str):
        value = printable(value)
        return f"'{value}" if value.startswith(FORMULA_STARTS) else value
    return value


def plot_label(text: str) -> str:
    """``text`` for a matplotlib label or title: ``$`` escaped, so mathtext never parses it."""
    return printable(text).replace("$", r"\$")


def http_url(url: object) -> str | None:
    """``url`` where it is an http(s) URL, the only kind a record's link may become; None for anything else
    (``javascript:``, ``data:``, relative paths, non-strings)."""
    return url if isinstance(url, str) and url.lower().startswith(("https://", "http://")) else None
