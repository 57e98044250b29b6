import hashlib
import json
import platform
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from rsbench import reproduce as rp
from rsbench.cli import app
from rsbench.config import TrainConfig, run_name
from rsbench.params import parse_params
from rsbench.plugins import get_method
from rsbench.protocol import CertificationProtocol, RunDescription
from rsbench.provenance import device_name
from rsbench.reproduce import BUDGETS, Budget, list_experiments, load_experiment, scaled_milestones
from rsbench.store import RESULT_COLUMNS, frame_rows, open_store
from rsbench.training import TrainResult

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


def test_reproduce_list_gives_each_experiments_rows_and_cost_per_budget():
    costs = {entry["name"]: entry for entry in rp.experiment_costs()}
    # table2-slice: 4 LeNet rows on MNIST (60,000 training and 10,000 test images, the paper's 90 epochs)
    assert costs["table2-slice"]["rows"] == 4
    assert costs["table2-slice"]["costs"] == {
        "smoke": {"epochs": 4, "training_images": 4 * 512, "draws": 4 * 20 * (20 + 1_000)},
        "quick": {"epochs": 40, "training_images": 4 * 10 * 60_000, "draws": 4 * 200 * (100 + 10_000)},
        "paper-subset": {"epochs": 360, "training_images": 4 * 90 * 60_000, "draws": 4 * 500 * (100 + 100_000)},
        "full": {"epochs": 360, "training_images": 4 * 90 * 60_000, "draws": 4 * 10_000 * (100 + 100_000)},
    }
    # table7: 21 rows on CIFAR-10 (50,000 training images, 150 epochs)
    assert costs["table7"]["rows"] == 21
    assert costs["table7"]["costs"]["full"]["training_images"] == 21 * 150 * 50_000
    assert costs["table7"]["costs"]["quick"]["training_images"] == 21 * 10 * 50_000
    result = runner.invoke(app, ["reproduce", "--list"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    lines = result.stderr.splitlines()
    assert next(line for line in lines if line.split()[:1] == ["table2-slice"]).split()[:2] == ["table2-slice", "4"]
    header = next(line for line in lines if "smoke" in line and "full" in line).split()
    assert header == ["name", "smoke", "quick", "paper-subset", "full"]
    costs_line = [line.split() for line in lines if line.split()[:1] == ["table2-slice"]][1]
    assert costs_line == ["table2-slice", "2.05k", "img", "2.40M", "img", "21.6M", "img", "21.6M", "img"]
    draws_line = lines[lines.index(next(line for line in lines if line.split() == costs_line)) + 1].split()
    assert draws_line == ["81.6k", "draws", "8.08M", "draws", "200M", "draws", "4.00G", "draws"]


def test_reproduce_without_a_budget_names_the_budgets_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "store.db"
    result = runner.invoke(app, ["reproduce", "table2-slice", "--db", str(db)])
    assert result.exit_code == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("rsbench: error: choose a budget")
    assert "smoke, quick, paper-subset, full" in line and "(hint: --budget quick" in line
    typo = ["reproduce", "table2", "--budget", "quick", "--methods", "gausian", "--db", str(db)]
    unmatched = runner.invoke(app, typo)
    assert unmatched.exit_code == 2 and "no row of table2 matches" in unmatched.stderr
    assert not db.exists() and list(tmp_path.iterdir()) == []  # refused before the store is opened


def speed_of_training(store, method, params, images_per_second, host, device):
    """A training run in the store that measured its speed on ``host`` and ``device``."""
    config = TrainConfig(dataset="mnist", arch="lenet", method=method, sigma=0.5, params=params)
    meta = {"params": params, "provenance": {"host": host, "device": device}}
    sha256 = hashlib.sha256(f"{method}{params}{host}".encode()).hexdigest()
    store.record_training(config, TrainResult(Path("ck.pth.tar"), sha256, 10, 0.9, images_per_second, None, meta))


def certification(store, draws, seconds, host, device, checkpoint=None, examples=200):
    """A complete quick-budget certification of ``examples`` MNIST images in the store: ``draws`` and
    ``seconds`` in all, on ``host`` and ``device``, of the checkpoint at ``checkpoint``."""
    protocol = CertificationProtocol(
        kind="certify", dataset="mnist", split="test", sigma=0.5, train_sigma=0.5, certifier="cohen",
        certifier_params={}, n0=100, n=10_000, alpha=0.001, budget="quick",
        checkpoint_sha256=hashlib.sha256(f"{host}{checkpoint}".encode()).hexdigest(),
    )  # fmt: skip
    description = RunDescription(
        origin="rsbench", method="gaussian", params={}, arch="lenet", seed=0,
        checkpoint_path=str(checkpoint.resolve()) if checkpoint else None,
        provenance={"host": host, "device": device},
    )  # fmt: skip
    rows = pd.DataFrame({"idx": range(examples), "label": 1, "predict": 1, "radius": 0.5, "radius_kind": "exact"})
    rows = rows.assign(correct=1, n_a=None, p_a_lower=None, n=10_000, n0=100, alpha=0.001)
    rows = rows.assign(draws=draws // examples, seconds=seconds / examples)[RESULT_COLUMNS]
    selection = {"selections": [{"skip": 50, "limit": None}], "planned": list(range(examples))}
    store.import_run(protocol, description, [frame_rows(rows)], selection)


def trained_for(toy_checkpoint, folder: Path, epochs: int) -> Path:
    """A copy of the toy checkpoint in a run folder, saying it holds ``epochs`` epochs."""
    checkpoint = torch.load(toy_checkpoint, weights_only=True)
    checkpoint["epoch"] = epochs
    folder.mkdir(parents=True)
    torch.save(checkpoint, folder / "checkpoint.pth.tar")
    return folder / "checkpoint.pth.tar"


def test_a_dry_run_prints_what_is_left_and_its_time_at_this_machines_measured_speeds(toy_checkpoint, tmp_path):
    db, runs = str(tmp_path / "store.db"), tmp_path / "runs"
    args = ["reproduce", "table2-slice", "--budget", "quick", "--dry-run", "--device", "cpu", "--db", db]
    args += ["--runs-dir", str(runs)]
    fresh = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert fresh.exit_code == 0, fresh.output
    assert "40 of 40 epochs left" in fresh.stderr and "4 of 4 rows left, 8.08M draws" in fresh.stderr
    assert "time: no estimate (no gaussian training of mnist/lenet on this machine in the store)" in fresh.stderr

    store = open_store(db)
    here, cpu = platform.node(), device_name(torch.device("cpu"))
    consistency = {"lam": 5.0, "eta": 0.5, "m": 2, "loss": "default"}  # table2-slice's consistency rows
    speed_of_training(store, "gaussian", {}, 1_000.0, here, cpu)
    speed_of_training(store, "gaussian", {}, 1e6, "elsewhere", cpu)  # another machine's speed: not this one's
    speed_of_training(store, "gaussian", {}, 1e6, here, "cuda:H100")  # nor another device's
    speed_of_training(store, "consistency", consistency, 500.0, here, cpu)
    speed_of_training(store, "consistency", {**consistency, "m": 8}, 100.0, here, cpu)  # another recipe
    quick = runs / "mnist" / "quick"
    done = trained_for(toy_checkpoint, quick / run_name("gaussian", 0.5, {}, 0), 10)
    trained_for(toy_checkpoint, quick / run_name("consistency", 0.5, consistency, 0), 2)
    certification(store, 1_000_000, 100.0, here, cpu, checkpoint=done)  # 10,000 draws/s; gaussian σ=0.5 is done
    certification(store, 10**12, 1.0, "elsewhere", cpu)

    planned = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert planned.exit_code == 0, planned.output
    assert "28 of 40 epochs left" in planned.stderr  # gaussian σ=0.5 trained, consistency σ=0.5 at epoch 2
    assert "3 of 4 rows left, 6.06M draws" in planned.stderr  # 3 × 200 images × 10,100 draws
    # training: gaussian 1.0 10 × 60,000 / 1,000 = 600 s, consistency 0.5 8 × 60,000 / 500 = 960 s and 1.0
    # 10 × 60,000 / 500 = 1,200 s; certification 6.06 M draws / 10,000 per s = 606 s: 3,366 s
    assert "time: about 56 min" in planned.stderr
    assert not (runs / "mnist" / "quick" / run_name("gaussian", 1.0, {}, 0)).exists()  # nothing was started


def test_reproduce_prints_its_cost_first_and_shows_the_budget_in_each_heading(toy_mnist_root, tmp_path, monkeypatch):
    """The heading of each row says ``[quick]`` literally (rich markup would eat it)."""
    tiny_quick = Budget("quick", 1, 20, 200, 0.001, 1, 4, train_limit=256, test_limit=50)
    monkeypatch.setitem(rp.BUDGETS, "quick", tiny_quick)
    args = ["reproduce", "table2-slice", "--budget", "quick", "--methods", "gaussian", "--sigmas", "0.5"]
    args += ["--data-dir", str(toy_mnist_root), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    args += ["--output-dir", str(tmp_path), "--device", "cpu", "--db", str(tmp_path / "store.db")]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    plan = lines.index("table2-slice, budget quick: 1 row (recipe × seed) on mnist")
    heading = next(i for i, line in enumerate(lines) if "table2-slice [quick]: gaussian σ=0.5 {} seed 0" in line)
    assert plan < heading and "1 of 1 epochs left" in lines[plan + 1] and "1 of 1 rows left" in lines[plan + 2]


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
    assert len(board["rows"]) == 4 and {r["budget"] for r in board["rows"]} == {"smoke"}
    assert all(r["num_examples"] == 20 and r["n"] == 1000 for r in board["rows"])
    again = runner.invoke(app, args)  # everything is in the store: nothing is redone
    assert again.exit_code == 0 and "train 0 s, certify 0 s" in again.stderr
