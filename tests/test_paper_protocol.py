"""leaderboards/paper_protocol.py against numbers worked out by hand on tiny hand-made run records."""

import datetime
import gzip
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

COLUMNS = ["idx", "label", "predict", "radius", "radius_kind", "correct", "n_a", "n", "n0", "alpha", "draws", "seconds"]
ROW_OF_TABLE = {"method": "gaussian", "params": {}, "sigma": 0.5}


def load_script():
    path = Path(__file__).parents[1] / "leaderboards" / "paper_protocol.py"
    spec = importlib.util.spec_from_file_location("paper_protocol", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_protocol"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


pp = load_script()


def record(
    origin,
    seed,
    certified,
    certifier="cohen",
    budget=None,
    sigma=0.5,
    method="gaussian",
    params=None,
    n0=100,
    n=100_000,
    label=3,
):
    """A run record; ``certified`` maps test index -> (correct, radius[, draws])."""
    rows = []
    for idx, (correct, radius, *draws) in certified.items():
        predict = label if correct else -1
        rows.append([idx, label, predict, radius, "exact", correct, None, n, n0, 0.001, *(draws or [n0 + n]), 0.1])
    return {
        "format": "rsbench-run-record",
        "protocol": {"kind": "certify", "dataset": "mnist", "split": "test", "sigma": sigma, "certifier": certifier,
                     "n0": n0, "n": n, "alpha": 0.001, "budget": budget},
        "run": {"origin": origin, "method": method, "params": params or {}, "seed": seed},
        "columns": COLUMNS,
        "rows": rows,
    }  # fmt: skip


def write(folder: Path, name: str, content: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith(".gz"):
        with gzip.open(folder / name, "wt") as handle:
            json.dump(content, handle)
    else:
        (folder / name).write_text(json.dumps(content))


# Two official runs on test images 0..5; rsbench certified 0, 2 and 4 only.
OFFICIAL_A = {0: (1, 1.0), 1: (1, 0.3), 2: (0, 0.8), 3: (0, 0.0), 4: (1, 0.6), 5: (1, 2.0)}
OFFICIAL_B = {0: (1, 0.5), 1: (0, 0.4), 2: (1, 0.25), 3: (1, 0.1), 4: (1, 1.5), 5: (0, 0.0)}
MINE = {0: (1, 0.9), 2: (1, 0.3), 4: (0, 1.2)}
ADAPTIVE = {0: (1, 0.75, 2_000), 2: (1, 0.25, 5_000), 4: (0, 0.0, 100_100)}
RADII = (0.0, 0.25, 0.5, 1.0)
IMAGES = (0, 2, 4)  # the protocol's images in these tests
CONSISTENCY = {"lam": 5.0, "eta": 0.5, "m": 2, "loss": "default"}
REPORTED = [  # the paper's rows: the one that belongs to the consistency row, and three that do not
    {"dataset": "mnist", "method": "consistency", "sigma": 0.5, "reference": "Table 2", "num_examples": 10_000,
     "params": {"lam": 5.0, "m": 2, "eta": 0.5}, "acr": 1.657, "certified_accuracy": {"0.00": 0.992}},
    {"dataset": "mnist", "method": "consistency", "sigma": 0.5, "reference": "Table 2", "num_examples": 10_000,
     "params": {"lam": 10.0, "m": 2, "eta": 0.5}, "acr": 1.111, "certified_accuracy": {"0.00": 0.111}},
    {"dataset": "mnist", "method": "consistency", "sigma": 0.5, "reference": "Table 3", "num_examples": 10_000,
     "params": {"lam": 5.0, "m": 2, "eta": 0.5}, "acr": 1.222, "certified_accuracy": {"0.00": 0.222}},
    {"dataset": "mnist", "method": "consistency", "sigma": 1.0, "reference": "Table 2", "num_examples": 10_000,
     "params": {"lam": 5.0, "m": 2, "eta": 0.5}, "acr": 1.333, "certified_accuracy": {"0.00": 0.333}},
]  # fmt: skip


@pytest.fixture
def comparisons(tmp_path):
    write(tmp_path / "official", "a.json.gz", record("imported", 1, OFFICIAL_A))
    write(tmp_path / "official", "b.json", record("imported", 2, OFFICIAL_B))
    # decoys: another σ, another protocol (N0 = 1,000; N = 10,000), another method's parameters
    write(tmp_path / "official", "other-sigma.json", record("imported", 3, OFFICIAL_A, sigma=1.0))
    write(tmp_path / "official", "n0.json", record("imported", 4, OFFICIAL_A, n0=1_000))
    write(tmp_path / "official", "n.json", record("imported", 5, OFFICIAL_A, n=10_000))
    write(tmp_path / "official", "params.json", record("imported", 6, OFFICIAL_A, params={"lam": 5.0}))
    write(tmp_path / "mine", "cohen.json.gz", record("rsbench", 0, MINE, budget="paper-subset"))
    write(tmp_path / "mine", "adaptive.json.gz", record("rsbench", 0, ADAPTIVE, "adaptive", "paper-subset"))
    write(tmp_path / "mine", "quick.json.gz", record("rsbench", 0, OFFICIAL_A, budget="quick"))  # another budget
    records = pp.read_records(tmp_path / "mine") + pp.read_records(tmp_path / "official")
    row = pp.Row("mnist-gaussian-0.50", "gaussian", {}, 0.5, "table2-slice")
    return pp.compare([row], records, [], images=IMAGES, radii=RADII)


def test_official_runs_are_summarised_on_the_images_rsbench_certified(comparisons):
    (c,) = comparisons
    assert c.images == (0, 2, 4)
    assert [r["run"]["seed"] for r, _ in c.official] == [1, 2]  # none of the decoys
    a, b = (s for _, s in c.official)
    # run A on images 0, 2, 4: certified radii 1.0, (wrong), 0.6
    assert a.acr == pytest.approx(1.6 / 3)
    assert a.accuracy == pytest.approx({0.0: 2 / 3, 0.25: 2 / 3, 0.5: 2 / 3, 1.0: 1 / 3})
    # run B: 0.5, 0.25, 1.5
    assert b.acr == pytest.approx(0.75)
    assert b.accuracy == pytest.approx({0.0: 1.0, 0.25: 1.0, 0.5: 2 / 3, 1.0: 1 / 3})
    # the same runs on all six images they certified, for context
    assert [s.acr for s in c.official_all] == pytest.approx([3.9 / 6, 2.35 / 6])
    acr, accuracy = pp.official_mean(c, RADII)
    assert acr == pytest.approx((1.6 / 3 + 0.75) / 2)
    assert accuracy[0.0] == pytest.approx(5 / 6)
    assert pp.mean_std([a.acr, b.acr])[1] == pytest.approx(abs(0.75 - 1.6 / 3) / math.sqrt(2))  # ddof = 1


def test_rsbench_rows_and_the_difference(comparisons):
    (c,) = comparisons
    ((_, mine),) = c.rsbench  # the quick-budget record is not this protocol
    assert mine.acr == pytest.approx(1.2 / 3)  # 0.9 + 0.3; image 4 is wrong whatever its radius
    assert mine.accuracy == pytest.approx({0.0: 2 / 3, 0.25: 2 / 3, 0.5: 1 / 3, 1.0: 0.0})
    ok, detail = pp.within_tolerance(mine, c, RADII)
    assert not ok and f"ACR {1.2 / 3 - (1.6 / 3 + 0.75) / 2:+.3f}" in detail
    ((_, adaptive),) = c.adaptive
    assert adaptive.draws == pytest.approx((2_000 + 5_000 + 100_100) / 3)
    assert adaptive.accuracy == pytest.approx({0.0: 2 / 3, 0.25: 2 / 3, 0.5: 1 / 3, 1.0: 0.0})
    text = pp.render(comparisons, [], [], RADII)
    assert (
        "| gaussian σ = 0.5 | difference (rsbench − official mean) | | | -0.242 | -16.7 | -16.7 | -33.3 | -33.3 |"
        in text
    )


def test_a_missing_row_is_named_with_its_command_and_never_given_numbers(tmp_path):
    write(tmp_path, "a.json", record("imported", 1, {i: (1, 1.0) for i in range(0, 60, 20)}))
    row = pp.Row("mnist-gaussian-0.50", "gaussian", {}, 0.5, "table2-slice")
    (c,) = pp.compare([row], pp.read_records(tmp_path), [], images=(0, 20, 40), radii=RADII)
    assert c.rsbench == [] and c.images == (0, 20, 40)
    text = pp.render([c], [], [], RADII)
    line = next(line for line in text.splitlines() if "rsbench `paper-subset`" in line)
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]  # row, source, runs, images, ACR, radii
    assert "not yet run" in cells[1] and cells[2] == "0" and cells[3:] == [""] * (2 + len(RADII))
    assert "`rsbench reproduce table2-slice --budget paper-subset --methods gaussian --sigmas 0.5`" in text
    assert "runs/mnist/full/gaussian-sigma0.5-seed0/checkpoint.pth.tar --certifier adaptive" in text


def test_an_official_run_lacking_an_image_is_an_error_not_a_smaller_average():
    with pytest.raises(ValueError, match="lacks 1 of the images"):
        pp.summarise(record("imported", 1, {0: (1, 1.0)}), [0, 20])


def test_step_cost_adds_attempts_and_averages_the_load_sampled_during_them(tmp_path):
    (tmp_path / "steps.tsv").write_text(
        pp.STEPS_HEADER
        + "train-x\t2026-01-01T00:00:00Z\t2026-01-01T00:10:00Z\t600\t\tkilled\t1 1 1\t2 2 2\n"
        + "train-x\t2026-01-01T01:00:00Z\t2026-01-01T01:05:00Z\t300\t250\t0\t1 1 1\t2 2 2\n"
        + "cohen-x\t2026-01-01T02:00:00Z\t2026-01-01T02:01:00Z\t60\t50\t0\t1 1 1\t2 2 2\n"
    )
    (tmp_path / "load.log").write_text(
        "2026-01-01T00:05:00Z 2.00 1 1 1/1 1\n"  # in the first attempt
        "2026-01-01T00:30:00Z 9.00 1 1 1/1 1\n"  # between attempts: not counted
        "2026-01-01T01:01:00Z 4.00 1 1 1/1 1\n"  # in the second
    )
    cost = pp.step_cost("train-x", pp.read_steps(tmp_path / "steps.tsv"), pp.read_load(tmp_path / "load.log"))
    assert cost == {
        "attempts": 2, "wall": 900, "cpu": 250, "cpu_complete": False, "outside_chain": False, "load": 3.0,
        "done": True,
    }  # fmt: skip


def test_a_snapshot_of_the_chain_includes_the_step_running_now(tmp_path):
    chain = tmp_path / "chain"
    (chain / "running").mkdir(parents=True)
    started = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    (chain / "running" / "train-x").write_text(
        f"train-x 2026-01-01T00:00:00Z {started.timestamp():.0f} 1.00,2.00,3.00\n"
    )
    (chain / "load.log").write_text("2026-01-01T00:07:00Z 5.00 4.00 3.00 1/1 1\n")
    pp.snapshot_chain(chain, tmp_path / "records")
    (attempt,) = pp.read_steps(tmp_path / "records" / "chain-steps.tsv")
    assert (attempt.step, attempt.wall_seconds, attempt.status) == ("train-x", 420, "running")


def test_a_step_finished_by_hand_outside_the_chain_says_so(tmp_path):
    (tmp_path / "steps.tsv").write_text(
        pp.STEPS_HEADER
        + "adaptive-mnist-gaussian-0.50\t2026-01-01T00:00:00Z\t2026-01-01T00:10:00Z\t600\t\t0\t1 1 1\t2 2 2\n"
    )
    row = pp.Row("mnist-gaussian-0.50", "gaussian", {}, 0.5, "table2-slice")
    c = pp.Comparison(row, IMAGES, [], [], [], [], None)
    (line,) = [line for line in pp.cost_table([c], pp.read_steps(tmp_path / "steps.tsv"), []) if "| adaptive |" in line]
    assert "done (run outside the chain" in line and "| not measured |" in line


def test_radii_are_compared_at_the_official_logs_precision(tmp_path):
    """Cohen's certify.py logs a radius as ``{:.3}``: 0.2496 is logged as 0.25 and counts at r = 0.25, 0.99951
    as 1.0. rsbench's full-precision radii are rounded the same way before the comparison."""
    mine = record("rsbench", 0, {0: (1, 0.2496), 2: (1, 0.99951), 4: (1, 0.2449)}, budget="paper-subset")
    logged = pp.summarise(mine, IMAGES, RADII)
    assert logged.accuracy == pytest.approx({0.0: 1.0, 0.25: 2 / 3, 0.5: 1 / 3, 1.0: 1 / 3})
    assert logged.acr == pytest.approx((0.25 + 1.0 + 0.245) / 3)
    full = pp.summarise(mine, IMAGES, RADII, logged=False)
    assert full.accuracy == pytest.approx({0.0: 1.0, 0.25: 1 / 3, 0.5: 1 / 3, 1.0: 0.0})
    official = [record("imported", seed, {0: (1, 0.25), 2: (1, 1.0), 4: (1, 0.245)}) for seed in (1, 2)]
    for name, content in [("mine.json", mine), ("o1.json", official[0]), ("o2.json", official[1])]:
        write(tmp_path, name, content)
    row = pp.Row("mnist-gaussian-0.50", "gaussian", {}, 0.5, "table2-slice")
    (c,) = pp.compare([row], pp.read_records(tmp_path), [], images=IMAGES, radii=RADII)
    text = pp.render([c], [], [], RADII)
    # identical at the logs' precision: no sign on a zero difference; at full precision the gaps show
    assert "| difference (rsbench − official mean) | | | ±0.000 | ±0.0 | ±0.0 | ±0.0 | ±0.0 |" in text
    assert "at rsbench's full precision ACR ±0.000; largest accuracy gap -33.3 points at r = 0.25 (outside)" in text


def test_the_paper_row_is_the_one_with_the_rows_parameters_and_table():
    row = pp.Row("mnist-consistency-0.50", "consistency", CONSISTENCY, 0.5, "table2-slice")
    assert pp.reported_for(row, REPORTED)["acr"] == 1.657
    other = pp.Row("mnist-consistency-0.50", "consistency", {**CONSISTENCY, "lam": 20.0}, 0.5, "table2-slice")
    assert pp.reported_for(other, REPORTED) is None


def test_official_runs_of_other_parameters_are_not_pooled(tmp_path):
    same = {0: (1, 1.0), 2: (1, 1.0), 4: (1, 1.0)}
    write(tmp_path, "lam5.json", record("imported", 1, same, method="consistency", params=CONSISTENCY))
    for i, params in enumerate([{**CONSISTENCY, "lam": 10.0}, {**CONSISTENCY, "m": 4}, {**CONSISTENCY, "eta": 1.0}]):
        write(tmp_path, f"decoy{i}.json", record("imported", 2 + i, {0: (0, 0.0), 2: (0, 0.0), 4: (0, 0.0)},
                                                 method="consistency", params=params))  # fmt: skip
    row = pp.Row("mnist-consistency-0.50", "consistency", CONSISTENCY, 0.5, "table2-slice")
    (c,) = pp.compare([row], pp.read_records(tmp_path), REPORTED, images=IMAGES, radii=RADII)
    assert [r["run"]["seed"] for r, _ in c.official] == [1]
    assert c.reported is not None and c.reported["acr"] == 1.657


@pytest.mark.parametrize(
    ("mine", "official", "message"),
    [
        ({0: (1, 0.5), 2: (1, 0.5)}, {}, "certified other test images"),  # a shorter run labelled paper-subset
        ({1: (1, 0.5), 3: (1, 0.5), 5: (1, 0.5)}, {}, "certified other test images"),  # off by one
        ({0: (1, 0.5), 2: (1, 0.5), 4: (1, 0.5)}, {"label": 7}, "label test image 0 differently"),
    ],
)
def test_a_run_not_on_the_protocols_images_is_refused(tmp_path, mine, official, message):
    write(tmp_path, "mine.json", record("rsbench", 0, mine, budget="paper-subset"))
    write(tmp_path, "o.json", record("imported", 1, {i: (1, 1.0) for i in range(6)}, **official))
    row = pp.Row("mnist-gaussian-0.50", "gaussian", {}, 0.5, "table2-slice")
    with pytest.raises(ValueError, match=message):
        pp.compare([row], pp.read_records(tmp_path), [], images=IMAGES, radii=RADII)


def test_an_image_certified_twice_is_an_error():
    twice = record("imported", 1, {0: (1, 1.0), 2: (1, 1.0)})
    twice["rows"].append(list(twice["rows"][0]))
    with pytest.raises(ValueError, match="more than once"):
        pp.summarise(twice, [0, 2])


ROOT = Path(__file__).parents[1]


def test_the_committed_table_is_what_the_committed_records_give(tmp_path, monkeypatch):
    out = tmp_path / "table.md"
    monkeypatch.setattr(sys, "argv", ["paper_protocol.py", "--out", str(out)])
    pp.main()
    assert out.read_text() == (ROOT / "leaderboards" / "table2-paper-protocol.md").read_text(), (
        "leaderboards/table2-paper-protocol.md is stale: run python leaderboards/paper_protocol.py"
    )


def test_the_official_runs_on_all_their_images_give_the_papers_table_3():
    """An independent check that the right official runs are pooled: their mean ACR over all 10,000 images is
    the supplement's Table 3 (mean over training runs, 4 decimals)."""
    records = pp.read_records(ROOT / "leaderboards" / "records" / "mnist")
    reported = pp.reported_rows(ROOT / "rsbench" / "data" / "paper_reported.json")
    for c in pp.compare(pp.ROWS, records, reported):
        (table3,) = [
            e for e in reported
            if e["reference"] == "Table 3" and e["dataset"] == "mnist" and e["method"] == c.row.method
            and math.isclose(e["sigma"], c.row.sigma)
            and all(e["params"].get(k) == v for k, v in c.row.params.items() if k != "loss")
        ]  # fmt: skip
        assert pp.mean_std([s.acr for s in c.official_all])[0] == pytest.approx(table3["acr"], abs=1e-4), c.row
