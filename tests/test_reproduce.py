import json

import pytest
from typer.testing import CliRunner

from rsbench import reproduce as rp
from rsbench.cli import app
from rsbench.params import parse_params
from rsbench.plugins import get_method
from rsbench.reproduce import BUDGETS, Budget, list_experiments, load_experiment, scaled_milestones
from rsbench.store import open_store

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


def test_paper_subset_is_the_papers_training_and_certification_on_every_20th_test_image():
    budget = BUDGETS["paper-subset"]
    # the paper: its dataset schedule on every training image; CERTIFY with N0 = 100, N = 100,000, α = 0.001
    assert (budget.epochs, budget.train_limit, budget.test_limit) == (None, None, None)
    assert (budget.n0, budget.n, budget.alpha) == (100, 100_000, 0.001)
    # test indices 0, 20, ..., 9980 of a 10,000-image test set: 500 images
    chosen = list(range(10_000))[:: budget.skip][: budget.limit]
    assert len(chosen) == 500 and chosen[:3] == [0, 20, 40] and chosen[-1] == 9980
    assert budget.training_folder == "full" and BUDGETS["full"].training_folder == "full"


def test_a_budget_that_trains_as_another_certifies_its_models_under_its_own_label(
    toy_mnist_root, tmp_path, monkeypatch
):
    """A scaled-down pair shaped like full and paper-subset: the second reuses the first's model (no second
    training, no folder of its own) and its rows carry its own label and images."""
    tiny = Budget("tiny", 1, 20, 200, 0.001, 1, 4, train_limit=256, test_limit=50)
    subset = Budget("tiny-subset", 1, 20, 200, 0.001, 20, None, train_limit=256, test_limit=50, trains_as="tiny")
    monkeypatch.setitem(rp.BUDGETS, "tiny", tiny)
    monkeypatch.setitem(rp.BUDGETS, "tiny-subset", subset)
    store = open_store(str(tmp_path / "store.db"))
    runs = tmp_path / "runs"
    common = dict(data_dir=str(toy_mnist_root), runs_dir=str(runs), output_dir=None, device="cpu")
    common.update(show_progress=False, methods=["gaussian"], sigmas=[0.5])
    first, _ = rp.reproduce("table2-slice", "tiny", store, **common)
    log = runs / "mnist" / "tiny" / "gaussian-sigma0.5-seed0" / "log.tsv"
    trained = log.read_text()
    second, _ = rp.reproduce("table2-slice", "tiny-subset", store, **common)
    assert sorted(p.name for p in (runs / "mnist").iterdir()) == ["tiny"]
    assert log.read_text() == trained  # not trained again
    assert [(r.budget, r.num_examples) for r in first.rows] == [("tiny", 4)]
    assert [(r.budget, r.num_examples) for r in second.rows] == [("tiny-subset", 10)]  # 0, 20, ..., 180


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
