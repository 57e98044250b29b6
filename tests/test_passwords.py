"""A store URL's password never leaves the process: not in error lines, not in a run's recorded command or
provenance, not in an exported record, not anywhere in the store, whatever characters it holds (a space,
'@', ':', '/', '%', quotes) and however it was given (``--db URL``, ``--db=URL``, ``RSBENCH_DB``, raw or
percent-encoded). The hostile passwords are generated (Hypothesis) and catalogued here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import URL, make_url

from rsbench.store import redaction
from rsbench.store.redaction import redact, redact_command

pytest_plugins = ["postgres"]  # the postgres_server fixture: a real server (trust authentication)

HOSTILE = " @:/%'\"?&=#\\;,!$*+[]{}<>|~`\t"
passwords = st.text(alphabet=st.sampled_from("abcXYZ019" + HOSTILE), min_size=4, max_size=24)
SLOW = pytest.mark.slow  # each runs rsbench 6 times; the first two run by default
CATALOGUE = [
    "pass word",
    "se cret@host:5432/db'\"%",
    pytest.param("p@ss:w/rd", marks=SLOW),
    pytest.param("100%sure", marks=SLOW),
    pytest.param('it\'s "quoted"', marks=SLOW),
    pytest.param("x?password=y&z=#w", marks=SLOW),
]


def spellings(password: str) -> set[str]:
    """Every way the password may be written: raw, percent-encoded, as SQLAlchemy writes it in a URL."""
    written = URL.create("x", username="u", password=password, host="h").render_as_string(hide_password=False)
    return {password, quote(password, safe=""), quote_plus(password), written.partition("u:")[2].rpartition("@h")[0]}


def assert_hidden(password: str, *texts: str) -> None:
    for text in texts:
        for spelling in spellings(password):
            assert spelling not in text, f"{spelling!r} in {text!r}"


def encoded_url(password: str, host: str = "db.example") -> str:
    return URL.create("postgresql", username="me", password=password, host=host, database="runs").render_as_string(
        hide_password=False
    )


@settings(max_examples=300, deadline=None)
@given(password=passwords)
def test_urls_and_command_lines_never_show_the_password(password):
    """Each hostile password, percent-encoded (a valid URL) and typed raw (as a user would), in every form a
    command line or an error line holds it."""
    context = "rsbench runs import x.tsv --param note= --db= cannot use the store postgresql://me:***@db.example/runs"
    assume(not any(spelling in context + ": connection refused" for spelling in spellings(password)))
    for url in (encoded_url(password), f"postgresql://me:{password}@db.example/runs"):
        redactions: list[tuple] = [
            (redact, url),
            (redact, f"cannot use the store {url}: connection refused"),
            (redact_command, ["rsbench", "runs", "--db", url]),
            (redact_command, ["rsbench", "runs", f"--db={url}"]),
            (redact_command, ["rsbench", "import", "x.tsv", "--param", f"note={url}"]),
        ]
        texts = []
        for function, argument in redactions:
            redaction._SEEN_PASSWORDS.clear()  # as in a fresh process: only what this text holds is known
            redaction._REMEMBERED.clear()
            texts.append(function(argument))
        assert_hidden(password, *texts)
        assert all("***" in text for text in texts)


def test_the_redacted_forms_keep_everything_but_the_password():
    command = redact_command(
        ["rsbench", "runs", "--db", "postgresql://me:pass word@db.example:5432/runs?sslmode=require"]
    )
    assert command == "rsbench runs --db postgresql://me:***@db.example:5432/runs?sslmode=require"
    assert redact("sqlite:////tmp/a b/rsbench.db") == "sqlite:////tmp/a b/rsbench.db"
    assert redact_command(["rsbench", "runs", "--db", "runs/my.db"]) == "rsbench runs --db runs/my.db"
    query = redact("postgresql://me@/runs?host=/tmp/sock&password=hunter22")
    assert "hunter22" not in query and "host=%2Ftmp%2Fsock" in query


# ------------------------------------------------------------------------- through a real store and CLI


def rsbench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``rsbench ARGS`` as a user runs it (its own process: the recorded command line is its argv)."""
    environment = {key: value for key, value in os.environ.items() if key != "RSBENCH_DB"}
    return subprocess.run(
        [sys.executable, "-m", "rsbench", *args], capture_output=True, text=True, env={**environment, **(env or {})}
    )


def everything_stored(server, database: str) -> str:
    """Every row of every table of ``database``, as text."""
    import psycopg

    with psycopg.connect(host=str(server.root), user="rsbench", dbname=database) as connection:
        tables = [row[0] for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")]
        return "\n".join(
            str(row) for table in tables for row in connection.execute(f'SELECT t::text FROM "{table}" t').fetchall()
        )


@pytest.mark.parametrize("password", CATALOGUE)
def test_a_hostile_password_reaches_no_output_and_no_store(password, postgres_server, tmp_path):
    database = make_url(postgres_server.new_database()).database

    def url_of(socket_folder: Path) -> str:
        return URL.create(
            "postgresql", username="rsbench", password=password, database=database, query={"host": str(socket_folder)}
        ).render_as_string(hide_password=False)

    url = url_of(postgres_server.root)
    log = tmp_path / "log.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0.1\n")
    imported = [
        rsbench("import", str(log), "--dataset", "mnist", "--method", "gaussian", "--sigma", "0.5", "--db", url),
        rsbench("import", str(log), "--dataset", "mnist", "--method", "gaussian", "--sigma", "0.25", f"--db={url}"),
        rsbench(
            "import", str(log), "--dataset", "mnist", "--method", "gaussian", "--sigma", "1.0", env={"RSBENCH_DB": url}
        ),
    ]
    assert [result.returncode for result in imported] == [0, 0, 0], [result.stderr for result in imported]
    exported = rsbench("export", "1", "--format", "json", "--db", url)
    listed = rsbench("runs", "--db", url)
    assert exported.returncode == 0 and listed.returncode == 0, exported.stderr + listed.stderr
    record = json.loads(exported.stdout)
    assert "***" in record["provenance"]["command"]  # the command was recorded, its password hidden
    unreachable = rsbench("runs", "--db", url_of(tmp_path / "no-server"))
    assert unreachable.returncode == 2 and len(unreachable.stderr.strip().splitlines()) == 1
    assert_hidden(
        password,
        *(result.stdout + result.stderr for result in [*imported, exported, listed, unreachable]),
        everything_stored(postgres_server, database),
    )


@pytest.mark.parametrize("password", ["pass word", "p@ss", "a:b/c%d'e\"f g"])
def test_a_raw_password_in_a_url_no_parser_reads_is_one_line_without_it(password, tmp_path):
    """Typed without percent-encoding, such passwords make URLs SQLAlchemy splits wrongly or not at all:
    the error line still hides them."""
    for args in (
        ["runs", "--db", f"postgresql://me:{password}@db.invalid:99/runs"],
        ["runs", f"--db=mysql://me:{password}@h/x"],
    ):
        result = rsbench(*args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert_hidden(password, result.stdout + result.stderr)
