"""``rsbench runs``: what an unfinished run's state says (from the processes recorded in its provenance),
and a table whose numbers stay whole on a narrow terminal."""

import json
import os
import platform
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.processes import activity, start_time, this_process
from rsbench.protocol import CertificationProtocol, RunDescription
from rsbench.store import RESULT_COLUMNS, frame_rows, open_store

runner = CliRunner()


def ended_process() -> dict:
    """A process of this host that has ended (and been reaped), as a run's provenance records it."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    recorded = {"host": platform.node(), "pid": child.pid, "started": start_time(child.pid)}
    child.wait(30)
    return recorded


def test_an_unfinished_runs_state_comes_from_the_processes_that_opened_it():
    me = this_process()
    assert activity("complete", {"workers": [ended_process()]}) == "complete"
    assert activity("running", {"workers": [ended_process(), me]}) == "running"  # one rank still runs
    assert activity("running", {"workers": [ended_process()]}) == "incomplete"
    assert activity("running", {}) == "incomplete"  # imported in part, or opened by an older rsbench
    assert activity("running", None) == "incomplete"
    other = {"host": "gpu-node-7", "pid": os.getpid(), "started": me["started"]}
    assert activity("running", {"workers": [other]}) == "running on gpu-node-7?"  # not checkable from here


@pytest.mark.skipif(start_time(os.getpid()) is None, reason="process start times need Linux's /proc")
def test_a_pid_given_to_a_later_process_is_not_the_recorded_one():
    me = this_process()
    assert activity("running", {"workers": [{**me, "started": me["started"] - 1}]}) == "incomplete"


def protocol_of(n: int, budget: str = "quick-1ep-10k") -> CertificationProtocol:
    return CertificationProtocol(
        kind="certify", dataset="mnist", split="test", sigma=0.25, train_sigma=0.25, certifier="cohen",
        certifier_params={}, n0=100, n=n, alpha=0.001, budget=budget, checkpoint_sha256=f"{n:064d}",
    )  # fmt: skip


def description_of(method: str = "consistency", params=None, workers=()) -> RunDescription:
    return RunDescription(
        origin="rsbench", method=method, params=params or {}, arch="lenet", seed=3,
        provenance={"host": platform.node(), "workers": list(workers)},
    )  # fmt: skip


def add_run(store, *, n, done, planned, method="consistency", params=None, budget="quick-1ep-10k", workers=()):
    """A run of ``done`` of ``planned`` examples at N = ``n``, opened by the processes ``workers``."""
    rows = pd.DataFrame({"idx": range(done), "label": 1, "predict": 1, "radius": 0.5, "radius_kind": "exact"})
    rows = rows.assign(correct=1, n_a=None, p_a_lower=None, n=n, n0=100, alpha=0.001, draws=n + 100, seconds=1.0)
    selection = {"selections": [{"skip": 1, "limit": planned}], "planned": list(range(planned))}
    description = description_of(method, params, workers)
    return store.import_run(protocol_of(n, budget), description, [frame_rows(rows[RESULT_COLUMNS])], selection)[0]


def test_opening_a_run_records_this_process_and_forgets_those_that_ended(tmp_path):
    store = open_store(str(tmp_path / "store.db"))
    me, other = this_process(), {"host": "gpu-node-7", "pid": 1, "started": 1}
    run_id, _ = store.start_run(protocol_of(1000), description_of(), [0, 1], {"skip": 1, "limit": 2})
    assert store.get_run(run_id).provenance["workers"] == [me]
    add_run(store, n=2000, done=1, planned=2, workers=[ended_process(), other, me])
    for _ in range(2):  # a process opening a run twice is recorded once
        run_id, done = store.start_run(protocol_of(2000), description_of(), [0, 1], {"skip": 1, "limit": 2})
        assert done == {0} and store.get_run(run_id).provenance["workers"] == [other, me]


@pytest.mark.parametrize("columns", [60, 30])
def test_runs_keeps_numbers_whole_on_a_narrow_terminal(tmp_path, columns):
    db = str(tmp_path / "store.db")
    store = open_store(db)
    params = {"lam": 12.5, "eta": 0.5, "m": 2, "loss": "default"}
    add_run(store, n=123_456, done=1_234, planned=10_000, params=params, workers=[ended_process()])
    add_run(store, n=100_000, done=25, planned=25, method="gaussian", budget="paper-subset")
    result = runner.invoke(app, ["runs", "--db", db], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    tokens = result.stderr.split()
    header = ["id", "dataset", "method", "σ", "seed", "N", "examples", "budget", "origin"]
    assert [t for t in tokens if t in header] == header  # no column dropped
    for number in ("123,456", "1,234/10,000", "100,000", "0.25", "quick-1ep-10k", "paper-subset"):
        assert number in tokens, (number, result.stderr)
    assert "incomplete: interrupted" in result.stderr.replace("\n", " ")


def listed_origins(db) -> list[str]:
    """The origin column of ``rsbench runs`` (origin and notes), one entry per run."""
    listed = runner.invoke(app, ["runs", "--db", str(db)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    return [line.split(maxsplit=8)[8].strip() for line in listed.stderr.splitlines() if " mnist " in line]


def test_a_record_of_a_run_being_certified_is_incomplete_in_the_store_it_is_imported_into(tmp_path):
    here, there, record = tmp_path / "here.db", tmp_path / "there.db", tmp_path / "run.json"
    add_run(open_store(str(here)), n=1000, done=3, planned=10, workers=[this_process()])
    assert listed_origins(here) == ["rsbench, running"]
    assert runner.invoke(app, ["export", "1", "-o", str(record), "--db", str(here)]).exit_code == 0
    assert "workers" not in json.loads(record.read_text())["provenance"]
    assert runner.invoke(app, ["import", str(record), "--db", str(there)]).exit_code == 0
    assert listed_origins(there) == ["rsbench, incomplete"]  # no process writes into this store
