"""Hostile names (as a stranger's run record may carry) in every output: each format shows them as literal
text. The catalogue below and Hypothesis's strings are the inputs; each test checks a property of the
format itself (a CSV parser, a markdown table's cell count, TeX's special characters, a terminal's control
characters, matplotlib's mathtext, the site's file names), never the helper against itself."""

import csv
import io
import re
import shutil
import subprocess
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from test_leaderboard import add_run, make_rows

from rsbench.results.board import build
from rsbench.results.escape import csv_cell, markdown_cell, printable, tex
from rsbench.results.figures import figure
from rsbench.results.render import render, rich_table
from rsbench.results.site import build_site, page_name
from rsbench.store import open_store

HOSTILE = [
    "a|b",
    "line\nbreak| forged | row |",
    '=HYPERLINK("http://x")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1)",
    "\\input{/etc/passwd}",
    "^^5cinput{/etc/passwd}",
    "$\\alpha$ & 50% #1 ~ _x_ {y}",
    "[/]",
    "[bold red]x[/bold red]",
    "\x1b[31mred\x1b[0m\x07",
    "nul\x00byte",
    "<script>alert(1)</script>",
    "[link](javascript:alert(1))",
    "**bold** `code`",
    "$x$ $y$",
    "javascript:alert(1)",
    "../../etc/x",
    "/abs/path",
]
names = st.text(min_size=1, max_size=40)


def board_with(name, dataset="mnist"):
    """A store with one run whose method and parameters carry ``name``."""
    store = open_store(f"{tempfile.mkdtemp()}/s.db")
    add_run(store, make_rows([1, 2], [1, 2], [0.3, 0.6], [110, 110]), name, {name: name}, 0, dataset=dataset)
    return store, build(store, dataset, (0.0, 0.5))


def split_cells(line: str) -> list[str]:
    """A GFM table row's cells: split on pipes not escaped by a backslash."""
    return re.split(r"(?<!\\)\|", line.strip().strip("|"))


@pytest.mark.parametrize("name", HOSTILE)
def test_markdown_rows_keep_their_cells(name):
    _, board = board_with(name)
    lines = render(board, "markdown").splitlines()
    header, rows = lines[2], lines[4:]
    assert len(rows) == 1 and len(split_cells(rows[0])) == len(split_cells(header))
    assert not re.search(r"(?<!\\)<", rows[0]) and not re.search(r"(?<!\\)\]\(", rows[0])  # no raw HTML or link


@pytest.mark.parametrize("name", HOSTILE)
def test_csv_cells_are_never_formulas(name):
    _, board = board_with(name)
    rows = list(csv.DictReader(io.StringIO(render(board, "csv"))))
    assert len(rows) == 1
    for key in ("method", "params"):
        assert not rows[0][key].startswith(("=", "+", "-", "@", "\t", "\r")), rows[0][key]
    assert rows[0]["method"].removeprefix("'") == printable(name)
    assert float(rows[0]["acr_mean"]) == pytest.approx(0.45)  # numbers stay numbers


def tex_leftovers(text: str) -> str:
    """``text`` with rsbench's escapes removed: any TeX special left in it came through unescaped."""
    own = (r"$\pm$", r"$\geq$", r"$\sigma$", r"$\alpha$", r"$\Phi^{-1}$", r"$\ell_2$", r"$\cdot$", r"$^{1/N}$")
    for escape in (r"\textbackslash{}", r"\textasciicircum{}", r"\textasciitilde{}", r"\textbf{", r"\caption{", *own):
        text = text.replace(escape, "")
    return re.sub(r"\\[{}$&#_%]", "", text)


@given(names)
@settings(max_examples=200, deadline=None)
def test_tex_escapes_every_special_character(name):
    left = tex_leftovers(tex(name))
    assert not re.search(r"[\\{}$&#^_%~]", left), (name, tex(name))
    assert "^^" not in tex(name)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is absent (apt-get install texlive-latex-base)")
@pytest.mark.parametrize("name", ["\\input{/etc/passwd}", "^^5cinput{/etc/passwd}", "$x$ & 50% #1 ~ _x_ {y}"])
def test_latex_table_compiles_and_prints_the_name_not_a_file(name, tmp_path):
    _, board = board_with(name)
    body = render(board, "latex").replace("\\toprule", "\\hline").replace("\\midrule", "\\hline")
    body = body.replace("\\bottomrule", "\\hline")
    (tmp_path / "t.tex").write_text("\\documentclass{article}\\begin{document}" + body + "\\end{document}")
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-no-shell-escape", "t.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-1500:]
    assert "(/etc/passwd" not in (tmp_path / "t.log").read_text()  # TeX logs every file it opens as "(path"


@given(names)
@settings(max_examples=200, deadline=None)
def test_markdown_cell_is_one_literal_cell(name):
    cell = markdown_cell(name)
    assert "\n" not in cell and len(split_cells(f"| {cell} | x |")) == 2


@given(names)
@settings(max_examples=200, deadline=None)
def test_csv_cell_never_starts_a_formula(name):
    assert not str(csv_cell(name)).startswith(("=", "+", "-", "@", "\t", "\r"))


@pytest.mark.parametrize("name", HOSTILE)
def test_terminal_table_prints_names_without_markup_or_control_characters(name):
    _, board = board_with(name)
    console = Console(width=200, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    console.print(rich_table(board, wide=True))
    out = console.file.getvalue()
    # rich's own styling uses SGR sequences; the name's BEL, NUL and its own ESC must not survive
    assert "\x07" not in out and "\x00" not in out and "\x1b[31mred" not in out
    plain = Console(width=400, file=io.StringIO(), record=True)
    plain.print(rich_table(board, wide=True))
    assert printable(name)[:8] in plain.export_text()


@pytest.mark.parametrize("name", ["$x$ $y$", "$\\frac{1}{0}$", "50% $", "\\$unbalanced"])
def test_plots_draw_dollar_names_literally(name, tmp_path):
    store, board = board_with(name)
    fig = figure(store, board)
    fig.savefig(tmp_path / "f.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels and all("$" not in label.replace("\\$", "") for label in labels)


@pytest.mark.parametrize("name", HOSTILE + ["..", ".", "a" * 300, "mnist"])
def test_site_file_names_stay_in_the_folder(name, tmp_path):
    page = page_name(name)
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", page) and not page.startswith(".")
    assert (tmp_path / page).resolve().parent == tmp_path.resolve()
    assert page_name(name) != page_name(name + "x")


def test_a_site_with_hostile_names_writes_only_inside_its_folder(tmp_path):
    store, _ = board_with("<script>alert(1)</script>", dataset="javascript:alert(1)/../../x")
    out = tmp_path / "deep" / "site"
    build_site(store, out)
    written = [p.resolve() for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(out.resolve() in p.parents for p in written)
    index = (out / "index.html").read_text()
    assert 'href="javascript:' not in index and "<script>alert" not in index
    assert all("<script>alert" not in p.read_text() for p in written if p.suffix == ".html")


def test_messages_show_bracketed_paths_literally(tmp_path):
    """A file name like ``[bold]run [quick].tsv`` is text in a message, never rich markup."""
    from typer.testing import CliRunner

    from rsbench.cli import app

    db = str(tmp_path / "s.db")
    add_run(open_store(db), make_rows([1, 2], [1, 2], [0.1, 0.2], [110] * 2), "gaussian", {}, 0)
    output = tmp_path / "[bold]run [quick].tsv"
    result = CliRunner().invoke(app, ["export", "1", "-o", str(output), "--db", db])
    assert result.exit_code == 0, result.output
    assert f"wrote 2 rows to {output}" in result.stderr.replace("\n", "")
