"""The store under both backends (SQLite and a real PostgreSQL server the session starts): races between
processes, 64-bit seeds, NaN measurements, and passwords that never leave the process."""

from __future__ import annotations

import math
import multiprocessing
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from sqlalchemy import create_engine, make_url, text

from rsbench.config import TrainConfig
from rsbench.errors import RsbenchError
from rsbench.nets import build_classifier
from rsbench.plugins import get_dataset
from rsbench.processes import this_process
from rsbench.protocol import CertificationProtocol, RunDescription
from rsbench.results.board import build
from rsbench.results.cohen_tsv import import_tsv
from rsbench.store import open_store

pytest_plugins = ["postgres"]  # the db_url and postgres_server fixtures
# fork: workers start in milliseconds with rsbench already imported (callers hold no open store connection)
FORK = multiprocessing.get_context("fork")
MAX_SEED = 2**32 - 1  # the largest seed rsbench accepts
SECRET = "hunter2-secret"


def run_spec(key: str, seed: int = 0, noise_seed: int = 0, provenance: dict | None = None):
    """The protocol and description of a run whose model is named ``key`` (its checkpoint hash)."""
    protocol = CertificationProtocol(
        kind="certify", dataset="mnist", split="test", sigma=0.5, train_sigma=0.5, certifier="cohen",
        certifier_params={}, n0=100, n=1000, alpha=0.001, noise_seed=noise_seed, checkpoint_sha256=key,
    )  # fmt: skip
    description = RunDescription(
        origin="rsbench", method="gaussian", params={"x": 1}, arch="lenet", seed=seed, batch_size=100,
        provenance=provenance or {},
    )  # fmt: skip
    return protocol, description


def row(i: int) -> dict:
    """Example ``i``'s row: a deterministic certificate, as a re-run with the same noise gives."""
    return dict(
        idx=i,
        label=i % 10,
        predict=i % 10,
        radius=0.01 * i,
        correct=1,
        n_a=900,
        n=1000,
        n0=100,
        alpha=0.001,
        seconds=0.0,
    )


def engine_for(url: str):
    """An engine of our own on the store (psycopg 3 for PostgreSQL)."""
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def counts(url: str) -> dict[str, int]:
    """Runs, rows and distinct (run, idx) pairs, counted with SQL of our own."""
    engine = engine_for(url)
    with engine.connect() as connection:
        runs = connection.scalar(text("select count(*) from certification_runs"))
        rows = connection.scalar(text("select count(*) from results"))
        distinct = connection.scalar(text("select count(*) from (select distinct run_id, idx from results) t"))
    engine.dispose()
    return {"runs": runs, "rows": rows, "distinct": distinct}


def in_processes(target, args_list, timeout=180) -> list[int]:
    """Run ``target(*args)`` in one spawned process each, started together; their exit codes."""
    barrier = FORK.Barrier(len(args_list))
    workers = [FORK.Process(target=target, args=(barrier, *args)) for args in args_list]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout)
    return [worker.exitcode for worker in workers]


def _open(barrier, url):
    barrier.wait()
    open_store(url)


def test_new_store_opened_by_six_processes_at_once(db_url):
    assert in_processes(_open, [(db_url,)] * 6) == [0] * 6
    store = open_store(db_url)  # and the schema is whole: a run can be written
    store.start_run(*run_spec("k"), [0], {"list": [0]})
    assert counts(db_url)["runs"] == 1


def _certify(barrier, url, key, indices):
    store = open_store(url)
    barrier.wait()
    run_id, done = store.start_run(*run_spec(key), indices, {"list": indices})
    for i in indices:
        if i not in done:
            store.add_certificates(run_id, [row(i)])
    store.finish_run(run_id)


def _read_leaderboard(barrier, url, rounds):
    store = open_store(url)
    barrier.wait()
    for _ in range(rounds):
        build(store, "mnist", (0.0, 0.5))


def test_four_certifying_processes_and_readers_lose_and_duplicate_nothing(db_url):
    """Two identical commands (one protocol) join one run; two others write their own; readers render the
    leaderboard meanwhile."""
    jobs = [
        (db_url, "same", list(range(60))),
        (db_url, "same", list(range(60))),
        (db_url, "other-a", list(range(0, 60, 2))),
        (db_url, "other-b", list(range(40))),
    ]
    open_store(db_url).engine.dispose()
    barrier = FORK.Barrier(6)
    workers = [FORK.Process(target=_certify, args=(barrier, *job)) for job in jobs]
    workers += [FORK.Process(target=_read_leaderboard, args=(barrier, db_url, 15)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(240)
    assert [w.exitcode for w in workers] == [0] * 6
    assert counts(db_url) == {"runs": 3, "rows": 60 + 30 + 40, "distinct": 130}
    runs = open_store(db_url).runs()
    assert sorted(runs.status) == ["complete"] * 3 and sorted(runs.num_planned) == [30, 40, 60]


def _import(barrier, url, path, queue):
    store = open_store(url)
    barrier.wait()
    try:
        queue.put(("ok", import_tsv(store, path, dataset="mnist", method="gaussian", sigma=0.5)))
    except RsbenchError as error:
        queue.put(("error", error.message))


def test_three_identical_imports_store_one_run(db_url, tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text(
        "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
        + "".join(f"{i}\t{i % 10}\t{i % 10}\t0.5\t1\t0.1\n" for i in range(200))
    )
    open_store(db_url).engine.dispose()
    queue = FORK.Queue()
    assert in_processes(_import, [(db_url, log, queue)] * 3) == [0, 0, 0]
    outcomes = sorted(queue.get(timeout=10) for _ in range(3))
    assert outcomes[0][0] == "error" and outcomes[1][0] == "error" and outcomes[2][0] == "ok"
    winner = outcomes[2][1]
    assert outcomes[0][1] == outcomes[1][1] == f"{log} is already imported as run {winner}"
    assert counts(db_url) == {"runs": 1, "rows": 200, "distinct": 200}


def test_a_second_identical_command_joins_the_run_and_its_rows(db_url):
    store = open_store(db_url)
    first, _ = store.start_run(*run_spec("k"), [0, 1, 2], {"list": [0, 1, 2]})
    second, done = store.start_run(*run_spec("k"), [0, 1, 2, 3], {"list": [0, 1, 2, 3]})
    assert second == first and done == set()
    for i in (0, 1, 2):
        store.add_certificates(first, [row(i)])
        store.add_certificates(second, [row(i)])  # both certified it: the same certificate, kept once
    store.add_certificates(second, [row(3)])
    store.finish_run(first)
    assert counts(db_url) == {"runs": 1, "rows": 4, "distinct": 4}
    assert store.get_run(first).status == "complete" and store.get_run(first).num_planned == 4


def test_largest_seeds_and_nan_measurements_are_stored(db_url):
    store = open_store(db_url)
    spec = run_spec("k", seed=MAX_SEED, noise_seed=MAX_SEED, provenance={"throughput": math.nan})
    run_id, _ = store.start_run(*spec, [0], {"list": [0]})
    run = store.get_run(run_id)
    expected = {"throughput": None, "workers": [this_process()]}  # the process that opened it, for `rsbench runs`
    assert (run.seed, run.noise_seed, run.provenance) == (MAX_SEED, MAX_SEED, expected)

    config = TrainConfig(dataset="mnist", arch="lenet", method="gaussian", sigma=0.5, seed=MAX_SEED)
    # a resumed run whose last epoch was already checkpointed: nothing timed, nothing tested
    result = SimpleNamespace(
        checkpoint=__file__,
        checkpoint_sha256="0" * 64,
        epochs=3,
        test_accuracy=math.nan,
        images_per_second=math.nan,
        meta={"params": {}, "provenance": {}},
    )
    training_id = store.record_training(config, result)
    engine = engine_for(db_url)
    with engine.connect() as connection:
        stored = connection.execute(
            text(f"select seed, test_accuracy, images_per_second from training_runs where id = {training_id}")
        ).one()
    engine.dispose()
    assert tuple(stored) == (MAX_SEED, None, None)


def test_passwords_are_never_shown_or_stored(db_url, monkeypatch, tmp_path):
    secrets = [SECRET] + ([make_url(db_url).password] if make_url(db_url).password else [])
    secret_url = f"postgresql://someone:{SECRET}@db.example/x"
    monkeypatch.setattr(sys, "argv", ["rsbench", "import", "--db", secret_url, "--dsn", f"x?password={SECRET}"])
    store = open_store(db_url)
    log = tmp_path / "log.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0.1\n")
    run_id = import_tsv(store, log, dataset="mnist", method="gaussian", sigma=0.5)
    assert "postgresql://someone:***@db.example/x" in store.get_run(run_id).provenance["command"]
    engine = engine_for(db_url)
    with engine.connect() as connection:
        dump = str(connection.execute(text("select * from certification_runs")).all())
    engine.dispose()
    for secret in secrets:
        assert secret not in store.url and secret not in dump


@pytest.mark.slow
def test_identical_certify_commands_started_together_share_one_run(db_url, toy_mnist_root, tmp_path):
    """Two `rsbench certify` processes of one protocol: both succeed (the second joins the first's run, or
    finds it complete), and the store holds one run with one row per example."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "checkpoint.pth.tar"
    torch.save(
        {
            "epoch": 1,
            "arch": "lenet",
            "state_dict": build_classifier("lenet", get_dataset("mnist")).state_dict(),
            "optimizer": None,
            "rsbench": {"dataset": "mnist", "method": "gaussian", "params": {}, "sigma": 0.25, "seed": 0},
        },
        checkpoint,
    )
    command = [
        sys.executable,
        "-m",
        "rsbench",
        "certify",
        str(checkpoint),
        "--limit",
        "30",
        "--n",
        "300",
        "--n0",
        "20",
        "--batch",
        "300",
        "--data-dir",
        str(toy_mnist_root),
        "--db",
        db_url,
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0 or "already complete in the store (run 1)" in stderr, stderr
        assert "UNIQUE" not in stderr and "Traceback" not in stderr
    assert counts(db_url) == {"runs": 1, "rows": 30, "distinct": 30}
    assert open_store(db_url).runs().status.tolist() == ["complete"]
