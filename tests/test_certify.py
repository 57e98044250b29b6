import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from rsbench.cli import app

runner = CliRunner()


def rows(db):
    with sqlite3.connect(db) as connection:
        query = "select idx, label, predict, radius, correct, n_a from results order by idx"
        return connection.execute(query).fetchall()


def listed_origin(db) -> str:
    """The origin column of run 1 in ``rsbench runs`` (origin and notes: ``rsbench, running``)."""
    listed = runner.invoke(app, ["runs", "--db", str(db)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    line = next(line for line in listed.stderr.splitlines() if line.split()[:2] == ["1", "mnist"])
    return line.split(maxsplit=8)[8].strip()


def test_certify_resumes_after_being_killed(toy_checkpoint, toy_mnist_root, tmp_path):
    """Killed mid-way (SIGKILL: no chance to say so), the run is listed as incomplete, no longer running;
    rerunning the command completes it with the rows an uninterrupted run has."""
    args = [
        "certify",
        str(toy_checkpoint),
        "--limit",
        "40",
        "--skip",
        "2",
        "--n",
        "2000",
        "--n0",
        "50",
        "--batch",
        "500",
        "--data-dir",
        str(toy_mnist_root),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed_db = tmp_path / "killed.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "rsbench", *args, "--db", str(killed_db)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.5)
        if killed_db.exists():
            try:
                if len(rows(killed_db)) >= 5:
                    break
            except sqlite3.OperationalError:
                pass
    assert listed_origin(killed_db) == "rsbench, running"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert listed_origin(killed_db) == "rsbench, incomplete"
    partial = rows(killed_db)
    assert 5 <= len(partial) < 40, "the run was not interrupted midway"

    resumed = runner.invoke(app, [*args, "--db", str(killed_db)])
    assert resumed.exit_code == 0, resumed.output
    assert listed_origin(killed_db) == "rsbench"
    straight = runner.invoke(app, [*args, "--db", str(tmp_path / "straight.db")])
    assert straight.exit_code == 0, straight.output
    assert rows(killed_db) == rows(tmp_path / "straight.db")
    assert [r[0] for r in rows(killed_db)] == list(range(0, 80, 2))
    with sqlite3.connect(killed_db) as connection:
        assert connection.execute("select count(*), min(status) from certification_runs").fetchone() == (1, "complete")
    again = runner.invoke(app, [*args, "--db", str(killed_db)])
    assert again.exit_code == 2 and "already complete" in again.stderr

    export = tmp_path / "run.tsv"
    assert runner.invoke(app, ["export", "1", "-o", str(export), "--db", str(killed_db)]).exit_code == 0
    assert export.read_text().splitlines()[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime"
    board = runner.invoke(app, ["leaderboard", "--dataset", "mnist", "--db", str(killed_db), "--format", "markdown"])
    assert "gaussian" in board.stdout and "examples 40" in board.stdout  # the shared protocol is the caption
    assert "budget custom" in board.stdout  # 2 epochs on 1024 images: never shown as a full-budget row


def test_predict_and_explicit_indices(toy_checkpoint, toy_mnist_root, tmp_path):
    db = tmp_path / "p.db"
    result = runner.invoke(
        app,
        [
            "predict",
            str(toy_checkpoint),
            "--indices",
            "3,5,8",
            "--n",
            "500",
            "--data-dir",
            str(toy_mnist_root),
            "--db",
            str(db),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    predicted = rows(db)
    assert [r[0] for r in predicted] == [3, 5, 8] and all(r[3] == 0.0 for r in predicted)


def test_official_checkpoint_needs_dataset_and_loads_with_it(toy_checkpoint, toy_mnist_root, tmp_path):
    official = torch.load(toy_checkpoint, weights_only=True)
    del official["rsbench"]
    official["state_dict"] = {k.replace("1.", "1.module.", 1): v for k, v in official["state_dict"].items()}
    path = tmp_path / "official.pth.tar"
    torch.save(official, path)
    base = [
        "certify",
        str(path),
        "--limit",
        "2",
        "--n",
        "200",
        "--n0",
        "10",
        "--data-dir",
        str(toy_mnist_root),
        "--db",
        str(tmp_path / "o.db"),
        "--no-progress",
    ]
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "--dataset" in result.stderr
    result = runner.invoke(app, [*base, "--dataset", "mnist"])
    assert result.exit_code == 2 and "--sigma" in result.stderr
    result = runner.invoke(app, [*base, "--dataset", "mnist", "--sigma", "0.25", "--normalization", "none"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sigma", "0"], "sigma must be a positive number"),
        (["--alpha", "0"], "alpha must lie strictly between 0 and 1"),
        (["--alpha", "1"], "alpha must lie strictly between 0 and 1"),
        (["--n0", "0"], "n0 must be at least 1"),
        (["--n", "0"], "n must be at least 1"),
        (["--n", "5"], "can never certify"),
        (["--dataset", "cifar10"], "do not match architecture"),
    ],
)
def test_certify_bad_input(toy_checkpoint, toy_mnist_root, tmp_path, extra, message):
    db = tmp_path / "s.db"
    result = runner.invoke(
        app,
        ["certify", str(toy_checkpoint), "--limit", "2", "--data-dir", str(toy_mnist_root), "--db", str(db), *extra],
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not db.exists() or rows(db) == []


def test_missing_and_foreign_checkpoints(tmp_path):
    result = runner.invoke(app, ["certify", str(tmp_path / "nope.pth.tar")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    foreign = tmp_path / "foreign.pth"
    torch.save({"weights": torch.zeros(3)}, foreign)
    result = runner.invoke(app, ["certify", str(foreign)])
    assert result.exit_code == 2 and "not a smoothing checkpoint" in result.stderr


def test_one_epoch_on_real_mnist_beats_90_percent_noisy_accuracy(mnist_root, tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            "mnist",
            "--arch",
            "lenet",
            "--method",
            "gaussian",
            "--sigma",
            "0.5",
            "--epochs",
            "1",
            "--data-dir",
            str(mnist_root),
            "--out",
            str(tmp_path / "real"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    log = (tmp_path / "real" / "log.tsv").read_text().splitlines()
    assert float(log[1].split("\t")[-1]) > 0.90


def test_several_images_per_forward_pass(toy_checkpoint, toy_mnist_root, tmp_path):
    base = [
        "certify",
        str(toy_checkpoint),
        "--limit",
        "6",
        "--n",
        "400",
        "--n0",
        "20",
        "--data-dir",
        str(toy_mnist_root),
        "--no-progress",
    ]
    grouped = runner.invoke(app, [*base, "--images-per-batch", "4", "--batch", "400", "--db", str(tmp_path / "g.db")])
    assert grouped.exit_code == 0, grouped.output
    single = runner.invoke(app, [*base, "--batch", "100", "--db", str(tmp_path / "s.db")])
    assert single.exit_code == 0, single.output
    assert rows(tmp_path / "g.db") == rows(tmp_path / "s.db")  # 400 // 4 = 100 draws of each image per pass


def test_the_progress_line_shows_what_each_kind_measures():
    """PREDICT has no radius: its line shows accuracy and abstentions, CERTIFY's accuracy and ACR."""
    from rsbench.certification import Outcome, progress_status

    outcomes = [Outcome(1, 0.8, False), Outcome(0, 0.0, True), Outcome(0, 0.0, False), Outcome(1, 0.4, False)]
    assert progress_status("predict", outcomes) == "accuracy 0.500  abstained 0.250"
    assert progress_status("certify", outcomes) == "accuracy 0.500  ACR 0.300"


def test_a_resumed_prediction_counts_the_stored_rows_in_its_progress_line(toy_checkpoint, toy_mnist_root, tmp_path):
    db = tmp_path / "p.db"
    args = ["predict", str(toy_checkpoint), "--n", "30", "--sigma", "1.0", "--data-dir", str(toy_mnist_root)]
    args += ["--db", str(db)]
    assert runner.invoke(app, [*args, "--limit", "6", "--no-progress"]).exit_code == 0
    resumed = runner.invoke(app, [*args, "--limit", "12"])
    assert resumed.exit_code == 0, resumed.output
    with sqlite3.connect(db) as connection:
        correct, abstained = connection.execute("select avg(correct), avg(predict = -1) from results").fetchone()
    assert 0 < abstained < 1  # N = 30 at σ = 1: some inputs are told apart, some not
    line = next(line for line in resumed.stderr.splitlines() if "predict σ=" in line)
    assert "12/12" in line and f"accuracy {correct:.3f}  abstained {abstained:.3f}" in line and "ACR" not in line


def test_a_budget_name_the_run_does_not_keep_is_refused_before_any_run_is_written(
    toy_checkpoint, toy_mnist_root, tmp_path
):
    db = tmp_path / "b.db"
    args = [
        "certify",
        str(toy_checkpoint),
        "--n",
        "200",
        "--n0",
        "20",
        "--limit",
        "2",
        "--data-dir",
        str(toy_mnist_root),
    ]
    refused = runner.invoke(app, [*args, "--budget", "paper-subset", "--db", str(db), "--no-progress"])
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) <= 2, refused.output
    assert "--budget paper-subset means" in refused.stderr and "N 200 (not 100,000)" in refused.stderr
    assert "trained with epochs 2 (not 90)" in refused.stderr  # the toy model is not trained as the paper did
    assert not db.exists() or rows(db) == []
    labelled = runner.invoke(app, [*args, "--budget", "toy-n200", "--db", str(db), "--no-progress"])
    assert labelled.exit_code == 0, labelled.output
    listed = runner.invoke(app, ["runs", "--db", str(db)], env={"COLUMNS": "200"})
    assert "toy-n200" in listed.output
