import json

import pytest
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.params import parse_params
from rsbench.plugins import get_method
from rsbench.reproduce import BUDGETS, list_experiments, load_experiment, scaled_milestones

runner = CliRunner()


def test_every_supplement_table_is_an_experiment_with_valid_rows():
    experiments = list_experiments()
    assert {"table2", "table3", "table4", "table5", "table6", "table7", "table2-slice"} <= set(experiments)
    sizes = {}
    for name in experiments:
        experiment = load_experiment(name)
        for row in experiment["rows"]:
            parse_params(get_method(row["method"]).Params, row["params"], row["method"])
            assert row["sigma"] > 0 and row["arch"]
        sizes[name] = len(experiment["rows"]) * len(experiment.get("seeds", [0]))
    assert sizes["table2"] == 18 and sizes["table3"] == 90 and sizes["table7"] == 21
    methods = {row["method"] for row in load_experiment("table2")["rows"]}
    assert methods == {"gaussian", "consistency", "smoothadv", "stability", "macer"}


def test_budgets_are_recorded_and_schedules_scaled():
    assert BUDGETS["full"].n == 100_000 and BUDGETS["full"].skip == 1 and BUDGETS["full"].epochs is None
    assert scaled_milestones("mnist", 10) == (3, 7)
    assert scaled_milestones("mnist", None) is None


def test_reproduce_list():
    result = runner.invoke(app, ["reproduce", "--list"])
    assert result.exit_code == 0 and "table2-slice" in result.stderr


@pytest.mark.slow
def test_tiny_end_to_end_reproduction(mnist_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["reproduce", "table2-slice", "--budget", "smoke", "--data-dir", str(mnist_root), "--no-progress"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = (tmp_path / "leaderboards" / "table2-slice-smoke.md").read_text()
    assert "budget `smoke`" in report and "budget smoke" in report
    assert sum(" consistency | " in line or " gaussian | " in line for line in report.splitlines()) == 4
    board = json.loads(runner.invoke(app, ["leaderboard", "--dataset", "mnist", "--format", "json"]).stdout)
    assert len(board.rows) == 4 and {r.budget for r in board.rows} == {"smoke"}
    assert all(r.num_examples == 20 and r.n == 1000 for r in board.rows)
    again = runner.invoke(app, args)  # everything is in the store: nothing is redone
    assert again.exit_code == 0 and "train 0 s, certify 0 s" in again.stderr
