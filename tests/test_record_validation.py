"""A run record is untrusted input: every edit below makes a record no certificate can produce (or one built
to harm a reader), and each must be refused with one line, by ``rsbench validate`` and by ``rsbench import``
alike, leaving the store unchanged. The starting record is a real export, which must pass."""

import copy
import gzip
import json

import pytest
from test_leaderboard import add_run, make_rows
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.errors import RsbenchError
from rsbench.results.records import import_record, record_of, validate_record, write_record
from rsbench.store import open_store

runner = CliRunner()


@pytest.fixture
def document(tmp_path):
    """A record exported from a store: three examples of MNIST, σ = 0.5, N = 100, α = 0.001."""
    store = open_store(str(tmp_path / "source.db"))
    run_id = add_run(store, make_rows([1, 2, 3], [1, 2, -1], [0.3, 0.7, 0.0], [110, 110, 110]), "gaussian", {}, 0)
    return record_of(store, run_id)


def rows(document):
    return [dict(zip(document["columns"], r, strict=True)) for r in document["rows"]]


def set_row(column, value, index=0):
    def edit(d):
        d["rows"][index][d["columns"].index(column)] = value

    return edit


EDITS = {
    "n is text": (lambda d: d["protocol"].update(n="abc"), "protocol.n"),
    "n negative": (lambda d: d["protocol"].update(n=-5), "protocol.n"),
    "n0 zero": (lambda d: d["protocol"].update(n0=0), "protocol.n0"),
    "alpha one": (lambda d: d["protocol"].update(alpha=1.0), "protocol.alpha"),
    "alpha zero": (lambda d: d["protocol"].update(alpha=0), "protocol.alpha"),
    "unknown kind": (lambda d: d["protocol"].update(kind="guess"), "protocol.kind"),
    "unknown split": (lambda d: d["protocol"].update(split="val"), "protocol.split"),
    "unknown dataset": (lambda d: d["protocol"].update(dataset="mnistt"), "unknown dataset 'mnistt'"),
    "unknown certifier": (lambda d: d["protocol"].update(certifier="magic"), "unknown certifier"),
    "dataset a path": (lambda d: d["protocol"].update(dataset="../../x"), "protocol.dataset"),
    "dataset a script": (lambda d: d["protocol"].update(dataset="javascript:alert(1)"), "protocol.dataset"),
    "method with markup": (lambda d: d["run"].update(method="[/]$x$"), "run.method"),
    "parameter name unsafe": (lambda d: d["run"].update(params={"a|b": 1}), "run.params"),
    "parameter value nested": (lambda d: d["run"].update(params={"lam": {"x": 1}}), "run.params"),
    "paper link a script": (lambda d: d["model_info"].update(paper_url="javascript:alert(1)"), "model_info.paper_url"),
    "unknown section key": (lambda d: d["run"].update(hidden=1), "run.hidden"),
    "seed beyond 64 bits": (lambda d: d["run"].update(seed=2**70), "run.seed|integer overflow"),
    "time not a time": (lambda d: d["run"].update(created_at="yesterday"), "run.created_at"),
    "num_planned negative": (lambda d: d["run"].update(num_planned=-5), "run.num_planned"),
    "num_planned huge": (lambda d: d["run"].update(num_planned=10**9), "num_planned"),
    "planned outside split": (lambda d: d["run"]["indices"].update(planned=[0, 1, 10_000]), "outside"),
    "rows outside planned": (set_row("idx", 7), "not among the run's planned"),
    "label not a class": (set_row("label", 10), "classes of the dataset"),
    "count negative": (set_row("n_a", -1), "n_a must be a count"),
    "radius beyond certifiable": (set_row("radius", 5.0), "exceeds"),
    "radius infinite": (set_row("radius", "Infinity"), "radius must be a finite number|not a JSON"),
    "correct inconsistent": (set_row("correct", 0), "correct must equal"),
    "n of a row not the protocol's": (set_row("n", 99), "n, n0 and alpha"),
    "seconds absurd": (set_row("seconds", 1e20), "seconds must be"),
    "index twice": (lambda d: d["rows"].append(list(d["rows"][0])), "twice"),
    "no rows": (lambda d: d.update(rows=[]), "no rows"),
    "complete but incomplete": (lambda d: d["rows"].pop(), "do not cover"),
    "another protocol's key": (lambda d: d["protocol"].update(sigma=0.25), "protocol_key does not match"),
    "a budget's name in other case": (lambda d: d["protocol"].update(budget="Full"), "too close to the named budget"),
    "a budget it does not keep": (  # 3 images at N = 100 labelled as the paper's protocol on every 20th image
        lambda d: d["protocol"].update(budget="paper-subset"),
        "labelled budget paper-subset, but certifies N0 10 \\(not 100\\); N 100 \\(not 100,000\\); other test images",
    ),
    "nested deep": (lambda d: d["provenance"].update(x=json.loads("[" * 200 + "]" * 200)), "nested deeper"),
}


@pytest.mark.parametrize("name", EDITS)
def test_refused_by_validate_and_import_alike(name, document, tmp_path):
    edit, message = EDITS[name]
    bad = copy.deepcopy(document)
    edit(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad).replace('"Infinity"', "Infinity"))
    with pytest.raises(RsbenchError, match=message):
        validate_record(path)
    store = open_store(str(tmp_path / "target.db"))
    with pytest.raises(RsbenchError):
        import_record(store, path)
    assert store.runs(kind=None).empty
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_an_exported_record_passes_and_round_trips(document, tmp_path):
    path = write_record(document, tmp_path / "good.json.gz")
    reader, count = validate_record(path)
    assert count == 3 and reader.protocol.key() == document["protocol"]["protocol_key"]
    result = runner.invoke(app, ["validate", str(path), str(path)])
    assert result.exit_code == 0 and result.stdout.count("valid, 3 rows") == 2
    store = open_store(str(tmp_path / "t.db"))
    run_id, added, _ = import_record(store, path)
    assert added == 3 and record_of(store, run_id)["rows"] == document["rows"]


def test_one_bad_file_among_good_ones_is_named_and_fails_the_command(document, tmp_path):
    good = write_record(document, tmp_path / "good.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = runner.invoke(app, ["validate", str(good), str(bad)])
    assert result.exit_code == 2 and "good.json: valid" in result.stdout and "bad.json" in result.stderr


def test_a_truncated_gzip_is_damage_not_an_interruption(document, tmp_path):
    path = write_record(document, tmp_path / "r.json.gz")
    path.write_bytes(path.read_bytes()[:-30])
    result = runner.invoke(app, ["import", str(path), "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 2 and "interrupted" not in result.stderr and str(path) in result.stderr


def test_a_decompression_bomb_stops_at_the_limit(document, tmp_path, monkeypatch):
    bomb = copy.deepcopy(document)
    bomb["provenance"]["padding"] = " " * 5_000_000  # 5 MB of spaces compress to a few kB
    path = write_record(bomb, tmp_path / "bomb.json.gz")
    assert path.stat().st_size < 100_000
    monkeypatch.setenv("RSBENCH_MAX_RECORD_BYTES", "1000000")
    with pytest.raises(RsbenchError, match="more than 1,000,000 bytes") as error:
        validate_record(path)
    assert "RSBENCH_MAX_RECORD_BYTES" in error.value.hint
    monkeypatch.setenv("RSBENCH_MAX_RECORD_BYTES", "20000000")
    assert validate_record(path)[1] == 3


def test_a_large_record_streams_in_bounded_memory(tmp_path):
    """200,000 rows written without a store, validated with the rows streamed: the peak of Python
    allocations stays far below the document's size in Python objects."""
    import tracemalloc

    header = {
        "format": "rsbench-run-record", "format_version": 2,
        "model_info": {"architecture": "lenet"},
        "protocol": {
            "protocol_key": None, "kind": "certify", "dataset": "imagenet", "split": "train", "sigma": 0.5,
            "train_sigma": 0.5, "certifier": "cohen", "certifier_params": {}, "n0": 100, "n": 100_000,
            "alpha": 0.001, "radii": [], "noise_seed": 0, "normalization": None, "budget": None,
            "checkpoint_sha256": "a" * 64, "source_sha256": None,
        },
        "run": {
            "origin": "rsbench", "method": "gaussian", "params": {}, "arch": "resnet50", "seed": 0,
            "batch_size": 100, "experiment": None, "checkpoint_path": None, "created_at": "2026-12-06T00:00:00",
            "status": "complete", "indices": {"selections": [{"skip": 1, "limit": 200_000}],
                                              "planned": list(range(200_000))},
            "num_planned": 200_000,
        },
        "provenance": {}, "training": None,
        "columns": ["idx", "label", "predict", "radius", "radius_kind", "correct", "n_a", "p_a_lower", "n", "n0",
                    "alpha", "draws", "seconds"],
    }  # fmt: skip
    path = tmp_path / "big.json.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(header)[:-1] + ', "rows": [')
        handle.write(",".join(f"[{i}, 3, 3, 0.5, \"exact\", 1, 99000, null, 100000, 100, 0.001, 100100, 0.1]"
                              for i in range(200_000)))  # fmt: skip
        handle.write("]}")

    def peak(function):
        tracemalloc.start()
        result = function()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return result, top

    (_, count), streamed = peak(lambda: validate_record(path))
    _, whole = peak(lambda: json.loads(gzip.decompress(path.read_bytes())))  # the document held at once
    assert count == 200_000
    # streamed, memory holds the planned indices and one batch of rows, not every row's values
    assert streamed < whole / 2, (streamed, whole)
