"""Every output a command writes (`export` JSON and TSV, `leaderboard -o`, `--plot`) goes through the one
atomic write: a bad target (a folder, a missing or read-only folder, a dangling symbolic link, ``''``, a
full disk) is one error line, leaves no temporary file and no 0-byte output, and an existing file is
either kept whole or replaced whole."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import assert_one_error_line, read_only_folder
from rsbench.cli import app
from rsbench.errors import RsbenchError
from rsbench.results.cohen_tsv import import_tsv
from rsbench.store import open_store

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
CANNOT_WRITE = "rsbench: error: cannot write"
ROWS = "0\t1\t1\t0.5\t1\t0.1\n1\t2\t2\t0.25\t1\t0.1\n2\t3\t5\t0.0\t0\t0.1\n"


@pytest.fixture
def db(tmp_path) -> str:
    """A store (outside the folder the tests write into) holding run 1, an imported MNIST log."""
    store_folder = tmp_path / "store"
    store_folder.mkdir()
    log = store_folder / "log.tsv"
    log.write_text(HEADER + ROWS)
    import_tsv(open_store(str(store_folder / "s.db")), log, dataset="mnist", method="gaussian", sigma=0.5)
    return str(store_folder / "s.db")


COMMANDS = {
    "export-json": lambda target: ["export", "1", "--format", "json", "-o", target],
    "export-tsv": lambda target: ["export", "1", "--format", "tsv", "-o", target],
    "leaderboard": lambda target: ["leaderboard", "--dataset", "mnist", "--format", "markdown", "-o", target],
    "plot": lambda target: ["leaderboard", "--dataset", "mnist", "--format", "csv", "--plot", target],
}


def bad_targets(out: Path) -> dict[str, tuple[str, str]]:
    """Targets no output may be written to, and what the error line says about each (names end in .png,
    which --plot keeps for its PNG file)."""
    (out / "a-folder.png").mkdir()
    (out / "a-file").write_text("kept")
    (out / "dangling.png").symlink_to(out / "gone" / "x.png")
    (out / "link-to-folder.png").symlink_to(out / "a-folder.png")
    return {
        "folder": (str(out / "a-folder.png"), "is a folder"),
        "link to a folder": (str(out / "link-to-folder.png"), "is a folder"),
        "empty name": ("", "no file name given"),
        "dangling link": (str(out / "dangling.png"), "dangling symbolic link"),
        "under a file": (str(out / "a-file" / "x.png"), "is a file"),
        "read-only folder": (str(read_only_folder(out) / "x.png"), "Permission denied"),
    }


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder`` with its bytes (or its link target)."""
    entries: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            entries[str(path)] = os.readlink(path)
        elif path.is_file():
            entries[str(path)] = path.read_bytes()
        else:
            entries[str(path)] = "folder"
    return entries


def invoke(args: list[str], db: str, cwd: Path):
    with contextlib.chdir(cwd):
        return CliRunner().invoke(app, [*args, "--db", db])


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_output_targets_are_one_line_and_leave_nothing(command, db, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name, (target, fragment) in bad_targets(out).items():
        before = snapshot(out)
        result = invoke(COMMANDS[command](target), db, cwd=out)
        assert_one_error_line(result, fragment, starts=CANNOT_WRITE)
        assert snapshot(out) == before, f"{command} onto {name} changed the folder"


@pytest.mark.parametrize("command", ["export-json", "export-tsv"])
def test_export_into_a_missing_folder_is_one_line(command, db, tmp_path):
    result = invoke(COMMANDS[command](str(tmp_path / "missing" / "x.out")), db, cwd=tmp_path)
    assert_one_error_line(result, "does not exist", starts=CANNOT_WRITE)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_full_disk_keeps_the_old_file_whole(command, db, tmp_path, monkeypatch):
    """ENOSPC while the data is flushed (as on a full disk): one line, the previous file untouched, no
    temporary file."""
    out = tmp_path / "out"
    out.mkdir()
    targets = [out / "result.png", out / "result.pdf"] if command == "plot" else [out / "result.txt"]
    for target in targets:
        target.write_bytes(b"the previous output")
    before = snapshot(out)

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    result = invoke(COMMANDS[command](str(out / "result.txt")), db, cwd=out)
    assert_one_error_line(result, "the disk is full", starts=CANNOT_WRITE)
    assert snapshot(out) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_good_targets_are_written_whole(command, db, tmp_path):
    """The same commands succeed onto a fresh name, a link to an existing file (written through, the
    link kept) and, for leaderboards and plots, a folder that does not exist yet."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "real.txt").write_text("old")
    (out / "link.txt").symlink_to(out / "real.txt")
    targets = [out / "fresh.txt", out / "link.txt"]
    if command in ("leaderboard", "plot"):
        targets.append(out / "new" / "folder" / "board.txt")
    for target in targets:
        result = invoke(COMMANDS[command](str(target)), db, cwd=out)
        assert result.exit_code == 0, result.output
    written = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
    assert all(p.stat().st_size > 0 for p in written) and not [p for p in written if p.name.startswith(".")]
    assert (out / "link.txt").is_symlink()
    if command != "plot":
        assert (out / "real.txt").read_text() != "old"


def test_atomic_write_replaces_whole_and_sets_the_mode(tmp_path):
    from rsbench.atomic import atomic_write  # here: the command tests above also run against older versions

    target = tmp_path / "x.bin"
    atomic_write(target, b"first")
    atomic_write(target, b"second", mode=0o600)
    assert target.read_bytes() == b"second" and target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["x.bin"]


def test_write_json_strict_refuses_non_finite_numbers_and_compresses(tmp_path):
    import gzip
    import json

    from rsbench.atomic import write_json_strict

    with pytest.raises(RsbenchError, match="not strict JSON"):
        write_json_strict(tmp_path / "x.json", {"acr": float("nan")})
    assert os.listdir(tmp_path) == []
    write_json_strict(tmp_path / "x.json.gz", {"acr": 1.5, "name": "é"})
    assert json.loads(gzip.decompress((tmp_path / "x.json.gz").read_bytes())) == {"acr": 1.5, "name": "é"}


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 64 KiB tmpfs: a real full disk (needs root and the right to mount; skipped otherwise)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_really_full_disk_is_one_line_and_leaves_nothing(tiny_filesystem):
    from rsbench.atomic import atomic_write

    (tiny_filesystem / "x.bin").write_bytes(b"old")
    with pytest.raises(RsbenchError, match="the disk is full") as error:
        atomic_write(tiny_filesystem / "x.bin", os.urandom(1 << 20))
    assert "\n" not in str(error.value)
    assert os.listdir(tiny_filesystem) == ["x.bin"] and (tiny_filesystem / "x.bin").read_bytes() == b"old"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://x.org/a b", "ftp://x.org/paper"])
def test_an_export_that_import_would_refuse_is_never_written(db, tmp_path, url):
    """`rsbench validate` and `rsbench import` accept only http(s) links without spaces or controls: an
    export given another --paper-url fails in one line and leaves no file (stdout gets nothing either)."""
    target = tmp_path / "run.json.gz"
    result = invoke(["export", "1", "--format", "json", "--paper-url", url, "-o", str(target)], db, tmp_path)
    assert_one_error_line(result, "the record would not validate", "model_info.paper_url")
    assert not target.exists()
    printed = invoke(["export", "1", "--format", "json", "--paper-url", url], db, tmp_path)
    assert printed.exit_code == 2 and printed.stdout == ""
