"""A store URL's password must never be shown, stored or exported.

URLs are redacted from their parsed form (SQLAlchemy's ``make_url``), and every password rsbench has seen (in
``--db``, ``RSBENCH_DB``, the command line or a store opened) is also scrubbed from any text, in every
spelling a URL gives it (raw, percent-encoded), so a password with a space, '@', ':', '/', '%' or quotes
cannot slip past a parser that splits it wrongly. It lives in the store package because it parses URLs
as the store's engine does.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL, make_url

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
    for text in (os.environ.get("RSBENCH_DB", ""), *sys.argv):
        if "://" in text and text not in _REMEMBERED:
            _REMEMBERED.add(text)
            remember_passwords(text)


_REMEMBERED: set[str] = set()


def hide_url(url: str) -> str:
    """``url`` with its password (and any ``password`` query value) shown as ``***``: rendered from
    SQLAlchemy's parsed URL; where that parse is ambiguous or fails, everything between the user name and
    the last ``@`` is hidden."""
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
