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


# ------------------------------------------------------------------------------------------ passwords
# A store URL's password must never be shown, stored or exported. URLs are redacted from their parsed form
# (SQLAlchemy's make_url), and every password rsbench has seen (in --db, RSBENCH_DB, the command line or a
# store opened) is also scrubbed from any text, in every spelling a URL gives it (raw, percent-encoded), so
# a password with a space, '@', ':', '/', '%' or quotes cannot slip past a parser that splits it wrongly.

HIDDEN = "***"
MIN_SCRUBBED_LENGTH = 4  # shorter passwords are hidden inside URLs only (scrubbing "a" would mangle text)
_SEEN_PASSWORDS: set[str] = set()


def _url_start(text: str, separator: int) -> int:
    """Where the URL whose ``://`` is at ``separator`` starts: the first character of its scheme."""
    start = separator
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "+-."):
        start -= 1
    return start


def _passwords_in(url: str) -> set[str]:
    """The passwords ``url`` may hold: the one SQLAlchemy parses, and the whole text between the user name
    and the last ``@`` of the authority (an unencoded ``@`` in a password splits it elsewhere)."""
    from sqlalchemy.engine import make_url

    found: set[str] = set()
    scheme, separator, rest = url.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    if separator and at and ":" in userinfo:
        found.add(userinfo.partition(":")[2])
    try:
        parsed = make_url(url)
    except Exception:  # make_url raises ArgumentError, ValueError and more on what is no URL
        return found
    found.add(parsed.password or "")
    found.update(str(value) for key, value in parsed.query.items() if "password" in key.lower())
    return {password for password in found if password}


def _spellings(password: str) -> set[str]:
    """``password`` as it may appear in text: raw, percent-encoded (every way), and as SQLAlchemy writes it."""
    from urllib.parse import quote, quote_plus

    from sqlalchemy.engine import URL

    rendered = URL.create("x", username="u", password=password, host="h").render_as_string(hide_password=False)
    written = rendered.partition("u:")[2].rpartition("@h")[0]
    return {password, quote(password, safe=""), quote_plus(password), quote(password), written}


def remember_passwords(text: str) -> None:
    """Remember the passwords of the URLs in ``text`` (each ``://`` to the end of its word, or ``text``
    whole when it is one URL), to scrub them from all text :func:`redact` sees from now on."""
    candidates = [text[_url_start(text, index) :] for index in _find_all(text, "://")]
    candidates += [word[_url_start(word, word.find("://")) :] for word in text.split() if "://" in word]
    for candidate in candidates:
        for password in _passwords_in(candidate):
            _SEEN_PASSWORDS.update(_spellings(password))


def _find_all(text: str, part: str) -> list[int]:
    found, index = [], text.find(part)
    while index >= 0:
        found.append(index)
        index = text.find(part, index + 1)
    return found


def _remember_given_stores() -> None:
    """The passwords of the store named in ``RSBENCH_DB`` and in this process's command line."""
    import os
    import sys

    for text in (os.environ.get("RSBENCH_DB", ""), *sys.argv):
        if "://" in text and text not in _REMEMBERED:
            _REMEMBERED.add(text)
            remember_passwords(text)


_REMEMBERED: set[str] = set()


def hide_url(url: str) -> str:
    """``url`` with its password (and any ``password`` query value) shown as ``***``: rendered from
    SQLAlchemy's parsed URL; where that parse is ambiguous or fails, everything between the user name and
    the last ``@`` is hidden."""
    from sqlalchemy.engine import make_url

    remember_passwords(url)
    scheme, separator, rest = url.partition("://")
    userinfo, at, host_and_path = rest.rpartition("@")
    try:
        parsed = make_url(url)
        query = {key: HIDDEN if "password" in key.lower() else value for key, value in parsed.query.items()}
        if not (at and parsed.host and "@" in parsed.host):
            return _scrub(parsed.set(query=query).render_as_string(hide_password=True))
    except Exception:  # not a URL SQLAlchemy reads: hide structurally
        pass
    if separator and at:
        user = userinfo.partition(":")[0]
        return _scrub(f"{scheme}://{user}:{HIDDEN}@{host_and_path}")
    return _scrub(url)


def _scrub(text: str) -> str:
    for spelling in sorted(_SEEN_PASSWORDS, key=len, reverse=True):
        if len(spelling) >= MIN_SCRUBBED_LENGTH:
            text = text.replace(spelling, HIDDEN)
    return text


def redact(text: str) -> str:
    """``text`` safe to show or store: each URL in it rendered with its password hidden (:func:`hide_url`;
    a ``text`` that is one URL as a whole, spaces in its password and all), and every password rsbench has
    seen (``--db``, ``RSBENCH_DB``, the command line, any store opened) replaced by ``***`` wherever it is."""
    _remember_given_stores()
    remember_passwords(text)
    separator = text.find("://")
    if separator > 0 and _url_start(text, separator) == 0:
        return hide_url(text)
    return _scrub(" ".join(_hide_urls_in_word(word) for word in _scrub(text).split(" ")))


def _hide_urls_in_word(word: str) -> str:
    """``word`` with a URL that starts inside it (``--db=postgresql://...``, ``note=mysql://...``) hidden."""
    index = word.find("://")
    if index < 0:
        return word
    start = _url_start(word, index)
    return word[:start] + hide_url(word[start:]) if start else word


def redact_command(argv: list[str]) -> str:
    """A command line to record: ``argv`` joined by spaces, each word that holds a URL (``--db URL``,
    ``--db=URL``, any other) with its password hidden, and every password seen scrubbed from the rest."""
    _remember_given_stores()
    for word in argv:
        if "://" in word:
            remember_passwords(word[_url_start(word, word.find("://")) :])
    return _scrub(" ".join(_hide_urls_in_word(word) for word in argv))
