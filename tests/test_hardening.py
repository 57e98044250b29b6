"""Hostile and damaged inputs: each is one RsbenchError line (exit 2 on the command line), runs no code, and
leaves nothing half-made."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from typer.testing import CliRunner

from helpers import read_only_folder
from rsbench.checkpoint import atomic_save, classifier_from_checkpoint, load_checkpoint
from rsbench.cli import app
from rsbench.errors import RsbenchError
from rsbench.nets import build_classifier
from rsbench.plugins import get_dataset
from rsbench.results.cohen_tsv import export_tsv, import_tsv
from rsbench.store import open_store

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
MARKER = "rsbench-pwned-marker"


class RunsCode:
    """Unpickling this runs ``touch MARKER`` in the current folder."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_code_carrying_cifar_batch_is_refused_without_running(tmp_path, monkeypatch, protocol):
    """Batches of numpy arrays and lists load, whatever pickle protocol wrote them; a batch that would run
    a command is refused before running it."""
    monkeypatch.chdir(tmp_path)
    images = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"):
        entry = {"batch_label": "training batch", "labels": [3, 1, 4, 1], "data": images, "filenames": ["a.png"] * 4}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=protocol))
    train = get_dataset("cifar10").load(tmp_path, "train", True)
    assert train.labels.tolist() == [3, 1, 4, 1] * 5
    assert torch.equal(train.images[:4].reshape(4, -1), torch.from_numpy(images))
    evil = {"data": images, "labels": [3, 1, 4, RunsCode()]}
    (folder / "test_batch").write_bytes(pickle.dumps(evil, protocol=protocol))
    with pytest.raises(RsbenchError, match="not a CIFAR-10 batch .*references posix.system") as error:
        get_dataset("cifar10").load(tmp_path, "test", False)
    one_line(error)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize(
    "entry",
    [
        [1, 2, 3],
        {"labels": [1]},
        {"data": np.zeros((2, 3072), np.uint8), "labels": [1]},
        {"data": np.zeros((1, 3072), np.uint8), "labels": [10]},
        {"data": np.zeros((1, 100), np.uint8), "labels": [1]},
        {"data": np.zeros((1, 3072), np.float32), "labels": [1]},
    ],
)
def test_malformed_cifar_batches(tmp_path, entry):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(entry))
    with pytest.raises(RsbenchError, match="not a CIFAR-10 batch") as error:
        get_dataset("cifar10").load(tmp_path, "test", False)
    one_line(error)


# ---------------------------------------------------------------------------------------------- MNIST


def damaged_gzips(good: bytes) -> dict[str, bytes]:
    """A valid gzip file damaged in the ways disks and downloads damage them."""
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    crc = bytearray(good)
    crc[-6] ^= 0x01
    return {
        "truncated-half": good[: len(good) // 2],
        "truncated-tail": good[:-3],
        "header-only": good[:10],
        "flipped-middle": bytes(flipped),
        "bad-crc": bytes(crc),
        "not-gzip": b"\x1f\x8b" + b"\x00" * 30,
    }


@pytest.mark.parametrize(
    "damage", ["truncated-half", "truncated-tail", "header-only", "flipped-middle", "bad-crc", "not-gzip"]
)
def test_damaged_mnist_gzip_is_one_line(toy_mnist_root, tmp_path, damage):
    root = tmp_path / "data"
    shutil.copytree(toy_mnist_root, root)
    target = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(damaged_gzips(target.read_bytes())[damage])
    with pytest.raises(RsbenchError, match="t10k-images-idx3-ubyte.gz") as error:
        get_dataset("mnist").load(root, "test", False)
    one_line(error)


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big"),  # header cut inside the shape
        b"\x00\x00\x08\x03" + b"\xff" * 12 + b"\x00" * 100,  # a shape of 2^96 bytes
        b"\x00\x00\x0c\x01" + (3).to_bytes(4, "big") + b"\x00" * 11,  # int32 data one byte short
        b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x00\x01\x02",  # a labels file where images belong
    ],
)
def test_malformed_idx_is_one_line(toy_mnist_root, tmp_path, content):
    root = tmp_path / "data"
    shutil.copytree(toy_mnist_root, root)
    with gzip.open(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(content)
    with pytest.raises(RsbenchError) as error:
        get_dataset("mnist").load(root, "test", False)
    one_line(error)


# ---------------------------------------------------------------------------------------- checkpoints


def rsbench_checkpoint(**meta) -> dict:
    """A LeNet checkpoint in rsbench's format with metadata ``meta`` over valid defaults."""
    classifier = build_classifier("lenet", get_dataset("mnist"))
    defaults = {
        "dataset": "mnist",
        "method": "gaussian",
        "params": {},
        "sigma": 0.25,
        "seed": 0,
        "normalization": {"kind": "none", "mean": [], "std": []},
    }
    return {
        "epoch": 1,
        "arch": "lenet",
        "state_dict": classifier.state_dict(),
        "optimizer": None,
        "rsbench": {**defaults, **meta},
    }


def test_code_carrying_checkpoint_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({**rsbench_checkpoint(), "payload": RunsCode()}, path)
    with pytest.raises(RsbenchError, match="pickled code that would call posix.system") as error:
        load_checkpoint(path)
    assert "corrupt" not in one_line(error)
    assert not (tmp_path / MARKER).exists()
    with open(path, "wb") as handle:  # a bare pickle, not torch's zip format
        pickle.dump({"arch": "lenet", "state_dict": {}, "payload": RunsCode()}, handle)
    with pytest.raises(RsbenchError, match="pickled code that would call posix.system"):
        load_checkpoint(path)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize(
    "meta",
    [
        {"sigma": float("nan")},
        {"sigma": -0.5},
        {"sigma": float("inf")},
        {"sigma": "0.5"},
        {"sigma": True},
        {"normalization": {"kind": "zscore"}},
        {"normalization": "none"},
        {"normalization": {"kind": "mean_std", "mean": [0.5], "std": [0.0]}},
        {"normalization": {"kind": "mean_std", "mean": [0.5, 0.5], "std": [0.2, 0.2]}},
        {"normalization": {"kind": "mean", "mean": ["a"]}},
        {"normalization": {"kind": "mean", "mean": []}},
        {"seed": 2**64},
        {"seed": -1},
        {"dataset": 3},
        {"params": [1, 2]},
    ],
)
def test_checkpoint_recording_invalid_metadata(tmp_path, meta):
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(rsbench_checkpoint(**meta), path)
    with pytest.raises(RsbenchError, match="the checkpoint('s recorded seed must| records an invalid)") as error:
        classifier_from_checkpoint(load_checkpoint(path))
    one_line(error)


@pytest.mark.parametrize(
    "content",
    [
        {"arch": 3, "state_dict": {}},
        {"arch": "lenet", "state_dict": [1]},
        {"arch": "lenet", "state_dict": {1: 2}},
        {"arch": "lenet", "state_dict": {}, "rsbench": "meta"},
    ],
)
def test_checkpoint_of_wrong_structure(tmp_path, content):
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(content, path)
    with pytest.raises(RsbenchError, match="damaged checkpoint") as error:
        classifier_from_checkpoint(load_checkpoint(path), "mnist")
    one_line(error)


# -------------------------------------------------------------------------------------- output paths


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_export_to_missing_read_only_or_folder_paths(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text(HEADER + "0\t1\t1\t0.5\t1\t0.1\n")
    store = open_store(str(tmp_path / "s.db"))
    run_id = import_tsv(store, log, dataset="mnist", method="gaussian", sigma=0.5)
    (tmp_path / "a-folder").mkdir()
    before = listing(tmp_path)
    for target in (tmp_path / "missing" / "out.tsv", tmp_path / "a-folder", read_only_folder(tmp_path) / "o.tsv"):
        with pytest.raises(RsbenchError, match=f"cannot write {target}") as error:
            export_tsv(store, run_id, target)
        one_line(error)
    assert listing(tmp_path) == before and listing(tmp_path / "a-folder") == []


def test_checkpoint_save_to_bad_paths_leaves_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    for target in (
        tmp_path / "file" / "checkpoint.pth.tar",
        tmp_path / "folder",
        read_only_folder(tmp_path) / "checkpoint.pth.tar",
    ):
        with pytest.raises(RsbenchError, match="cannot write") as error:
            atomic_save({"x": torch.zeros(3)}, target)
        one_line(error)
    assert listing(tmp_path) == ["file", "folder"] and listing(tmp_path / "folder") == []


# ------------------------------------------------------------------------------------------- imports


def largest_radius(sigma: float, n: int, alpha: float) -> float:
    """σ·Φ⁻¹(α^{1/N}), computed here independently of rsbench."""
    return sigma * norm.ppf(alpha ** (1 / n))


@pytest.mark.parametrize(
    ("rows", "options", "message"),
    [
        ("0\t1\t1\t0.5\t1\t0.1\n", {"sigma": float("inf")}, "sigma must be positive and finite"),
        ("0\t1\t1\t0.5\t1\t0.1\n", {"sigma": float("nan")}, "sigma must be positive and finite"),
        (
            f"0\t1\t1\t{largest_radius(0.25, 100_000, 0.001) * 1.01}\t1\t0.1\n",
            {"sigma": 0.25},
            f"exceeds {largest_radius(0.25, 100_000, 0.001):.4g}, the largest",
        ),
        (
            f"0\t1\t1\t{largest_radius(0.5, 1000, 0.001) * 1.01}\t1\t0.1\n",
            {"sigma": 0.5, "n": 1000},
            f"exceeds {largest_radius(0.5, 1000, 0.001):.4g}, the largest",
        ),
        ("0\t1\t1\t0.1\t1\t0.1\n", {"sigma": 0.5, "n": 5}, "exceeds"),  # N=5 can certify nothing at α=0.001
        ("0\t1\t1\t0.5\t1\t-0.1\n", {"sigma": 0.5}, "time must be finite, >= 0"),
        ("0\t1\t1\t0.5\t1\t-0:00:01\n", {"sigma": 0.5}, "time must be finite, >= 0"),
        ("0\t1\t1\t0.5\t1\t1e20\n", {"sigma": 0.5}, "at most 1e+07 s"),  # imported, then export broke
        ("0\t10\t10\t0.5\t1\t0.1\n", {"sigma": 0.5}, "must be classes of the dataset (0 to 9)"),
        ("0\t1\t12\t0.5\t0\t0.1\n", {"sigma": 0.5}, "must be classes of the dataset"),
        ("0\t-2\t-1\t0.0\t0\t0.1\n", {"sigma": 0.5}, "label must be a class"),
        ("0\t1\t1\t0.5\t1\t0.1\n", {"sigma": 0.5, "method": "gausian"}, "unknown method 'gausian'"),
        ("0\t1\t1\t0.5\t1\t0.1\n", {"sigma": 0.5, "seed": 2**63}, "seed must be a whole number from 0 to 4294967295"),
        ("0\t1\t1\t0.5\t1\t0.1\n", {"sigma": 0.5, "seed": -1}, "seed must be a whole number"),
        ("99999999999\t1\t1\t0.5\t1\t0.1\n", {"sigma": 0.5}, "integers below 2^31"),
    ],
)
def test_import_refuses_what_no_certification_gives(tmp_path, rows, options, message):
    log = tmp_path / "log.tsv"
    log.write_text(HEADER + rows)
    store = open_store(str(tmp_path / "s.db"))
    with pytest.raises(RsbenchError) as error:
        import_tsv(store, log, **{"dataset": "mnist", "method": "gaussian", **options})
    assert message in one_line(error)
    assert len(store.runs()) == 0


def test_import_accepts_the_largest_printed_radius_and_new_methods_when_asked(tmp_path):
    log = tmp_path / "log.tsv"
    largest = largest_radius(1.0, 100_000, 0.001)
    log.write_text(HEADER + f"0\t1\t1\t{largest:.3}\t1\t0.1\n")  # Cohen's logs print 3 significant digits
    store = open_store(str(tmp_path / "s.db"))
    with pytest.raises(RsbenchError, match="did you mean 'gaussian'.*--new-method"):
        import_tsv(store, log, dataset="mnist", method="gausian", sigma=1.0)
    run_id = import_tsv(
        store, log, dataset="mnist", method="my-new-method", sigma=1.0, new_method=True, params={"k": "2"}
    )
    assert store.get_run(run_id).params == {"k": 2}


def test_import_command_with_infinite_sigma_is_one_line(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text(HEADER + "0\t1\t1\t0.5\t1\t0.1\n")
    result = CliRunner().invoke(
        app,
        [
            "import",
            str(log),
            "--dataset",
            "mnist",
            "--method",
            "gaussian",
            "--sigma",
            "inf",
            "--db",
            str(tmp_path / "s.db"),
        ],
    )
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "sigma must be positive and finite" in result.stderr


# -------------------------------------------------------------------------------------- store URLs


@pytest.mark.parametrize(
    ("url", "message", "hint"),
    [
        ("mysql://me:topsecret@db.example/runs", "needs the database driver 'MySQLdb'", "MySQLdb"),
        ("postgresql+pg8000://me:topsecret@db.example/runs", "needs the database driver 'pg8000'", "pg8000"),
        ("nosuchdb://me:topsecret@db.example/runs", "unknown kind of database", "sqlite:///"),
    ],
)
def test_store_url_without_driver_is_one_line_without_password(url, message, hint):
    with pytest.raises(RsbenchError) as error:
        open_store(url)
    assert message in one_line(error) and hint in error.value.hint and "topsecret" not in str(error.value)


def test_postgresql_without_psycopg_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(RsbenchError) as error:
        open_store("postgresql://me:topsecret@db.example/runs")
    assert "'psycopg'" in one_line(error) and error.value.hint == 'pip install "rsbench[postgres]"'
    assert "topsecret" not in str(error.value)


def test_unreachable_store_error_hides_the_password(tmp_path):
    pytest.importorskip("psycopg")
    result = CliRunner().invoke(app, ["runs", "--db", f"postgresql://me:topsecret@/runs?host={tmp_path}"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot use the store postgresql://me:***@/runs" in result.stderr and "topsecret" not in result.output


def test_recorded_command_lines_hide_store_passwords(monkeypatch):
    """Checkpoints and runs record the command line: a --db password must not be in it."""
    from rsbench.provenance import provenance

    monkeypatch.setattr(sys, "argv", ["rsbench", "train", "--db", "postgresql://me:topsecret@db.example/runs"])
    command = provenance()["command"]
    assert "topsecret" not in command and "postgresql://me:***@db.example/runs" in command
