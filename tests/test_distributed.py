"""Several processes on one job, launched as the README documents: DDP training on 2 CPU ranks (gloo) and
sharded certification, whose rows must equal an unsharded run's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rsbench.checkpoint import load_checkpoint
from rsbench.provenance import file_sha256
from rsbench.store import open_store

pytest_plugins = ["postgres"]  # the db_url fixture: SQLite and a real PostgreSQL server

TRAIN = [
    "--dataset",
    "mnist",
    "--sigma",
    "0.5",
    "--train-limit",
    "6000",
    "--test-limit",
    "1000",
    "--epochs",
    "2",
    "--lr",
    "0.05",
    "--batch",
    "64",
    "--no-progress",
]


def rsbench(*args: str, data: Path, db: Path | str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RSBENCH_DATA": str(data), "RSBENCH_DB": str(db)}
    command = [*args] if args[0].endswith("torchrun") else [sys.executable, "-m", "rsbench", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def train_on_two_ranks(*args: str, data: Path, db: Path | str) -> subprocess.CompletedProcess:
    """``rsbench launch --nproc-per-node 2 train ARGS``."""
    return rsbench("launch", "--nproc-per-node", "2", "train", *args, data=data, db=db)


def torchrun() -> str:
    path = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip("torchrun is not installed beside this Python")
    return path


def result_rows(db: Path | str, run_id: int) -> list[tuple]:
    rows = open_store(str(db)).results([run_id])
    return [
        tuple(r)
        for r in rows[["idx", "label", "predict", "radius", "radius_kind", "n_a", "draws"]].itertuples(index=False)
    ]


def test_two_rank_training_matches_one_process(mnist_root, tmp_path):
    """DDP with the same global batch learns as one process does; rank 0 alone writes; the checkpoint has the
    single-process format and records the world size, as does the store."""
    single = rsbench("train", *TRAIN, "--out", str(tmp_path / "one"), data=mnist_root, db=tmp_path / "one.db")
    assert single.returncode == 0, single.stderr
    double = train_on_two_ranks(*TRAIN, "--out", str(tmp_path / "two"), data=mnist_root, db=tmp_path / "two.db")
    assert double.returncode == 0, double.stderr
    assert double.stdout.strip() == str(tmp_path / "two" / "checkpoint.pth.tar")  # printed once, by rank 0
    one, two = (load_checkpoint(tmp_path / name / "checkpoint.pth.tar") for name in ("one", "two"))
    assert set(one) == set(two) and one["state_dict"].keys() == two["state_dict"].keys()
    assert two["epoch"] == 2 and two["rsbench"]["world_size"] == 2 and one["rsbench"]["world_size"] == 1
    assert len(two["rsbench"]["rng_states"]) == 2
    accuracy_one, accuracy_two = one["rsbench"]["test_accuracy"], two["rsbench"]["test_accuracy"]
    assert accuracy_one > 0.75 and abs(accuracy_one - accuracy_two) < 0.05
    log = (tmp_path / "two" / "log.tsv").read_text().splitlines()
    assert len(log) == 3  # header + one line per epoch: no rank but 0 wrote
    checkpoint_hash = file_sha256(tmp_path / "two" / "checkpoint.pth.tar")
    training = open_store(str(tmp_path / "two.db")).training_run_for(checkpoint_hash)
    assert training.provenance["world_size"] == 2


def test_resume_with_two_ranks(mnist_root, tmp_path):
    args = [
        "--dataset",
        "mnist",
        "--sigma",
        "0.5",
        "--train-limit",
        "512",
        "--test-limit",
        "100",
        "--lr",
        "0.05",
        "--batch",
        "64",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    first = train_on_two_ranks(*args, "--epochs", "1", data=mnist_root, db=tmp_path / "s.db")
    assert first.returncode == 0, first.stderr
    # a longer schedule is another run; the same one resumes (here: nothing left, still recorded)
    again = train_on_two_ranks(*args, "--epochs", "1", "--resume", data=mnist_root, db=tmp_path / "s.db")
    assert again.returncode == 0, again.stderr
    bad = train_on_two_ranks(*args, "--epochs", "1", "--batch", "63", data=mnist_root, db=tmp_path / "s.db")
    assert bad.returncode == 2
    assert "not divisible by the 2 processes" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stderr.count("rsbench: error") <= 3


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """A LeNet trained for one epoch on 2,000 real MNIST images (module-scoped: several tests certify it)."""
    from helpers import SHARED_DATA, need

    need(SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte.gz")
    folder = tmp_path_factory.mktemp("ddp_checkpoint")
    done = rsbench(
        "train",
        "--dataset",
        "mnist",
        "--sigma",
        "0.5",
        "--train-limit",
        "2000",
        "--test-limit",
        "100",
        "--epochs",
        "1",
        "--lr",
        "0.05",
        "--batch",
        "64",
        "--no-progress",
        "--out",
        str(folder / "run"),
        data=SHARED_DATA,
        db=folder / "train.db",
    )
    assert done.returncode == 0, done.stderr
    return folder / "run" / "checkpoint.pth.tar"


CERTIFY = ["--skip", "400", "--n", "2000", "--batch", "500", "--no-progress"]


def test_sharded_certification_equals_unsharded_and_resumes(mnist_root, small_checkpoint, tmp_path, db_url):
    """2 ranks write one run into one store (SQLite, then a real PostgreSQL server), row for row the
    unsharded run's; an interrupted sharded run resumes with another number of ranks."""
    plain = rsbench("certify", str(small_checkpoint), *CERTIFY, data=mnist_root, db=tmp_path / "plain.db")
    assert plain.returncode == 0, plain.stderr
    expected = result_rows(tmp_path / "plain.db", int(plain.stdout))
    assert len(expected) == 25
    # the documented torchrun form, flags that torchrun's parser would take for its own after `--`
    sharded = rsbench(
        torchrun(),
        "--nproc-per-node",
        "2",
        "-m",
        "rsbench",
        "--",
        "certify",
        str(small_checkpoint),
        *CERTIFY,
        data=mnist_root,
        db=db_url,
    )
    assert sharded.returncode == 0, sharded.stderr
    assert sharded.stdout.strip() == "1"  # one run id, printed once
    assert result_rows(db_url, 1) == expected
    store = open_store(db_url)
    assert len(store.runs()) == 1 and store.get_run(1).status == "complete"
    # interrupted: drop 9 rows, then resume with another number of ranks (1, then none left for 2)
    with store.session() as session:
        from sqlalchemy import delete

        from rsbench.store.models import CertificationRun, Result

        session.execute(delete(Result).where(Result.idx >= 6400))
        session.get(CertificationRun, 1).status = "running"
    resumed = rsbench("certify", str(small_checkpoint), *CERTIFY, data=mnist_root, db=db_url)
    assert resumed.returncode == 0, resumed.stderr
    assert result_rows(db_url, 1) == expected
    assert len(open_store(db_url).runs()) == 1


def test_indices_selections_of_one_protocol_are_one_run(mnist_root, small_checkpoint, tmp_path):
    """Disjoint --indices selections add rows to one run (one 'seed'), equal to certifying them at once."""
    db = tmp_path / "s.db"
    for selection in ("0,400,800", "1200,1600"):
        done = rsbench(
            "certify",
            str(small_checkpoint),
            "--indices",
            selection,
            "--n",
            "2000",
            "--batch",
            "500",
            "--no-progress",
            data=mnist_root,
            db=db,
        )
        assert done.returncode == 0, done.stderr
    together = rsbench(
        "certify",
        str(small_checkpoint),
        "--indices",
        "0,400,800,1200,1600",
        "--n",
        "2000",
        "--batch",
        "500",
        "--no-progress",
        data=mnist_root,
        db=tmp_path / "t.db",
    )
    store = open_store(str(db))
    assert len(store.runs()) == 1
    assert result_rows(db, 1) == result_rows(tmp_path / "t.db", int(together.stdout))
    assert torch.tensor([r[0] for r in result_rows(db, 1)]).tolist() == [0, 400, 800, 1200, 1600]
