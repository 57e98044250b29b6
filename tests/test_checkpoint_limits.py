"""A checkpoint is refused before it is unpacked when it would take more memory than the limit
(RSBENCH_MAX_CHECKPOINT_BYTES, default 4 GiB): a zip bomb is one error line naming the limit, never gigabytes
of memory. The bombs are made here: torch's own zip format with its members deflated, and archives whose
directory declares sizes no file of that length holds."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rsbench.checkpoint import load_checkpoint
from rsbench.cli import app
from rsbench.errors import RsbenchError

MIB = 2**20


def deflated_checkpoint(path: Path, zeros: int) -> Path:
    """A real torch checkpoint holding ``zeros`` bytes of zero weights, its zip members deflated (torch's
    reader inflates them): a few kilobytes on disk for ``zeros`` bytes in memory."""
    buffer = io.BytesIO()
    torch.save({"arch": "lenet", "state_dict": {"1.weight": torch.zeros(zeros // 4)}}, buffer)
    with zipfile.ZipFile(buffer) as plain, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as packed:
        for member in plain.infolist():
            packed.writestr(member.filename, plain.read(member.filename))
    return path


def declared_size_bomb(path: Path, declared: int, members: int) -> Path:
    """A zip archive whose central directory declares ``members`` members of ``declared`` bytes each (at
    most 2^32 - 2: the 32-bit field) while each holds 3 bytes: what a reader that trusts the directory
    would allocate."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(members):
            archive.writestr(f"archive/data/{index}", b"abc")
    data = bytearray(buffer.getvalue())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:  # each central directory entry
        struct.pack_into("<I", data, start + 24, declared)  # its uncompressed size
        start += 4
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def torch_load_not_called(monkeypatch):
    """Fail the test if anything reaches torch.load: the limit must act before any unpacking."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on a checkpoint over the limit")

    monkeypatch.setattr(torch, "load", refuse)


def test_a_deflated_zip_bomb_is_refused_before_loading(tmp_path, monkeypatch, torch_load_not_called):
    bomb = deflated_checkpoint(tmp_path / "bomb.pth.tar", 64 * MIB)
    assert bomb.stat().st_size < MIB // 4  # 64 MiB of weights in well under a quarter MiB
    monkeypatch.setenv("RSBENCH_MAX_CHECKPOINT_BYTES", str(16 * MIB))
    with pytest.raises(RsbenchError) as error:
        load_checkpoint(bomb)
    message = str(error.value)
    assert "\n" not in message and "more than the limit of 16,777,216 bytes" in message
    assert "RSBENCH_MAX_CHECKPOINT_BYTES" in message and error.value.hint


def test_raising_the_limit_loads_the_same_file(tmp_path, monkeypatch):
    bomb = deflated_checkpoint(tmp_path / "bomb.pth.tar", 64 * MIB)
    monkeypatch.setenv("RSBENCH_MAX_CHECKPOINT_BYTES", str(65 * MIB))
    checkpoint = load_checkpoint(bomb)
    assert checkpoint["state_dict"]["1.weight"].numel() == 16 * MIB


def test_the_default_limit_refuses_gigabytes_declared_in_a_small_file(tmp_path, monkeypatch, torch_load_not_called):
    """Two members declared at 3.75 GiB each in a file of a few hundred bytes: over the 4 GiB default."""
    monkeypatch.delenv("RSBENCH_MAX_CHECKPOINT_BYTES", raising=False)
    bomb = declared_size_bomb(tmp_path / "bomb.pth.tar", 0xF000_0000, members=2)
    assert bomb.stat().st_size < 1000
    with pytest.raises(RsbenchError) as error:
        load_checkpoint(bomb)
    assert f"unpacks to {2 * 0xF000_0000:,} bytes, more than the limit of {4 * 2**30:,} bytes" in str(error.value)


def test_a_legacy_checkpoint_is_bounded_by_its_size(tmp_path, monkeypatch, torch_load_not_called):
    """Legacy (pre-zip) checkpoints store raw storages: the file's length is what loading takes."""
    path = tmp_path / "legacy.pth.tar"
    checkpoint = {"arch": "lenet", "state_dict": {"w": torch.zeros(MIB)}}
    with open(path, "wb") as handle:
        torch.save(checkpoint, handle, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:4] != b"PK\x03\x04"
    monkeypatch.setenv("RSBENCH_MAX_CHECKPOINT_BYTES", str(MIB))
    with pytest.raises(RsbenchError, match="more than the limit of 1,048,576 bytes"):
        load_checkpoint(path)


def test_a_zip_checkpoint_whose_directory_is_damaged_is_one_line(tmp_path):
    path = deflated_checkpoint(tmp_path / "c.pth.tar", MIB)
    data = path.read_bytes()
    path.write_bytes(data[: data.find(b"PK\x01\x02")])  # the central directory cut off
    with pytest.raises(RsbenchError, match="not a readable torch checkpoint") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value", ["lots", "-5", "0", "1.5e9", ""])
def test_an_invalid_limit_is_one_line(value, tmp_path, monkeypatch):
    path = deflated_checkpoint(tmp_path / "c.pth.tar", MIB)
    monkeypatch.setenv("RSBENCH_MAX_CHECKPOINT_BYTES", value)
    with pytest.raises(RsbenchError, match="RSBENCH_MAX_CHECKPOINT_BYTES must be a positive whole number"):
        load_checkpoint(path)


def test_certify_of_a_zip_bomb_is_one_line_and_creates_no_store(tmp_path, monkeypatch):
    bomb = deflated_checkpoint(tmp_path / "bomb.pth.tar", 64 * MIB)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RSBENCH_DB")
    result = CliRunner().invoke(
        app, ["certify", str(bomb), "--n", "100"], env={"RSBENCH_MAX_CHECKPOINT_BYTES": str(16 * MIB)}
    )
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "more than the limit" in result.stderr and "RSBENCH_MAX_CHECKPOINT_BYTES" in result.stderr
    assert not (tmp_path / "rsbench.db").exists()
