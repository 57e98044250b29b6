"""Run records: export to JSON, import into another store, merge of one protocol's shards."""

import gzip
import json

import pytest
from test_leaderboard import add_run, checkpoint_hash, make_rows
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.errors import RsbenchError
from rsbench.results.records import import_record, record_of, write_record
from rsbench.store import open_store

runner = CliRunner()
LABELS, PREDICTS, RADII = [3, 1, 4, 1, 5, 9], [3, 1, -1, 2, 5, 9], [0.25, 1.0 / 3.0, 0.0, 0.0, 0.7, 0.125]


def store_with_training(path):
    """One certify run (6 examples) linked to the training run of its checkpoint."""
    store = open_store(str(path))
    training = dict(
        checkpoint_path="/runs/x/checkpoint.pth.tar", checkpoint_sha256=checkpoint_hash("gaussian", 0), dataset="mnist",
        arch="lenet", method="gaussian", params={}, sigma=0.5, seed=0, epochs=90, test_accuracy=0.99,
        images_per_second=None, config={"epochs": 90, "lr": 0.01}, provenance={"git_commit": "abc123"},
    )  # fmt: skip
    run_id = add_run(store, make_rows(LABELS, PREDICTS, RADII, [110] * 6), "gaussian", {}, 0, training=training)
    return store, run_id


def test_record_round_trip_through_the_cli(tmp_path):
    _, run_id = store_with_training(tmp_path / "a.db")
    record = tmp_path / "run.json.gz"
    exported = runner.invoke(
        app,
        [
            "export",
            str(run_id),
            "--format",
            "json",
            "-o",
            str(record),
            "--db",
            str(tmp_path / "a.db"),
            "--paper",
            "Jeong & Shin, NeurIPS 2020",
            "--no-extra-data",
        ],
    )
    assert exported.exit_code == 0, exported.output
    document = json.loads(gzip.decompress(record.read_bytes()))
    rows = [dict(zip(document["columns"], r, strict=True)) for r in document["rows"]]
    assert [r["radius"] for r in rows] == RADII and [r["predict"] for r in rows] == PREDICTS
    assert document["protocol"]["n"] == 100 and document["protocol"]["sigma"] == 0.5
    assert document["model_info"] == {
        "paper": "Jeong & Shin, NeurIPS 2020",
        "authors": None,
        "title": None,
        "venue": None,
        "year": None,
        "code_url": None,
        "paper_url": None,
        "architecture": "lenet",
        "extra_data": False,
        "checkpoint_sha256": checkpoint_hash("gaussian", 0),
    }
    assert document["training"]["config"] == {"epochs": 90, "lr": 0.01}
    assert document["provenance"]["git_commit"] == "abc123"

    imported = runner.invoke(app, ["import", str(record), "--db", str(tmp_path / "b.db")])
    assert imported.exit_code == 0, imported.output
    again = record_of(open_store(str(tmp_path / "b.db")), int(imported.stdout.strip()))
    assert again == document  # every field, the model info and the training run survive


def shard(store_path, indices, radius_shift=0.0):
    """A record of one protocol holding only ``indices`` of the six examples."""
    store = open_store(str(store_path))
    rows = make_rows(LABELS, PREDICTS, [r + radius_shift for r in RADII], [110] * 6).iloc[indices]
    run_id = add_run(store, rows, "gaussian", {}, 0, selection={"list": list(indices)})
    return write_record(record_of(store, run_id), store_path.with_suffix(".json"))


def test_shards_of_one_protocol_merge_into_one_run(tmp_path):
    first, second = shard(tmp_path / "s1.db", [0, 1, 2, 3]), shard(tmp_path / "s2.db", [2, 3, 4, 5])
    target = open_store(str(tmp_path / "t.db"))
    assert import_record(target, first) == (1, 4, 0)
    assert import_record(target, second) == (1, 2, 2)  # indices 2 and 3 are identical: skipped
    runs = target.runs()
    assert len(runs) == 1 and runs.iloc[0]["status"] == "complete" and runs.iloc[0]["num_planned"] == 6
    assert target.results([1])["idx"].tolist() == [0, 1, 2, 3, 4, 5]
    assert runs.iloc[0]["indices"]["selections"] == [{"list": [0, 1, 2, 3]}, {"list": [2, 3, 4, 5]}]
    board = json.loads(
        runner.invoke(
            app, ["leaderboard", "--dataset", "mnist", "--format", "json", "--db", str(tmp_path / "t.db")]
        ).stdout
    )
    # one seed over 6 examples, not two seeds: ACR = (0.25 + 1/3 + 0.7 + 0.125) / 6
    assert [(r["seeds"], r["num_examples"]) for r in board["rows"]] == [([0], 6)]
    assert board["rows"][0]["acr"]["mean"] == pytest.approx((0.25 + 1 / 3 + 0.7 + 0.125) / 6)


def test_conflicting_rows_are_refused_and_leave_the_store_unchanged(tmp_path):
    target = open_store(str(tmp_path / "t.db"))
    import_record(target, shard(tmp_path / "s1.db", [0, 1, 2]))
    conflicting = shard(tmp_path / "s2.db", [2, 3], radius_shift=0.01)
    result = runner.invoke(app, ["import", str(conflicting), "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 2 and "index 2 conflicts" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert target.results([1])["idx"].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="other"), "not an rsbench run record"),
        (lambda d: d.update(format_version=99), "format version 99"),
        (lambda d: d["protocol"].pop("n"), "protocol.n: Field required"),
        (lambda d: d["protocol"].update(sigma=None), "protocol.sigma: Input should be a valid number"),
        (lambda d: d["rows"][0].__setitem__(5, 0), "row of index 0: correct must equal"),
    ],
)
def test_malformed_records_are_one_line_errors(tmp_path, edit, message):
    path = shard(tmp_path / "s.db", [0, 1])
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    with pytest.raises(RsbenchError, match=message):
        import_record(open_store(str(tmp_path / "t.db")), path)


def test_tsv_import_still_needs_its_protocol(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t7\t7\t0.5\t1\t0.5\n")
    result = runner.invoke(app, ["import", str(log), "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 2 and "needs --dataset, --method and --sigma" in result.stderr
