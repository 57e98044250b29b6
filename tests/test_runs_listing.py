"""``rsbench runs``: a table whose numbers stay whole on a narrow terminal."""

import platform

import pandas as pd
import pytest
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.protocol import CertificationProtocol, RunDescription
from rsbench.store import RESULT_COLUMNS, frame_rows, open_store

runner = CliRunner()


def protocol_of(n: int, budget: str = "quick-1ep-10k") -> CertificationProtocol:
    return CertificationProtocol(
        kind="certify", dataset="mnist", split="test", sigma=0.25, train_sigma=0.25, certifier="cohen",
        certifier_params={}, n0=100, n=n, alpha=0.001, budget=budget, checkpoint_sha256=f"{n:064d}",
    )  # fmt: skip


def description_of(method: str = "consistency", params=None) -> RunDescription:
    return RunDescription(
        origin="rsbench", method=method, params=params or {}, arch="lenet", seed=3,
        provenance={"host": platform.node()},
    )  # fmt: skip


def add_run(store, *, n, done, planned, method="consistency", params=None, budget="quick-1ep-10k"):
    """A run of ``done`` of ``planned`` examples at N = ``n``."""
    rows = pd.DataFrame({"idx": range(done), "label": 1, "predict": 1, "radius": 0.5, "radius_kind": "exact"})
    rows = rows.assign(correct=1, n_a=None, p_a_lower=None, n=n, n0=100, alpha=0.001, draws=n + 100, seconds=1.0)
    selection = {"selections": [{"skip": 1, "limit": planned}], "planned": list(range(planned))}
    description = description_of(method, params)
    return store.import_run(protocol_of(n, budget), description, [frame_rows(rows[RESULT_COLUMNS])], selection)[0]


@pytest.mark.parametrize("columns", [60, 30])
def test_runs_keeps_numbers_whole_on_a_narrow_terminal(tmp_path, columns):
    db = str(tmp_path / "store.db")
    store = open_store(db)
    params = {"lam": 12.5, "eta": 0.5, "m": 2, "loss": "default"}
    add_run(store, n=123_456, done=1_234, planned=10_000, params=params)
    add_run(store, n=100_000, done=25, planned=25, method="gaussian", budget="paper-subset")
    result = runner.invoke(app, ["runs", "--db", db], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    tokens = result.stderr.split()
    header = ["id", "dataset", "method", "σ", "seed", "N", "examples", "budget", "origin"]
    assert [t for t in tokens if t in header] == header  # no column dropped
    for number in ("123,456", "1,234/10,000", "100,000", "0.25", "quick-1ep-10k", "paper-subset"):
        assert number in tokens, (number, result.stderr)
